"""A recording played back: lazy to open, indexed and analysed in child processes, stepped by the user.

`start()` lists the nodes at once from the recording's manifest and node files and starts
two child processes (replay_worker): one opens the recording, sends it (each trace as its
record index) and then the time-ordered event order in chunks; the other analyses it. A
thread here applies the chunks as they come, so the views show what has been indexed so
far and the screen never competes with the parsing for the interpreter lock.
`open_now()` does the opening and indexing in the calling thread instead.
"""

from __future__ import annotations

import bisect
import dataclasses
import gc
import signal
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections import Counter, defaultdict
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from dhtscope.tracing.analysis import Analysis, StreamView, TimelineEntry, analyse
from dhtscope.tracing.inputs import InputError
from dhtscope.tracing.model import NodeEntry, Recording
from dhtscope.tracing.reader import read_nodes

from ..source import DataSource, EventRow, NodeInfo, ReplayState
from .replay_worker import NODE_EVENTS, RTT_SAMPLES_PER_TRACE, IndexChunk, node_of, open_replay, walk

__all__ = ["NODE_EVENTS", "RTT_SAMPLES_PER_TRACE", "SPEEDS", "ReplaySource"]

SPEEDS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 100.0, 1000.0)
WORKER_MODULE = "dhtscope.tui.sources.replay_worker"
STOP_WAIT_S = 2.0  # a child that has not left this long after its stdin closed is killed
TIMELINE_WAIT_S = 10.0


class _Worker:
    """One replay_worker child process and the pipe to it."""

    def __init__(self, job: str, paths: list[str], keylog: str | None = None) -> None:
        self.job = job
        ours, theirs = Pipe()
        keys = ["--keylog", keylog] if keylog is not None else []
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - kept open for the child's lifetime
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE, job, str(theirs.fileno()), *keys, *paths],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            self._stderr.close()
            raise
        finally:
            theirs.close()  # the child holds the only other end: its exit is our end of file
        self.conn: Connection = ours
        self.lock = threading.Lock()  # one request and its reply at a time
        self._closing = threading.Lock()  # stop() and the indexer's own thread may both close

    @property
    def pid(self) -> int:
        return self.process.pid

    def recv(self) -> Any:
        """The child's next message, or None once it is gone."""
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            return None

    def ask(self, request: tuple[Any, ...], timeout_s: float) -> Any:
        """A request answered by one reply (the child must be done sending on its own)."""
        with self.lock:
            try:
                self.conn.send(request)
                if self.conn.poll(timeout_s):
                    return self.conn.recv()
            except (EOFError, OSError):
                pass
        return None

    def failure(self) -> str:
        """Why the child ended without saying so itself: its exit status and last words."""
        try:
            code: int | None = self.process.wait(1.0)  # its pipe closes a moment before it can be reaped
        except subprocess.TimeoutExpired:
            code = None
        try:
            self._stderr.seek(0)
            said = self._stderr.read().decode(errors="replace").strip().splitlines()
        except (OSError, ValueError):
            said = []
        if code is None:
            status = "stopped answering"
        elif code < 0:
            status = f"was killed by {_signal_name(-code)}"
        else:
            status = f"exited with status {code}"
        return f"replay {self.job} process {status}" + (f": {said[-1]}" if said else "")

    def close(self) -> None:
        """Stop the child and reap it: stdin closed first (it leaves at once), then a kill."""
        with self._closing:
            proc = self.process
            if proc.stdin is not None and not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
            try:
                proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self.conn.close()
            self._stderr.close()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class _ServedAnalysis(Analysis):
    """An Analysis whose stream timelines stay in the process that made it, asked for one at a time:
    the facts behind them are most of an analysis' size."""

    def timeline(self, stream: StreamView) -> list[TimelineEntry]:
        ask = getattr(self, "_ask_timeline", None)
        return ask(stream) if ask is not None else []


