"""A replay's heavy work: indexing a recording and analysing it, run in a child process.

    python -m dhtscope.tui.sources.replay_worker index|analyse FD [--keylog FILE] PATH...

`ReplaySource.start()` runs two of these beside the app, one per job, so parsing every
event never competes with the screen for the interpreter lock:

* `index` opens the recording, sends it (the traces pickle as their record index, so
  the app reads single events without scanning the files again), then walks every
  event once and sends the global time order in chunks as it goes. A capture's
  connections come split into their two ends, as the analysis sees them.
* `analyse` opens the recording, analyses it and sends the Analysis with its stream
  list in chunks; it then stays to answer stream-timeline requests, so the per-trace
  facts behind the timelines never have to cross.

FD is the child's end of a `multiprocessing.Pipe`. The child exits when its stdin
closes: the app closes it to stop the child, and the system closes it if the app dies.
Only `dhtscope.tracing` is imported here; `walk` is also what `ReplaySource.open_now()`
runs in-process.
"""

from __future__ import annotations

import copyreg
import dataclasses
import heapq
import io
import operator
import os
import pickle
import sys
import time
from array import array
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from dhtscope.node.runtime import exit_when_stdin_closes
from dhtscope.tracing.analysis import (
    ConnectionEnd,
    ConnectionView,
    Evidence,
    Finding,
    Step,
    StreamView,
    TimelineEntry,
    analyse,
)
from dhtscope.tracing.inputs import open_inputs
from dhtscope.tracing.model import Event, NodeEntry, Recording, Trace, TraceInfo
from dhtscope.tracing.vantage import split_network_traces

NODE_EVENTS = frozenset(
    {
        "dht:node_started",
        "dht:routing_updated",
        "dht:record_stored",
        "dht:record_expired",
        "dht:record_refused",
        "dht:scenario_changed",
    }
)
RTT_SAMPLES_PER_TRACE = 2_000
CHUNK_INTERVAL_S = 0.25  # the index is sent this often, so the views grow with it
STREAMS_PER_MESSAGE = 1_000  # the receiver unpickles one message at a time, between screen updates
NICE = 5  # background work: the screen's process comes first


def node_of(trace: Trace) -> str:
    """The node a trace belongs to: the name the reader gave it, else its directory's."""
    return trace.info.node or Path(trace.info.path).parent.name


@dataclasses.dataclass
class IndexChunk:
    """Events indexed since the previous chunk, in global time order."""

    order_trace: array  # "I": the trace of each event (index into recording.traces)
    order_record: array  # "I": its record number in that trace
    order_time: array  # "d": its time, ms since the epoch
    node_events: dict[str, list[tuple[float, str, dict[str, Any]]]]  # NODE_EVENTS, by node, in time order
    per_node: dict[str, int]  # events per node in this chunk
    rtt: dict[int, tuple[array, array]]  # smoothed-RTT samples (times, values) of traces read to the end


def walk(
    rec: Recording,
    emit: Callable[[IndexChunk], None],
    interval_s: float = CHUNK_INTERVAL_S,
    stop: Callable[[], bool] | None = None,
) -> None:
    """One pass over every trace, merged into time order; `emit` gets a chunk every `interval_s`.

    Node events travel through the merge with their event, so each node's history comes
    out in time order with no sort at the end. `stop` is asked between chunks.
    """
    names = [node_of(t) for t in rec.traces]
    finished_rtt: dict[int, tuple[array, array]] = {}

    def events_of(i: int, trace: Trace) -> Iterator[tuple[float, int, int, tuple[str, dict[str, Any]] | None]]:
        rtt_t, rtt_v = array("d"), array("d")
        it = trace.iter_range(0, None) if hasattr(trace, "iter_range") else iter(trace)
        for ev in it:
            name = ev.name
            if name in NODE_EVENTS:
                yield ev.time_ms, i, ev.record, (name, ev.data)
                continue
            if name == "quic:recovery_metrics_updated" and len(rtt_t) < RTT_SAMPLES_PER_TRACE:
                rtt = ev.data.get("smoothed_rtt")
                if isinstance(rtt, (int, float)):
                    rtt_t.append(ev.time_ms)
                    rtt_v.append(float(rtt))
            # (time, trace, record) is unique: the merge never compares the last item.
            yield ev.time_ms, i, ev.record, None
        if rtt_t:
            finished_rtt[i] = (rtt_t, rtt_v)

    counts = [0] * len(names)
    chunk = IndexChunk(array("I"), array("I"), array("d"), {}, {}, {})

    def flush() -> IndexChunk:
        per_node: dict[str, int] = {}
        for i, n in enumerate(counts):
            if n:
                per_node[names[i]] = per_node.get(names[i], 0) + n
                counts[i] = 0
        chunk.per_node = per_node
        chunk.rtt = dict(finished_rtt)
        finished_rtt.clear()
        emit(chunk)
        return IndexChunk(array("I"), array("I"), array("d"), {}, {}, {})

    due = time.monotonic() + interval_s
    add_t, add_r, add_time = chunk.order_trace.append, chunk.order_record.append, chunk.order_time.append
    merged = heapq.merge(*(events_of(i, t) for i, t in enumerate(rec.traces)))
    for n, (t_ms, i, record, node_event) in enumerate(merged, start=1):
        add_t(i)
        add_r(record)
        add_time(t_ms)
        counts[i] += 1
        if node_event is not None:
            chunk.node_events.setdefault(names[i], []).append((t_ms, *node_event))
        if n & 0xFFF == 0 and time.monotonic() >= due:
            chunk = flush()
            add_t, add_r, add_time = chunk.order_trace.append, chunk.order_record.append, chunk.order_time.append
            due = time.monotonic() + interval_s
            if stop is not None and stop():
                return
    flush()


