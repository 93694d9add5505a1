"""The one interface every screen reads: nodes, snapshots, a bounded event buffer, analysis, probes.

Three implementations live beside it: `EmbeddedSource` (a node in the app's own loop),
`AttachSource` (control endpoints of running nodes) and `ReplaySource` (a recording).
Producers only append to `inbox` (a bounded deque); the app drains it on a timer, so a
burst of events costs one append each and never a widget refresh.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dhtscope.node.probes import PROBE_KINDS, PROBES, ProbeError, check_probe_args
from dhtscope.node.scenarios import SCENARIOS
from dhtscope.tracing.analysis import Analysis

INBOX_MAX_EVENTS = 200_000  # events waiting for the next drain; the oldest go first
EVENT_RING_EVENTS = 100_000  # events the Events view can scroll back through
DRAIN_MAX_EVENTS = 100_000  # events moved per drain, so one tick stays short


class SourceError(Exception):
    """An operation the source cannot carry out (node gone, refused, not in this mode)."""


@dataclass(frozen=True, slots=True)
class EventRow:
    """One event as the Events view shows it."""

    time_ms: float
    node: str
    name: str
    conn: str | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node as the Nodes view lists it."""

    name: str
    role: str
    node_id: str
    address: str
    state: str  # running | connected | connecting | waiting | disconnected | refused | recorded
    connections: int = 0
    contacts: int = 0
    records: int = 0
    events: int = 0
    faults: tuple[str, ...] = ()
    detail: str = ""  # why a node is disconnected, where it is attached


class EventStore(Protocol):
    """Events addressed by absolute index: `first <= i < end`."""

    @property
    def first(self) -> int: ...

    @property
    def end(self) -> int: ...

    def get(self, index: int) -> EventRow: ...


class EventRing:
    """A capped ring buffer with absolute indices: old events fall off the front."""

    def __init__(self, capacity: int = EVENT_RING_EVENTS) -> None:
        self.capacity = capacity
        self._items: list[EventRow | None] = [None] * capacity
        self._end = 0

    @property
    def first(self) -> int:
        return max(0, self._end - self.capacity)

    @property
    def end(self) -> int:
        return self._end

    def extend(self, rows: Iterable[EventRow]) -> None:
        items, cap = self._items, self.capacity
        end = self._end
        for row in rows:
            items[end % cap] = row
            end += 1
        self._end = end

    def get(self, index: int) -> EventRow:
        if not self.first <= index < self._end:
            raise IndexError(index)
        row = self._items[index % self.capacity]
        assert row is not None
        return row


def event_matches(row: EventRow, words: list[str], streams: set[int]) -> bool:
    """The Events filter: every word in the name, node or connection; a number names a stream."""
    if streams:
        sid = row.data.get("stream_id")
        if sid not in streams:
            frames = row.data.get("frames")
            if not isinstance(frames, list) or not any(
                isinstance(f, dict) and f.get("stream_id") in streams for f in frames
            ):
                return False
    for word in words:
        if word not in row.name and word not in row.node and (row.conn is None or word not in row.conn):
            return False
    return True


def parse_filter(text: str) -> tuple[list[str], set[int]]:
    """`rpc registry 4` -> words ["rpc", "registry"], streams {4}; `stream:4`/`#4` also name stream 4."""
    words: list[str] = []
    streams: set[int] = set()
    for token in text.split():
        bare = token.removeprefix("stream:").removeprefix("stream=").removeprefix("#")
        if bare.isdigit():
            streams.add(int(bare))
        else:
            words.append(token)
    return words, streams


@dataclass
class ReplayState:
    """Where a replay stands; only ReplaySource has one."""

    position: int = 0  # events played
    total: int = 0  # events indexed so far
    indexing: bool = True
    playing: bool = False
    speed: float = 1.0
    time_ms: float | None = None  # time of the last played event
    first_ms: float | None = None
    last_ms: float | None = None


@dataclass
class _Counts:
    per_node: Counter[str] = field(default_factory=Counter)


class DataSource:
    """Base of the three sources. Subclasses fill in nodes/snapshot/analyse and the actions."""

    kind = "base"
    live = True  # False for replay: no probes, no scenarios
    analysis_interval_s: float | None = 3.0

    def __init__(self) -> None:
        self.title = "dhtscope"
        self.quit_note = ""  # what quitting also ends, said when `q` asks
        self.notices: list[str] = []  # said on screen once the app is up (a demo that moved its ports)
        self.inbox: deque[EventRow] = deque(maxlen=INBOX_MAX_EVENTS)
        self.ring = EventRing(EVENT_RING_EVENTS)
        self.ingested = 0
        self.pushed = 0
        self.dropped = 0  # events the sources told us were lost upstream
        self._counts = _Counts()
        self.last_drain_s = 0.0

    # -- life

    async def start(self) -> None:
        """Open connections, start nodes; the app calls this once it is running."""

    async def stop(self) -> None:
        """Release everything started."""

    # -- events

    @property
    def events(self) -> EventStore:
        return self.ring

    @property
    def replay(self) -> ReplayState | None:
        return None

    def push(self, row: EventRow) -> None:
        """Producer side: one append, nothing else (called from node listeners)."""
        self.inbox.append(row)
        self.pushed += 1

    def drain(self, limit: int = DRAIN_MAX_EVENTS) -> int:
        """Move waiting events into the ring buffer; returns how many moved."""
        inbox = self.inbox
        n = min(len(inbox), limit)
        if not n:
            return 0
        started = time.perf_counter()
        popleft = inbox.popleft
        batch = [popleft() for _ in range(n)]
        self.ring.extend(batch)
        counts = self._counts.per_node
        for row in batch:
            counts[row.node] += 1
        self.ingested += n
        self.on_rows(batch)
        self.last_drain_s = time.perf_counter() - started
        return n

    def on_rows(self, rows: list[EventRow]) -> None:
        """Hook for sources that keep more from each batch (attach keeps traces for analysis)."""

    def event_count(self, node: str) -> int:
        return self._counts.per_node.get(node, 0)

    # -- what the views read

    def nodes(self) -> list[NodeInfo]:
        raise NotImplementedError

    def snapshot(self, node: str) -> dict[str, Any] | None:
        """The node's latest snapshot (Node.snapshot() shape), or None if not known yet."""
        raise NotImplementedError

    def now(self) -> float:
        """Seconds since the epoch that countdowns count from (replay: the replay position)."""
        return time.time()

    def analyse(self) -> Analysis | None:
        """Blocking: run in a worker thread. None when there is nothing to analyse yet."""
        return None

    # -- actions

    async def probe(self, node: str, kind: str, args: list[str]) -> dict[str, Any]:
        raise SourceError("probes need a live node: not available in this mode")

    async def set_scenario(self, node: str, name: str) -> dict[str, Any]:
        raise SourceError("scenarios need a live node: not available in this mode")

    def tick(self) -> None:
        """Called on the app's timer before draining (replay advances its clock here)."""


def check_probe(kind: str, args: list[str]) -> list[str]:
    """A probe's arguments, checked before anything is sent; SourceError says what is wrong."""
    try:
        return check_probe_args(kind, args)
    except ProbeError as exc:
        raise SourceError(str(exc)) from None


def short(hex_id: str | None, n: int = 8) -> str:
    return hex_id[:n] if hex_id else "-"


__all__ = [
    "DataSource",
    "EventRing",
    "EventRow",
    "EventStore",
    "NodeInfo",
    "PROBES",
    "PROBE_KINDS",
    "ReplayState",
    "SCENARIOS",
    "SourceError",
    "check_probe",
    "event_matches",
    "parse_filter",
    "short",
]
