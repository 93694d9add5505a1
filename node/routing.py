"""Kademlia routing table: k-buckets with a replacement cache, sans-I/O.

Time is always passed in (`now`, seconds); the table never reads a clock.
A full bucket never drops a live contact: the newcomer waits in the bucket's
replacement cache, the caller PINGs the least-recently-seen contact, and only
when it reports that contact `failed` is it evicted and a replacement promoted.

Buckets are created lazily and hold plain parallel lists (contacts, last
seen) so that a simulator can keep 100,000 tables in memory.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import dataclass

from .constants import BUCKET_REFRESH_S, CONTACT_FAILURES_BEFORE_EVICT, ID_BITS, REPLACEMENT_CACHE_SIZE, K
from .ids import Contact, NodeId

# Kademlia evicts a contact after one unanswered request once a bucket is
# full; a table may be built to tolerate more (a lossy link, say).
FAILURES_BEFORE_EVICT = CONTACT_FAILURES_BEFORE_EVICT

ADDED = "added"
UPDATED = "updated"
REPLACEMENT_CACHED = "replacement_cached"
EVICTED = "evicted"
REMOVED = "removed"
IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class RoutingChange:
    """What one `seen` or `failed` call did to the table.

    action: "added", "updated" (known contact seen again; `previous` is set
    if its address changed), "replacement_cached" (bucket full: PING `ping`),
    "evicted" (removed from its bucket; `promoted` took its place, if any),
    "removed" (dropped from a replacement cache), "ignored" (our own id).
    """

    action: str
    contact: Contact
    bucket: int
    ping: Contact | None = None
    promoted: Contact | None = None
    previous: Contact | None = None


@dataclass(frozen=True, slots=True)
class ContactEntry:
    """A contact as the table knows it, for display."""

    contact: Contact
    last_seen: float
    failures: int = 0


@dataclass(frozen=True, slots=True)
class BucketSnapshot:
    """One bucket, least recently seen first."""

    index: int
    contacts: tuple[ContactEntry, ...]
    replacements: tuple[ContactEntry, ...]
    last_touched: float | None


class _Bucket:
    """Contacts oldest-seen first, with their last-seen times in a parallel list."""

    __slots__ = ("contacts", "seen_at", "failures", "replacements")

    def __init__(self) -> None:
        self.contacts: list[Contact] = []
        self.seen_at: list[float] = []
        # Both rare, so created only when needed: id value -> count, and
        # (contact, last_seen) pairs oldest first.
        self.failures: dict[int, int] | None = None
        self.replacements: list[tuple[Contact, float]] | None = None

    def find(self, value: int) -> int:
        for i, contact in enumerate(self.contacts):
            if contact.node_id.value == value:
                return i
        return -1

    def find_replacement(self, value: int) -> int:
        if self.replacements:
            for i, (contact, _) in enumerate(self.replacements):
                if contact.node_id.value == value:
                    return i
        return -1

    def pop(self, i: int) -> Contact:
        contact = self.contacts.pop(i)
        del self.seen_at[i]
        if self.failures:
            self.failures.pop(contact.node_id.value, None)
        return contact


class RoutingTable:
    """k-buckets indexed by `self_id.bucket_index(other)`: 0 (nearest) .. 255 (farthest half)."""

    __slots__ = (
        "self_id",
        "k",
        "replacement_size",
        "failures_before_evict",
        "_self_value",
        "_buckets",
        "_touched",
        "_count",
    )

    def __init__(
        self,
        self_id: NodeId,
        k: int = K,
        replacement_size: int = REPLACEMENT_CACHE_SIZE,
        failures_before_evict: int = FAILURES_BEFORE_EVICT,
    ) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        if failures_before_evict < 1:
            raise ValueError("failures_before_evict must be at least 1")
        self.self_id = self_id
        self.k = k
        self.replacement_size = max(0, replacement_size)
        self.failures_before_evict = failures_before_evict
        self._self_value = self_id.value
        self._buckets: dict[int, _Bucket] = {}
        self._touched: dict[int, float] | None = None
        self._count = 0

    # -- updates ---------------------------------------------------------

    def seen(self, contact: Contact, now: float) -> RoutingChange:
        """Record that `contact` answered us or sent us a request."""
        value = contact.node_id.value
        index = (value ^ self._self_value).bit_length() - 1
        if index < 0:
            return RoutingChange(IGNORED, contact, -1)
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = _Bucket()
        i = bucket.find(value)
        if i >= 0:
            old = bucket.pop(i)
            bucket.contacts.append(contact)
            bucket.seen_at.append(now)
            previous = old if (old.host, old.port) != (contact.host, contact.port) else None
            return RoutingChange(UPDATED, contact, index, previous=previous)
        if len(bucket.contacts) < self.k:
            bucket.contacts.append(contact)
            bucket.seen_at.append(now)
            self._count += 1
            # A contact that made it into the bucket is no longer a candidate.
            j = bucket.find_replacement(value)
            if j >= 0 and bucket.replacements is not None:
                del bucket.replacements[j]
            return RoutingChange(ADDED, contact, index)
        self._cache_replacement(bucket, contact, now)
        return RoutingChange(REPLACEMENT_CACHED, contact, index, ping=bucket.contacts[0])

    def _cache_replacement(self, bucket: _Bucket, contact: Contact, now: float) -> None:
        if self.replacement_size == 0:
            return
        j = bucket.find_replacement(contact.node_id.value)
        if bucket.replacements is None:
            bucket.replacements = []
        elif j >= 0:
            del bucket.replacements[j]
        bucket.replacements.append((contact, now))
        if len(bucket.replacements) > self.replacement_size:
            # Most recently seen candidates are the likeliest to be alive.
            del bucket.replacements[0]

    def failed(self, node_id: NodeId, now: float) -> RoutingChange | None:
        """Record that `node_id` did not answer; None if nothing changed but its failure count."""
        value = node_id.value
        index = (value ^ self._self_value).bit_length() - 1
        bucket = self._buckets.get(index) if index >= 0 else None
        if bucket is None:
            return None
        i = bucket.find(value)
        if i >= 0:
            if self.failures_before_evict > 1:
                if bucket.failures is None:
                    bucket.failures = {}
                count = bucket.failures.get(value, 0) + 1
                bucket.failures[value] = count
                if count < self.failures_before_evict:
                    return None
            contact = bucket.pop(i)
            self._count -= 1
            promoted = None
            if bucket.replacements:
                promoted, seen_at = bucket.replacements.pop()
                # Keep the bucket in last-seen order: the candidate may be older than some members.
                at = bisect_right(bucket.seen_at, seen_at)
                bucket.contacts.insert(at, promoted)
                bucket.seen_at.insert(at, seen_at)
                self._count += 1
            self._drop_if_empty(index, bucket)
            return RoutingChange(EVICTED, contact, index, promoted=promoted)
        j = bucket.find_replacement(value)
        if j >= 0 and bucket.replacements is not None:
            contact, _ = bucket.replacements.pop(j)
            self._drop_if_empty(index, bucket)
            return RoutingChange(REMOVED, contact, index)
        return None

    def _drop_if_empty(self, index: int, bucket: _Bucket) -> None:
        if not bucket.contacts and not bucket.replacements:
            del self._buckets[index]

    # -- queries ---------------------------------------------------------

    def closest(self, target: NodeId, count: int = K, exclude: NodeId | None = None) -> list[Contact]:
        """Up to `count` contacts nearest `target` by XOR distance, nearest first."""
        if count <= 0 or not self._count:
            return []
        tv = target.value
        b = (tv ^ self._self_value).bit_length() - 1
        buckets = self._buckets
        ev = exclude.value if exclude is not None else -1
        # One spare, in case the excluded id is among those gathered.
        need = count + 1 if ev >= 0 else count
        picked: list[Contact] = []
        take = picked.extend

        # Seen from target, bucket b holds everything closer than 2**b, all
        # buckets below b share [2**b, 2**(b+1)), and each bucket i > b is
        # alone in [2**i, 2**(i+1)). So whole groups, in that order, suffice.
        if b >= 0 and (bucket := buckets.get(b)) is not None:
            take(bucket.contacts)
        if len(picked) < need and b > 0:
            for i, bucket in buckets.items():
                if i < b:
                    take(bucket.contacts)
        if len(picked) < need:
            for i in sorted(i for i in buckets if i > b):
                take(buckets[i].contacts)
                if len(picked) >= need:
                    break
        picked.sort(key=lambda c: c.node_id.value ^ tv)
        if ev >= 0:
            picked = [c for c in picked[:need] if c.node_id.value != ev]
        del picked[count:]
        return picked

    def contacts(self) -> list[Contact]:
        """Every contact in the buckets (not the replacement caches), nearest bucket first."""
        out: list[Contact] = []
        for index in sorted(self._buckets):
            out.extend(self._buckets[index].contacts)
        return out

    def get(self, node_id: NodeId) -> Contact | None:
        bucket = self._bucket_of(node_id)
        if bucket is None:
            return None
        i = bucket.find(node_id.value)
        return bucket.contacts[i] if i >= 0 else None

    def last_seen(self, node_id: NodeId) -> float | None:
        bucket = self._bucket_of(node_id)
        if bucket is None:
            return None
        i = bucket.find(node_id.value)
        return bucket.seen_at[i] if i >= 0 else None

    def failures(self, node_id: NodeId) -> int:
        """Unanswered requests since `node_id` was last seen (only counted when eviction needs several)."""
        bucket = self._bucket_of(node_id)
        if bucket is None or not bucket.failures:
            return 0
        return bucket.failures.get(node_id.value, 0)

    def _bucket_of(self, node_id: NodeId) -> _Bucket | None:
        index = self.self_id.bucket_index(node_id)
        return self._buckets.get(index) if index >= 0 else None

    def __len__(self) -> int:
        return self._count

    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, NodeId) and self.get(node_id) is not None

    def buckets(self) -> list[BucketSnapshot]:
        """Non-empty buckets (contacts or replacements), nearest first, for display."""
        out = []
        touched = self._touched or {}
        for index in sorted(self._buckets):
            bucket = self._buckets[index]
            fails = bucket.failures or {}
            out.append(
                BucketSnapshot(
                    index=index,
                    contacts=tuple(
                        ContactEntry(c, t, fails.get(c.node_id.value, 0))
                        for c, t in zip(bucket.contacts, bucket.seen_at, strict=True)
                    ),
                    replacements=tuple(ContactEntry(c, t) for c, t in bucket.replacements or ()),
                    last_touched=touched.get(index),
                )
            )
        return out

    # -- refresh ---------------------------------------------------------

    def touch_bucket(self, index: int, now: float) -> None:
        """Note that a lookup went into bucket `index`'s range, so it needs no refresh for a while."""
        if not 0 <= index < ID_BITS:
            raise ValueError(f"bucket index must be 0..{ID_BITS - 1}, got {index}")
        if self._touched is None:
            self._touched = {}
        self._touched[index] = now

    def stale_buckets(self, now: float, refresh_s: float = BUCKET_REFRESH_S) -> list[int]:
        """Buckets to refresh: from the nearest non-empty one out to 255, not touched for `refresh_s`.

        Like libp2p's "refresh up to the last non-empty bucket": buckets nearer
        than our nearest known contact are covered by the self-lookup. A bucket
        never touched is stale, so a fresh node refreshes everything once.
        """
        nonempty = [i for i, b in self._buckets.items() if b.contacts]
        if not nonempty:
            return []
        touched = self._touched or {}
        out = []
        for index in range(min(nonempty), ID_BITS):
            t = touched.get(index)
            if t is None or now - t >= refresh_s:
                out.append(index)
        return out

    def random_id_in_bucket(self, index: int, rng: random.Random) -> NodeId:
        """A random id whose bucket, seen from self, is `index`."""
        if not 0 <= index < ID_BITS:
            raise ValueError(f"bucket index must be 0..{ID_BITS - 1}, got {index}")
        # Flip bit `index`, keep the higher bits, randomise the lower ones.
        return NodeId(self._self_value ^ (1 << index) ^ rng.getrandbits(index))