# -- pickling: the analysis' frozen dataclasses rebuilt by their constructors

_FAST_CLASSES = (
    Evidence,
    Step,
    ConnectionEnd,
    ConnectionView,
    StreamView,
    Finding,
    TimelineEntry,
    Event,
    NodeEntry,
    TraceInfo,
)


def _reducer(cls: type) -> Callable[[Any], tuple[type, tuple[Any, ...]]]:
    get = operator.attrgetter(*(f.name for f in dataclasses.fields(cls)))
    return lambda obj: (cls, get(obj))


# A frozen slots dataclass unpickles through a Python __setstate__ that looks up its fields
# for every object: about 3x slower than calling the constructor, and the receiving end is
# the app's process. Instances of subclasses keep the default reduction.
_DISPATCH: dict[type, Any] = {**copyreg.dispatch_table, **{cls: _reducer(cls) for cls in _FAST_CLASSES}}


def dumps(obj: Any) -> bytes:
    """Pickle for the pipe; any pickle reader loads it (`Connection.recv` does)."""
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(obj)
    return buf.getvalue()


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling, else one that says the same."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


# -- the child


def _index(conn: Connection, rec: Recording) -> None:
    conn.send_bytes(dumps(("recording", rec)))
    walk(rec, lambda chunk: conn.send_bytes(dumps(("chunk", chunk))))
    conn.send_bytes(dumps(("indexed",)))


def _analyse(conn: Connection, rec: Recording) -> None:
    analysis = analyse(rec)
    streams = analysis.streams
    conn.send_bytes(dumps(("analysis", dataclasses.replace(analysis, streams=[], _ends={}), len(streams))))
    for k in range(0, len(streams), STREAMS_PER_MESSAGE):
        conn.send_bytes(dumps(("streams", streams[k : k + STREAMS_PER_MESSAGE])))
    conn.send_bytes(dumps(("analysed",)))
    by_key = {(s.connection, s.stream_id): s for s in streams}
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request[0] == "timeline":
            stream = by_key.get((request[1], request[2]))
            conn.send_bytes(dumps(("timeline", analysis.timeline(stream) if stream is not None else [])))


def open_replay(paths: list[str], keylog: str | None = None) -> Recording:
    """What a replay shows: every input, a capture's connections split into their two ends."""
    return split_network_traces(open_inputs(paths, keylog))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    keylog = None
    if len(args) >= 4 and args[2] == "--keylog":
        keylog = args[3]
        args = args[:2] + args[4:]
    if len(args) < 3 or args[0] not in ("index", "analyse"):
        usage = f"python -m {__spec__.name if __spec__ else __name__} index|analyse FD [--keylog FILE] PATH..."
        print(f"usage: {usage}", file=sys.stderr)
        return 2
    job, fd, paths = args[0], int(args[1]), args[2:]
    conn = Connection(fd)
    exit_when_stdin_closes(graceful=False)  # the app stopped us, or is gone
    try:
        os.nice(NICE)
    except OSError:
        pass
    try:
        rec = open_replay(paths, keylog)
        if job == "index":
            _index(conn, rec)
        else:
            _analyse(conn, rec)
    except (BrokenPipeError, ConnectionResetError):
        return 1  # the app went away mid-send
    except Exception as exc:
        try:
            conn.send_bytes(dumps(("error", _portable(exc))))
        except OSError:
            pass
        return 1
    return 0


if __name__ == "__main__":
    # Run from the module under its package name: what the child pickles (IndexChunk)
    # must name dhtscope.tui.sources.replay_worker, not __main__, for the app to load it.
    from dhtscope.tui.sources.replay_worker import main as _main

    sys.exit(_main())
