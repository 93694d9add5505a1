"""JSON-SEQ trace files, and the writer that formats events into them off the request path.

The code that records an event only appends a plain tuple to a `Spool`; at least every
`handover_interval_s` the spool hands what it holds, in order, to a sink. `ProcessSink`
(what a node uses) pickles the batch with `marshal` to a writer process, which formats each
event to JSON-SEQ and writes it; `InlineSink` does the same work in this process. Either
way the formatting is done by `BatchWriter`, after aioquic has finished with every packet
in the batch (it fills a received packet's frame list after logging the packet).

Crash safety: the writer process ends only at the end of its input, so a SIGKILLed node's
writer still writes everything it was handed; with both killed, what is lost is what the
node held since its last handover, at most `handover_interval_s`, plus the batch in flight.

This module imports neither aioquic nor dhtscope.node: the writer process stays small.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import marshal
import os
import select
import signal
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from itertools import chain, count
from pathlib import Path
from typing import Any

import orjson

from . import _json

log = logging.getLogger("dhtscope.tracing.writer")

RS = b"\x1e"
NL = b"\n"

HANDOVER_INTERVAL_S = 0.05  # events wait at most this long in the node: kill both processes, lose at most this
# Held by a spool with no event loop to time handovers: handed over once this many wait.
MAX_HELD_RECORDS = 4096
# Bytes handed to the writer process and not yet taken by it; past this it cannot keep up and
# recording stops, rather than the node's memory growing without bound.
MAX_UNSENT_BYTES = 64 * 2**20
PIPE_BYTES = 2**20  # the handover pipe's capacity (Linux's default is 64 KiB): a burst does not wait
WRITER_EXIT_WAIT_S = 10.0  # at close, how long the writer process may take to write what it holds
SYNC_WAIT_S = 5.0  # how long `sync()` waits for the writer process to confirm a batch
# The writer process runs at this much lower priority: on a busy machine the node's requests
# come first, and the writer catches up while the node waits for the network.
WRITER_NICENESS = 10

# Trace files one recording keeps open at once; the rest are reopened in append mode when
# next written. A node with 1,024 connections would otherwise need 1,024 descriptors.
MAX_OPEN_TRACE_FILES = 128
MIN_OPEN_TRACE_FILES = 4  # the least it shrinks to when the process runs out of descriptors
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
_REOPEN_FLAGS = os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)  # never O_CREAT: a removed file stays removed

_DUMPS_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE

# Records of a batch: (key, time_s, name, data) for an event; ("open", key, path, reference_ms)
# and ("close", key) for a file's life; ("schema", id, name, fields) for an event schema.
# An event whose name is a schema id has a tuple of values for data: the schema names them.
OPEN = "open"
CLOSE = "close"
SCHEMA = "schema"

# Event schemas of this process: id -> (name, field names). The request path records an
# event as a schema id and a tuple of values; the writer makes the dict.
EVENT_SCHEMAS: list[tuple[str, tuple[str, ...]]] = []


def event_schema(name: str, fields: tuple[str, ...]) -> int:
    """Register the fields of an event recorded as a tuple of values; its schema id."""
    EVENT_SCHEMAS.append((name, fields))
    return len(EVENT_SCHEMAS) - 1


def schema_event(schema: int, values: tuple[Any, ...]) -> tuple[str, dict[str, Any]]:
    """The name and data of an event recorded as a schema id and values (for live listeners)."""
    name, fields = EVENT_SCHEMAS[schema]
    return name, dict(zip(fields, values, strict=False))


# Compact frames (tuples whose first item is one of these codes) that a trace's aioquic
# logger builds instead of dicts; BatchWriter spells them out as aioquic's dicts.
F_STREAM, F_ACK, F_PADDING, F_PING, F_MAX_DATA, F_MAX_STREAMS, F_MAX_STREAM_DATA = range(7)


def _expand_frame(frame: Any) -> Any:
    if frame.__class__ is not tuple:
        return frame
    code = frame[0]
    if code == F_STREAM:
        return {"fin": frame[4], "frame_type": "stream", "length": frame[3], "offset": frame[2], "stream_id": frame[1]}
    if code == F_ACK:
        return {"ack_delay": frame[2], "acked_ranges": frame[1], "frame_type": "ack"}
    if code == F_PADDING:
        return {"frame_type": "padding"}
    if code == F_PING:
        return {"frame_type": "ping"}
    if code == F_MAX_DATA:
        return {"frame_type": "max_data", "maximum": frame[1]}
    if code == F_MAX_STREAMS:
        return {"frame_type": "max_streams", "maximum": frame[1], "stream_type": frame[2]}
    if code == F_MAX_STREAM_DATA:
        return {"frame_type": "max_stream_data", "maximum": frame[1], "stream_id": frame[2]}
    return list(frame)


def header_record(node_name: str, vantage: str, reference_ms: float, odcid: str | None) -> dict[str, Any]:
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
        self._open: OrderedDict[int, SeqFile] = OrderedDict()  # by id(file), least recently written first
        self.spool: Spool | None = None  # what the recording's traces hand their events to (set on first use)
        self.quiet = False  # in a writer process: the node says why recording stopped, not us

    @property
    def open_files(self) -> int:
        return len(self._open)

    def spool_for(self, handover_interval_s: float) -> Spool:
        """The recording's spool, made on first use with an in-process sink."""
        if self.spool is None:
            self.spool = Spool(self, InlineSink(self), handover_interval_s)
        return self.spool

    def create(self, directory: Path, stem: str, header: dict[str, Any], first: str | None = None) -> Path:
        """Create a new file that did not exist before (O_EXCL), with its header, and close it.

        `first` is tried as-is before numbered names `<stem>-<n>.sqlog`. RecordingStopped if
        recording has stopped or stops now.
        """
        self._check()
        names = chain([first] if first else [], (f"{stem}-{n}.sqlog" for n in count()))
        for name in names:
            path = directory / name
            try:
                fd = self._os_open(path, _OPEN_FLAGS)
            except FileExistsError:
                continue
            except OSError as exc:
                raise self.fail(exc, "create", path) from None
            try:
                # The header goes to disk at once: the file is readable from birth.
                _write_all(fd, RS + _json.dumps(header) + NL)
            except OSError as exc:
                raise self.fail(exc, "write", path) from None
            finally:
                os.close(fd)
            return path
        raise AssertionError("unreachable")

    def fd(self, file: SeqFile) -> int:
        """The file's descriptor, opened (again) in append mode if it is not open; RecordingStopped on failure."""
        self._check()
        key = id(file)
        fd = file.fd
        if fd is None:
            try:
                fd = self._os_open(file.path, _REOPEN_FLAGS)
            except OSError as exc:
                raise self.fail(exc, "reopen", file.path) from None
            file.fd = fd
            if file.opened:
                self.reopened += 1
            file.opened = True
            self._open[key] = file
            self._trim(keep=file)
        else:
            self._open.move_to_end(key)
        return fd

    def release(self, file: SeqFile) -> None:
        """The file is done: close its descriptor."""
        self._open.pop(id(file), None)
        file.park()

    def _trim(self, keep: SeqFile | None = None) -> None:
        while len(self._open) > self.max_open:
            key, oldest = next(iter(self._open.items()))
            if oldest is keep:
                self._open.move_to_end(key)
                continue
            del self._open[key]
            oldest.park()

    def _os_open(self, path: Path, flags: int) -> int:
        try:
            return os.open(path, flags, 0o644)
        except OSError as exc:
            if exc.errno not in _OUT_OF_DESCRIPTORS or len(self._open) <= MIN_OPEN_TRACE_FILES:
                raise
        # The process is out of descriptors: keep fewer of ours open from now on, and try once more.
        self.max_open = max(MIN_OPEN_TRACE_FILES, len(self._open) // 2)
        if not self.quiet:
            log.warning("out of file descriptors: keeping at most %d trace files open", self.max_open)
        self._trim()
        return os.open(path, flags, 0o644)

    def _check(self) -> None:
        if self.stopped is not None:
            raise RecordingStopped(self.stopped["reason"])

    def fail(self, exc: OSError, doing: str, path: Path | str) -> RecordingStopped:
        """Stop the recording (once): close every file, log one line, tell `on_stopped`."""
        if self.stopped is None:
            code = errno.errorcode.get(exc.errno or 0, "error") if exc.errno else type(exc).__name__
            reason = f"cannot {doing} {path}: {exc.strerror or exc} ({code})"
            self.stopped_with({"reason": reason, "errno": code, "path": str(path)})
        assert self.stopped is not None
        return RecordingStopped(self.stopped["reason"])

    def stopped_with(self, info: dict[str, Any]) -> None:
        """Stop the recording for the reason given (here, or by the writer process), once."""
        if self.stopped is not None:
            return
        self.stopped = info
        if not self.quiet:
            log.error("recording stopped: %s; the node keeps serving without it", info["reason"])
        for file in list(self._open.values()):
            file.park()
        self._open.clear()
        if self.on_stopped is not None:
            try:
                self.on_stopped(dict(info))
            except Exception:  # whoever listens must not turn a stopped recording into a crash
                log.exception("on_stopped failed")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class SeqFile:
    """One JSON-SEQ file as the writer sees it: its path, the time its events count from, its descriptor."""

    __slots__ = ("buf", "fd", "opened", "path", "reference_ms")

    def __init__(self, path: str, reference_ms: float) -> None:
        self.path = Path(path)
        self.reference_ms = reference_ms
        self.fd: int | None = None
        self.opened = False
        self.buf: list[bytes] = []

    def park(self) -> None:
        """Close the descriptor; the next write reopens it."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                os.close(fd)
            except OSError:
                pass


class BatchWriter:
    """Formats batches of spooled records into their files: JSON-SEQ, one `os.write` per file and batch.

    Data handed to the kernel survives SIGKILL; a killed writer leaves at worst one truncated
    last record, which the reader skips.
    """

    def __init__(self, files: TraceFiles) -> None:
        self.files = files
        self._by_key: dict[int, SeqFile] = {}
        self._schemas: dict[int, tuple[str, tuple[str, ...]]] = {}

    def write(self, batch: Iterable[tuple[Any, ...]]) -> None:
        files = self.files
        by_key = self._by_key
        dirty: list[SeqFile] = []
        closing: list[SeqFile] = []
        dumps = orjson.dumps
        default = _json._default
        option = _DUMPS_OPTIONS
        for record in batch:
            key = record[0]
            if key.__class__ is str:
                if key == OPEN:
                    by_key[record[1]] = SeqFile(record[2], record[3])
                elif key == CLOSE:
                    file = by_key.pop(record[1], None)
                    if file is not None:
                        closing.append(file)
                elif key == SCHEMA:
                    self._schemas[record[1]] = (record[2], tuple(record[3]))
                continue
            file = by_key.get(key)
            if file is None:
                continue
            name = record[2]
            data = record[3]
            if name.__class__ is int:
                name, fields = self._schemas.get(name, (f"unknown:{name}", ()))
                data = dict(zip(fields, data, strict=False))
            else:
                frames = data.get("frames") if data.__class__ is dict else None
                if frames:
                    data = dict(data, frames=[_expand_frame(f) for f in frames])
            # Microseconds, truncated: cheaper than round(), and the same 3 decimals.
            event = {
                "time": int((record[1] * 1000.0 - file.reference_ms) * 1000.0) / 1000.0,
                "name": name,
                "data": data,
            }
            try:
                chunk = dumps(event, default=default, option=option)
            except (orjson.JSONEncodeError, TypeError):
                chunk = _json.dumps(event) + NL
            buf = file.buf
            if not buf:
                dirty.append(file)
            buf.append(chunk)
        if files.stopped is None:
            for file in dirty:
                self._write_out(file)
        for file in dirty:
            file.buf.clear()
        for file in closing:
            files.release(file)

    def _write_out(self, file: SeqFile) -> None:
        if self.files.stopped is not None:
            return
        data = RS + RS.join(file.buf)  # each record ends with its newline
        try:
            _write_all(self.files.fd(file), data)
        except RecordingStopped:
            pass  # a full disk, a removed directory: the node goes on without us
        except OSError as exc:
            self.files.fail(exc, "write", file.path)

    def close(self) -> None:
        for file in self._by_key.values():
            self.files.release(file)
        self._by_key.clear()

    def stats(self) -> dict[str, int]:
        return {"open_files": self.files.open_files, "max_open": self.files.max_open, "reopened": self.files.reopened}


class InlineSink:
    """Formats and writes each batch in this process, at handover."""

    def __init__(self, files: TraceFiles) -> None:
        self.files = files
        self.writer = BatchWriter(files)

    def send(self, batch: list[tuple[Any, ...]]) -> None:
        self.writer.write(batch)

    def poll(self) -> None:
        """Nothing to hear from: failures are reported as they happen."""

    def confirmed(self) -> bool:
        return True

    def sync(self, timeout_s: float = SYNC_WAIT_S) -> bool:
        return True

    def close(self) -> None:
        self.writer.close()

    def stats(self) -> dict[str, int]:
        return self.writer.stats()


def _plain(batch: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The batch with every event's data reduced to what marshal carries (for odd values: enums, ids)."""
    out = []
    for record in batch:
        if record[0].__class__ is not str:
            try:
                marshal.dumps(record)
            except ValueError:
                data = record[3]
                if data.__class__ is dict and data.get("frames"):
                    data = dict(data, frames=[_expand_frame(f) for f in data["frames"]])
                record = (record[0], record[1], record[2], _json.loads(_json.dumps(data)))
        out.append(record)
    return out


def writer_command() -> list[str]:
    """How a node starts its writer process."""
    return [sys.executable, "-c", "from dhtscope.tracing.seqfiles import writer_main; writer_main()"]


class ProcessSink:
    """Hands each batch to a writer process (marshal over a pipe); never blocks the event loop.

    The writer confirms each batch and says when recording failed; `poll()` reads that, at
    every handover. `command` starts the writer (tests start one that fails on purpose).
    """

    def __init__(self, files: TraceFiles, command: list[str] | None = None) -> None:
        self.files = files
        self._proc = subprocess.Popen(
            [*(command or writer_command()), str(files.max_open)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=False,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._in = self._proc.stdin.fileno()
        self._status = self._proc.stdout.fileno()
        for fd in (self._in, self._status):
            os.set_blocking(fd, False)
        try:
            fcntl.fcntl(self._in, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except (OSError, AttributeError):
            pass  # a smaller pipe only means more, smaller writes
        self._unsent = bytearray()
        self._writing_loop: asyncio.AbstractEventLoop | None = None
        self._seq = 0
        self._acked = 0
        self._partial = b""
        self._stats: dict[str, int] = {"open_files": 0, "max_open": files.max_open, "reopened": 0}
        self._closed = False

    @property
    def pid(self) -> int:
        return self._proc.pid

    def send(self, batch: list[tuple[Any, ...]]) -> None:
        self.poll()
        if self._closed or self.files.stopped is not None:
            return
        self._seq += 1
        try:
            payload = marshal.dumps((self._seq, batch))
        except ValueError:
            payload = marshal.dumps((self._seq, _plain(batch)))
        self._unsent += len(payload).to_bytes(4, "big")
        self._unsent += payload
        if len(self._unsent) > MAX_UNSENT_BYTES:
            self._give_up("the writer process cannot keep up", "EAGAIN")
            return
        self._drain()

    def _drain(self) -> None:
        while self._unsent:
            try:
                n = os.write(self._in, self._unsent)
            except BlockingIOError:
                if self._wait_writable():
                    continue
                return
            except OSError:  # EPIPE: the writer process is gone
                self._give_up("the writer process exited", "EPIPE")
                return
            del self._unsent[:n]
        if self._writing_loop is not None:
            self._writing_loop.remove_writer(self._in)
            self._writing_loop = None

    def _wait_writable(self) -> bool:
        """True when the caller should write again now (no event loop: the writer took some)."""
        if self._writing_loop is not None:
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # No event loop (a script, shutdown): wait for the writer to take some.
            if self._proc.poll() is not None:
                self._give_up("the writer process exited", "EPIPE")
                return False
            select.select([], [self._in], [], 1.0)
            return True
        self._writing_loop = loop
        loop.add_writer(self._in, self._drain)
        return False

    def _give_up(self, reason: str, code: str) -> None:
        self._unsent.clear()
        if self._writing_loop is not None:
            self._writing_loop.remove_writer(self._in)
            self._writing_loop = None
        self.files.stopped_with({"reason": reason, "errno": code, "path": ""})

    def poll(self) -> None:
        """Read what the writer process said: confirmed batches, its files, a failure."""
        while True:
            try:
                chunk = os.read(self._status, 65536)
            except BlockingIOError:
                return
            except OSError:
                return
            if not chunk:
                return
            lines = (self._partial + chunk).split(b"\n")
            self._partial = lines.pop()
            for line in lines:
                self._said(line)

    def _said(self, line: bytes) -> None:
        try:
            msg = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        if not isinstance(msg, dict):
            return
        if "ack" in msg:
            self._acked = max(self._acked, int(msg["ack"]))
            self._stats = {k: int(msg.get(k, 0)) for k in ("open_files", "max_open", "reopened")}
        stopped = msg.get("stopped")
        if isinstance(stopped, dict):
            self.files.stopped_with(stopped)

    def confirmed(self) -> bool:
        """Whether the writer process has written every batch handed to it (never waits)."""
        self.poll()
        return self._acked >= self._seq and not self._unsent

    def sync(self, timeout_s: float = SYNC_WAIT_S) -> bool:
        """Wait until the writer process has written every batch handed to it; False on time-out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._unsent:
                select.select([], [self._in], [], max(0.0, deadline - time.monotonic()))
                self._drain()
            self.poll()
            if self._acked >= self._seq and not self._unsent:
                return True
            if self._proc.poll() is not None:
                self.poll()
                return self._acked >= self._seq
            select.select([self._status], [], [], min(0.05, max(0.0, deadline - time.monotonic())))
        return False

    def close(self) -> None:
        """Hand over the rest, end the writer's input, and wait while it writes what it holds."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + WRITER_EXIT_WAIT_S
        while self._unsent and time.monotonic() < deadline and self._proc.poll() is None:
            select.select([], [self._in], [], 0.1)
            self._drain()
        if self._writing_loop is not None:
            self._writing_loop.remove_writer(self._in)
            self._writing_loop = None
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.set_blocking(self._status, True)
        rest = self._partial + b"".join(iter(lambda: os.read(self._status, 65536), b""))
        self._partial = b""
        for line in rest.split(b"\n"):
            if line:
                self._said(line)
        assert self._proc.stdout is not None
        self._proc.stdout.close()

    def stats(self) -> dict[str, int]:
        self.poll()
        return dict(self._stats)


class Spool:
    """Where a recording's traces append their events as tuples; handed to the sink in batches.

    With an event loop running, a handover follows at most `interval_s` after the first
    event since the last one; without one, the next event after `interval_s` (or once
    MAX_HELD_RECORDS wait) hands over. `clock` gives wall time in seconds (tests inject one).
    """

    def __init__(
        self,
        files: TraceFiles,
        sink: InlineSink | ProcessSink,
        interval_s: float = HANDOVER_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.files = files
        self.sink = sink
        self.interval_s = interval_s
        self.clock = clock
        self.records: list[tuple[Any, ...]] = []
        self.idle = True  # no handover is due: the next event arms one
        self._keys = count(1)
        self._schemas_sent = 0
        self._timer: asyncio.TimerHandle | None = None
        self._last = clock()
        files.spool = self

    def open(self, path: Path, reference_ms: float) -> int:
        """A new file (created, header written) that events will be appended to; its key."""
        key = next(self._keys)
        self.records.append((OPEN, key, str(path), reference_ms))
        return key

    def close_file(self, key: int) -> None:
        """No more events for this file: it is closed at the next handover (at once without an event loop)."""
        self.records.append((CLOSE, key))
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.handover()
            return
        if self.idle:
            self.wake(True)

    def wake(self, app: bool) -> None:
        """An event arrived while no handover was due: arm the timer, or hand over if time is up.

        `app` is True when the caller is the application (between aioquic calls), where a
        held packet is complete and a handover may happen at once.
        """
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if app and (len(self.records) >= MAX_HELD_RECORDS or self.clock() - self._last >= self.interval_s):
                self.handover()
            return
        self.idle = False
        self._timer = loop.call_later(self.interval_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.handover()

    def handover(self) -> None:
        """Hand every held record to the sink now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.idle = True
        self._last = self.clock()
        records, self.records = self.records, []
        if records and len(EVENT_SCHEMAS) > self._schemas_sent:
            new = [
                (SCHEMA, i, name, fields) for i, (name, fields) in enumerate(EVENT_SCHEMAS) if i >= self._schemas_sent
            ]
            self._schemas_sent = len(EVENT_SCHEMAS)
            records[:0] = new
        if records and self.files.stopped is None:
            self.sink.send(records)
        else:
            self.sink.poll()

    def sync(self, timeout_s: float = SYNC_WAIT_S) -> bool:
        """Hand over, then wait until everything handed over is written."""
        self.handover()
        return self.sink.sync(timeout_s)

    def close(self) -> None:
        self.handover()
        self.sink.close()


def writer_main() -> None:
    """The writer process: batches on stdin, files written, one status line per batch on stdout.

    It ends at the end of its input, whatever signals the node's terminal or process group
    sends, so a node that dies leaves a writer that still writes what it was handed.
    """
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        os.nice(WRITER_NICENESS)
    except OSError:
        pass  # not allowed here: the writer runs at the node's priority
    max_open = int(sys.argv[-1]) if len(sys.argv) > 1 and sys.argv[-1].isdigit() else MAX_OPEN_TRACE_FILES
    out = sys.stdout.buffer
    files = TraceFiles(max_open)
    files.quiet = True

    def say(msg: dict[str, Any]) -> None:
        try:
            out.write(orjson.dumps(msg) + NL)
            out.flush()
        except OSError:
            pass  # the node is gone: keep writing files

    files.on_stopped = lambda info: say({"stopped": info})
    writer = BatchWriter(files)
    stdin = sys.stdin.buffer.fileno()
    held = bytearray()
    while True:
        chunk = os.read(stdin, 1 << 20)
        if not chunk:
            break
        held += chunk
        while len(held) >= 4:
            size = int.from_bytes(held[:4], "big")
            if len(held) < 4 + size:
                break
            seq, batch = marshal.loads(bytes(held[4 : 4 + size]))
            del held[: 4 + size]
            writer.write(batch)
            say({"ack": seq, **writer.stats()})
    writer.close()  # a partial last batch (its sender was killed while writing it) is dropped


if __name__ == "__main__":
    writer_main()
