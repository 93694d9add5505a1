"""TUI performance: ingest under 20,000 events/s, key-press latency under that load, and a
1,000,000-event replay: its first screen, when its index and analysis are complete, key-press
latency while they run, and the in-process index (`ReplaySource.open_now()`) as the baseline.

    python bench/tui_bench.py [--rate 20000] [--seconds 5] [--events 1000000] [--json]

Headless (App.run_test), so the numbers are the app's own work, not a terminal's drawing. The
replay's indexing and analysis run in child processes: on a machine with other work running
they compete with it for the cores, so check the load before comparing runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dhtscope.tracing.writer import LiveTrace, NodeTrace, write_manifest
from dhtscope.tui.app import DhtscopeApp
from dhtscope.tui.source import DataSource, EventRow, NodeInfo
from dhtscope.tui.sources.replay import ReplaySource


class SyntheticSource(DataSource):
    """A live source whose events come from the benchmark at a set rate."""

    kind = "bench"
    analysis_interval_s = None

    def __init__(self) -> None:
        super().__init__()
        self.title = "bench"

    def nodes(self) -> list[NodeInfo]:
        return [NodeInfo("bench", "node", "ab" * 32, "127.0.0.1:1", "running", events=self.event_count("bench"))]

    def snapshot(self, node: str) -> dict[str, Any] | None:
        return None


async def _until(predicate: Any, pilot: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await pilot.pause(0.01)


async def _press(app: Any, i: int) -> float | None:
    """Send the i-th tab key as the terminal driver would; ms until the tab it names is showing."""
    from textual import events
    from textual.widgets import TabbedContent

    from dhtscope.tui.screens.main import TABS

    tabs = app.main.query_one(TabbedContent)
    views = len(TABS) - 1  # not the Probe tab: its text field would take the digits
    index = (i * 3 + 1) % views
    key, want = str(index + 1), TABS[index][0]
    if tabs.active == want:
        return None
    started = time.perf_counter()
    event = events.Key(key, key)
    event.set_sender(app)
    app._driver.send_message(event)
    while tabs.active != want:
        if time.perf_counter() - started > 30:
            raise TimeoutError(f"key {key} not handled within 30 s")
        await asyncio.sleep(0.0005)
    return (time.perf_counter() - started) * 1000.0


async def _press_latencies(app: Any, rounds: int) -> list[float]:
    out = []
    for i in range(rounds):
        ms = await _press(app, i)
        if ms is not None:
            out.append(ms)
            await asyncio.sleep(0.1)
    return out


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median_ms": float("nan"), "p95_ms": float("nan"), "max_ms": float("nan"), "n": 0}
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 2),
        "max_ms": round(ordered[-1], 2),
        "n": len(ordered),
    }


async def live_load(rate: int, seconds: float) -> dict[str, Any]:
    """Events pushed at `rate` per second for `seconds` while keys are pressed."""
    source = SyntheticSource()
    app = DhtscopeApp(source)
    batch_interval_s = 0.005
    per_batch = max(1, int(rate * batch_interval_s))
    data = {"stream_id": 4, "offset": 0, "length": 1200, "fin": False, "from": "transport", "to": "application"}
    async with app.run_test(size=(160, 48)) as pilot:
        await _until(lambda: app.main.ready, pilot)
        await pilot.press("6")  # the Events view, following: the worst case, it moves every tick
        stop = asyncio.Event()

        async def produce() -> None:
            t0 = time.perf_counter()
            sent = 0
            while not stop.is_set():
                due = int((time.perf_counter() - t0) * rate)
                now_ms = time.time() * 1000.0
                while sent < due:
                    for _ in range(min(per_batch, due - sent)):
                        source.push(EventRow(now_ms, "bench", "quic:stream_data_moved", "c0ffee00", data))
                        sent += 1
                await asyncio.sleep(batch_interval_s)

        lags: list[float] = []

        async def loop_lag() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                await asyncio.sleep(0.01)
                lags.append((time.perf_counter() - t - 0.01) * 1000.0)

        tasks = [asyncio.create_task(produce()), asyncio.create_task(loop_lag())]
        await pilot.pause(0.5)
        ingested0, pushed0, t0 = source.ingested, source.pushed, time.perf_counter()
        latencies = await _press_latencies(app, max(10, int(seconds / 0.1)))
        elapsed = time.perf_counter() - t0
        ingested, pushed = source.ingested - ingested0, source.pushed - pushed0
        stop.set()
        await asyncio.gather(*tasks)
        backlog = len(source.inbox)
    return {
        "offered_events_per_s": rate,
        "arrived_events_per_s": round(pushed / elapsed),
        "ingested_events_per_s": round(ingested / elapsed),
        "backlog_at_end": backlog,
        "key_press_latency": _summary(latencies),
        "event_loop_lag": _summary(lags),
        "seconds": round(elapsed, 2),
    }


def write_recording(root: Path, events: int) -> float:
    """`events` events over 2 nodes x 2 connection ends + node traces, written by tracing.writer."""
    started = time.perf_counter()
    odcids = ["c0ffee0000000001", "c0ffee0000000002"]
    write_manifest(
        root,
        [
            {"name": n, "id": None, "address": f"127.0.0.1:{4500 + i}", "role": "node", "dir": n}
            for i, n in enumerate(("alpha", "beta"))
        ],
        "bench",
    )
    traces = []
    for name in ("alpha", "beta"):
        node = NodeTrace(
            root / name,
            name,
            {"name": name, "id": None, "address": None, "role": "node", "dir": name},
            flush_interval_s=3600,
        )
        node.log(
            "dht:node_started",
            {
                "node_id": ("ab" if name == "alpha" else "cd") * 32,
                "address": "127.0.0.1:1",
                "role": "node",
                "scenario": [],
            },
        )
        node.close()
        for odcid in odcids:
            traces.append(
                LiveTrace(
                    root / name, name, is_client=name == "alpha", odcid=bytes.fromhex(odcid), flush_interval_s=3600
                )
            )
    per = events // len(traces)
    for trace in traces:
        for i in range(per):
            sid = (i // 5) * 4
            if i % 5 == 0:
                trace.log(
                    "quic:stream_data_moved",
                    {
                        "stream_id": sid,
                        "offset": 0,
                        "length": 40,
                        "fin": True,
                        "from": "application",
                        "to": "transport",
                    },
                )
            else:
                trace.log("dht:rpc_sent", {"stream_id": sid, "type": "PING", "request_id": i, "peer_id": "ab" * 32})
        trace.close()
    return time.perf_counter() - started


async def replay_first_screen(path: Path) -> dict[str, Any]:
    """Time until the Nodes view lists the recording's nodes, until the index and the analysis are
    complete. Key latency: 20 keys (0.1 s apart) right after the first screen, while it indexes; then
    one key a second (a redraw costs the app's process CPU the background work may want) until the
    analysis is in, and 10 keys after it. Event-loop lag is sampled all along."""
    cpu0 = time.process_time()
    started = time.perf_counter()
    source = ReplaySource(str(path))
    app = DhtscopeApp(source)
    phases: dict[str, list[float]] = {"indexing": [], "analysing": [], "after": []}
    lags: list[float] = []
    marks: dict[str, float] = {}

    def phase() -> str:
        now = time.perf_counter() - started
        if "indexed" not in marks and not source.state.indexing:
            marks["indexed"] = now
        if "analysed" not in marks and app.main.analysis is not None:
            marks["analysed"] = now
        return "indexing" if "indexed" not in marks else "analysing" if "analysed" not in marks else "after"

    async with app.run_test(size=(160, 48)) as pilot:
        await _until(lambda: app.main.ready and app.main.query_one("#nodes-table").row_count() >= 2, pilot)
        first_screen = time.perf_counter() - started
        stop = asyncio.Event()

        async def loop_lag() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                await asyncio.sleep(0.01)
                lags.append((time.perf_counter() - t - 0.01) * 1000.0)
                phase()

        lag_task = asyncio.create_task(loop_lag())
        deadline = time.monotonic() + 600
        i = 0
        while len(phases["after"]) < 10:
            if time.monotonic() > deadline:
                raise TimeoutError("replay not indexed and analysed within 600 s")
            when = phase()
            ms = await _press(app, i)
            i += 1
            if ms is None:
                continue
            phases[when].append(ms)
            await asyncio.sleep(0.1 if i <= 20 or when == "after" else 1.0)
        stop.set()
        await lag_task
        total = source.state.total
        children = list(getattr(source, "child_pids", []))
    return {
        "events": total,
        "first_screen_s": round(first_screen, 3),
        "index_complete_s": round(marks["indexed"], 2),
        "analysis_complete_s": round(marks["analysed"], 2),
        "key_press_latency_while_indexing": _summary(phases["indexing"]),
        "key_press_latency_while_analysing": _summary(phases["analysing"]),
        "key_press_latency_after": _summary(phases["after"]),
        "event_loop_lag": _summary(lags),
        "app_process_cpu_s": round(time.process_time() - cpu0, 1),
        "child_processes": len(children),
    }


def index_in_process(path: Path) -> float:
    """The baseline: the same indexing done by `open_now()` in this process, no app."""
    started = time.perf_counter()
    source = ReplaySource(str(path))
    source.open_now()
    assert source.state.total and not source.state.indexing
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=20_000, help="events per second offered (default 20000)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the live-load run (default 5)")
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the replayed recording")
    parser.add_argument("--json", action="store_true", help="one JSON document")
    args = parser.parse_args(argv)

    results: dict[str, Any] = {"live": asyncio.run(live_load(args.rate, args.seconds))}
    tmp = Path(tempfile.mkdtemp(prefix="dhtscope-tui-bench-"))
    try:
        write_s = write_recording(tmp / "rec", args.events)
        results["replay"] = {
            "write_s": round(write_s, 1),
            **asyncio.run(replay_first_screen(tmp / "rec")),
            "index_in_process_s": round(index_in_process(tmp / "rec"), 2),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    live, replay = results["live"], results["replay"]
    print(
        f"live load: {live['offered_events_per_s']:,} events/s offered, {live['arrived_events_per_s']:,}/s arrived, "
        f"{live['ingested_events_per_s']:,}/s ingested, backlog at end {live['backlog_at_end']:,}"
    )
    k = live["key_press_latency"]
    print(f"  key-press latency under load: median {k['median_ms']} ms, p95 {k['p95_ms']} ms, max {k['max_ms']} ms")
    lag = live["event_loop_lag"]
    print(f"  event-loop lag: median {lag['median_ms']} ms, p95 {lag['p95_ms']} ms, max {lag['max_ms']} ms")
    r = replay
    print(
        f"replay of {r['events']:,} events (written in {r['write_s']} s): first screen {r['first_screen_s']} s, "
        f"index complete {r['index_complete_s']} s, analysis complete {r['analysis_complete_s']} s"
    )
    print(
        f"  work in {r['child_processes']} child process(es); the app's own process used {r['app_process_cpu_s']} s "
        f"of CPU; open_now() in-process index alone: {r['index_in_process_s']} s"
    )
    for phase, name in (
        ("while indexing", "while_indexing"),
        ("while analysing", "while_analysing"),
        ("after both", "after"),
    ):
        k = r["key_press_latency_" + name]
        print(
            f"  key-press latency {phase}: median {k['median_ms']} ms, p95 {k['p95_ms']} ms, max {k['max_ms']} ms "
            f"({k['n']} keys)"
        )
    lag = r["event_loop_lag"]
    print(
        f"  event-loop lag over the replay: median {lag['median_ms']} ms, "
        f"p95 {lag['p95_ms']} ms, max {lag['max_ms']} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
