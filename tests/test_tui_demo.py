"""`dhtscope demo`: five processes attached, a scenario switched live, and nothing left after quitting."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
from typing import Any

from helpers.tui import cell, table_text, wait_until

from dhtscope.tracing.analysis import analyse
from dhtscope.tracing.inputs import open_inputs
from dhtscope.tui.app import DhtscopeApp
from dhtscope.tui.commands import _ports_free, run_demo
from dhtscope.tui.messages import ScenarioChosen

NAMES = ("registry", "provider1", "provider2", "provider3", "client")


def _base_port() -> int:
    for _ in range(50):
        port = random.randrange(30000, 40000)
        if _ports_free("127.0.0.1", port, 5) is None:
            return port
    raise RuntimeError("no free UDP ports")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_demo_attaches_to_five_nodes_and_quitting_stops_every_process(tmp_path) -> None:
    seen: dict[str, Any] = {}

    def on_started(cluster: Any) -> None:
        seen["pids"] = [m.process.pid for m in cluster.members]
        seen["work"] = cluster.plan.control_dir

    def runner(source: Any, select: str | None) -> int:
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
                assert [r.split(" | ")[1] for r in table_text(nodes)] == [
                    "registry",
                    "provider1",
                    "provider2",
                    "provider3",
                    "client",
                ]
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
            return 0

        return asyncio.run(drive())

    pcap = tmp_path / "cap"
    args = argparse.Namespace(providers=3, base_port=_base_port(), scenario="healthy", record=None, pcap=str(pcap))
    assert run_demo(args, runner=runner, on_started=on_started) == 0
    assert len(seen["pids"]) == 5
    assert not any(_alive(pid) for pid in seen["pids"])
    assert not os.path.exists(seen["work"])
    # --pcap: each node's capture and key log outlive the demo, and decrypt whole.
    assert sorted(p.name for p in pcap.glob("*.pcapng")) == [f"{n}.pcapng" for n in sorted(NAMES)]
    rec = open_inputs([pcap / "registry.pcapng"])
    assert rec.traces and {t.info.extra["decrypted"] for t in rec.traces} == {"full"}
    assert "registry" in analyse(rec).nodes
