"""Write dhtscope traces as they happen: one JSON-SEQ `.sqlog` per connection endpoint.

aioquic's own loggers keep every event in memory and write at connection close (a crash
leaves nothing; both ends of a connection overwrite each other). `LiveQuicLogger` is a
drop-in `QuicConfiguration.quic_logger` whose traces append to their own file instead.
Layout and header: docs/trace-events.md.

Recording an event costs the request path one tuple appended to the recording's `Spool`
(tracing/seqfiles.py): no dict is serialised there. Formatting to JSON-SEQ happens at
handover, at least every `flush_interval_s`, in a writer process (a node's recording) or
in this process (a trace on its own). aioquic's frames are logged as compact tuples and
spelled out as aioquic's dicts by the writer, with the fields the analysis and qvis read.

A recording's files share one `TraceFiles`: the writer keeps at most `max_open` of them
open (reopening the others in append mode), and the first failure to create or write any
of them (EACCES, EROFS, ENOENT, ENOSPC, EMFILE that closing files did not cure) stops the
whole recording with one log line and one `on_stopped` call, instead of an exception in
the code that logged the event.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from aioquic.quic.logger import QuicLoggerTrace

from . import _json
from .seqfiles import (
    F_ACK,
    F_MAX_DATA,
    F_MAX_STREAM_DATA,
    F_MAX_STREAMS,
    F_PADDING,
    F_PING,
    F_STREAM,
    HANDOVER_INTERVAL_S,
    MAX_OPEN_TRACE_FILES,
    MIN_OPEN_TRACE_FILES,
    RecordingStopped,
    Spool,
    TraceFiles,
    header_record,
)

PathLike = str | os.PathLike[str]

NL = b"\n"

# aioquic events left out of recordings: with one 1-RTT packet per datagram the datagram
# events repeat what packet_sent/packet_received say, and the spin bit is for on-path
# observers. Together they were a quarter of the events of a recorded RPC.
NOT_RECORDED = frozenset({"transport:datagrams_sent", "transport:datagrams_received", "connectivity:spin_bit_updated"})
_MAX_DATA_FRAME = 0x10  # QuicFrameType.MAX_DATA: its limit frames are MAX_DATA or MAX_STREAMS_*
_MAX_STREAMS_UNI_FRAME = 0x13
_PADDING_FRAME = (F_PADDING,)
_PING_FRAME = (F_PING,)


class _Trace:
    """A file of the recording: events appended to the spool under its key, until closed."""

    path: Path
    reference_ms: float
    _files: TraceFiles
    _spool: Spool
    _key: int
    _closed: bool = True

    def _start(
        self,
        files: TraceFiles,
        directory: Path,
        stem: str,
        header: tuple[str, str, str | None],
        interval_s: float,
        first: str | None,
    ) -> None:
        self._files = files
        self._spool = files.spool_for(interval_s)
        # Event times count from here, on the clock the spool stamps them with.
        self.reference_ms = self._spool.clock() * 1000.0
        node_name, vantage, odcid = header
        self.path = files.create(directory, stem, header_record(node_name, vantage, self.reference_ms, odcid), first)
        self._key = self._spool.open(self.path, self.reference_ms)
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once closed (or after a failure stopped the recording)."""
        return self._closed or self._files.stopped is not None

    @property
    def error(self) -> str | None:
        """Why the recording this file belongs to stopped, if it did."""
        stopped = self._files.stopped
        return stopped["reason"] if stopped else None

    def log(self, name: str, data: dict[str, Any]) -> None:
        """Record one event (`quic:stream_data_moved`, `dht:rpc_sent`, `dht:lookup_started`, ...).

        `data` is kept as it is until the handover: the caller does not change it afterwards.
        """
        if self._closed:
            return
        spool = self._spool
        spool.records.append((self._key, spool.clock(), name, data))
        if spool.idle:
            spool.wake(True)

    def log_values(self, schema: int, values: tuple[Any, ...]) -> None:
        """Record one event as a schema id (`event_schema`) and its values: no dict on the request path."""
        if self._closed:
            return
        spool = self._spool
        spool.records.append((self._key, spool.clock(), schema, values))
        if spool.idle:
            spool.wake(True)

    def flush(self) -> None:
        """Hand every event held so far to the writer (a trace on its own: written at once)."""
        self._spool.handover()

    def close(self) -> None:
        """Hand over and close; later events are ignored."""
        if self._closed:
            return
        self._closed = True
        self._spool.close_file(self._key)


