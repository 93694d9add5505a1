"""The TUI over a recording made by real nodes: every screen, driven by keys."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.tui import ODCID as FIXED_ODCID
from helpers.tui import table_text, wait_until, write_fixed_recording

from dhtscope.node.keys import Identity
from dhtscope.node.node import Node, NodeError
from dhtscope.node.recording import NodeRecorder
from dhtscope.tracing.analysis import analyse
from dhtscope.tracing.reader import TraceReadError, open_recording
from dhtscope.tui.app import DhtscopeApp
from dhtscope.tui.screens.help import HelpScreen
from dhtscope.tui.screens.timeline import StreamTimelineScreen
from dhtscope.tui.sources.replay import ReplaySource
from dhtscope.tui.widgets.timeline_table import Gap


async def _record(root: Path) -> None:
    """registry + provider + client over QUIC; then the registry stops accepting streams."""
    nodes = []
    for name, role in (("registry", "registry"), ("provider1", "provider"), ("client", "client")):
        identity = Identity.generate()
        recorder = NodeRecorder(root, name, identity.node_id.hex(), role)
        node = Node(identity, name=name, role=role, recorder=recorder, request_timeout_s=1.0)
        await node.start()
        recorder.set_address(node.address)
        nodes.append(node)
    registry, provider, client = nodes
    try:
        for node in (provider, client):
            await node.bootstrap([("127.0.0.1", registry.port)])
        await provider.advertise("calculator", "127.0.0.1:9001")
        await client.discover("calculator")
        registry.faults.no_accept = True
        registry.emit("dht:scenario_changed", {"scenario": "no-accept", "faults": ["no-accept"], "previous": []})
        for _ in range(2):
            with pytest.raises(NodeError):
                await client.ping(registry.contact())
        await asyncio.sleep(0.3)  # the registry's trace goes on past the receipt
    finally:
        for node in nodes:
            await node.stop()


@pytest.fixture(scope="module")
def recording() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="dhtscope-tui-rec-"))
    asyncio.run(_record(root))
    yield root
    shutil.rmtree(root, ignore_errors=True)


async def _ready(app: DhtscopeApp, pilot: Any) -> None:
    await wait_until(
        lambda: app.main.analysis is not None and not app.source.replay.indexing, pilot, what="analysis and index"
    )
    await wait_until(lambda: app.main.query_one("#nodes-table").row_count() == 3, pilot, what="three nodes")


async def test_replay_every_screen(recording: Path) -> None:
    app = DhtscopeApp(ReplaySource(str(recording)))
    async with app.run_test(size=(120, 40)) as pilot:
        await _ready(app, pilot)
        main = app.main
        nodes = table_text(main.query_one("#nodes-table"))
        assert sorted(r.split(" | ")[1] for r in nodes) == ["client", "provider1", "registry"]
        assert app.main.node == "registry"
        assert all("recorded" in r for r in nodes)

        await pilot.press("2")
        conns = main.query_one("#connections-table")
        assert conns.row_count() == 2  # provider1 and client each connected to the registry
        assert main.query_one("#rtt-spark").data

        await pilot.press("3")
        streams = table_text(main.query_one("#streams-table"))
        assert any(r.endswith("delivered") and "✗" in r for r in streams), streams
        assert any(r.endswith("none") for r in streams)

        await pilot.press("4")
        routing = table_text(main.query_one("#routing-table"))
        others = {n.address for n in app.source.nodes() if n.name != "registry"}
        assert {r.split(" | ")[3] for r in routing} == others

        await pilot.press("n")  # provider1: it advertised, the registry stored its record
        await pilot.press("N")
        await pilot.press("5")
        records = table_text(main.query_one("#records-table"))
        assert any("calculator" in r and "valid" in r for r in records), records

        await pilot.press("6")
        log = main.query_one("#event-log")
        assert log.row_count() == app.source.replay.total > 0
        await pilot.press("slash")
        await pilot.press(*"rpc_timeout")
        await wait_until(lambda: not log.filtering, pilot, what="filter")
        assert 1 <= log.row_count() < app.source.replay.total
        assert all(log.event(i).name == "dht:rpc_timeout" for i in range(log.row_count()))
        await pilot.press("enter", "enter")  # to the log, then the event detail
        assert type(app.screen).__name__ == "EventDetailScreen"
        await pilot.press("escape")

        await pilot.press("7")
        findings = table_text(main.query_one("#findings-table"))
        assert findings[0].startswith("error | stream_not_delivered | registry")
        assert "stream_not_delivered" in str(main.query_one("#finding-detail").render())
        await pilot.press("enter")
        assert isinstance(app.screen, StreamTimelineScreen)
        timeline = app.screen.query_one("#timeline")
        gaps = [i for i, item in enumerate(timeline.items) if isinstance(item, Gap)]
        assert gaps and timeline.items[gaps[0]].step == "delivered"
        assert "MISSING" in table_text(timeline)[gaps[0]]
        start = timeline.cursor
        await pilot.press("n")
        assert timeline.cursor > start and timeline.is_step(timeline.cursor)
        await pilot.press("p")
        assert timeline.cursor == start
        await pilot.press("escape")
        assert app.screen is main

        await pilot.press("8")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")


async def test_replay_controls_step_seek_and_play(recording: Path) -> None:
    app = DhtscopeApp(ReplaySource(str(recording)))
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(app, pilot)
        state = app.source.replay
        total = state.total
        await pilot.press("left_square_bracket")
        assert state.position == 0
        await pilot.press("full_stop", "full_stop")
        assert state.position == 2
        await pilot.press("comma")
        assert state.position == 1
        await pilot.press("6")
        await wait_until(lambda: app.main.query_one("#event-log").row_count() == 1, pilot, what="one event shown")
        await pilot.press("t")
        await pilot.press(*"0.5", "enter")
        assert 0 < state.position < total
        await pilot.press("plus", "plus", "plus", "plus", "plus")
        assert state.speed >= 100
        await pilot.press("p")
        await wait_until(lambda: state.position == total, pilot, what="playing to the end")
        assert not state.playing
        assert "event" in str(app.main.query_one("#replay-bar").render())
        await pilot.press("right_square_bracket")
        assert state.position == total


async def test_replay_of_a_missing_path_says_so(tmp_path: Path, capsys) -> None:
    from dhtscope.tui.cli import main

    assert main(["replay", str(tmp_path / "nope")]) == 1
    assert "no such file or directory" in capsys.readouterr().err


def _exited(pid: int) -> bool:
    """Gone, or a zombie waiting for a parent that is not us (a killed app's children go to init)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # a zombie answers too: only a reaped child is gone
    except ProcessLookupError:
        return False
    return True


async def test_replay_indexes_and_analyses_in_child_processes_that_stop_with_the_app(
    recording: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dhtscope.tui.sources.replay as replay

    def not_here(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the app's own process parsed the recording")

    for name in ("walk", "open_replay", "analyse"):
        monkeypatch.setattr(replay, name, not_here)
    source = ReplaySource(str(recording))
    app = DhtscopeApp(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(lambda: source.child_pids, pilot, what="child processes")
        pids = source.child_pids
        assert len(pids) == 2 and os.getpid() not in pids
        await _ready(app, pilot)
        assert source.state.total > 0 and source.error is None
        assert not _alive(pids[0])  # the indexer is done and reaped; the analyser stays for timelines
        assert b"replay_worker\0analyse" in Path(f"/proc/{pids[1]}/cmdline").read_bytes()
        await pilot.press("7", "enter")
        assert isinstance(app.screen, StreamTimelineScreen)
        assert app.screen.query_one("#timeline").items  # the timeline came from the analysing child
        await pilot.press("escape", "q")
    assert not any(_alive(pid) for pid in pids)  # stopped and reaped by the time the app is gone


async def test_replay_of_an_unreadable_trace_reports_the_childs_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlog"
    bad.write_bytes(b"\x1e not json at all\n")
    source = ReplaySource(str(bad))
    await source.start()
    pids = source.child_pids
    try:
        await wait_until(lambda: not source.state.indexing, what="the indexer to give up")
        assert source.error is not None and "bad.sqlog" in source.error and "no complete JSON record" in source.error
        assert source.recording is None and source.state.total == 0
        with pytest.raises(TraceReadError, match="no complete JSON record"):
            await asyncio.to_thread(source.analyse)
        with pytest.raises(TraceReadError):  # asked again (the app retries): the same answer at once
            source.analyse()
    finally:
        await source.stop()
    assert not any(_alive(pid) for pid in pids)


def _busy_recording(root: Path, events: int) -> Path:
    """One client trace of `events` stream events: seconds of work to analyse."""
    header = (
        '{"qlog_version": "0.3", "qlog_format": "JSON-SEQ", "trace": {"vantage_point": {"type": "client", '
        '"name": "busy"}, "common_fields": {"ODCID": "c0ffee", "reference_time": 1700000000000.0, '
        '"time_format": "relative"}}}'
    )
    event = (
        '{"time": %.2f, "name": "quic:stream_data_moved", "data": {"stream_id": %d, "offset": 0, '
        '"length": 40, "fin": true, "from": "application", "to": "transport"}}'
    )
    path = root / "busy" / "c0ffee-client-0.sqlog"
    path.parent.mkdir(parents=True)
    lines = [header] + [event % (i * 0.01, i // 5 * 4) for i in range(events)]
    path.write_bytes(b"".join(b"\x1e" + line.encode() + b"\n" for line in lines))
    return root


def test_replay_children_leave_when_the_app_is_killed(tmp_path: Path) -> None:
    busy = _busy_recording(tmp_path / "rec", 200_000)
    script = tmp_path / "app.py"
    script.write_text(
        "import asyncio, sys, time\n"
        "from dhtscope.tui.sources.replay import ReplaySource\n"
        "async def main():\n"
        "    source = ReplaySource(sys.argv[1])\n"
        "    await source.start()\n"
        "    print(*source.child_pids, flush=True)\n"
        "    time.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen([sys.executable, str(script), str(busy)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        time.sleep(0.5)
        assert len(pids) == 2 and not any(_exited(pid) for pid in pids)  # both still at work
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 3  # well before either would have finished its work
    while not all(_exited(pid) for pid in pids):
        assert time.monotonic() < deadline, "a replay child outlived the killed app"
        time.sleep(0.05)


async def test_replay_says_when_a_child_dies_without_a_word(tmp_path: Path) -> None:
    import signal

    source = ReplaySource(str(_busy_recording(tmp_path / "rec", 100_000)))
    await source.start()
    pids = source.child_pids
    try:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: not source.state.indexing, what="the index to end")
        assert source.error == "replay index process was killed by SIGKILL"
        with pytest.raises(RuntimeError, match="replay analyse process was killed by SIGKILL"):
            await asyncio.to_thread(source.analyse)
    finally:
        await source.stop()
    assert not any(_alive(pid) for pid in pids)


def test_fixed_recording_shows_a_stream_not_delivered(tmp_path: Path) -> None:
    analysis = analyse(open_recording(write_fixed_recording(tmp_path / "rec")))
    kinds = [f.kind for f in analysis.findings]
    assert "stream_not_delivered" in kinds
    store = analysis.stream(FIXED_ODCID, 4)
    assert store is not None and store.missing == "delivered"
    ping = analysis.stream(FIXED_ODCID, 0)
    assert ping is not None and ping.missing is None and ping.furthest == "answered"
