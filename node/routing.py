"""Kademlia routing table: k-buckets with a replacement cache, sans-I/O.

Time is always passed in (`now`, seconds); the table never reads a clock.
A full bucket never drops a live contact: the newcomer waits in the bucket's
replacement cache, the caller PINGs the least-recently-seen contact, and only
when it reports that contact `failed` is it evicted and a replacement promoted.

Buckets are created lazily and hold plain parallel lists (contacts, last
seen) so that a simulator can keep 100,000 tables in memory.

With `limits`, one address or subnet may hold only a few contacts per bucket
and in all (node/diversity.py); a contact over a limit is refused, not cached.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import dataclass

from .constants import BUCKET_REFRESH_S, CONTACT_FAILURES_BEFORE_EVICT, ID_BITS, REPLACEMENT_CACHE_SIZE, K
from .diversity import AddressLimits
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
REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class RoutingChange:
    """What one `seen` or `failed` call did to the table.

    action: "added", "updated" (known contact seen again; `previous` is set
    if its address changed), "replacement_cached" (bucket full: PING `ping`),
    "evicted" (removed from its bucket; `promoted` took its place, if any),
    "removed" (dropped from a replacement cache), "ignored" (our own id),
    "refused" (its address or subnet holds enough contacts already; `reason` says which).
    """

    action: str
    contact: Contact
    bucket: int
    ping: Contact | None = None
    promoted: Contact | None = None
    previous: Contact | None = None
    reason: str | None = None


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
        "limits",
        "_per_address",
        "_per_subnet",
    )

    def __init__(
        self,
        self_id: NodeId,
        k: int = K,
        replacement_size: int = REPLACEMENT_CACHE_SIZE,
        failures_before_evict: int = FAILURES_BEFORE_EVICT,
        limits: AddressLimits | None = None,
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
        self.limits = limits
        # Contacts in buckets per address and per subnet (only counted with limits).
        self._per_address: dict[str, int] = {}
        self._per_subnet: dict[str, int] = {}

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
            old = bucket.contacts[i]
            moved = (old.host, old.port) != (contact.host, contact.port)
            if moved and self.limits is not None and old.host != contact.host:
                self._uncount(old)
                reason = self._over_limit(contact, bucket, exclude=value)
                if reason is not None:
                    self._count_in(old)
                    return RoutingChange(REFUSED, contact, index, previous=old, reason=reason)
                self._count_in(contact)
            bucket.pop(i)
            bucket.contacts.append(contact)
            bucket.seen_at.append(now)
            return RoutingChange(UPDATED, contact, index, previous=old if moved else None)
        if self.limits is not None:
            reason = self._over_limit(contact, bucket)
            if reason is not None:
                self._drop_if_empty(index, bucket)
                return RoutingChange(REFUSED, contact, index, reason=reason)
        if len(bucket.contacts) < self.k:
            bucket.contacts.append(contact)
            bucket.seen_at.append(now)
            self._count += 1
            self._count_in(contact)
            # A contact that made it into the bucket is no longer a candidate.
            j = bucket.find_replacement(value)
            if j >= 0 and bucket.replacements is not None:
                del bucket.replacements[j]
            return RoutingChange(ADDED, contact, index)
        self._cache_replacement(bucket, contact, now)
        return RoutingChange(REPLACEMENT_CACHED, contact, index, ping=bucket.contacts[0])

    def admissible(self, contact: Contact) -> str | None:
        """Why `contact` could not enter the table now (an address or subnet limit), or None."""
        if self.limits is None:
            return None
        value = contact.node_id.value
        index = (value ^ self._self_value).bit_length() - 1
        if index < 0:
            return None
        bucket = self._buckets.get(index)
        if bucket is not None and (i := bucket.find(value)) >= 0:
            old = bucket.contacts[i]
            if old.host == contact.host:
                return None
            self._uncount(old)
            try:
                return self._over_limit(contact, bucket, exclude=value)
            finally:
                self._count_in(old)
        return self._over_limit(contact, bucket)

    def _over_limit(self, contact: Contact, bucket: _Bucket | None, exclude: int = -1) -> str | None:
        limits = self.limits
        if limits is None:
            return None
        group = limits.group(contact.host)
        if group.address is None:
            return None
        if self._per_address.get(group.address, 0) >= limits.per_address_per_table:
            return (
                f"{group.address} already holds {limits.per_address_per_table} contacts of this table "
                "(the limit per address)"
            )
        if group.subnet is not None and self._per_subnet.get(group.subnet, 0) >= limits.per_subnet_per_table:
            return (
                f"{group.subnet} already holds {limits.per_subnet_per_table} contacts of this table "
                "(the limit per subnet)"
            )
        if bucket is None:
            return None
        same_address = same_subnet = 0
        for other in bucket.contacts:
            if other.node_id.value == exclude:
                continue
            theirs = limits.group(other.host)
            if theirs.address == group.address:
                same_address += 1
            if group.subnet is not None and theirs.subnet == group.subnet:
                same_subnet += 1
        if same_address >= limits.per_address_per_bucket:
            return (
                f"{group.address} already holds {limits.per_address_per_bucket} contacts of this bucket "
                "(the limit per address)"
            )
        if same_subnet >= limits.per_subnet_per_bucket:
            return (
                f"{group.subnet} already holds {limits.per_subnet_per_bucket} contacts of this bucket "
                "(the limit per subnet)"
            )
        return None

    def _count_in(self, contact: Contact) -> None:
        if self.limits is None:
            return
        group = self.limits.group(contact.host)
        if group.address is not None:
            self._per_address[group.address] = self._per_address.get(group.address, 0) + 1
        if group.subnet is not None:
            self._per_subnet[group.subnet] = self._per_subnet.get(group.subnet, 0) + 1

    def _uncount(self, contact: Contact) -> None:
        if self.limits is None:
            return
        group = self.limits.group(contact.host)
        for counts, name in ((self._per_address, group.address), (self._per_subnet, group.subnet)):
            if name is None:
                continue
            left = counts.get(name, 0) - 1
            if left > 0:
                counts[name] = left
            else:
                counts.pop(name, None)

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
            self._uncount(contact)
            promoted = None
            j = self._promotable(bucket)
            if j >= 0:
                promoted, seen_at = bucket.replacements.pop(j)  # type: ignore[union-attr]
                # Keep the bucket in last-seen order: the candidate may be older than some members.
                at = bisect_right(bucket.seen_at, seen_at)
                bucket.contacts.insert(at, promoted)
                bucket.seen_at.insert(at, seen_at)
                self._count += 1
                self._count_in(promoted)
            self._drop_if_empty(index, bucket)
            return RoutingChange(EVICTED, contact, index, promoted=promoted)
        j = bucket.find_replacement(value)
        if j >= 0 and bucket.replacements is not None:
            contact, _ = bucket.replacements.pop(j)
            self._drop_if_empty(index, bucket)
            return RoutingChange(REMOVED, contact, index)
        return None

    def _promotable(self, bucket: _Bucket) -> int:
        """The most recently seen replacement within the address limits, or -1."""
        if not bucket.replacements:
            return -1
        for j in range(len(bucket.replacements) - 1, -1, -1):
            if self._over_limit(bucket.replacements[j][0], bucket) is None:
                return j
        return -1

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
