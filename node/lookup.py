"""Iterative Kademlia lookup (FIND_NODE / FIND_VALUE) as a sans-I/O state machine.

The caller asks `next_queries(now)` whom to query, sends the RPCs however it
likes (QUIC, or the simulator), and reports each outcome with `on_response`
or `on_failure`, until `done`. Nothing here reads a clock or a socket.

Rules: the shortlist is kept sorted by XOR distance to the target; at most
`alpha` queries are in flight; candidates are the not-yet-queried among the
k closest contacts that have not failed. When a round brings nothing closer,
classic Kademlia queries all of the k closest not yet asked; drawing from the
k closest with the alpha cap, as here, does exactly that, alpha at a time.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .constants import ALPHA, K
from .ids import Contact, NodeId, PackedContacts

FIND_NODE = "find_node"
FIND_VALUE = "find_value"
KINDS = (FIND_NODE, FIND_VALUE)

# Shortlist entry states.
_NEW, _IN_FLIGHT, _ANSWERED, _FAILED = range(4)


@dataclass(frozen=True, slots=True)
class Hop:
    """One query of a lookup: whom we asked, in which round, how long it took, what came back."""

    round: int
    contact: Contact
    sent_at: float
    rtt_s: float | None
    returned: Sequence[Contact]
    values: int
    error: str | None


@dataclass(frozen=True, slots=True)
class LookupResult:
    """The outcome of a finished (or abandoned) lookup."""

    target: NodeId
    kind: str
    closest: tuple[Contact, ...]
    values: tuple[Any, ...]
    hops: tuple[Hop, ...]
    rounds: int
    messages: int
    found: bool
    failed: int


class _Entry:
    __slots__ = ("contact", "round", "state", "sent_at")

    def __init__(self, contact: Contact, round_: int) -> None:
        self.contact = contact
        self.round = round_
        self.state = _NEW
        self.sent_at = 0.0


class Lookup:
    """One iterative lookup towards `target`, started from `seeds`."""

    def __init__(
        self,
        target: NodeId,
        seeds: Iterable[Contact],
        kind: str,
        now: float,
        k: int = K,
        alpha: int = ALPHA,
        self_id: NodeId | None = None,
        value_quorum: int | None = None,
        value_key: Callable[[Any], Hashable] = repr,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"lookup kind must be one of {KINDS}, got {kind!r}")
        if k < 1 or alpha < 1:
            raise ValueError("k and alpha must be at least 1")
        if value_quorum is not None and (kind != FIND_VALUE or value_quorum < 1):
            raise ValueError("value_quorum needs kind 'find_value' and must be at least 1")
        self.target = target
        self.kind = kind
        self.k = k
        self.alpha = alpha
        self.self_id = self_id
        self.value_quorum = value_quorum
        self.value_key = value_key
        self.started_at = now
        self._tv = target.value
        self._self_value = self_id.value if self_id is not None else -1
        # Keyed by XOR distance, which identifies a node once the target is fixed.
        self._entries: dict[int, _Entry] = {}
        self._order: list[int] = []
        self._in_flight = 0
        self._messages = 0
        self._failed = 0
        self._hops: list[Hop] = []
        self._values: list[Any] = []
        self._value_keys: set[Hashable] = set()
        self._value_nodes = 0
        self._scan: tuple[list[_Entry], bool] | None = None
        self._learn(seeds, 1)

    def _learn(self, contacts: Iterable[Contact], round_: int) -> None:
        entries = self._entries
        order = self._order
        tv = self._tv
        sv = self._self_value
        if isinstance(contacts, PackedContacts):
            # Answers repeat most of what the lookup knows: build only the contacts it does not.
            for i, value in enumerate(contacts.id_values()):
                if value == sv:
                    continue
                distance = value ^ tv
                entry = entries.get(distance)
                if entry is None:
                    entries[distance] = _Entry(contacts[i], round_)
                    insort(order, distance)
                    self._scan = None
                elif entry.state == _NEW and round_ < entry.round:
                    entry.round = round_
            return
        for contact in contacts:
            value = contact.node_id.value
            if value == sv:
                continue
            distance = value ^ tv
            entry = entries.get(distance)
            if entry is None:
                entries[distance] = _Entry(contact, round_)
                insort(order, distance)
                self._scan = None
            elif entry.state == _NEW and round_ < entry.round:
                entry.round = round_

    def _closest_live(self) -> tuple[list[_Entry], bool]:
        """The not-yet-queried among the k closest live entries, and whether all of those answered.

        Cached until the shortlist changes: the driver asks after every event.
        """
        if self._scan is None:
            fresh: list[_Entry] = []
            all_answered = True
            n = 0
            entries = self._entries
            for distance in self._order:
                entry = entries[distance]
                state = entry.state
                if state == _FAILED:
                    continue
                if state != _ANSWERED:
                    all_answered = False
                    if state == _NEW:
                        fresh.append(entry)
                n += 1
                if n == self.k:
                    break
            self._scan = (fresh, all_answered)
        return self._scan

    # -- driving ---------------------------------------------------------

    def next_queries(self, now: float) -> list[Contact]:
        """Contacts to query now; each is counted in flight until its outcome is reported."""
        if self.done:
            return []
        room = self.alpha - self._in_flight
        if room <= 0:
            return []
        fresh, _ = self._closest_live()
        chosen = fresh[:room]
        out: list[Contact] = []
        for entry in chosen:
            entry.state = _IN_FLIGHT
            entry.sent_at = now
            out.append(entry.contact)
        if chosen:
            self._scan = None
        self._in_flight += len(out)
        self._messages += len(out)
        return out

    def _take(self, contact: Contact) -> _Entry:
        entry = self._entries.get(contact.node_id.value ^ self._tv)
        if entry is None or entry.state != _IN_FLIGHT:
            raise ValueError(f"no query to {contact} is in flight")
        self._in_flight -= 1
        return entry

    def on_response(
        self,
        contact: Contact,
        now: float,
        contacts: Iterable[Contact],
        values: list[Any] | None = None,
    ) -> None:
        """`contact` answered with `contacts` (and, for FIND_VALUE, maybe `values`)."""
        entry = self._take(contact)
        entry.state = _ANSWERED
        self._scan = None
        returned = contacts if isinstance(contacts, PackedContacts) else tuple(contacts)
        self._learn(returned, entry.round + 1)
        if values:
            self._value_nodes += 1
            for value in values:
                key = self.value_key(value)
                if key not in self._value_keys:
                    self._value_keys.add(key)
                    self._values.append(value)
        self._hops.append(
            Hop(entry.round, entry.contact, entry.sent_at, now - entry.sent_at, returned, len(values or ()), None)
        )

    def on_failure(self, contact: Contact, now: float, error: str) -> None:
        """The query to `contact` failed (timeout, refused, bad answer); it is never asked again."""
        entry = self._take(contact)
        entry.state = _FAILED
        self._scan = None
        self._failed += 1
        self._hops.append(Hop(entry.round, entry.contact, entry.sent_at, None, (), 0, error))

    # -- state -----------------------------------------------------------

    @property
    def done(self) -> bool:
        """Quorum of values reached, or every one of the k closest live contacts has answered."""
        if self.value_quorum is not None and self._value_nodes >= self.value_quorum:
            return True
        return self._closest_live()[1]

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def hops(self) -> tuple[Hop, ...]:
        return tuple(self._hops)

    def shortlist(self) -> list[tuple[Contact, str]]:
        """Every contact learned, nearest first, with its state, for display."""
        names = ("new", "in_flight", "answered", "failed")
        return [(self._entries[d].contact, names[self._entries[d].state]) for d in self._order]

    def result(self) -> LookupResult:
        answered = [e for d in self._order if (e := self._entries[d]).state == _ANSWERED]
        closest = tuple(e.contact for e in answered[: self.k])
        rounds = max((h.round for h in self._hops if h.error is None), default=0)
        values = tuple(self._values)
        found = bool(values) if self.kind == FIND_VALUE else bool(answered)
        return LookupResult(
            target=self.target,
            kind=self.kind,
            closest=closest,
            values=values,
            hops=tuple(self._hops),
            rounds=rounds,
            messages=self._messages,
            found=found,
            failed=self._failed,
        )
