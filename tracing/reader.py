"""Read qlog traces of any vintage into `Recording`/`Trace`/`Event` values.

Formats are recognised by content, never by file name:

* JSON-SEQ (`.sqlog`, RFC 7464): records start with 0x1E; header first.
* NDJSON (`.qlognd`, quic-go's draft-02 `.qlog`): one JSON text per line; header first.
* Single JSON documents: qlog 0.3 / draft-02 (aioquic), draft-00/-01 with `event_fields`
  and array events (old aioquic, picoquic), current drafts' `:contained` schema.

JSON-SEQ and NDJSON files are read lazily: one pass finds where the records start
(no JSON parsing), events are parsed when asked for. JSON documents are small in
practice and are parsed whole.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import re
import stat
import threading
import weakref
from array import array
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from itertools import compress, repeat
from operator import gt, sub
from pathlib import Path
from typing import Any

from . import _json
from .model import Event, NodeEntry, Recording, Trace, TraceInfo

PathLike = str | Path

RS = b"\x1e"
NL = b"\n"

# Files a directory scan looks at; anything else in a recording (logs, pcaps) is ignored.
TRACE_SUFFIXES = (".sqlog", ".qlog", ".qlognd", ".ndjson", ".json")
_NOT_TRACES = {"manifest.json", "node.json"}

# Single JSON documents from this size on are indexed per event and parsed on demand: parsed
# whole, qlog events take 5 to 10 times their text's size as Python objects.
LAZY_DOC_MIN_BYTES = 8 * 1024 * 1024

# Epoch-ms values below this (~1973) are taken to be relative times, not wall clock.
_EPOCH_MS_FLOOR = 1e11

_HEADER_KEYS = frozenset({"qlog_version", "qlog_format", "file_schema", "serialization_format", "trace", "traces"})
_HEX = re.compile(r"[0-9a-f]+")
_QUIC_NS = re.compile(r"quic-\d+")


class TraceReadError(Exception):
    """A file that cannot be read as qlog at all (missing, empty, not JSON, not qlog)."""


# --------------------------------------------------------------------------- names


@lru_cache(maxsize=4096)
def canonical_name(raw: str) -> str:
    """Map an event name from any qlog draft to the vocabulary of docs/trace-events.md."""
    category, colon, event = raw.partition(":")
    if not colon:
        return raw
    cat = category.lower()
    if cat in ("transport", "security", "connectivity", "quic") or _QUIC_NS.fullmatch(cat):
        return "quic:" + event
    if cat == "recovery":
        # Current drafts moved recovery events into `quic:`; two of them were renamed to
        # avoid clashing with transport events of the same name.
        if event in ("metrics_updated", "parameters_set"):
            return "quic:recovery_" + event
        return "quic:" + event
    return raw


# --------------------------------------------------------------------------- time


@dataclasses.dataclass(frozen=True, slots=True)
class _Clock:
    """Turns an event's raw time into epoch ms: base + raw * scale, or a running sum."""

    base: float
    scale: float
    delta: bool = False


_UNIT_SCALE = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "ns": 1e-6}


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _rfc3339_ms(text: Any) -> float | None:
    if not isinstance(text, str) or not text or text == "unknown":
        return None
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp() * 1000.0


def _reference_ms(value: Any, warnings: list[str]) -> float | None:
    """reference_time in any draft's shape -> epoch ms, or None if it gives no wall clock."""
    if value is None:
        return None
    if isinstance(value, dict):
        # Current drafts: {"clock_type", "epoch": RFC 3339 | "unknown", "wall_clock_time"}.
        ms = _rfc3339_ms(value.get("epoch"))
        if ms is None:
            ms = _rfc3339_ms(value.get("wall_clock_time"))
        if ms is None:
            warnings.append(f"reference_time {value!r} gives no wall-clock epoch")
        return ms
    number = _num(value)
    if number is None:
        ms = _rfc3339_ms(value)
        if ms is None:
            warnings.append(f"reference_time {value!r} not understood")
        return ms
    if number == 0:
        # picoquic's test output says "0": no real clock behind it.
        warnings.append("reference_time is 0 (no wall clock)")
        return None
    # Older drafts give it in the trace's time units; the magnitude tells which.
    if number > 1e17:
        return number / 1e6
    if number > 1e14:
        return number / 1e3
    return number


def _make_clock(
    common: dict[str, Any],
    configuration: dict[str, Any],
    time_field: str,
    sample: float | None,
    warnings: list[str],
) -> tuple[_Clock, float | None]:
    """Decide how this trace's event times become epoch ms. Returns (clock, reference ms)."""
    scale = _UNIT_SCALE.get(str(configuration.get("time_units", "ms")).lower(), 1.0)
    offset = (_num(configuration.get("time_offset")) or 0.0) * scale
    fmt = str(common.get("time_format") or "").lower()
    ref = _reference_ms(common.get("reference_time"), warnings)
    looks_absolute = sample is not None and abs(sample * scale) >= _EPOCH_MS_FLOOR
    if time_field == "delta_time" or fmt in ("delta", "relative_to_previous_event"):
        if ref is None:
            warnings.append("times are deltas with no reference_time: kept relative to trace start")
        return _Clock((ref or 0.0) + offset, scale, delta=True), ref
    relative = time_field == "relative_time" or fmt in ("relative", "relative_to_epoch")
    if not relative and fmt != "absolute" and ref is not None and not looks_absolute:
        relative = True  # a reference time and small times: relative whatever the draft's default
    if relative and not (ref is None and looks_absolute):
        if ref is None:
            warnings.append("times are relative with no reference_time: kept relative")
            return _Clock(offset, scale), None
        return _Clock(ref + offset, scale), ref
    if sample is not None and not looks_absolute:
        warnings.append("times are not epoch-based (no reference_time): kept relative")
    return _Clock(offset, scale), ref