class _PlayedEvents:
    """The Events view's store in replay: the events played so far, read lazily."""

    def __init__(self, source: ReplaySource) -> None:
        self._source = source

    @property
    def first(self) -> int:
        return 0

    @property
    def end(self) -> int:
        return self._source.state.position

    def get(self, index: int) -> EventRow:
        return self._source.event_at(index)


class HeapPolicy:
    """What to do about the cyclic collector while an analysis's objects arrive; by default nothing.

    Collector settings are process-wide, so the entry point chooses (`GcBulkLoad` for the
    `replay` command); a source used inside another program leaves the collector alone.
    """

    def loading(self) -> None:
        """A bulk of long-lived, cycle-free objects is arriving (called from a worker thread)."""

    def loaded(self) -> None:
        """They are all in and live as long as the app."""

    def settled(self) -> None:
        """The load ended, completed or not."""


class GcBulkLoad(HeapPolicy):
    """The collector waits while the objects arrive, then leaves them out of its sweeps.

    Without it the collector sweeps the growing heap over and over while a million streams
    arrive (seconds holding the interpreter lock), and afterwards walks them all on every
    full sweep (about a second per million, the screen stopped meanwhile) to find nothing:
    they hold no cycles. `close()` gives the frozen objects back to the collector.
    """

    def __init__(self) -> None:
        self._was_enabled = gc.isenabled()
        self._lock = threading.Lock()

    def loading(self) -> None:
        with self._lock:
            gc.disable()

    def loaded(self) -> None:
        with self._lock:
            gc.freeze()  # whatever else exists now is frozen with it; refcounting still frees it

    def settled(self) -> None:
        with self._lock:
            if self._was_enabled:
                gc.enable()

    def close(self) -> None:
        with self._lock:
            gc.unfreeze()
            if self._was_enabled:
                gc.enable()


