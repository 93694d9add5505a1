"""`dhtscope demo`: five processes attached, a scenario switched live, nothing left running after
quitting but the recording, which replays with the same nodes."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
from pathlib import Path
from typing import Any

import pytest
from helpers.tui import cell, table_text, wait_until

from dhtscope.tracing.analysis import analyse
from dhtscope.tracing.cli import check_trace_inputs
from dhtscope.tracing.inputs import open_inputs
from dhtscope.tui.app import DhtscopeApp
from dhtscope.tui.commands import _ports_free, free_port_run, run_demo
from dhtscope.tui.messages import ScenarioChosen
from dhtscope.tui.screens.choose import QuitScreen
from dhtscope.tui.sources.replay import ReplaySource


def _base_port() -> int:
    for _ in range(50):
        port = random.randrange(30000, 40000)
        if _ports_free("127.0.0.1", port, 10) is None:
            return port
    raise RuntimeError("no free UDP ports")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_demo_attaches_to_five_nodes_and_quitting_stops_every_process_and_keeps_the_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    seen: dict[str, Any] = {}
    names = ["registry", "provider1", "provider2", "provider3", "client"]

    def on_started(cluster: Any) -> None:
        seen["pids"] = [m.process.pid for m in cluster.members]
        seen["work"] = cluster.plan.control_dir
        seen["base"] = cluster.plan.base_port

    def runner(source: Any, select: str | None) -> int:
        seen["notices"] = list(source.notices)

        async def drive() -> int:
            app = DhtscopeApp(source, select=select)
            async with app.run_test(size=(160, 48)) as pilot:
                nodes = app.main.query_one("#nodes-table")
                await wait_until(
                    lambda: [cell(nodes, i, 5) for i in range(5)] == ["connected"] * 5,
                    pilot,
                    timeout_s=20,
                    what="five attached nodes",
                )
                assert [r.split(" | ")[1] for r in table_text(nodes)] == names
                assert app.main.node == "registry"
                app.post_message(ScenarioChosen("registry", "no-accept"))
                await wait_until(lambda: "no-accept" in table_text(nodes)[0], pilot, what="registry faults")
                await pilot.press("7")
                await wait_until(
                    lambda: (
                        app.main.analysis is not None
                        and any(f.kind == "stream_not_delivered" for f in app.main.analysis.findings)
                    ),
                    pilot,
                    timeout_s=30,
                    what="stream_not_delivered",
                )
                assert all(_alive(pid) for pid in seen["pids"])
                await pilot.press("q")
                assert isinstance(app.screen, QuitScreen) and "stops the 5 node processes" in app.screen.note
                await pilot.press("q")
            return 0

        return asyncio.run(drive())

    asked = _base_port()
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", asked))  # someone else's: the demo must move, and say where
    try:
        args = argparse.Namespace(
            providers=3, base_port=asked, scenario="healthy", record=None, no_keep=False, pcap=str(tmp_path / "cap")
        )
        assert run_demo(args, runner=runner, on_started=on_started) == 0
    finally:
        taken.close()
    assert len(seen["pids"]) == 5
    assert not any(_alive(pid) for pid in seen["pids"])
    assert not os.path.exists(seen["work"])
    assert seen["base"] != asked and seen["notices"] == [
        f"UDP ports {asked}-{asked + 4} are taken (UDP port {asked} on 127.0.0.1 is in use: another demo or "
        f"cluster?); using {seen['base']}-{seen['base'] + 4}"
    ]
    out = capsys.readouterr().out.splitlines()
    kept = [line for line in out if line.startswith("recording kept in ")]
    assert len(kept) == 1 and f"replay it with: dhtscope replay {kept[0][len('recording kept in ') :]}" in out
    recording = Path(kept[0][len("recording kept in ") :])
    assert recording.parent == tmp_path and recording.name.startswith("dhtscope-demo-")
    check_trace_inputs([str(recording)])  # what `dhtscope replay` checks before opening
    replay = ReplaySource(str(recording))
    replay.open_now()
    assert [n.name for n in replay.nodes()] == names
    # --pcap: each node's capture and key log outlive the demo, and decrypt whole.
    assert sorted(p.name for p in (tmp_path / "cap").glob("*.pcapng")) == sorted(f"{n}.pcapng" for n in names)
    rec = open_inputs([tmp_path / "cap" / "registry.pcapng"])
    assert rec.traces and {t.info.extra["decrypted"] for t in rec.traces} == {"full"}
    assert "registry" in analyse(rec).nodes


def test_a_demo_whose_ports_are_taken_picks_the_next_free_run() -> None:
    base = _base_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", base + 2))
        moved_to, said = free_port_run("127.0.0.1", base, 5)
    assert moved_to >= base + 5 and said is not None
    assert said.endswith(f"using {moved_to}-{moved_to + 4}") and f"UDP port {base + 2}" in said
    assert free_port_run("127.0.0.1", moved_to, 5) == (moved_to, None)


def test_no_keep_and_record_do_not_go_together(capsys: pytest.CaptureFixture[str]) -> None:
    from dhtscope.tui.cli import main

    assert main(["demo", "--record", "/tmp/x", "--no-keep"]) == 1
    assert "does not go with --record" in capsys.readouterr().err