# --------------------------------------------------------------------------- headers


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _odcid(*sources: dict[str, Any]) -> str | None:
    for source in sources:
        for key in ("ODCID", "odcid", "group_id"):
            value = source.get(key)
            if isinstance(value, str):
                value = value.strip().lower()
                if value.startswith("0x"):
                    value = value[2:]
                if _HEX.fullmatch(value):
                    return value
    return None


def _version(header: dict[str, Any], trace: dict[str, Any]) -> str | None:
    for source in (header, trace):
        for key in ("qlog_version", "file_schema"):
            value = source.get(key)
            if isinstance(value, (str, int, float)):
                return str(value)
    return None


def _extra(header: dict[str, Any], trace: dict[str, Any], common: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for key in ("file_schema", "serialization_format", "qlog_format", "code_version"):
        if key in header:
            extra[key] = header[key]
    for key in ("event_schemas", "description", "protocol_type", "protocol_types"):
        if key in trace:
            extra[key] = trace[key]
    for key in ("time_format", "protocol_type", "main_role"):
        if key in common:
            extra.setdefault(key, common[key])
    vantage = _as_dict(trace.get("vantage_point"))
    if vantage.get("flow") in ("client", "server"):
        extra["vantage_flow"] = vantage["flow"]  # a network observer's: whose packets are "sent"
    capture = _as_dict(trace.get("capture"))  # a capture converted by `dhtscope convert`: who the ends were
    for key in ("client", "server", "client_name", "server_name", "version", "decrypted"):
        if isinstance(capture.get(key), str):
            extra[key] = capture[key]
    if isinstance(capture.get("file"), str):
        extra["capture_file"] = capture["file"]
    return extra


def _event_dict(raw: Any, fields: list[str] | None, common: dict[str, Any]) -> dict[str, Any] | None:
    """An event as a dict with `time`/`name`/`data`, whichever shape the file used."""
    if isinstance(raw, list) and fields:
        event: dict[str, Any] = {}
        time_field = None
        for key, value in zip(fields, raw, strict=False):
            if key in ("relative_time", "delta_time", "time"):
                event["time"] = value
                time_field = key
            elif key == "event_type":
                event["event"] = value
            else:
                event[key] = value
        if time_field is None:
            return None
        raw = event
    if not isinstance(raw, dict):
        return None
    if not isinstance(raw.get("name"), str):
        category = raw.get("category", common.get("category"))
        kind = raw.get("event", raw.get("event_type"))
        if not isinstance(kind, str):
            return None
        raw["name"] = f"{category}:{kind}" if isinstance(category, str) else kind
    return raw


def _to_event(raw: dict[str, Any], clock: _Clock, record: int, prev_ms: float | None) -> Event:
    """Normalise one event dict. `prev_ms` is only used for delta-timed traces."""
    t = _num(raw.get("time"))
    if clock.delta:
        base = clock.base if prev_ms is None else prev_ms
        time_ms = base + (t or 0.0) * clock.scale
    else:
        time_ms = clock.base + t * clock.scale if t is not None else (prev_ms if prev_ms is not None else clock.base)
    data = raw.get("data")
    if not isinstance(data, dict):
        data = {} if data is None else {"value": data}
    name = raw["name"]
    return Event(time_ms=time_ms, name=canonical_name(name), data=data, raw_name=name, record=record)


# --------------------------------------------------------------------------- traces


class ReaderTrace(Trace):
    """A trace as the reader returns it: `Trace` plus cheap range helpers."""

    info: TraceInfo

    def time_range(self) -> tuple[float, float] | None:
        """(first event's time_ms, last event's time_ms), or None for an empty trace."""
        if len(self) == 0:
            return None
        return self[0].time_ms, self[len(self) - 1].time_ms

    def iter_range(self, start: int = 0, stop: int | None = None) -> Iterator[Event]:
        """Events with record numbers in [start, stop) (clamped to the trace)."""
        n = len(self)
        stop = n if stop is None else min(stop, n)
        for i in range(max(start, 0), stop):
            yield self[i]

    def __iter__(self) -> Iterator[Event]:
        return self.iter_range(0, None)

    def close(self) -> None:
        """Release files held open (nothing for in-memory traces)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.info.path}#{self.info.index} {self.info.vantage} {len(self)} events>"


class DocTrace(ReaderTrace):
    """One trace of a single-document JSON file, fully parsed."""

    def __init__(self, info: TraceInfo, events: list[Event]) -> None:
        self.info = info
        self._events = events

    def __len__(self) -> int:
        return len(self._events)

    def __getitem__(self, record: int) -> Event:
        return self._events[record]

    def iter_range(self, start: int = 0, stop: int | None = None) -> Iterator[Event]:
        return iter(self._events[max(start, 0) : stop])


class _MapPool:
    """Caps how many trace files are mapped at once: a recording can hold thousands of
    connection files and every mmap keeps a file descriptor. The least recently used
    trace drops its mapping (closed once no reader holds it) and maps again on demand.
    Weak references: the pool must not keep traces nobody uses alive."""

    def __init__(self, capacity: int = 128) -> None:
        self.capacity = capacity
        self._open: OrderedDict[int, weakref.ref[SqlogTrace]] = OrderedDict()
        # Readers in several threads (the TUI's workers) share the pool.
        self._lock = threading.Lock()

    def touch(self, trace: SqlogTrace) -> None:
        with self._lock:
            self._touch(trace)

    def _touch(self, trace: SqlogTrace) -> None:
        key = id(trace)
        ref = self._open.get(key)
        if ref is not None and ref() is trace:
            self._open.move_to_end(key)
            return
        self._open[key] = weakref.ref(trace)
        self._open.move_to_end(key)
        while len(self._open) > self.capacity:
            _, old_ref = self._open.popitem(last=False)
            old = old_ref()
            if old is not None:
                old._mm = None  # not closed here: an iterator may still be reading through it

    def forget(self, trace: SqlogTrace) -> None:
        with self._lock:
            ref = self._open.get(id(trace))
            if ref is not None and ref() is trace:
                del self._open[id(trace)]


_POOL = _MapPool()


class SqlogTrace(ReaderTrace):
    """A JSON-SEQ or NDJSON trace read lazily through an index of record offsets.

    Opening scans the file once for record separators (0x1E or newline) without parsing
    JSON; `trace[i]` parses record i on demand and keeps a small LRU cache. `refresh()`
    picks up records appended since (a file still being written).
    """

    CACHE_SIZE = 2048

    def __init__(self, path: PathLike, kind: str, node: str | None = None) -> None:
        self.path = str(path)
        self._kind = kind  # "json-seq" | "ndjson"
        self._sep = RS if kind == "json-seq" else NL
        self._mm: mmap.mmap | None = None
        self._size = 0  # bytes covered by the index
        # The index: for each record, the offset of the separator just before it (-1 for a
        # record at the very start of the file). Record k's text starts at _marks[k] + 1.
        self._marks = array("q")
        self._open_mark = -1  # the record running to end of file follows this separator ...
        self._open_indexed = False  # ... and is already indexed if it parsed whole
        self._scanned = 0
        self._first = 0  # 1 when record 0 is the header
        self._cache: OrderedDict[int, Event] = OrderedDict()
        self._delta_times = array("d")  # running times for delta-timed traces
        self._tail_warning: str | None = None
        self._warnings: list[str] = []

        size = self._file_size()
        if size == 0:
            raise TraceReadError(f"{self.path}: empty file")
        self._scan(size)
        if not self._marks:
            raise TraceReadError(f"{self.path}: no complete JSON record")
        self._read_header(node)

    # -- file access

    def _file_size(self) -> int:
        try:
            return os.stat(self.path).st_size
        except OSError as exc:
            raise TraceReadError(f"{self.path}: {exc.strerror or exc}") from None

    def _map(self) -> mmap.mmap:
        mm = self._mm
        if mm is None:
            try:
                with open(self.path, "rb") as fh:
                    mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as exc:
                raise TraceReadError(f"{self.path}: cannot map file: {exc}") from None
            self._mm = mm
        _POOL.touch(self)
        return mm

    def __getstate__(self) -> dict[str, Any]:
        # A trace travels to another process as its index, without the mapping or the
        # parsed-event cache: the receiver maps the file on first use and scans nothing.
        state = self.__dict__.copy()
        state["_mm"] = None
        state["_cache"] = OrderedDict()
        return state

    def close(self) -> None:
        """Unmap the file; later access maps it again."""
        _POOL.forget(self)
        if self._mm is not None:
            self._mm.close()
            self._mm = None

    # -- indexing

    def _scan(self, size: int) -> None:
        """Index the records in bytes [_scanned, size). No JSON parsing except of the tail."""
        if self._mm is not None and len(self._mm) < size:
            self._mm = None  # the file grew past the mapping: map it again
        mm = self._map()
        size = min(size, len(mm))
        sep = self._sep
        seps = array("q")
        append = seps.append
        find = mm.find
        # A plain find loop over the mapping measured fastest (about 0.3 us per record):
        # splitting chunks copies every byte and allocates an object per record, and
        # re.finditer builds a match object per record.
        pos = find(sep, self._scanned, size)
        while pos >= 0:
            append(pos)
            pos = find(sep, pos + 1, size)
        self._scanned = size
        self._size = size
        if seps:
            # Records closed by these separators: the open one (unless already indexed),
            # then one after each separator but the last.
            if self._open_indexed:
                marks, ends = seps[:-1], seps[1:]
            else:
                marks, ends = array("q", [self._open_mark]) + seps[:-1], seps
            # Blank records (a lone newline between separators, empty lines) are dropped;
            # the filter costs a second pass, so only run it when there is one.
            if marks and min(map(sub, ends, marks)) <= 2:
                marks = array("q", compress(marks, map(gt, map(sub, ends, marks), repeat(2))))
            self._marks.extend(marks)
            self._open_mark = seps[-1]
            self._open_indexed = False
        # The record running to end of file: complete only if it parses.
        self._tail_warning = None
        start = self._open_mark + 1
        if not self._open_indexed and size - start > 1:
            tail = mm[start:size]
            if tail.strip():
                try:
                    _json.loads(tail)
                except _json.JSONDecodeError:
                    self._tail_warning = f"truncated last record at byte {start} skipped ({size - start} bytes)"
                else:
                    self._marks.append(self._open_mark)
                    self._open_indexed = True

    def _raw(self, mm: mmap.mmap, k: int) -> bytes:
        """Bytes of record k (the header counts as record 0 if there is one)."""
        marks = self._marks
        end = marks[k + 1] if k + 1 < len(marks) else self._size
        data = mm[marks[k] + 1 : end]
        # Blank records skipped in between leave a separator inside; the text ends there.
        cut = data.find(self._sep)
        return data if cut < 0 else data[:cut]

    def _parse(self, k: int) -> Any:
        return _json.loads(self._raw(self._map(), k))

    def _read_header(self, node: str | None) -> None:
        header: dict[str, Any] = {}
        try:
            first = self._parse(0)
        except _json.JSONDecodeError as exc:
            if len(self._marks) < 2:
                raise TraceReadError(f"{self.path}: first record is not JSON ({exc})") from None
            self._warnings.append("header record is not JSON; read without it")
            first = None
            self._first = 1
        if isinstance(first, dict) and (_HEADER_KEYS & first.keys()) and "name" not in first:
            header = first
            self._first = 1
        elif first is not None and _event_dict(first, None, {}) is None:
            raise TraceReadError(f"{self.path}: not a qlog file (first record is neither header nor event)")

        trace = _as_dict(header.get("trace"))
        if not trace and isinstance(header.get("traces"), list) and header["traces"]:
            trace = _as_dict(header["traces"][0])
        common = {**_as_dict(header.get("common_fields")), **_as_dict(trace.get("common_fields"))}
        configuration = {**_as_dict(header.get("configuration")), **_as_dict(trace.get("configuration"))}
        fields = trace.get("event_fields") or header.get("event_fields")
        self._fields = [str(f) for f in fields] if isinstance(fields, list) else None
        self._common = common

        first_event = self._first_event()
        sample = _num(first_event.get("time")) if first_event else None
        time_field = next((f for f in self._fields or () if f in ("relative_time", "delta_time", "time")), "time")
        self._clock, ref = _make_clock(common, configuration, time_field, sample, self._warnings)
        vantage = _as_dict(trace.get("vantage_point"))
        title = trace.get("title") or header.get("title")
        self._static_info = TraceInfo(
            path=self.path,
            index=0,
            vantage=str(vantage.get("type") or "unknown"),
            odcid=_odcid(common, trace, header, first_event or {}),
            node=node or (str(vantage["name"]) if vantage.get("name") else None),
            format=self._kind,
            qlog_version=_version(header, trace),
            reference_time_ms=ref,
            title=str(title) if title is not None else None,
            warnings=(),
            extra=_extra(header, trace, common),
        )
        self._update_info()

    def _first_event(self) -> dict[str, Any] | None:
        if len(self._marks) <= self._first:
            return None
        try:
            return _event_dict(self._parse(self._first), self._fields, self._common)
        except _json.JSONDecodeError:
            return None

    def _update_info(self) -> None:
        warnings = list(self._warnings)
        if self._tail_warning:
            warnings.append(self._tail_warning)
        self.info = dataclasses.replace(self._static_info, warnings=tuple(warnings))

    # -- the Trace interface

    def __len__(self) -> int:
        return max(len(self._marks) - self._first, 0)

    def __getitem__(self, record: int) -> Event:
        n = len(self)
        if record < 0:
            record += n
        if not 0 <= record < n:
            raise IndexError(f"record {record} out of range (trace has {n} events)")
        cache = self._cache
        event = cache.get(record)
        if event is not None:
            cache.move_to_end(record)
            return event
        event = self._load(self._map(), record)
        cache[record] = event
        if len(cache) > self.CACHE_SIZE:
            cache.popitem(last=False)
        return event

    def _load(self, mm: mmap.mmap, record: int) -> Event:
        clock = self._clock
        prev: float | None = None
        if clock.delta:
            self._fill_delta(record)
            prev = self._delta_times[record - 1] if record > 0 else None
        k = record + self._first
        try:
            raw = _json.loads(self._raw(mm, k))
        except _json.JSONDecodeError as exc:
            return self._placeholder(record, f"corrupt record {record} (byte {self._marks[k] + 1}): {exc}")
        # Fast path for the common shape: an object with a string name and a number time.
        if raw.__class__ is dict and raw.get("name").__class__ is str and not clock.delta:
            t = raw.get("time")
            if t.__class__ is not float and t.__class__ is not int:
                t = _num(t)
            data = raw.get("data")
            if data.__class__ is not dict:
                data = {} if data is None else {"value": data}
            name = raw["name"]
            return Event(
                time_ms=clock.base + t * clock.scale if t is not None else clock.base,
                name=canonical_name(name),
                data=data,
                raw_name=name,
                record=record,
            )
        event = _event_dict(raw, self._fields, self._common)
        if event is None:
            return self._placeholder(record, f"record {record} is not an event")
        return _to_event(event, clock, record, prev)

    def _placeholder(self, record: int, problem: str) -> Event:
        """Stands in for an unreadable record so numbering stays aligned with the file."""
        if problem not in self._warnings:
            self._warnings.append(problem)
            self._update_info()
        time_ms = self._clock.base
        if self._clock.delta:
            time_ms = self._delta_times[record - 1] if record > 0 else self._clock.base
        else:
            for back in range(record - 1, max(record - 16, -1), -1):
                try:
                    prev = _event_dict(self._parse(back + self._first), self._fields, self._common)
                except _json.JSONDecodeError:
                    continue
                if prev is not None:
                    time_ms = _to_event(prev, self._clock, back, None).time_ms
                    break
        return Event(
            time_ms=time_ms, name="qlog:unreadable_record", data={"error": problem}, raw_name="", record=record
        )

    def _fill_delta(self, upto: int) -> None:
        """Delta-timed traces: running times have to be summed in order, once."""
        times = self._delta_times
        while len(times) < upto:
            i = len(times)
            prev = times[i - 1] if i else None
            try:
                raw = _event_dict(self._parse(i + self._first), self._fields, self._common)
            except _json.JSONDecodeError:
                raw = None
            if raw is None:
                times.append(prev if prev is not None else self._clock.base)
            else:
                times.append(_to_event(raw, self._clock, i, prev).time_ms)

    def iter_range(self, start: int = 0, stop: int | None = None) -> Iterator[Event]:
        # Sequential reads bypass the LRU cache so a full pass doesn't evict what a viewer
        # holds; the mapping is fetched once and kept alive by this generator.
        n = len(self)
        stop = n if stop is None else min(stop, n)
        cache = self._cache
        mm = self._map()
        for i in range(max(start, 0), stop):
            event = cache.get(i)
            yield event if event is not None else self._load(mm, i)

    def refresh(self) -> int:
        """Index records appended since the last scan; returns how many new events."""
        size = self._file_size()
        if size <= self._size:
            return 0
        before = len(self)
        self._scan(size)
        self._update_info()
        return len(self) - before


# --------------------------------------------------------------------------- files


def _doc_format(doc: dict[str, Any]) -> tuple[str | None, str]:
    version = _version(doc, {})
    schema = str(doc.get("file_schema") or "")
    if schema.endswith(":contained"):
        fmt = "qlog-contained-json"
    elif version == "0.3":
        fmt = "qlog-0.3-json"
    elif version and version.startswith("draft-"):
        fmt = f"{version}-json"
    else:
        fmt = "qlog-json"
    return version, fmt


def _doc_trace_fields(
    doc: dict[str, Any], trace: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], list[str] | None, str]:
    """A JSON document trace's common fields, configuration, draft-01 event fields and time field."""
    common = {**_as_dict(doc.get("common_fields")), **_as_dict(trace.get("common_fields"))}
    configuration = {**_as_dict(doc.get("configuration")), **_as_dict(trace.get("configuration"))}
    raw_fields = trace.get("event_fields") or doc.get("event_fields")
    fields = [str(f) for f in raw_fields] if isinstance(raw_fields, list) else None
    time_field = next((f for f in fields or () if f in ("relative_time", "delta_time", "time")), "time")
    return common, configuration, fields, time_field


def _doc_trace_info(
    path: str,
    index: int,
    doc: dict[str, Any],
    trace: dict[str, Any],
    common: dict[str, Any],
    first_event: dict[str, Any],
    node: str | None,
    fmt: str,
    version: str | None,
    ref: float | None,
    warnings: list[str],
) -> TraceInfo:
    """What a JSON document trace says about itself, for the eager and the lazy reader alike."""
    vantage = _as_dict(trace.get("vantage_point"))
    title = trace.get("title") or doc.get("title")
    return TraceInfo(
        path=path,
        index=index,
        vantage=str(vantage.get("type") or "unknown"),
        odcid=_odcid(common, trace, first_event),
        node=node or (str(vantage["name"]) if vantage.get("name") else None),
        format=fmt,
        qlog_version=version or _version({}, trace),
        reference_time_ms=ref,
        title=str(title) if title is not None else None,
        warnings=tuple(warnings),
        extra=_extra(doc, trace, common),
    )


def _json_doc_traces(path: str, data: bytes, node: str | None) -> list[ReaderTrace]:
    try:
        doc = _json.loads(data)
    except _json.JSONDecodeError as exc:
        raise TraceReadError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise TraceReadError(f"{path}: not a qlog document (top level is not an object)")
    raw_traces = doc.get("traces")
    if raw_traces is None and isinstance(doc.get("trace"), dict):
        raw_traces = [doc["trace"]]
    if not isinstance(raw_traces, list):
        raise TraceReadError(f"{path}: not a qlog document (no traces)")

    version, fmt = _doc_format(doc)

    traces: list[ReaderTrace] = []
    skipped: list[str] = []
    for index, trace in enumerate(raw_traces):
        if not isinstance(trace, dict) or not isinstance(trace.get("events"), list):
            # TraceError objects ({"error_description": ...}) and junk: nothing to read.
            reason = trace.get("error_description") if isinstance(trace, dict) else None
            skipped.append(f"trace {index} has no events" + (f" ({reason})" if reason else ""))
            continue
        warnings: list[str] = list(skipped)
        skipped.clear()
        common, configuration, fields, time_field = _doc_trace_fields(doc, trace)

        raws: list[dict[str, Any]] = []
        bad = 0
        for raw in trace["events"]:
            event = _event_dict(raw, fields, common)
            if event is None:
                bad += 1
            else:
                raws.append(event)
        if bad:
            warnings.append(f"{bad} malformed event(s) skipped")
        sample = _num(raws[0].get("time")) if raws else None
        clock, ref = _make_clock(common, configuration, time_field, sample, warnings)
        events: list[Event] = []
        prev: float | None = None
        for record, raw in enumerate(raws):
            parsed = _to_event(raw, clock, record, prev)
            prev = parsed.time_ms
            events.append(parsed)

        info = _doc_trace_info(
            path, index, doc, trace, common, raws[0] if raws else {}, node, fmt, version, ref, warnings
        )
        traces.append(DocTrace(info, events))
    if not traces:
        raise TraceReadError(f"{path}: no readable trace in the document" + (f" ({skipped[0]})" if skipped else ""))
    if skipped:  # trailing unreadable traces: say so on the last readable one
        last = traces[-1]
        last.info = dataclasses.replace(last.info, warnings=last.info.warnings + tuple(skipped))
    return traces


class LazyDocTrace(ReaderTrace):
    """One trace of a large single-document JSON file: the text and each event's span in it,
    parsed per event on demand, so a 200 MB document never exists as Python objects at once."""

    CACHE_SIZE = 2048

    def __init__(
        self,
        info: TraceInfo,
        text: str,
        spans: array,
        clock: _Clock,
        fields: list[str] | None,
        common: dict[str, Any],
    ) -> None:
        self.info = info
        self._text = text
        self._spans = spans  # start, end, start, end, ... of each event's JSON text
        self._clock = clock
        self._fields = fields
        self._common = common
        self._cache: OrderedDict[int, Event] = OrderedDict()

    def __len__(self) -> int:
        return len(self._spans) // 2

    def _load(self, record: int) -> Event:
        spans = self._spans
        raw = _event_dict(
            _json.loads(self._text[spans[2 * record] : spans[2 * record + 1]]), self._fields, self._common
        )
        assert raw is not None  # checked when the spans were indexed
        return _to_event(raw, self._clock, record, None)

    def __getitem__(self, record: int) -> Event:
        n = len(self)
        if record < 0:
            record += n
        if not 0 <= record < n:
            raise IndexError(f"record {record} out of range (trace has {n} events)")
        event = self._cache.get(record)
        if event is None:
            event = self._cache[record] = self._load(record)
            if len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        return event

    def iter_range(self, start: int = 0, stop: int | None = None) -> Iterator[Event]:
        n = len(self)
        stop = n if stop is None else min(stop, n)
        for i in range(max(start, 0), stop):
            event = self._cache.get(i)
            yield event if event is not None else self._load(i)


_WS = re.compile(r"[ \t\n\r]*")


class _Walk:
    """Just enough of a JSON walker to find where each event of each trace starts and ends.

    Every value but the events arrays is decoded whole by the json module's scanner (headers
    are small); each event is decoded once to check it and then dropped, keeping its span."""

    def __init__(self, text: str) -> None:
        import json

        self.text = text
        # scan_once is set by JSONDecoder.__init__; the stubs do not list it.
        self.scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]

    def ws(self, i: int) -> int:
        return _WS.match(self.text, i).end()  # type: ignore[union-attr]

    def expect(self, i: int, ch: str) -> int:
        i = self.ws(i)
        if self.text[i : i + 1] != ch:
            raise ValueError(f"expected {ch!r} at {i}")
        return i + 1

    def value(self, i: int) -> tuple[Any, int]:
        try:
            return self.scan(self.text, self.ws(i))
        except StopIteration:
            raise ValueError(f"no JSON value at {i}") from None

    def obj(self, i: int, on_key: Any) -> tuple[dict[str, Any], int]:
        """An object whose values pass through `on_key(key, i) -> (value, end)`."""
        out: dict[str, Any] = {}
        i = self.expect(i, "{")
        j = self.ws(i)
        if self.text[j : j + 1] == "}":
            return out, j + 1
        while True:
            key, i = self.value(i)
            i = self.expect(i, ":")
            out[key], i = on_key(key, i)
            i = self.ws(i)
            ch = self.text[i : i + 1]
            if ch == "}":
                return out, i + 1
            if ch != ",":
                raise ValueError(f"expected ',' or '}}' at {i}")
            i += 1


