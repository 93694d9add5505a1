"""The record store: live signed records, one per (key, publisher), shared fairly between networks.

Sans-I/O: `now` (unix seconds) is always an argument. Each record is kept until its expiry or
`max_kept_ttl_s` after it arrived, whichever comes first. Its origin is the address of the
connection its STORE came on (never anything the record claims), grouped as node/diversity.py
says: one network may hold only `max_per_network_per_key` records under a key, and when a key
or the whole store is full the network holding the most records gives one up (its soonest to
expire) instead of every newcomer being refused.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from .constants import (
    MAX_KEPT_TTL_S,
    MAX_RECORDS_PER_KEY,
    MAX_RECORDS_PER_NETWORK_PER_KEY,
    MAX_RECORDS_PER_PEER,
    MAX_RECORDS_TOTAL,
)
from .diversity import cap_group
from .endpoints import EndpointError, check_endpoint
from .ids import NodeId
from .records import Record, RecordRejected, verify

Action = Literal["stored", "replaced", "refreshed", "refused"]


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """What `RecordStore.put` did with a record, and why."""

    accepted: bool
    action: Action
    reason: str
    record: Record
    previous: Record | None = None  # the record this one replaced or refreshed, if any
    purged: tuple[Record, ...] = ()  # expired records removed while making room
    from_peer: NodeId | None = None  # who sent it (may differ from the publisher)
    evicted: tuple[Record, ...] = ()  # live records given up to make room (fair eviction)
    kept_until: float | None = None  # when this node drops it (accepted records only)
    clamped: str = ""  # set when kept_until is earlier than the record's own expiry: how much

    @property
    def summary(self) -> str:
        """The STORE result's text: the action (and the clamp) if accepted, else the reason."""
        if not self.accepted:
            return self.reason
        return f"{self.action}; {self.clamped}" if self.clamped else self.action


class _Kept:
    """One stored record and what the store knows about it."""

    __slots__ = ("record", "kept_until", "origin", "rank", "cap")

    def __init__(self, record: Record, kept_until: float, origin: str | None) -> None:
        self.record = record
        self.kept_until = kept_until
        self.origin = origin
        self.rank, self.cap = cap_group(origin)


class _GroupCounts:
    """Records per group, with the largest group found in O(1)."""

    __slots__ = ("count", "by_count", "top")

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        # count -> groups holding exactly that many, oldest first (a dict keeps ties deterministic).
        self.by_count: dict[int, dict[str, None]] = {}
        self.top = 0

    def add(self, group: str) -> None:
        n = self.count.get(group, 0)
        if n:
            self._leave(n, group)
        self.count[group] = n + 1
        self.by_count.setdefault(n + 1, {})[group] = None
        self.top = max(self.top, n + 1)

    def remove(self, group: str) -> None:
        n = self.count[group]
        self._leave(n, group)
        if n > 1:
            self.count[group] = n - 1
            self.by_count.setdefault(n - 1, {})[group] = None
        else:
            del self.count[group]
        while self.top and self.top not in self.by_count:
            self.top -= 1

    def _leave(self, n: int, group: str) -> None:
        level = self.by_count[n]
        del level[group]
        if not level:
            del self.by_count[n]

    def largest(self, prefer: str) -> str | None:
        """A group holding the most records: `prefer` if it is one of them."""
        if not self.top:
            return None
        if self.count.get(prefer) == self.top:
            return prefer
        return next(iter(self.by_count[self.top]))


