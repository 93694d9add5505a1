"""The token bucket and the memory of failed addresses, sans-I/O: time passed in."""

from __future__ import annotations

import math

import pytest

from dhtscope.node.guards import RecentFailures, TokenBucket


def test_bucket_spends_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=64, now=0.0)
    assert bucket.take(64, 0.0) is None
    assert bucket.take(1, 0.0) == pytest.approx(0.1)
    assert bucket.take(5, 0.3) == pytest.approx(0.2)  # 3 tokens back, 5 wanted: 0.2 s more
    assert bucket.take(5, 0.5) is None
    assert bucket.take(64, 100.0) is None  # refills only up to the burst
    assert bucket.take(1, 100.0) is not None


def test_bucket_refuses_more_than_its_burst_for_ever_and_survives_a_clock_step_back() -> None:
    bucket = TokenBucket(rate_per_s=1, burst=4, now=50.0)
    assert math.isinf(bucket.take(5, 1000.0))
    assert bucket.take(4, 1000.0) is None
    assert bucket.take(1, 10.0) is not None  # stepping back mints nothing
    assert bucket.take(1, 1001.0) is None
    with pytest.raises(ValueError):
        TokenBucket(rate_per_s=0, burst=1, now=0.0)


def test_failures_are_remembered_for_a_while_and_forgotten_on_success() -> None:
    memory = RecentFailures(memory_s=60, max_entries=10)
    memory.failed(("10.0.0.1", 4000), 100.0, "no QUIC handshake")
    reason = memory.recent(("10.0.0.1", 4000), 130.0)
    assert reason is not None and "30.0 s ago" in reason and "no QUIC handshake" in reason
    assert memory.recent(("10.0.0.1", 4001), 130.0) is None
    assert memory.recent(("10.0.0.1", 4000), 160.0) is None and len(memory) == 0
    memory.failed(("10.0.0.1", 4000), 200.0, "timeout")
    memory.succeeded(("10.0.0.1", 4000))
    assert memory.recent(("10.0.0.1", 4000), 200.0) is None


def test_failure_memory_is_bounded_and_forgets_the_oldest() -> None:
    memory = RecentFailures(memory_s=60, max_entries=3)
    for port in range(5):
        memory.failed(("10.0.0.1", port), float(port), "x")
    assert len(memory) == 3
    assert memory.recent(("10.0.0.1", 0), 5.0) is None
    assert memory.recent(("10.0.0.1", 4), 5.0) is not None
