"""Write dhtscope traces as they happen: one JSON-SEQ `.sqlog` per connection endpoint.

aioquic's own loggers keep every event in memory and write at connection close (a crash
leaves nothing; both ends of a connection overwrite each other). `LiveQuicLogger` is a
drop-in `QuicConfiguration.quic_logger` whose traces append to their own file instead,
flushed at least every `flush_interval_s`. Layout and header: docs/trace-events.md.

A recording's files share one `TraceFiles`: it keeps at most `max_open` of them open
(closing the least recently written, reopening it in append mode on its next write), so
a node's file descriptor limit does not cap its connections; and the first failure to
open or write any of them (EACCES, EROFS, ENOENT, ENOSPC, EMFILE that closing files did
not cure) stops the whole recording with one log line and one `on_stopped` call, instead
of an exception in the code that logged the event.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from itertools import chain, count
from pathlib import Path
from typing import Any

import orjson
from aioquic.quic.logger import QuicLoggerTrace

from . import _json

PathLike = str | os.PathLike[str]

log = logging.getLogger(__name__)

RS = b"\x1e"
NL = b"\n"
MAX_BUFFERED_RECORDS = 4096  # written out at once, not waiting for the flush timer

# aioquic logs these only between packets, never while a received packet's frames are
# being handled, so seeing one means the held packet_received is complete.
_PACKET_BOUNDARY = frozenset(
    {
        "transport:packet_received",
        "transport:packet_sent",
        "transport:packet_dropped",
        "transport:datagrams_received",
        "transport:datagrams_sent",
    }
)
# aioquic events left out of recordings: with one 1-RTT packet per datagram the datagram
# events repeat what packet_sent/packet_received say, and the spin bit is for on-path
# observers. Together they were a quarter of the events of a recorded RPC.
NOT_RECORDED = frozenset({"transport:datagrams_sent", "transport:datagrams_received", "connectivity:spin_bit_updated"})
# A safety valve: never hold more than this many events waiting for a boundary.
_MAX_HELD = 256

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
_REOPEN_FLAGS = os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)  # never O_CREAT: a removed file stays removed

# Trace files one recording keeps open at once; the rest are reopened in append mode when
# next written. A node with 1,024 connections would otherwise need 1,024 descriptors.
MAX_OPEN_TRACE_FILES = 128
MIN_OPEN_TRACE_FILES = 4  # the least it shrinks to when the process runs out of descriptors
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)


def _header(node_name: str, vantage: str, reference_ms: float, odcid: str | None) -> dict[str, Any]:
    """The first record: qlog 0.3 fields qvis reads plus current-draft fields."""
    common: dict[str, Any] = {}
    if odcid is not None:
        common["ODCID"] = odcid
        common["group_id"] = odcid
    common["reference_time"] = reference_ms
    common["time_format"] = "relative"
    common["protocol_type"] = ["QUIC", "DHT"]
    return {
        "qlog_version": "0.3",
        "qlog_format": "JSON-SEQ",
        "file_schema": "urn:ietf:params:qlog:file:sequential",
        "serialization_format": "application/qlog+json-seq",
        "title": f"dhtscope {node_name}",
        "trace": {
            "vantage_point": {"type": vantage, "name": node_name},
            "common_fields": common,
        },
    }


class RecordingStopped(OSError):
    """The recording has stopped (an earlier failure); nothing more is written."""


class TraceFiles:
    """The files of one recording: at most `max_open` open at once, and one verdict when any fails.

    `on_stopped(info)` is called once, with {"reason", "errno", "path"}, when recording stops.
    """

    def __init__(
        self, max_open: int = MAX_OPEN_TRACE_FILES, on_stopped: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.max_open = max(MIN_OPEN_TRACE_FILES, max_open)
        self.on_stopped = on_stopped
        self.stopped: dict[str, Any] | None = None
        self.reopened = 0  # files closed to stay under max_open and opened again later
        self._open: OrderedDict[int, _SeqWriter] = OrderedDict()  # by id(writer), least recently written first

    @property
    def open_files(self) -> int:
        return len(self._open)

    def create(self, directory: Path, stem: str, first: str | None = None) -> tuple[int, Path]:
        """Create a new file that did not exist before (O_EXCL), so no two writers share one.

        `first` is tried as-is before numbered names `<stem>-<n>.sqlog`. RecordingStopped if
        recording has stopped or stops now.
        """
        self._check()
        names = chain([first] if first else [], (f"{stem}-{n}.sqlog" for n in count()))
        for name in names:
            path = directory / name
            try:
                return self._os_open(path, _OPEN_FLAGS), path
            except FileExistsError:
                continue
            except OSError as exc:
                raise self.fail(exc, "create", path) from None
        raise AssertionError("unreachable")

    def fd(self, writer: _SeqWriter) -> int:
        """The writer's descriptor, reopened if it was closed to make room; RecordingStopped on failure."""
        self._check()
        key = id(writer)
        fd = writer._fd
        if fd is None:
            try:
                fd = self._os_open(writer.path, _REOPEN_FLAGS)
            except OSError as exc:
                raise self.fail(exc, "reopen", writer.path) from None
            writer._fd = fd
            self.reopened += 1
        self.adopt(writer)
        if key in self._open:
            self._open.move_to_end(key)
        return fd

    def adopt(self, writer: _SeqWriter) -> None:
        """Count a writer's open descriptor; close others, least recently written first, to stay under max_open."""
        key = id(writer)
        if key in self._open:
            return
        self._open[key] = writer
        self._trim(keep=writer)

    def release(self, writer: _SeqWriter) -> None:
        """The writer is done: close its descriptor."""
        self._open.pop(id(writer), None)
        writer._close_fd()

    def _trim(self, keep: _SeqWriter | None = None) -> None:
        while len(self._open) > self.max_open:
            key, oldest = next(iter(self._open.items()))
            if oldest is keep:
                self._open.move_to_end(key)
                continue
            del self._open[key]
            oldest._park()

    def _os_open(self, path: Path, flags: int) -> int:
        try:
            return os.open(path, flags, 0o644)
        except OSError as exc:
            if exc.errno not in _OUT_OF_DESCRIPTORS or len(self._open) <= MIN_OPEN_TRACE_FILES:
                raise
        # The process is out of descriptors: keep fewer of ours open from now on, and try once more.
        self.max_open = max(MIN_OPEN_TRACE_FILES, len(self._open) // 2)
        log.warning("out of file descriptors: keeping at most %d trace files open", self.max_open)
        self._trim()
        return os.open(path, flags, 0o644)

    def _check(self) -> None:
        if self.stopped is not None:
            raise RecordingStopped(self.stopped["reason"])

    def fail(self, exc: OSError, doing: str, path: Path) -> RecordingStopped:
        """Stop the recording (once): close every file, log one line, tell `on_stopped`."""
        if self.stopped is None:
            code = errno.errorcode.get(exc.errno or 0, "error") if exc.errno else type(exc).__name__
            reason = f"cannot {doing} {path}: {exc.strerror or exc} ({code})"
            self.stopped = {"reason": reason, "errno": code, "path": str(path)}
            log.error("recording stopped: %s; the node keeps serving without it", reason)
            for writer in list(self._open.values()):
                writer._close_fd()
                writer._closed = True
            self._open.clear()
            if self.on_stopped is not None:
                try:
                    self.on_stopped(dict(self.stopped))
                except Exception:  # whoever listens must not turn a stopped recording into a crash
                    log.exception("on_stopped failed")
        return RecordingStopped(self.stopped["reason"])


class _SeqWriter:
    """Append-only JSON-SEQ file with an in-memory buffer written out by time.

    Crash safety comes from writing whole records with os.write: data handed to the kernel
    survives SIGKILL, so a killed process loses only what sat in the buffer, and at worst
    leaves one truncated last record, which the reader skips.
    """

    path: Path
    reference_ms: float
    _fd: int | None = None
    _closed: bool = True

    def _open_writer(
        self, files: TraceFiles, fd: int, path: Path, header: dict[str, Any], flush_interval_s: float
    ) -> None:
        self.path = path
        self._files = files
        self._fd = fd
        self._closed = False
        self._buf: list[bytes] = []
        self._interval = flush_interval_s
        self._last_write = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        files.adopt(self)
        self._buf.append(RS + _json.dumps(header) + NL)
        self._write_out()  # the header goes to disk at once: the file is readable from birth

    @property
    def closed(self) -> bool:
        """True once closed (or after a failure stopped the recording)."""
        return self._closed

    @property
    def error(self) -> str | None:
        """Why the recording this file belongs to stopped, if it did."""
        stopped = self._files.stopped
        return stopped["reason"] if stopped else None

    def _emit(self, t_s: float, name: str, data: Any) -> None:
        """Serialise one event now and buffer it; write out if the last write is old."""
        # Microseconds, truncated: cheaper than round(), and the same 3 decimals.
        time_ms = int((t_s * 1000.0 - self.reference_ms) * 1000.0) / 1000.0
        buf = self._buf
        # The concatenation copies orjson's over-allocated buffer into a right-sized one;
        # holding orjson's own bytes in the buffer measured twice as slow.
        buf.append(RS + _json.dumps({"time": time_ms, "name": name, "data": data}) + NL)
        if self._timer is not None:
            # A write is due within the interval anyway; only a large backlog goes out now.
            if len(buf) >= MAX_BUFFERED_RECORDS:
                self._write_out()
        elif time.monotonic() - self._last_write >= self._interval:
            self._write_out()
        elif len(buf) == 1:
            self._arm_timer()  # first record since the last write: make sure one follows

    def _arm_timer(self) -> None:
        # When an event loop runs, make sure buffered events reach the file within the
        # interval even if no further event arrives to trigger the write.
        if self._timer is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(self._interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def _write_out(self) -> None:
        """Hand buffered records to the kernel."""
        self._last_write = time.monotonic()
        if not self._buf or self._closed:
            self._buf.clear()
            return
        data = memoryview(b"".join(self._buf))
        self._buf.clear()
        try:
            fd = self._files.fd(self)
            while data:
                data = data[os.write(fd, data) :]
        except RecordingStopped:
            self._closed = True  # a full disk, a removed directory: the node goes on without us
        except OSError as exc:
            self._files.fail(exc, "write", self.path)
            self._closed = True

    def _release(self) -> None:
        """Hook: serialise events held back for completeness (LiveTrace)."""

    def flush(self) -> None:
        """Write everything logged so far to the file (call after each datagram is handled)."""
        self._release()
        self._write_out()

    def _park(self) -> None:
        """Close the descriptor to make room for another file; the next write reopens it."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass

    def _close_fd(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._park()

    def close(self) -> None:
        """Flush and close; later events are ignored."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._files.release(self)


class LiveTrace(QuicLoggerTrace, _SeqWriter):
    """One connection endpoint's trace, written to `<odcid>-<client|server>-<n>.sqlog`.

    A `QuicLoggerTrace`, so aioquic's `encode_*` helpers work; `log_event` appends to the
    file instead of memory. aioquic logs `transport:packet_received` before it fills the
    packet's frame list, and logs other events (metrics_updated from an ACK, key updates)
    while the frames are still being handled. So a packet_received and everything after
    it are held unserialised until the next packet boundary, a custom `log()`, `flush()` or
    close; by then aioquic has finished with the packet.
    """

    def __init__(
        self,
        directory: PathLike,
        node_name: str,
        *,
        is_client: bool,
        odcid: bytes,
        flush_interval_s: float = 0.1,
        files: TraceFiles | None = None,
    ) -> None:
        QuicLoggerTrace.__init__(self, is_client=is_client, odcid=odcid)
        role = "client" if is_client else "server"
        self._vantage_point = {"name": node_name, "type": role}
        self.node_name = node_name
        self.odcid = odcid.hex()
        self.reference_ms = time.time() * 1000.0
        self._held: list[tuple[float, str, Any]] = []
        directory = Path(directory)
        if files is None:  # a trace on its own; a logger's traces find the directory made (or removed)
            files = TraceFiles()
            directory.mkdir(parents=True, exist_ok=True)
        fd, path = files.create(directory, f"{self.odcid or 'none'}-{role}")
        self._open_writer(files, fd, path, _header(node_name, role, self.reference_ms, self.odcid), flush_interval_s)

    def log_event(self, *, category: str, event: str, data: dict[str, Any]) -> None:
        """aioquic's entry point: record one event (possibly held until its packet is done)."""
        if self._closed:
            return
        now = time.time()
        name = f"{category}:{event}"
        if self._held:
            if name in _PACKET_BOUNDARY or len(self._held) >= _MAX_HELD:
                self._release()
            elif name not in NOT_RECORDED:
                self._held.append((now, name, data))
                return
        if name in NOT_RECORDED:
            return
        if name == "transport:packet_received":
            self._held.append((now, name, data))
            self._arm_timer()
            return
        self._emit(now, name, data)

    def log(self, name: str, data: dict[str, Any]) -> None:
        """Record a dhtscope event (`quic:stream_data_moved`, `dht:rpc_sent`, ...).

        The application only runs between aioquic calls, so any held packet is complete.
        """
        if self._closed:
            return
        self._release()
        self._emit(time.time(), name, data)

    def _release(self) -> None:
        held, self._held = self._held, []
        for t_s, name, data in held:
            self._emit(t_s, name, data)

    def __repr__(self) -> str:
        return f"<LiveTrace {self.path}>"


class LiveQuicLogger:
    """`QuicConfiguration.quic_logger` that streams each connection to its own `.sqlog`.

    Safe to share between configurations/nodes: `end_trace` closes any LiveTrace, whoever
    started it, and ignores traces of other kinds.
    """

    def __init__(
        self, directory: PathLike, node_name: str, flush_interval_s: float = 0.1, files: TraceFiles | None = None
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.node_name = node_name
        self.flush_interval_s = flush_interval_s
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
        """Called by aioquic when a connection ends: flush and close its file."""
        if isinstance(trace, LiveTrace):
            trace.close()
        self._traces.pop(id(trace), None)

    @property
    def traces(self) -> list[LiveTrace]:
        """Traces started here and not yet ended."""
        self._prune()
        return list(self._traces.values())

    def flush(self) -> None:
        """Flush every open trace (for a periodic timer)."""
        self._prune()
        for trace in list(self._traces.values()):
            trace.flush()

    def close(self) -> None:
        """Close every trace still open (process shutdown)."""
        traces, self._traces = list(self._traces.values()), {}
        for trace in traces:
            trace.close()


class NodeTrace(_SeqWriter):
    """Node-level events (`dht:lookup_started`, `dht:routing_updated`, ...) in `node.sqlog`.

    Also writes the node's `node.json`. If `node.sqlog` already exists (a restarted node),
    the new file is `node-<n>.sqlog` rather than overwriting the earlier evidence.
    """

    def __init__(
        self,
        directory: PathLike,
        node_name: str,
        node_entry: dict[str, Any],
        flush_interval_s: float = 0.1,
        files: TraceFiles | None = None,
    ) -> None:
        directory = Path(directory)
        self.node_name = node_name
        self.reference_ms = time.time() * 1000.0
        write_node_entry(directory, node_entry)
        files = files or TraceFiles()
        fd, path = files.create(directory, "node", first="node.sqlog")
        self._open_writer(files, fd, path, _header(node_name, "unknown", self.reference_ms, None), flush_interval_s)

    def log(self, name: str, data: dict[str, Any]) -> None:
        """Record one node-level event."""
        if not self._closed:
            self._emit(time.time(), name, data)

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
    "LiveQuicLogger",
    "LiveTrace",
    "NodeTrace",
    "RecordingStopped",
    "TraceFiles",
    "write_manifest",
    "write_node_entry",
]