def _lazy_doc_traces(name: str, node: str | None) -> list[ReaderTrace] | None:
    """Traces of a large JSON document, indexed lazily; None to read it the eager way
    (non-ASCII text, where string and byte offsets differ, delta times, or odd shapes)."""
    try:
        with open(name, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            if not _ascii(mm):
                return None
            text = str(mm, "ascii")
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    walk = _Walk(text)
    found: list[tuple[dict[str, Any], array, Any, int]] = []  # (trace header, spans, first event, bad)

    def events(i: int, fields: list[str] | None, common: dict[str, Any]) -> tuple[array, Any, int, int]:
        spans = array("q")
        first = None
        bad = 0
        i = walk.expect(i, "[")
        j = walk.ws(i)
        if text[j : j + 1] == "]":
            return spans, first, bad, j + 1
        while True:
            start = walk.ws(i)
            raw, i = walk.value(start)
            event = _event_dict(raw, fields, common)
            if event is None:
                bad += 1
            else:
                spans.append(start)
                spans.append(i)
                if first is None:
                    first = event
            i = walk.ws(i)
            ch = text[i : i + 1]
            if ch == "]":
                return spans, first, bad, i + 1
            if ch != ",":
                raise ValueError(f"expected ',' or ']' at {i}")
            i += 1

    def trace_obj(i: int, doc_common: dict[str, Any], doc_fields: Any) -> int:
        header: dict[str, Any] = {}
        got: list[Any] = []

        def on_key(key: str, j: int) -> tuple[Any, int]:
            if key == "events":
                common = {**doc_common, **_as_dict(header.get("common_fields"))}
                fields = header.get("event_fields") or doc_fields
                fields = [str(f) for f in fields] if isinstance(fields, list) else None
                spans, first, bad, end = events(j, fields, common)
                got.append((spans, first, bad))
                return None, end
            value, end = walk.value(j)
            header[key] = value
            return value, end

        _, end = walk.obj(i, on_key)
        if not got:
            raise ValueError("trace without events")
        found.append((header, *got[0]))
        return end

    doc: dict[str, Any] = {}

    def doc_key(key: str, i: int) -> tuple[Any, int]:
        if key in ("traces", "trace"):
            # Header keys that follow "traces" in the file are not known yet: the common
            # fields of the document must come first for the lazy path (they do in practice).
            common = _as_dict(doc.get("common_fields"))
            fields = doc.get("event_fields")
            if key == "trace":
                return None, trace_obj(i, common, fields)
            i = walk.expect(i, "[")
            j = walk.ws(i)
            if text[j : j + 1] == "]":
                return [], j + 1
            while True:
                i = trace_obj(i, common, fields)
                i = walk.ws(i)
                ch = text[i : i + 1]
                if ch == "]":
                    return [], i + 1
                if ch != ",":
                    raise ValueError(f"expected ',' or ']' at {i}")
                i += 1
        value, end = walk.value(i)
        doc[key] = value
        return value, end

    try:
        _, end = walk.obj(0, doc_key)
        if text[walk.ws(end) :].strip():
            return None
    except (ValueError, IndexError, RecursionError):
        return None  # the eager reader says precisely what is wrong with it
    if not found:
        return None
    version, fmt = _doc_format(doc)
    traces: list[ReaderTrace] = []
    for index, (trace, spans, first, bad) in enumerate(found):
        warnings: list[str] = []
        common, configuration, fields, time_field = _doc_trace_fields(doc, trace)
        if bad:
            warnings.append(f"{bad} malformed event(s) skipped")
        sample = _num(first.get("time")) if first else None
        clock, ref = _make_clock(common, configuration, time_field, sample, warnings)
        if clock.delta:
            return None  # running sums need every event in order: the eager reader does that
        info = _doc_trace_info(name, index, doc, trace, common, first or {}, node, fmt, version, ref, warnings)
        traces.append(LazyDocTrace(info, text, spans, clock, fields, common))
    return traces


def _ascii(mm: mmap.mmap) -> bool:
    chunk = 1 << 20
    return all(mm[i : i + chunk].isascii() for i in range(0, len(mm), chunk))


def _regular_file(name: str) -> int:
    """The size of a regular file; TraceReadError for anything else (a FIFO must not block us,
    /dev/zero must not be read)."""
    try:
        st = os.stat(name)
    except OSError as exc:
        raise TraceReadError(f"{name}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise TraceReadError(f"{name}: a directory, not a trace file")
    if not stat.S_ISREG(st.st_mode):
        raise TraceReadError(f"{name}: not a regular file (a pipe, socket or device): refusing to read it")
    return st.st_size


def open_trace_file(path: PathLike, node: str | None = None) -> list[ReaderTrace]:
    """Read one file of any supported shape; raises TraceReadError if it is not qlog."""
    name = str(path)
    size = _regular_file(name)
    try:
        with open(name, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError as exc:
        raise TraceReadError(f"{name}: {exc.strerror or exc}") from None
    body = head.lstrip(b" \t\r\n\xef\xbb\xbf")
    if not body:
        raise TraceReadError(f"{name}: empty file")
    if body[:1] == RS:
        return [SqlogTrace(name, "json-seq", node)]
    if body[:1] != b"{":
        raise TraceReadError(f"{name}: not a qlog file (starts with {body[:12]!r})")
    # A JSON object: a whole document, or the header line of NDJSON, or a JSON-SEQ header
    # written without its 0x1E. One line that parses alone and has no `traces` means lines.
    newline = body.find(NL)
    if newline > 0:
        try:
            first = _json.loads(body[:newline])
        except _json.JSONDecodeError:
            first = None
        if isinstance(first, dict) and "traces" not in first and body[newline:].strip():
            return [SqlogTrace(name, "json-seq" if RS in head else "ndjson", node)]
    if RS in head:
        return [SqlogTrace(name, "json-seq", node)]
    if size >= LAZY_DOC_MIN_BYTES:
        lazy = _lazy_doc_traces(name, node)
        if lazy is not None:
            return lazy
    try:
        with open(name, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise TraceReadError(f"{name}: {exc.strerror or exc}") from None
    return _json_doc_traces(name, data, node)


# --------------------------------------------------------------------------- recordings


def _node_entry(entry: Any, default_dir: str | None = None) -> NodeEntry | None:
    if not isinstance(entry, dict) or not entry.get("name"):
        return None
    node_id = entry.get("id", entry.get("node_id"))
    return NodeEntry(
        name=str(entry["name"]),
        node_id=str(node_id) if node_id is not None else None,
        address=str(entry["address"]) if entry.get("address") is not None else None,
        role=str(entry["role"]) if entry.get("role") is not None else None,
        dir=str(entry.get("dir") or default_dir or entry["name"]),
    )


def _read_json_file(path: Path) -> Any:
    with open(path, "rb") as fh:
        return _json.loads(fh.read())


def _read_directory(root: Path, rec: Recording, open_traces: bool = True) -> None:
    """A dhtscope recording (manifest + node dirs) or any directory of trace files."""
    dir_nodes: dict[Path, str] = {}
    known = {n.name for n in rec.nodes}
    manifest_path = root / "manifest.json"
    if manifest_path.is_file():
        try:
            manifest = _read_json_file(manifest_path)
            if not isinstance(manifest, dict):
                raise ValueError("not an object")
        except (OSError, ValueError) as exc:
            rec.warnings.append(f"{manifest_path}: unreadable manifest ({exc}); scanning the directory")
        else:
            if rec.dhtscope_version is None and manifest.get("dhtscope_version") is not None:
                rec.dhtscope_version = str(manifest["dhtscope_version"])
            for raw in manifest.get("nodes") or ():
                entry = _node_entry(raw)
                if entry is None:
                    rec.warnings.append(f"{manifest_path}: node entry {raw!r} ignored")
                    continue
                node_dir = (root / entry.dir).resolve() if entry.dir else None
                if node_dir is not None and not node_dir.is_dir():
                    rec.warnings.append(f"{manifest_path}: directory of node {entry.name} missing")
                if node_dir is not None:
                    dir_nodes[node_dir] = entry.name
                if entry.name not in known:
                    rec.nodes.append(entry)
                    known.add(entry.name)

    files: list[Path] = []
    for path in sorted(root.rglob("*")):
        if path.name == "node.json" and path.is_file():
            parent = path.parent.resolve()
            try:
                entry = _node_entry(_read_json_file(path), str(path.parent.relative_to(root)))
            except (OSError, ValueError) as exc:
                rec.warnings.append(f"{path}: unreadable node entry ({exc})")
                continue
            if entry is None:
                continue
            dir_nodes.setdefault(parent, entry.name)
            if entry.name not in known:
                rec.nodes.append(entry)
                known.add(entry.name)
            else:
                # A manifest written before its nodes started may lack what only the
                # node knows (its id): node.json fills such gaps, the manifest wins otherwise.
                for i, listed in enumerate(rec.nodes):
                    if listed.name == entry.name:
                        rec.nodes[i] = dataclasses.replace(
                            listed,
                            node_id=listed.node_id or entry.node_id,
                            address=listed.address or entry.address,
                            role=listed.role or entry.role,
                        )
        elif path.suffix.lower() in TRACE_SUFFIXES and path.name not in _NOT_TRACES and path.is_file():
            files.append(path)

    if not open_traces:
        return
    resolved_root = root.resolve()
    for path in files:
        parent = path.parent.resolve()
        node = dir_nodes.get(parent) or (path.parent.name if parent != resolved_root else None)
        try:
            rec.traces.extend(open_trace_file(path, node))
        except TraceReadError as exc:
            if path.suffix.lower() == ".json" and "not a qlog" in str(exc):
                continue  # other JSON in the directory (configs, results) is not ours to judge
            rec.warnings.append(str(exc))


def open_recording(path: PathLike, *more: PathLike) -> Recording:
    """Read a recording directory, or one or more trace files/directories, into a Recording.

    Raises TraceReadError for a named file that is missing or not qlog; problems inside a
    directory (unreadable files, truncated records) become warnings instead.
    """
    rec = Recording(path=str(path), traces=[])
    for item in (path, *more):
        item = Path(item)
        if item.is_dir():
            _read_directory(item, rec)
        elif item.exists():
            rec.traces.extend(open_trace_file(item))
        else:
            raise TraceReadError(f"{item}: no such file or directory")
    for trace in rec.traces:
        rec.warnings.extend(f"{trace.info.path}: {w}" for w in trace.info.warnings)
    return rec


def read_nodes(path: PathLike, *more: PathLike) -> list[NodeEntry]:
    """The nodes `open_recording` would list from manifests and node.json files, without
    opening a trace: quick however large the recording. Nodes known only from trace
    headers (foreign traces) are not included; paths that are not directories name none."""
    rec = Recording(path=str(path), traces=[])
    for item in (path, *more):
        item = Path(item)
        if item.is_dir():
            _read_directory(item, rec, open_traces=False)
    return rec.nodes


__all__ = [
    "DocTrace",
    "ReaderTrace",
    "SqlogTrace",
    "TraceReadError",
    "canonical_name",
    "open_recording",
    "open_trace_file",
    "read_nodes",
]