class LiveTrace(QuicLoggerTrace, _Trace):
    """One connection endpoint's trace, written to `<odcid>-<client|server>-<n>.sqlog`.

    A `QuicLoggerTrace`, so aioquic's `encode_*` helpers work (the frequent frames come back
    as compact tuples that the writer spells out); `log_event` appends to the spool instead of
    memory. aioquic logs `transport:packet_received` before it fills the packet's frame list:
    the list is formatted at handover, which never happens inside aioquic's calls.
    """

    def __init__(
        self,
        directory: PathLike,
        node_name: str,
        *,
        is_client: bool,
        odcid: bytes,
        flush_interval_s: float = HANDOVER_INTERVAL_S,
        files: TraceFiles | None = None,
    ) -> None:
        QuicLoggerTrace.__init__(self, is_client=is_client, odcid=odcid)
        role = "client" if is_client else "server"
        self._vantage_point = {"name": node_name, "type": role}
        self.node_name = node_name
        self.odcid = odcid.hex()
        directory = Path(directory)
        if files is None:  # a trace on its own; a logger's traces find the directory made (or removed)
            files = TraceFiles()
            directory.mkdir(parents=True, exist_ok=True)
        self._start(
            files, directory, f"{self.odcid or 'none'}-{role}", (node_name, role, self.odcid), flush_interval_s, None
        )

    def log_event(self, *, category: str, event: str, data: dict[str, Any]) -> None:
        """aioquic's entry point: record one event."""
        if self._closed:
            return
        name = f"{category}:{event}"
        if name in NOT_RECORDED:
            return
        spool = self._spool
        spool.records.append((self._key, spool.clock(), name, data))
        if spool.idle:
            spool.wake(False)

    # aioquic's most frequent frames, as tuples (seqfiles.py's codes); the writer makes the dicts.

    def encode_stream_frame(self, frame: Any, stream_id: int) -> Any:
        return (F_STREAM, stream_id, frame.offset, len(frame.data), frame.fin)

    def encode_ack_frame(self, ranges: Iterable[range], delay: float) -> Any:
        return (F_ACK, [[x.start, x.stop - 1] for x in ranges], delay * 1000)

    def encode_padding_frame(self) -> Any:
        return _PADDING_FRAME

    def encode_ping_frame(self) -> Any:
        return _PING_FRAME

    def encode_connection_limit_frame(self, frame_type: int, maximum: int) -> Any:
        if frame_type == _MAX_DATA_FRAME:
            return (F_MAX_DATA, maximum)
        return (F_MAX_STREAMS, maximum, "unidirectional" if frame_type == _MAX_STREAMS_UNI_FRAME else "bidirectional")

    def encode_max_stream_data_frame(self, maximum: int, stream_id: int) -> Any:
        return (F_MAX_STREAM_DATA, maximum, stream_id)

    def __repr__(self) -> str:
        return f"<LiveTrace {self.path}>"


