"""Hostile peers over real QUIC on 127.0.0.1: fake identities, dead contacts, squatters, STORE floods."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from helpers.waiting import eventually

from dhtscope.node.constants import CONNECT_TIMEOUT_S, LOOKUP_DIAL_TIMEOUT_S, STORE_BURST_RECORDS
from dhtscope.node.control import run_probe
from dhtscope.node.ids import Contact, NodeId
from dhtscope.node.keys import Identity
from dhtscope.node.node import Node
from dhtscope.node.records import Record
from dhtscope.node.rpc import RemoteError
from dhtscope.node.wire import ErrorCode, Ping, Sender, Store, StoreResult

FAST_DIAL_S = 0.3  # dead contacts in these tests cost this, not LOOKUP_DIAL_TIMEOUT_S


def dead_ports(n: int) -> list[int]:
    """n UDP ports on 127.0.0.1 that nothing listens on (bound, noted, released)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def count_dials(node: Node) -> list[tuple[tuple[str, int], float]]:
    """Every (address, timeout) `node` dials from now on."""
    dials: list[tuple[tuple[str, int], float]] = []
    endpoint = node.rpc.endpoint
    inner = endpoint.connect

    async def connect(addr: tuple[str, int], timeout_s: float = CONNECT_TIMEOUT_S, expected: Any = None) -> Any:
        dials.append((addr, timeout_s))
        return await inner(addr, timeout_s, expected)

    endpoint.connect = connect  # type: ignore[method-assign]
    return dials


async def fake_identities(registry: Node, ports: list[int], make_nodes: Any) -> list[Node]:
    """One node per port, each telling `registry` it listens on that port, then going away."""
    fakes = await make_nodes(len(ports), bootstrap=False)
    for fake, port in zip(fakes, ports, strict=True):
        claim = Sender(fake.id, port)
        fake._sender = lambda claim=claim: claim
        await fake.ping(("127.0.0.1", registry.port))
    await asyncio.gather(*(fake.stop() for fake in fakes))
    return fakes


async def test_thirty_fake_identities_with_dead_ports_never_enter_the_table(make_nodes):
    (registry,) = await make_nodes(1, bootstrap=False, dial_timeout_s=FAST_DIAL_S)
    ports = dead_ports(30)
    fakes = await fake_identities(registry, ports, make_nodes)
    await eventually(lambda: not registry._verifying, "the registry to check every claimed address")
    assert not any(f.id in registry.routing for f in fakes)
    assert registry.stats.contacts_unverified >= 1

    provider, client = await make_nodes(2, bootstrap=False, dial_timeout_s=FAST_DIAL_S)
    dials = count_dials(provider)
    await provider.bootstrap([("127.0.0.1", registry.port)])
    report = await provider.advertise("calculator", "127.0.0.1:9001")
    assert report.replicas >= 1
    # The registry never handed out a dead contact, so joining and advertising dialled none.
    assert not [addr for addr, _ in dials if addr[1] in ports]
    await client.bootstrap([("127.0.0.1", registry.port)])
    found = await client.discover("calculator")
    assert [r.value for r in found.records] == [b"127.0.0.1:9001"]


async def test_a_claimed_port_that_answers_as_another_node_is_not_trusted(make_nodes):
    registry, honest, liar = await make_nodes(3, bootstrap=False, dial_timeout_s=FAST_DIAL_S)
    claim = Sender(liar.id, honest.port)  # the liar says it listens where honest does
    liar._sender = lambda: claim
    await liar.ping(("127.0.0.1", registry.port))
    await eventually(lambda: registry.stats.contacts_unverified >= 1, "the claim to fail its check")
    assert liar.id not in registry.routing
    assert honest.id not in registry.routing  # honest was reached, but nobody asked to add it


async def test_a_verified_contact_enters_with_the_address_that_answered(make_nodes):
    a, b = await make_nodes(2, bootstrap=False)
    await b.ping(("127.0.0.1", a.port))
    await eventually(lambda: b.id in a.routing, "a to check b's claimed address")
    assert a.routing.get(b.id) == Contact(b.id, "127.0.0.1", b.port)
    assert a.stats.contacts_unverified == 0