class RecordStore:
    """Live signed records, one per (key, publisher), with explicit limits, fair eviction and expiry."""

    def __init__(
        self,
        max_per_key: int = MAX_RECORDS_PER_KEY,
        max_per_peer: int = MAX_RECORDS_PER_PEER,
        max_total: int = MAX_RECORDS_TOTAL,
        max_per_network_per_key: int = MAX_RECORDS_PER_NETWORK_PER_KEY,
        max_kept_ttl_s: float = MAX_KEPT_TTL_S,
    ) -> None:
        if min(max_per_key, max_per_peer, max_total, max_per_network_per_key) < 1:
            raise ValueError("record store limits must be at least 1")
        if max_kept_ttl_s <= 0:
            raise ValueError("max_kept_ttl_s must be positive")
        self.max_per_key = max_per_key
        self.max_per_peer = max_per_peer
        self.max_total = max_total
        self.max_per_network_per_key = max_per_network_per_key
        self.max_kept_ttl_s = max_kept_ttl_s
        self._by_key: dict[NodeId, dict[NodeId, _Kept]] = {}
        self._per_publisher: dict[NodeId, int] = {}
        self._total = 0
        self._ranks = _GroupCounts()
        # (kept_until, tie-breaker, entry), for the whole store and per rank group. An entry is
        # stale once it is no longer the one stored for its (key, publisher); stale entries are
        # skipped when they surface.
        self._heap: list[tuple[float, int, _Kept]] = []
        self._rank_heaps: dict[str, list[tuple[float, int, _Kept]]] = {}
        self._tiebreak = itertools.count()

    def put(
        self,
        record: Record,
        now: float,
        from_peer: NodeId | None = None,
        origin: str | None = None,
        keep_until: float | None = None,
    ) -> StoreOutcome:
        """Verify and store `record` that came from address `origin` (None: this node's own).

        `keep_until` (a reloaded record's old deadline) can only shorten how long it is kept.
        Never raises for a bad record; the outcome says why.
        """
        # Expired records always go first, so they never hold a slot a live record could use.
        purged = tuple(self.expire(now))

        def refuse(reason: str, previous: Record | None = None) -> StoreOutcome:
            return StoreOutcome(False, "refused", reason, record, previous, purged, from_peer)

        try:
            verify(record, now)
        except RecordRejected as exc:
            return refuse(exc.reason)
        problem = advertisement_problem(record)
        if problem is not None:
            return refuse(problem)

        limit = now + self.max_kept_ttl_s
        kept_until = min(record.expires_at, limit)
        if keep_until is not None:
            kept_until = min(kept_until, keep_until)
        if kept_until <= now:
            return refuse("record's time on this node has run out")
        clamped = ""
        if record.expires_at > limit and (keep_until is None or keep_until > limit):
            clamped = (
                f"TTL clamped: kept {self.max_kept_ttl_s:.0f} s, not the {record.expires_at - now:.0f} s "
                "it asks (this node's maximum TTL)"
            )

        def accept(
            action: Action, reason: str, previous: Record | None, evicted: tuple[Record, ...] = ()
        ) -> StoreOutcome:
            return StoreOutcome(True, action, reason, record, previous, purged, from_peer, evicted, kept_until, clamped)

        slots = self._by_key.get(record.key)
        existing = slots.get(record.publisher) if slots else None
        if existing is not None:
            old = existing.record
            if record.seq > old.seq:
                self._set(_Kept(record, kept_until, origin), existing)
                return accept("replaced", f"sequence number {record.seq} replaces {old.seq}", old)
            if record.seq == old.seq:
                if record.signed_payload() == old.signed_payload():
                    # The same record again: it stays as long as if it had just arrived.
                    self._set(_Kept(old, kept_until, origin), existing)
                    return StoreOutcome(
                        True,
                        "refreshed",
                        "the same record is already stored",
                        old,
                        old,
                        purged,
                        from_peer,
                        (),
                        kept_until,
                        clamped,
                    )
                # Two different records with one seq means the publisher (or its key) is
                # equivocating; keeping the first is the only answer every node agrees on.
                return refuse(
                    f"same sequence number ({record.seq}) as the stored record but different "
                    "contents; the publisher must increase its sequence number",
                    old,
                )
            return refuse(f"older sequence number than the stored record ({record.seq} < {old.seq})", old)

        entry = _Kept(record, kept_until, origin)
        if entry.cap is not None and slots:
            same = sum(1 for other in slots.values() if other.cap == entry.cap)
            if same >= self.max_per_network_per_key:
                return refuse(
                    f"this key already holds {same} records sent from {entry.cap}, the limit per network "
                    f"per key (max_per_network_per_key={self.max_per_network_per_key})"
                )
        by_publisher = self._per_publisher.get(record.publisher, 0)
        if by_publisher >= self.max_per_peer:
            return refuse(
                f"this publisher already has {by_publisher} records on this node, the limit per "
                f"publisher (max_per_peer={self.max_per_peer})"
            )
        # Full: the network holding the most records gives up its soonest to expire, so squatters
        # crowd out only each other and a newcomer from a network with fewer records always gets in.
        evicted: list[Record] = []
        if slots and len(slots) >= self.max_per_key:
            victim = _victim_in_key(slots, entry.rank)
            self._remove(victim)
            evicted.append(victim.record)
        if self._total >= self.max_total:
            victim = self._victim_in_store(entry.rank)
            self._remove(victim)
            evicted.append(victim.record)
        self._set(entry, None)
        return accept("stored", "new record", None, tuple(evicted))

    def get(self, key: NodeId, now: float) -> list[Record]:
        """Live records under `key`, ordered by publisher id."""
        slots = self._by_key.get(key)
        if not slots:
            return []
        return [slots[p].record for p in sorted(slots) if slots[p].kept_until > now]

    def expire(self, now: float) -> list[Record]:
        """Remove and return every record kept until <= now, soonest first."""
        expired: list[Record] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, entry = heapq.heappop(heap)
            if self._is_current(entry):
                self._remove(entry)
                expired.append(entry.record)
        return expired

    def next_expiry(self) -> float | None:
        """When the soonest stored record is dropped, or None if the store is empty."""
        heap = self._heap
        while heap and not self._is_current(heap[0][2]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def keys(self, now: float | None = None) -> list[NodeId]:
        """Keys with at least one record (live at `now`, if given), in id order."""
        if now is None:
            return sorted(self._by_key)
        return sorted(k for k, slots in self._by_key.items() if any(e.kept_until > now for e in slots.values()))

    def records(self, now: float | None = None) -> list[Record]:
        """All records (live at `now`, if given), ordered by key then publisher."""
        return [
            slots[p].record
            for k, slots in sorted(self._by_key.items())
            for p in sorted(slots)
            if now is None or slots[p].kept_until > now
        ]

    def kept(self) -> Iterator[tuple[Record, float, str | None]]:
        """Every record with when it will be dropped and the address it came from (for persistence)."""
        for slots in self._by_key.values():
            for entry in slots.values():
                yield entry.record, entry.kept_until, entry.origin

    def kept_until(self, key: NodeId, publisher: NodeId) -> float | None:
        entry = self._by_key.get(key, {}).get(publisher)
        return entry.kept_until if entry is not None else None

    def count_for_publisher(self, publisher: NodeId) -> int:
        """How many records `publisher` holds on this node."""
        return self._per_publisher.get(publisher, 0)

    def count_for_network(self, host: str | None) -> int:
        """How many records came from the network `host` ranks in (its subnet if public, else itself)."""
        return self._ranks.count.get(cap_group(host)[0], 0)

    def __len__(self) -> int:
        """Records held, including any expired ones `expire()` has not removed yet."""
        return self._total

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records())

    def _is_current(self, entry: _Kept) -> bool:
        slots = self._by_key.get(entry.record.key)
        return slots is not None and slots.get(entry.record.publisher) is entry

    def _victim_in_store(self, prefer: str) -> _Kept:
        group = self._ranks.largest(prefer)
        assert group is not None  # the store is full, so some group holds records
        heap = self._rank_heaps[group]
        while True:
            _, _, entry = heap[0]
            if self._is_current(entry):
                return entry
            heapq.heappop(heap)

    def _set(self, entry: _Kept, previous: _Kept | None) -> None:
        record = entry.record
        self._by_key.setdefault(record.key, {})[record.publisher] = entry
        if previous is None:
            self._per_publisher[record.publisher] = self._per_publisher.get(record.publisher, 0) + 1
            self._total += 1
        else:
            self._ranks.remove(previous.rank)
        self._ranks.add(entry.rank)
        tb = next(self._tiebreak)
        heapq.heappush(self._heap, (entry.kept_until, tb, entry))
        rank_heap = self._rank_heaps.setdefault(entry.rank, [])
        heapq.heappush(rank_heap, (entry.kept_until, tb, entry))
        # Replacements leave stale heap entries behind until their time comes; a publisher that
        # republishes often (long TTL, short margin) would otherwise grow the heaps without bound.
        if len(self._heap) > 2 * self._total + 64:
            self._heap = self._live_heap(None)
        if len(rank_heap) > 2 * self._ranks.count.get(entry.rank, 0) + 64:
            self._rank_heaps[entry.rank] = self._live_heap(entry.rank)

    def _live_heap(self, rank: str | None) -> list[tuple[float, int, _Kept]]:
        heap = [
            (e.kept_until, next(self._tiebreak), e)
            for slots in self._by_key.values()
            for e in slots.values()
            if rank is None or e.rank == rank
        ]
        heapq.heapify(heap)
        return heap

    def _remove(self, entry: _Kept) -> None:
        record = entry.record
        slots = self._by_key[record.key]
        del slots[record.publisher]
        if not slots:
            del self._by_key[record.key]
        left = self._per_publisher[record.publisher] - 1
        if left:
            self._per_publisher[record.publisher] = left
        else:
            del self._per_publisher[record.publisher]
        self._ranks.remove(entry.rank)
        if entry.rank not in self._ranks.count:
            self._rank_heaps.pop(entry.rank, None)
        self._total -= 1


def _victim_in_key(slots: dict[NodeId, _Kept], prefer: str) -> _Kept:
    """Under one key: the soonest to expire of the network holding the most records (`prefer` on a tie)."""
    counts: dict[str, int] = {}
    for entry in slots.values():
        counts[entry.rank] = counts.get(entry.rank, 0) + 1
    top = max(counts.values())
    group = prefer if counts.get(prefer) == top else min(g for g, n in counts.items() if n == top)
    return min(
        (e for e in slots.values() if e.rank == group),
        key=lambda e: (e.kept_until, e.record.publisher.value),
    )


def advertisement_problem(record: Record) -> str | None:
    """Why a service advertisement (a record whose name hashes to its key) is unusable, or None."""
    if record.name is None:
        return None
    try:
        check_endpoint(record.value.decode("utf-8"))
    except UnicodeDecodeError:
        return f"advertisement of {record.name!r} is not UTF-8 text; it must carry an endpoint"
    except EndpointError as exc:
        return f"advertisement of {record.name!r} carries no usable endpoint: {exc}"
    return None
