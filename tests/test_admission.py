"""Admission control: Retry under a flood, limits per address, refusals told, idle connections evicted."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest
from helpers.hostile import Flooder, initials
from helpers.waiting import eventually

from dhtscope.node.admission import (
    Admission,
    AdmissionLimits,
    InvalidToken,
    LogLimiter,
    RetryTokens,
    TokenBucket,
    Verdict,
    address_groups,
)
from dhtscope.node.constants import UDP_RECEIVE_BUFFER_BYTES
from dhtscope.node.node import Node, NodeError

ADDR = ("192.0.2.7", 4433)

# -- the sans-I/O pieces -----------------------------------------------------------------------


def test_a_retry_token_vouches_for_its_address_cid_and_time_only() -> None:
    tokens = RetryTokens(secret=b"k" * 32, lifetime_s=10.0)
    token = tokens.create(ADDR, b"odcid-01", b"retrycid", now=100.0)
    assert tokens.validate(ADDR, b"retrycid", token, now=101.0) == b"odcid-01"
    for addr, cid, now, what in [
        (("192.0.2.8", 4433), b"retrycid", 101.0, "another address"),
        (("192.0.2.7", 4434), b"retrycid", 101.0, "another port"),
        (ADDR, b"othercid", 101.0, "another connection id"),
        (ADDR, b"retrycid", 111.0, "too late"),
    ]:
        with pytest.raises(InvalidToken):
            tokens.validate(addr, cid, token, now=now)
            pytest.fail(what)
    tampered = token[:-1] + bytes([token[-1] ^ 1])
    with pytest.raises(InvalidToken):
        tokens.validate(ADDR, b"retrycid", tampered, now=101.0)
    with pytest.raises(InvalidToken):
        RetryTokens().validate(ADDR, b"retrycid", token, now=101.0)  # another node's secret


def test_addresses_count_per_address_and_subnet_private_per_address_loopback_not_at_all() -> None:
    assert address_groups("93.184.216.9").subnet == "93.184.216.0/24"
    assert address_groups("2001:db8:1:2::9").subnet is None  # documentation prefix: not global
    assert address_groups("2a00:1450:4001:81c::200e").subnet == "2a00:1450:4001::/48"
    assert address_groups("10.1.2.3") == address_groups("10.1.2.3", exempt_loopback=False)
    assert address_groups("10.1.2.3").subnet is None
    assert address_groups("127.0.0.1").address is None
    assert address_groups("127.0.0.1", exempt_loopback=False).address == "127.0.0.1"


def test_admission_retries_past_the_threshold_and_refuses_past_the_limits() -> None:
    adm = Admission(AdmissionLimits(retry_above_half_open=2, max_half_open=3, per_address=2, per_subnet=3))
    adm.opened("a", "93.184.216.1")
    adm.opened("b", "93.184.216.1")
    assert adm.check("151.101.1.1", validated=False).verdict is Verdict.RETRY
    assert adm.check("151.101.1.1", validated=True).verdict is Verdict.ADMIT
    adm.established("a")
    adm.established("b")
    refused = adm.check("93.184.216.1", validated=True)
    assert refused.verdict is Verdict.REFUSE and "93.184.216.1" in refused.reason
    adm.opened("c", "93.184.216.2")
    adm.established("c")
    subnet = adm.check("93.184.216.3", validated=True)
    assert subnet.verdict is Verdict.REFUSE and "93.184.216.0/24" in subnet.reason
    adm.gone("a")
    adm.gone("a")  # idempotent
    assert adm.check("93.184.216.3", validated=True).verdict is Verdict.ADMIT
    assert (adm.half_open, adm.established_count, adm.total) == (0, 2, 2)


def test_admission_says_full_when_every_slot_is_taken_and_dials_need_room() -> None:
    adm = Admission(AdmissionLimits(max_connections=2))
    adm.opened("in", "127.0.0.1")
    adm.opened("out", "127.0.0.1", inbound=False)
    assert adm.half_open == 1 and adm.dialing == 1
    assert adm.check("127.0.0.1", validated=False).verdict is Verdict.FULL
    assert not adm.has_room()


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate_per_s=10.0, burst=3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.1) and not bucket.take(0.1)


def test_log_limiter_writes_one_line_per_interval_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("dhtscope.test-limiter")
    limiter = LogLimiter(logger, interval_s=10.0)
    with caplog.at_level(logging.WARNING, logger="dhtscope.test-limiter"):
        for i in range(1000):
            limiter.warning("refused", i * 0.01, "refusing")
        limiter.warning("refused", 11.0, "refusing")
    assert [r.getMessage() for r in caplog.records] == ["refusing", "refusing (999 more like it in the last 11 s)"]
    assert limiter.suppressed == 999


# -- against a real node -------------------------------------------------------------------------------


@pytest.fixture
async def nodes():
    started: list[Node] = []

    async def make(**kwargs) -> Node:
        node = Node(**kwargs)
        await node.start()
        started.append(node)
        return node

    yield make
    await asyncio.gather(*(n.stop() for n in started))


async def test_a_flood_of_initials_gets_retries_and_honest_peers_still_get_in(nodes) -> None:
    limits = AdmissionLimits(retry_above_half_open=4, handshake_timeout_s=0.5)
    node = await nodes(admission_limits=limits)
    flooder = Flooder()
    try:
        flooder.send(initials(60, node.port), node.port)
        await eventually(lambda: node.limits_view()["counters"].get("retries_sent", 0) >= 56, "Retries to the flood")
        assert node.limits_view()["in_use"]["half_open"] <= 4  # state for the first few only
        honest = await nodes()
        rtt = await honest.ping(("127.0.0.1", node.port))  # through one Retry round trip
        assert rtt > 0
        counters = node.limits_view()["counters"]
        assert counters["retries_validated"] >= 1
        # The flood's half-open connections go after the handshake timeout, not the 60 s idle timeout.
        await eventually(lambda: node.limits_view()["in_use"]["half_open"] == 0, "half-open connections to go")
        assert node.limits_view()["counters"]["handshake_timeouts"] == 4
        assert flooder.replies().get("RETRY", 0) >= 56
    finally:
        flooder.close()


async def test_a_refused_peer_is_told_so_at_once(nodes) -> None:
    limits = AdmissionLimits(per_address=1, exempt_loopback=False)
    node = await nodes(admission_limits=limits)
    first = await nodes()
    await first.ping(("127.0.0.1", node.port))
    second = await nodes(request_timeout_s=3.0)
    started = asyncio.get_running_loop().time()
    with pytest.raises(NodeError, match=r"code 0x2\).*1 connections from 127\.0\.0\.1"):
        await second.ping(("127.0.0.1", node.port))
    assert asyncio.get_running_loop().time() - started < 1.0  # told, not left to time out
    counters = node.limits_view()["counters"]
    assert counters["refused_refuse"] == 1 and counters["refusals_sent"] == 1


async def test_initials_answered_with_retry_cost_no_connection_state(nodes, caplog: pytest.LogCaptureFixture) -> None:
    node = await nodes(admission_limits=AdmissionLimits(retry_above_half_open=0))
    flooder = Flooder()
    try:
        with caplog.at_level(logging.INFO, logger="dhtscope"):
            flooder.send(initials(40, node.port), node.port)
            await eventually(lambda: node.limits_view()["counters"].get("retries_sent", 0) == 40, "40 Retries")
        assert flooder.replies().get("RETRY", 0) == 40
    finally:
        flooder.close()
    assert node.limits_view()["in_use"]["slots_used"] == 0
    assert not node.rpc.connections()
    assert caplog.records == []  # a Retry is routine: nothing logged per packet


async def test_refusal_packets_are_capped_by_their_rate(nodes, caplog: pytest.LogCaptureFixture) -> None:
    limits = AdmissionLimits(max_connections=1, idle_eviction_min_s=3600.0, refusals_per_s=0.001, refusal_burst=2)
    node = await nodes(admission_limits=limits)
    holder = await nodes()
    await holder.ping(("127.0.0.1", node.port))  # takes the only slot and keeps it (never idle long enough)
    flooder = Flooder()
    try:
        with caplog.at_level(logging.WARNING, logger="dhtscope.admission"):
            flooder.send(initials(30, node.port), node.port)
            await eventually(lambda: node.limits_view()["counters"].get("refused_full", 0) == 30, "30 refusals")
        counters = node.limits_view()["counters"]
        assert counters["refusals_sent"] == 2 and counters["refusals_unsent"] == 28
        assert flooder.replies().get("INITIAL", 0) == 2  # CONNECTION_CLOSE in an Initial, twice
    finally:
        flooder.close()
    assert len([r for r in caplog.records if "refusing" in r.getMessage()]) == 1


async def test_when_slots_run_out_the_least_recently_used_idle_connection_goes(nodes, raw_peer) -> None:
    limits = AdmissionLimits(max_connections=3, idle_eviction_min_s=0.0)
    node = await nodes(admission_limits=limits)
    silent = [await raw_peer(node.port) for _ in range(3)]
    await eventually(lambda: node.limits_view()["in_use"]["established"] == 3, "three established connections")
    honest = await nodes()
    await honest.ping(("127.0.0.1", node.port))
    await eventually(lambda: silent[0].conn.closed, "the oldest silent connection to be closed")
    assert not silent[1].conn.closed and not silent[2].conn.closed
    assert node.limits_view()["counters"]["evicted_idle"] == 1
    assert silent[0].conn.close_reason.startswith("idle connection closed")


async def test_a_busy_connection_is_never_evicted_and_the_newcomer_is_refused(nodes, raw_peer) -> None:
    limits = AdmissionLimits(max_connections=1, idle_eviction_min_s=3600.0)
    node = await nodes(admission_limits=limits)
    holder = await raw_peer(node.port)
    late = await nodes(request_timeout_s=2.0)
    with pytest.raises(NodeError, match="connection slots taken"):
        await late.ping(("127.0.0.1", node.port))
    assert not holder.conn.closed
    assert node.limits_view()["counters"]["refused_full"] >= 1


async def test_dialing_out_with_every_slot_taken_is_a_clear_error(nodes) -> None:
    node = await nodes(admission_limits=AdmissionLimits(max_connections=1, idle_eviction_min_s=3600.0))
    a = await nodes()
    b = await nodes()
    await node.ping(("127.0.0.1", a.port))
    with pytest.raises(NodeError, match="all 1 connection slots are in use"):
        await node.ping(("127.0.0.1", b.port))


async def test_snapshot_shows_every_limit_and_counter(nodes) -> None:
    node = await nodes()
    limits = node.snapshot()["limits"]
    assert limits["admission"]["max_connections"] == 1024
    assert limits["admission"]["retry_above_half_open"] == 32
    assert limits["memory"]["node_budget_bytes"] == 160 * 2**20
    assert set(limits["in_use"]) >= {"half_open", "established", "memory_bytes", "unread_answer_bytes"}
    assert isinstance(limits["counters"], dict)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the kernel's cap from /proc (Linux)")
async def test_the_udp_receive_buffer_is_enlarged_as_far_as_the_kernel_allows(nodes) -> None:
    node = await nodes()
    with open("/proc/sys/net/core/rmem_max") as f:
        cap = int(f.read())
    granted = node.snapshot()["limits"]["udp_receive_buffer_bytes"]
    assert granted == min(UDP_RECEIVE_BUFFER_BYTES, cap)