async def test_a_lookup_dials_a_dead_contact_once_with_the_short_timeout_then_skips_it(make_nodes):
    hub, asker = await make_nodes(2, bootstrap=False, dial_timeout_s=FAST_DIAL_S)
    ports = dead_ports(8)
    dead = [Contact(Identity.generate().node_id, "127.0.0.1", p) for p in ports]
    for c in dead:
        hub.routing.seen(c, hub.clock())  # the hub hands them out as if they were alive
    await asker.ping(("127.0.0.1", hub.port))
    dials = count_dials(asker)

    first = await asker.find_node(NodeId.random())
    to_dead = [(addr, t) for addr, t in dials if addr[1] in ports]
    assert sorted(addr[1] for addr, _ in to_dead) == sorted(ports)  # each one once
    assert {t for _, t in to_dead} == {FAST_DIAL_S}  # never CONNECT_TIMEOUT_S
    assert first.failed == len(dead)

    dials.clear()
    second = await asker.find_node(NodeId.random())
    assert not [addr for addr, _ in dials if addr[1] in ports]  # remembered: not dialled again
    skipped = [h for h in second.hops if h.error and h.error.startswith("skipped")]
    assert len(skipped) == len(dead)
    assert asker.stats.lookup_skips == len(dead)


def test_lookups_and_checks_dial_with_a_fraction_of_the_connect_timeout() -> None:
    node = Node()
    assert node.dial_timeout_s == LOOKUP_DIAL_TIMEOUT_S <= CONNECT_TIMEOUT_S / 2


async def test_a_store_flood_on_one_connection_is_told_overloaded_and_others_still_store(make_nodes):
    registry, flooder, honest = await make_nodes(3, bootstrap=False)
    records = tuple(
        Record.create(flooder.identity, NodeId.for_name(f"junk{i}"), b"x", 1, 300, flooder.clock())
        for i in range(STORE_BURST_RECORDS)
    )
    first, _, _ = await flooder._call(("127.0.0.1", registry.port), Store(1, records=records))
    assert isinstance(first, StoreResult) and all(ok for ok, _ in first.results)
    with pytest.raises(RemoteError) as info:
        await flooder._call(("127.0.0.1", registry.port), Store(2, records=records))
    assert info.value.code == ErrorCode.OVERLOADED and "records/s per connection" in info.value.reason
    assert registry.stats.stores_overloaded == 1
    good = Record.create(
        honest.identity, NodeId.for_name("calculator"), b"127.0.0.1:9001", 1, 300, honest.clock(), name="calculator"
    )
    stored, _, _ = await honest._call(("127.0.0.1", registry.port), Store(3, records=(good,)))
    assert stored.results == ((True, "stored"),)
    pong, _, _ = await flooder._call(("127.0.0.1", registry.port), Ping(4))
    assert pong.request_id == 4


async def test_honest_provider_gets_in_after_64_squatters_filled_the_key(make_nodes):
    registry, squatter, provider, client = await make_nodes(4)
    key = NodeId.for_name("calculator")
    now = squatter.clock()
    squat = tuple(
        Record.create(Identity.generate(), key, f"127.0.0.1:{7000 + i}".encode(), 1, 3600, now, name="calculator")
        for i in range(64)
    )
    stored, _, _ = await squatter._call(registry.contact(), Store(1, records=squat))
    assert all(ok for ok, _ in stored.results)
    assert all("TTL clamped" in text for _, text in stored.results)  # kept 600 s, not an hour
    assert len(registry.store_.get(key, registry.clock())) == 64

    report = await provider.advertise("calculator", "127.0.0.1:9001")
    assert registry.id in {c.node_id for c in report.accepted} or report.stored_locally
    assert b"127.0.0.1:9001" in [r.value for r in registry.store_.get(key, registry.clock())]
    found = await client.discover("calculator", quorum=None)
    assert b"127.0.0.1:9001" in [r.value for r in found.records]


async def test_an_advertisement_without_an_endpoint_is_refused_over_quic(make_nodes):
    registry, provider = await make_nodes(2)
    bogus = Record.create(
        provider.identity, NodeId.for_name("calculator"), b"not an endpoint", 1, 300, provider.clock(), "calculator"
    )
    stored, _, _ = await provider._call(registry.contact(), Store(1, records=(bogus,)))
    ok, reason = stored.results[0]
    assert not ok and "carries no usable endpoint" in reason


async def test_probe_store_keeps_a_plain_value_under_a_name(make_nodes):
    registry, prober = await make_nodes(2)
    result = await run_probe(prober, "store", ["mykey", "my value"])
    assert result["ok"] and not result["refused"]
    [record] = registry.store_.get(NodeId.for_name("mykey"), registry.clock())
    assert record.value == b"my value" and record.name is None
    # advertise still names its key, and its endpoint is checked
    bad = await run_probe(prober, "advertise", ["calculator", "my value"])
    assert not bad["ok"] and "no usable endpoint" in bad["refused"][0]["reason"]