class ReplaySource(DataSource):
    """A recording directory or trace files, with play / pause / step / seek / speed."""

    kind = "replay"
    live = False
    analysis_interval_s = None

    def __init__(self, *paths: str, heap: HeapPolicy | None = None, keylog: str | None = None) -> None:
        """`heap`: what the process does about the collector while a big analysis loads (the
        entry point decides; by default nothing). `keylog`: TLS secrets for captures among the paths."""
        super().__init__()
        self._heap = heap or HeapPolicy()
        if not paths:
            raise ValueError("replay needs a recording directory or trace files")
        self.paths = [str(p) for p in paths]
        self.keylog = keylog
        self.title = f"replay {Path(self.paths[0]).name or self.paths[0]}"
        self.recording: Recording | None = None
        self.error: str | None = None
        self.state = ReplayState()
        self._follow_end = True  # until the user moves, the position follows the index
        self._order_trace = array("I")
        self._order_record = array("I")
        self._order_time = array("d")
        self._node_events: dict[str, list[tuple[float, str, dict[str, Any]]]] = defaultdict(list)
        self._rtt: dict[int, tuple[array, array]] = {}
        self._node_of_trace: list[str] = []
        self._per_node_total: Counter[str] = Counter()
        self._listed_nodes: list[NodeEntry] = []  # from the manifest, until the recording is open
        self._played = _PlayedEvents(self)
        self._thread: threading.Thread | None = None
        self._indexer: _Worker | None = None
        self._analyser: _Worker | None = None
        self._analysis: Analysis | None = None
        self._analysis_error: BaseException | None = None
        self._stop = threading.Event()
        self._play_wall: float | None = None
        self._play_from_ms: float | None = None
        self._snap_cache: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}
        self._streams_by_conn: tuple[Analysis | None, dict[str, list[StreamView]]] = (None, {})
        self.opened = threading.Event()

    # -- life

    async def start(self) -> None:
        try:
            self._listed_nodes = read_nodes(*self.paths)
        except OSError:
            pass  # the indexing child reports what is wrong with the paths
        self._indexer = _Worker("index", self.paths, self.keylog)
        try:
            self._analyser = _Worker("analyse", self.paths, self.keylog)
        except BaseException:
            self._indexer.close()
            raise
        self._thread = threading.Thread(
            target=self._follow, args=(self._indexer,), name="dhtscope-replay-index", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        for worker in (self._indexer, self._analyser):
            if worker is not None:
                worker.close()
        if self._thread is not None:
            self._thread.join(STOP_WAIT_S)

    @property
    def child_pids(self) -> list[int]:
        """The child processes started by `start()` (whether or not still running)."""
        return [w.pid for w in (self._indexer, self._analyser) if w is not None]

    def open_now(self) -> None:
        """Open and index in the calling thread (tests and the benchmark's baseline)."""
        try:
            rec = open_replay(self.paths, self.keylog)
        except (InputError, OSError) as exc:
            self._failed(str(exc))
            return
        self._opened(rec)
        try:
            walk(rec, self._apply, stop=self._stop.is_set)
        finally:
            self._indexed()

    def _follow(self, worker: _Worker) -> None:
        """The indexing child's messages, applied as they come (a thread)."""
        try:
            while True:
                message = worker.recv()
                if message is None:
                    if not self._stop.is_set():
                        self._failed(worker.failure())
                    return
                kind = message[0]
                if kind == "recording":
                    self._opened(message[1])
                elif kind == "chunk":
                    self._apply(message[1])
                elif kind == "indexed":
                    return
                elif kind == "error":
                    self._failed(str(message[1]))
                    return
        finally:
            try:
                worker.close()  # its work is done: reap it rather than leave a zombie until stop()
            finally:
                self._indexed()

    def _opened(self, rec: Recording) -> None:
        self._node_of_trace = [node_of(t) for t in rec.traces]
        self.recording = rec
        self.opened.set()

    def _failed(self, error: str) -> None:
        self.error = error
        self.opened.set()

    def _apply(self, chunk: IndexChunk) -> None:
        """Events indexed elsewhere joined to ours: arrays first, then the count that reveals them."""
        self._order_trace.extend(chunk.order_trace)
        self._order_record.extend(chunk.order_record)
        self._order_time.extend(chunk.order_time)
        for node, events in chunk.node_events.items():
            self._node_events[node].extend(events)
        self._per_node_total.update(chunk.per_node)
        self._rtt.update(chunk.rtt)
        state = self.state
        total = len(self._order_time)
        if total:
            if state.first_ms is None:
                state.first_ms = self._order_time[0]
            state.last_ms = self._order_time[total - 1]  # the newest so far: the bar's "of" time
        state.total = total

    def _indexed(self) -> None:
        state = self.state
        if state.total:
            state.last_ms = self._order_time[state.total - 1]
        state.indexing = False
        self.opened.set()

    # -- playing

    @property
    def replay(self) -> ReplayState:
        return self.state

    @property
    def events(self) -> _PlayedEvents:
        return self._played

    def event_at(self, index: int) -> EventRow:
        rec = self.recording
        assert rec is not None
        i = self._order_trace[index]
        trace = rec.traces[i]
        ev = trace[self._order_record[index]]
        return EventRow(ev.time_ms, self._node_of_trace[i], ev.name, trace.info.odcid, ev.data)

    def _set_position(self, position: int) -> None:
        state = self.state
        position = max(0, min(position, state.total))
        state.position = position
        state.time_ms = self._order_time[position - 1] if position > 0 else None

    def tick(self) -> None:
        state = self.state
        if self._follow_end:
            if state.position != state.total:
                self._set_position(state.total)
            return
        if not state.playing or self._play_wall is None or self._play_from_ms is None:
            return
        target_ms = self._play_from_ms + (time.monotonic() - self._play_wall) * 1000.0 * state.speed
        total = state.total
        position = bisect.bisect_right(self._order_time, target_ms, state.position, total)
        if position != state.position:
            self._set_position(position)
        if position >= total and not state.indexing:
            state.playing = False

    def play(self) -> None:
        state = self.state
        if state.position >= state.total and not state.indexing:
            self._set_position(0)  # at the end: play from the start
        self._follow_end = False
        state.playing = True
        self._play_wall = time.monotonic()
        start = (
            self._order_time[state.position - 1] if state.position else (self._order_time[0] if state.total else 0.0)
        )
        self._play_from_ms = start

    def pause(self) -> None:
        self.state.playing = False
        self._follow_end = False

    def toggle(self) -> None:
        if self.state.playing:
            self.pause()
        else:
            self.play()

    def step(self, delta: int) -> None:
        self.pause()
        self._set_position(self.state.position + delta)

    def seek(self, time_ms: float) -> None:
        """Jump to the last event at or before `time_ms` (absolute ms since the epoch)."""
        self._follow_end = False
        self._set_position(bisect.bisect_right(self._order_time, time_ms, 0, self.state.total))
        if self.state.playing:
            self.play()

    def seek_relative(self, seconds: float) -> None:
        """Jump to `seconds` after the recording's first event."""
        first = self.state.first_ms if self.state.first_ms is not None else 0.0
        self.seek(first + seconds * 1000.0)

    def to_start(self) -> None:
        self.pause()
        self._set_position(0)

    def to_end(self) -> None:
        self.pause()
        self._follow_end = True
        self._set_position(self.state.total)

    def faster(self, up: bool) -> float:
        speeds = SPEEDS
        i = min(range(len(speeds)), key=lambda k: abs(speeds[k] - self.state.speed))
        i = min(i + 1, len(speeds) - 1) if up else max(i - 1, 0)
        was_playing = self.state.playing
        self.state.speed = speeds[i]
        if was_playing:
            self.play()
        return self.state.speed

    # -- views

    def _entries(self) -> list[NodeEntry]:
        rec = self.recording
        if rec is None:
            return list(self._listed_nodes)
        names = [n.name for n in rec.nodes]
        extra = [
            NodeEntry(name=n, node_id=None, address=None, role=None)
            for n in dict.fromkeys(self._node_of_trace)
            if n not in names
        ]
        return [*rec.nodes, *extra]

    def now(self) -> float:
        t = self.state.time_ms
        if t is None:
            t = self.state.first_ms or 0.0
        return t / 1000.0

    def nodes(self) -> list[NodeInfo]:
        out = []
        for entry in self._entries():
            snap = self.snapshot(entry.name) or {}
            node = snap.get("node", {})
            started = node.get("started_at") is not None
            out.append(
                NodeInfo(
                    name=entry.name,
                    role=entry.role or str(node.get("role") or "?"),
                    node_id=entry.node_id or str(node.get("id") or ""),
                    address=entry.address or str(node.get("address") or "?"),
                    state="recorded" if started or not self._node_events.get(entry.name) else "not started",
                    connections=len(snap.get("connections", [])),
                    contacts=int(node.get("contacts", 0)),
                    records=int(node.get("records", 0)),
                    events=self._per_node_total.get(entry.name, 0),
                    faults=tuple(node.get("faults", ())),
                    detail=self.paths[0],
                )
            )
        return out

    def snapshot(self, node: str) -> dict[str, Any] | None:
        if self.recording is None:
            return None
        key = (self.state.position, self.state.total, id(self.analysis_for_snapshot))
        cached = self._snap_cache.get(node)
        if cached is not None and cached[0] == key:
            return cached[1]
        snap = self._build_snapshot(node)
        self._snap_cache[node] = (key, snap)
        return snap

    analysis_for_snapshot: Analysis | None = None

    def _build_snapshot(self, name: str) -> dict[str, Any]:
        if self._follow_end:
            t_ms = float("inf")
        else:
            t_ms = self.state.time_ms if self.state.time_ms is not None else -1.0
        entry = next((e for e in self._entries() if e.name == name), None)
        info: dict[str, Any] = {
            "name": name,
            "id": entry.node_id if entry else None,
            "address": entry.address if entry else None,
            "role": entry.role if entry else None,
            "faults": [],
            "started_at": None,
        }
        buckets: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
        replacements: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
        records: dict[tuple[str, str], dict[str, Any]] = {}
        events = self._node_events.get(name, [])
        end = bisect.bisect_right(events, t_ms, key=lambda e: e[0]) if events else 0
        for when, ev, d in events[:end]:
            if ev == "dht:node_started":
                info["started_at"] = when / 1000.0
                info["id"] = info["id"] or d.get("node_id")
                info["address"] = info["address"] or d.get("address")
                info["role"] = info["role"] or d.get("role")
                info["faults"] = list(d.get("scenario") or [])
            elif ev == "dht:scenario_changed":
                info["faults"] = list(d.get("faults") or [])
            elif ev == "dht:routing_updated":
                peer, bucket = str(d.get("peer_id")), int(d.get("bucket") or 0)
                action = d.get("action")
                if action in ("added", "updated", "refreshed"):
                    replacements[bucket].pop(peer, None)
                    buckets[bucket][peer] = {
                        "id": peer,
                        "address": d.get("address"),
                        "last_seen": when / 1000.0,
                        "failures": 0,
                    }
                elif action in ("removed", "evicted"):
                    buckets[bucket].pop(peer, None)
                elif action == "replacement_cached":
                    replacements[bucket][peer] = {"id": peer, "address": d.get("address"), "last_seen": when / 1000.0}
            elif ev == "dht:record_stored":
                k = (str(d.get("key")), str(d.get("publisher")))
                exp = d.get("expires_at_ms")
                records[k] = {
                    "key": k[0],
                    "name": d.get("name"),
                    "publisher": k[1],
                    "value": d.get("value", "-"),
                    "seq": d.get("seq"),
                    "expires_at": exp / 1000.0 if isinstance(exp, (int, float)) else None,
                    "signature": "valid (at store)",
                }
            elif ev == "dht:record_refused":
                k = (str(d.get("key")), str(d.get("publisher")))
                records.setdefault(
                    k,
                    {
                        "key": k[0],
                        "name": d.get("name"),
                        "publisher": k[1],
                        "value": "-",
                        "seq": None,
                        "expires_at": None,
                        "signature": f"refused: {d.get('reason')}",
                    },
                )
            elif ev == "dht:record_expired":
                records.pop((str(d.get("key")), str(d.get("publisher"))), None)
        now_s = self.now() if not self._follow_end else ((self.state.last_ms or 0.0) / 1000.0)
        for r in records.values():
            r["expires_in_s"] = round(r["expires_at"] - now_s, 1) if r["expires_at"] is not None else None
        routing: list[dict[str, Any]] = [
            {"index": i, "contacts": list(buckets[i].values()), "replacements": list(replacements.get(i, {}).values())}
            for i in sorted(set(buckets) | set(replacements))
            if buckets[i] or replacements.get(i)
        ]
        info["contacts"] = sum(len(b["contacts"]) for b in routing)
        info["records"] = sum(1 for r in records.values() if r["seq"] is not None)
        return {
            "node": info,
            "connections": self._connections(name, t_ms),
            "routing": routing,
            "records": list(records.values()),
            "advertisements": [],
            "stats": {},
        }

    def _connections(self, name: str, t_ms: float) -> list[dict[str, Any]]:
        analysis = self.analysis_for_snapshot
        if analysis is None:
            return []
        out = []
        streams_by_conn = self._streams_of(analysis)
        for c in analysis.connections:
            mine = next((e for e in c.ends if e.node == name), None)
            if mine is None or (c.first_ms is not None and c.first_ms > t_ms):
                continue
            other = c.server if mine is c.client else c.client
            closed = c.state == "closed" and (c.last_ms is None or c.last_ms <= t_ms)
            streams = [s for s in streams_by_conn.get(c.id, []) if s.first_ms is None or s.first_ms <= t_ms]
            sent = c.bytes_client_to_server if mine is c.client else c.bytes_server_to_client
            received = c.bytes_server_to_client if mine is c.client else c.bytes_client_to_server
            out.append(
                {
                    "odcid": c.id,
                    "role": mine.vantage,
                    "peer_address": other.node if other else "?",
                    "peer_id": None,
                    "open": not closed,
                    "rtt_ms": self._rtt_at(mine, t_ms, c.rtt_ms),
                    "rtt_series": self._rtt_series(mine, t_ms),
                    "bytes_sent": sent,
                    "bytes_received": received,
                    "streams_opened": len(streams),
                    "streams_open": sum(1 for s in streams if s.last_ms is not None and s.last_ms > t_ms),
                    "close_reason": (c.close_reason or c.close_trigger) if closed else None,
                    "close_trigger": c.close_trigger if closed else None,
                    "stream_credit": credit.text if (credit := c.credit_to(name)) is not None else None,
                }
            )
        return out

    def _streams_of(self, analysis: Analysis) -> dict[str, list[StreamView]]:
        """The analysis' streams by connection, grouped once per analysis (not per snapshot)."""
        grouped, by_conn = self._streams_by_conn
        if grouped is not analysis:
            by_conn = defaultdict(list)
            for s in analysis.streams:
                by_conn[s.connection].append(s)
            self._streams_by_conn = (analysis, by_conn)
        return by_conn

    def _trace_index(self, end: Any) -> int | None:
        rec = self.recording
        if rec is None:
            return None
        for i, t in enumerate(rec.traces):
            if t.info.path == end.path and t.info.index == end.trace_index:
                return i
        return None

    def _rtt_series(self, end: Any, t_ms: float) -> list[float]:
        i = self._trace_index(end)
        if i is None or i not in self._rtt:
            return []
        times, values = self._rtt[i]
        stop = bisect.bisect_right(times, t_ms)
        return list(values[max(0, stop - 120) : stop])

    def _rtt_at(self, end: Any, t_ms: float, default: float | None) -> float | None:
        series = self._rtt_series(end, t_ms)
        return round(series[-1], 3) if series else (round(default, 3) if default is not None else None)

    def analyse(self) -> Analysis | None:
        """Blocking (the app runs it in a worker thread): the analysing child's result once it comes,
        or, after `open_now()`, an analysis made here. Raises what the child raised."""
        if self._analysis is not None:
            return self._analysis
        if self._analysis_error is not None:
            raise self._analysis_error
        worker = self._analyser
        analysis: Analysis | None
        if worker is None:
            self.opened.wait(30.0)
            if self.recording is None:
                return None
            analysis = analyse(self.recording)
        else:
            with worker.lock:
                analysis = self._receive_analysis(worker)
            if analysis is None:
                return None
        self._analysis = analysis
        self.analysis_for_snapshot = analysis
        return analysis

    def _receive_analysis(self, worker: _Worker) -> Analysis | None:
        head: Analysis | None = None
        streams: list[StreamView] = []
        try:
            while True:
                message = worker.recv()
                if message is None:
                    if self._stop.is_set():
                        return None
                    self._analysis_error = RuntimeError(worker.failure())
                    raise self._analysis_error
                kind = message[0]
                if kind == "analysis":
                    head = message[1]
                    # The stream list to come is the bulk of an analysis: a million small objects
                    # for a big recording (see HeapPolicy).
                    self._heap.loading()
                elif kind == "streams":
                    streams.extend(message[1])
                    time.sleep(0.002)  # let the screen's thread run between messages
                elif kind == "analysed":
                    self._heap.loaded()
                    break
                elif kind == "error":
                    self._analysis_error = message[1]
                    raise self._analysis_error
        finally:
            self._heap.settled()
        assert head is not None
        served = _ServedAnalysis(
            **{f.name: getattr(head, f.name) for f in dataclasses.fields(Analysis) if f.name != "streams"},
            streams=streams,
        )
        object.__setattr__(served, "_ask_timeline", self._timeline)
        return served

    def _timeline(self, stream: StreamView) -> list[TimelineEntry]:
        worker = self._analyser
        if worker is None:
            return []
        reply = worker.ask(("timeline", stream.connection, stream.stream_id), TIMELINE_WAIT_S)
        return reply[1] if reply is not None and reply[0] == "timeline" else []