class LiveQuicLogger:
    """`QuicConfiguration.quic_logger` that streams each connection to its own `.sqlog`.

    Safe to share between configurations/nodes: `end_trace` closes any LiveTrace, whoever
    started it, and ignores traces of other kinds.
    """

    def __init__(
        self,
        directory: PathLike,
        node_name: str,
        flush_interval_s: float = HANDOVER_INTERVAL_S,
        files: TraceFiles | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.node_name = node_name
        self.flush_interval_s = flush_interval_s
        self._own_files = files is None
        self.files = files or TraceFiles()
        self._traces: dict[int, LiveTrace] = {}

    def start_trace(self, is_client: bool, odcid: bytes) -> LiveTrace | None:
        """Called by aioquic when a connection starts; None (nothing recorded) once recording has stopped."""
        if self.files.stopped is not None:
            return None
        try:
            trace = LiveTrace(
                self.directory,
                self.node_name,
                is_client=is_client,
                odcid=odcid,
                flush_interval_s=self.flush_interval_s,
                files=self.files,
            )
        except OSError:  # RecordingStopped: TraceFiles has said why, once
            return None
        if len(self._traces) >= 64:
            self._prune()
        self._traces[id(trace)] = trace
        return trace

    def _prune(self) -> None:
        # Traces closed by someone else (another logger's end_trace, a write error).
        self._traces = {k: t for k, t in self._traces.items() if not t.closed}

    def end_trace(self, trace: QuicLoggerTrace) -> None:
        """Called by aioquic when a connection ends: close its file (its events are handed over)."""
        if isinstance(trace, LiveTrace):
            trace.close()
        self._traces.pop(id(trace), None)

    @property
    def traces(self) -> list[LiveTrace]:
        """Traces started here and not yet ended."""
        self._prune()
        return list(self._traces.values())

    def flush(self) -> None:
        """Hand every event held so far to the writer."""
        if self.files.spool is not None:
            self.files.spool.handover()

    def close(self) -> None:
        """Close every trace still open (process shutdown)."""
        traces, self._traces = list(self._traces.values()), {}
        for trace in traces:
            trace.close()
        if self.files.spool is not None:
            if self._own_files:
                self.files.spool.close()
            else:
                self.files.spool.handover()


class NodeTrace(_Trace):
    """Node-level events (`dht:lookup_started`, `dht:routing_updated`, ...) in `node.sqlog`.

    Also writes the node's `node.json`. If `node.sqlog` already exists (a restarted node),
    the new file is `node-<n>.sqlog` rather than overwriting the earlier evidence.
    """

    def __init__(
        self,
        directory: PathLike,
        node_name: str,
        node_entry: dict[str, Any],
        flush_interval_s: float = HANDOVER_INTERVAL_S,
        files: TraceFiles | None = None,
    ) -> None:
        directory = Path(directory)
        self.node_name = node_name
        write_node_entry(directory, node_entry)
        self._own_files = files is None
        files = files or TraceFiles()
        self._start(files, directory, "node", (node_name, "unknown", None), flush_interval_s, "node.sqlog")

    def close(self) -> None:
        super().close()
        if self._own_files and self._files.spool is not None:
            self._files.spool.close()

    def __enter__(self) -> NodeTrace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so readers see the old or new file, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_node_entry(directory: PathLike, entry: dict[str, Any]) -> Path:
    """Write `<directory>/node.json` (name, id, address, role, dir); returns its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "node.json"
    _write_atomic(path, orjson.dumps(entry, default=_json._default, option=orjson.OPT_INDENT_2) + NL)
    return path


def write_manifest(recording_dir: PathLike, nodes: list[dict[str, Any]], version: str) -> Path:
    """Write `<recording_dir>/manifest.json` atomically; keeps `created_ms` of an earlier one."""
    recording_dir = Path(recording_dir)
    recording_dir.mkdir(parents=True, exist_ok=True)
    path = recording_dir / "manifest.json"
    created_ms = time.time() * 1000.0
    try:
        old = orjson.loads(path.read_bytes())
        if isinstance(old, dict) and isinstance(old.get("created_ms"), (int, float)):
            created_ms = old["created_ms"]
    except (OSError, orjson.JSONDecodeError):
        pass
    manifest = {"dhtscope_version": version, "created_ms": created_ms, "nodes": nodes}
    _write_atomic(path, orjson.dumps(manifest, default=_json._default, option=orjson.OPT_INDENT_2) + NL)
    return path


__all__ = [
    "MAX_OPEN_TRACE_FILES",
    "MIN_OPEN_TRACE_FILES",
    "LiveQuicLogger",
    "LiveTrace",
    "NodeTrace",
    "RecordingStopped",
    "TraceFiles",
    "write_manifest",
    "write_node_entry",
]
