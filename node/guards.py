"""A token bucket, and a memory of addresses that failed lately: the node's two small guards, sans-I/O."""

from __future__ import annotations

from collections import OrderedDict

from .constants import DIAL_FAILURE_MEMORY_S, MAX_REMEMBERED_FAILURES


class TokenBucket:
    """`rate_per_s` tokens a second, at most `burst` saved up; `now` is passed in (seconds)."""

    __slots__ = ("rate_per_s", "burst", "_tokens", "_at")

    def __init__(self, rate_per_s: float, burst: float, now: float) -> None:
        if rate_per_s <= 0 or burst <= 0:
            raise ValueError("rate_per_s and burst must be positive")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def take(self, n: float, now: float) -> float | None:
        """Spend `n` tokens and return None, or spend nothing and return the seconds until they exist."""
        # A clock that steps back must not mint tokens (nor take them away).
        elapsed = max(0.0, now - self._at)
        self._at = max(self._at, now)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate_per_s)
        if n <= self._tokens:
            self._tokens -= n
            return None
        if n > self.burst:
            return float("inf")
        return (n - self._tokens) / self.rate_per_s


Address = tuple[str, int]


class RecentFailures:
    """Addresses that did not answer lately, so lookups skip them rather than wait on them again."""

    def __init__(self, memory_s: float = DIAL_FAILURE_MEMORY_S, max_entries: int = MAX_REMEMBERED_FAILURES) -> None:
        if memory_s <= 0 or max_entries < 1:
            raise ValueError("memory_s and max_entries must be positive")
        self.memory_s = memory_s
        self.max_entries = max_entries
        self._failed: OrderedDict[Address, tuple[float, str]] = OrderedDict()

    def failed(self, addr: Address, now: float, error: str) -> None:
        self._failed[addr] = (now, error)
        self._failed.move_to_end(addr)
        while len(self._failed) > self.max_entries:
            self._failed.popitem(last=False)

    def succeeded(self, addr: Address) -> None:
        self._failed.pop(addr, None)

    def recent(self, addr: Address, now: float) -> str | None:
        """Why `addr` is to be skipped (its last failure, and when), or None."""
        entry = self._failed.get(addr)
        if entry is None:
            return None
        at, error = entry
        if now - at >= self.memory_s:
            del self._failed[addr]
            return None
        return f"failed {max(0.0, now - at):.1f} s ago: {error}"

    def __len__(self) -> int:
        return len(self._failed)
