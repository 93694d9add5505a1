"""Nodes talking real QUIC on 127.0.0.1: every RPC, discovery, expiry, republish, impostors, bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
from typing import Any

import msgpack
import pytest
from helpers.waiting import FakeClock, eventually

from dhtscope.node.constants import (
    ACK_DELAY_S,
    MAX_DATAGRAM_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_STREAMS_PER_CONNECTION,
    WIRE_VERSION,
    K,
)
from dhtscope.node.ids import NodeId
from dhtscope.node.keys import Identity
from dhtscope.node.node import NodeError
from dhtscope.node.quic_internals import NodeQuicConnection
from dhtscope.node.records import Record
from dhtscope.node.rpc import RemoteError
from dhtscope.node.wire import (
    FRAME_HEADER_BYTES,
    Error,
    ErrorCode,
    FindNode,
    FindValue,
    Nodes,
    Ping,
    Pong,
    Sender,
    Store,
    StoreResult,
    Value,
    decode,
    encode,
)


def count_datagrams(*nodes) -> dict[str, Any]:
    """Count every datagram the nodes send from now on: {"n": count, "largest": bytes}."""
    sent: dict[str, Any] = {"n": 0, "largest": 0}

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def sendto(self, data, addr):
            sent["n"] += 1
            sent["largest"] = max(sent["largest"], len(data))
            self.inner.sendto(data, addr)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    for node in nodes:
        node.rpc.endpoint._transport = Counting(node.rpc.endpoint._transport)
    return sent


async def meet(a: Any, b: Any) -> None:
    """b PINGs a, and a has checked b's claimed address: no handshake left to happen in the background."""
    await b.ping(("127.0.0.1", a.port))
    await eventually(lambda: b.id in a.routing, "a to check b's claimed address")


def frame(raw: bytes) -> bytes:
    return len(raw).to_bytes(FRAME_HEADER_BYTES, "big") + raw


async def test_ping_answers_with_pong_and_adds_both_contacts(make_nodes):
    a, b = await make_nodes(2, bootstrap=False)
    rtt = await b.ping(("127.0.0.1", a.port))
    assert 0 < rtt < 1
    assert a.id in b.routing  # b learned a from the answer on the connection it dialled
    # a learns b from the request only once b's claimed address answers a PING of a's own
    await eventually(lambda: b.id in a.routing, "a to check b's claimed address")
    assert a.routing.get(b.id) == b.contact()


async def test_each_rpc_over_quic(make_nodes):
    a, b = await make_nodes(2, bootstrap=False)
    await b.ping(("127.0.0.1", a.port))
    contact = a.contact()
    rid = 41
    pong, _, _ = await b._call(contact, Ping(rid))
    assert isinstance(pong, Pong) and pong.request_id == rid and pong.sender.node_id == a.id

    nodes, _, _ = await b._call(contact, FindNode(42, target=NodeId.random()))
    assert isinstance(nodes, Nodes)
    assert [c.node_id for c in nodes.contacts] == []  # a knows only b, and never returns the asker

    record = Record.create(b.identity, NodeId.for_name("svc"), b"127.0.0.1:1", 1, 300, b.clock(), name="svc")
    stored, _, _ = await b._call(contact, Store(43, records=(record,)))
    assert isinstance(stored, StoreResult) and stored.results == ((True, "stored"),)

    value, _, _ = await b._call(contact, FindValue(44, key=NodeId.for_name("svc")))
    assert isinstance(value, Value) and value.records == (record,)


async def test_connection_is_reused_for_every_request_to_a_peer(make_nodes):
    a, b = await make_nodes(2, bootstrap=False)
    await b.ping(("127.0.0.1", a.port))
    # b's claimed address is the one its datagrams come from, proven by its handshake: a
    # needs no connection of its own to check it, and both directions share one.
    assert b.id in a.routing
    for _ in range(20):
        await b.ping(a.contact())
        await a.ping(b.contact())
    assert len(b.rpc.connections()) == 1
    assert len(a.rpc.connections()) == 1


async def test_discovery_finds_three_providers_through_the_dht(make_nodes):
    nodes = await make_nodes(8)
    for i, provider in enumerate(nodes[1:4], start=1):
        report = await provider.advertise("calculator", f"127.0.0.1:{9000 + i}")
        assert report.replicas >= min(K, len(nodes) - 1)
    found = await nodes[7].discover("calculator")
    endpoints = sorted(r.value.decode() for r in found.records)
    assert endpoints == ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]
    assert found.lookup.hops and all(h.rtt_s is not None for h in found.lookup.hops)


async def test_join_fills_routing_tables_beyond_the_bootstrap_node(make_nodes):
    nodes = await make_nodes(10)
    # The self-lookup on joining is what makes nodes learn of each other.
    assert all(len(n.routing) >= 5 for n in nodes[1:])


async def test_records_expire_and_providers_republish_before_expiry(make_nodes):
    clock = FakeClock()  # the nodes' record clock: time passes when the test says so
    registry, provider, client = await make_nodes(
        3, record_ttl_s=2.0, republish_margin_s=1.2, maintenance_interval_s=0.02, request_timeout_s=0.5, clock=clock
    )
    await provider.advertise("calculator", "127.0.0.1:9001")
    key = NodeId.for_name("calculator")
    first = registry.store_.get(key, clock())[0]
    clock.advance(1.6)  # past expires_at - margin: the provider republishes with a new seq
    await eventually(lambda: registry.store_.get(key, clock())[0].seq > first.seq, "a republished record")
    again = registry.store_.get(key, clock())[0]
    assert again.expires_at > first.expires_at
    await provider.stop()  # no more republishing: the record must expire everywhere
    clock.advance(2.3)
    await eventually(lambda: registry.store_.get(key, clock()) == [], "the record to expire")
    found = await client.discover("calculator")
    assert found.records == ()


async def test_impostor_claiming_another_id_is_refused_and_not_added(make_nodes):
    honest, target, impostor = await make_nodes(3, bootstrap=False)
    forged = Sender(honest.id, impostor.port)
    impostor._sender = lambda: forged  # claim honest's id while holding another key
    with pytest.raises(RemoteError) as info:
        await impostor.ping(("127.0.0.1", target.port))
    assert info.value.code == ErrorCode.IDENTITY_MISMATCH
    assert honest.id not in target.routing
    assert impostor.id not in target.routing
    assert target.stats.identity_mismatches == 1


async def test_contact_at_an_address_that_is_another_node_is_not_trusted(make_nodes):
    a, b, c = await make_nodes(3, bootstrap=False)
    wrong = dataclasses.replace(c.contact(), port=b.port)  # c's id, b's address
    with pytest.raises(NodeError, match="not"):
        await a.ping(wrong)


async def test_record_with_forged_publisher_is_refused_with_reason(make_nodes):
    a, b = await make_nodes(2, bootstrap=False)
    await meet(a, b)
    good = Record.create(b.identity, NodeId.for_name("svc"), b"x:1", 1, 300, b.clock(), name="svc")
    forged = dataclasses.replace(good, publisher=Identity.generate().node_id)
    stored, _, _ = await b._call(a.contact(), Store(1, records=(forged,)))
    assert stored.results[0][0] is False
    assert "public key" in stored.results[0][1]
    assert a.store_.get(NodeId.for_name("svc"), a.clock()) == []


async def test_lookup_from_an_empty_routing_table_says_so(make_nodes):
    (lonely,) = await make_nodes(1, bootstrap=False)
    with pytest.raises(NodeError, match="routing table is empty"):
        await lonely.find_value(NodeId.for_name("calculator"))


async def test_dead_peer_is_evicted_after_failing_to_answer(make_nodes):
    nodes = await make_nodes(3, request_timeout_s=0.5)
    a, dead = nodes[1], nodes[2]
    assert dead.id in a.routing
    await dead.stop()
    with pytest.raises(NodeError):
        await a.ping(dead.contact())
    assert dead.id not in a.routing


BAD_INPUTS = {
    "garbage": (frame(b"\xc1\xc1\xc1"), ErrorCode.MALFORMED),
    "not a map": (frame(msgpack.packb([1, 2])), ErrorCode.MALFORMED),
    "unknown type": (frame(msgpack.packb({"v": WIRE_VERSION, "t": 0x66, "id": 1})), ErrorCode.UNKNOWN_TYPE),
    "wrong version": (frame(msgpack.packb({"v": 9, "t": 1, "id": 1})), ErrorCode.UNSUPPORTED_VERSION),
    "response as request": (encode(Pong(1)), ErrorCode.NOT_A_REQUEST),
    "cut short": (encode(Ping(1))[:-2], ErrorCode.MALFORMED),
    "trailing bytes": (encode(Ping(1)) + b"zz", ErrorCode.MALFORMED),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
async def test_bad_request_gets_error_response_and_node_keeps_serving(make_nodes, raw_peer, name):
    (node,) = await make_nodes(1, bootstrap=False)
    peer = await raw_peer(node.port)
    data, code = BAD_INPUTS[name]
    sid = await peer.send(data)
    await peer.wait(sid)
    reply = decode(bytes(peer.data[sid])[FRAME_HEADER_BYTES:])
    assert isinstance(reply, Error) and reply.code == code and reply.reason
    ok = await peer.send(encode(Ping(5)))
    await peer.wait(ok)
    assert isinstance(decode(bytes(peer.data[ok])[FRAME_HEADER_BYTES:]), Pong)


async def test_oversize_request_resets_the_stream_with_its_code(make_nodes, raw_peer):
    (node,) = await make_nodes(1, bootstrap=False)
    peer = await raw_peer(node.port)
    sid = await peer.send((MAX_MESSAGE_BYTES + 1).to_bytes(4, "big") + b"\0" * 1000, fin=False)
    await peer.wait(sid)
    assert peer.resets[sid] == ErrorCode.MESSAGE_TOO_LARGE
    ok = await peer.send(encode(Ping(6)))
    await peer.wait(ok)
    assert isinstance(decode(bytes(peer.data[ok])[FRAME_HEADER_BYTES:]), Pong)


async def test_request_completed_after_stop_sending_is_not_answered_and_node_keeps_serving(make_nodes, raw_peer):
    # The peer asks us to stop sending on a stream before its request is complete: aioquic
    # resets our side, so the answer has nowhere to go and must not break the connection.
    (node,) = await make_nodes(1, bootstrap=False)
    peer = await raw_peer(node.port)
    errors: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
    request = encode(Ping(5))
    sid = await peer.send(request[:3], fin=False)
    peer.conn.quic.stop_stream(sid, ErrorCode.CANCELLED)
    peer.conn.send(sid, request[3:], fin=True)
    await peer.wait(sid)
    assert peer.resets.get(sid) == ErrorCode.CANCELLED and not peer.data.get(sid)
    assert errors == []  # nothing escaped into the event loop (and lost the rest of that datagram)
    ok = await peer.send(encode(Ping(6)))
    await peer.wait(ok)
    assert isinstance(decode(bytes(peer.data[ok])[FRAME_HEADER_BYTES:]), Pong)


async def test_thousand_random_requests_leave_the_node_answering_ping(make_nodes, raw_peer):
    (node,) = await make_nodes(1, bootstrap=False)
    peer = await raw_peer(node.port)
    rng = random.Random(7)
    sids = []
    for i in range(1000):
        blob = rng.randbytes(rng.randrange(0, 300))
        if i % 3 == 0:
            blob = frame(blob)  # a valid frame around garbage reaches the decoder
        sids.append(await peer.send(blob))
    await asyncio.gather(*(peer.wait(s, timeout_s=20) for s in sids))
    assert all(s in peer.fin or s in peer.resets for s in sids)
    ok = await peer.send(encode(Ping(99)))
    await peer.wait(ok)
    assert decode(bytes(peer.data[ok])[FRAME_HEADER_BYTES:]) == Pong(99, sender=Sender(node.id, node.port))


async def test_more_requests_than_stream_credit_all_succeed(make_nodes):
    a, b = await make_nodes(2, bootstrap=False)
    await meet(a, b)
    count = 2 * MAX_STREAMS_PER_CONNECTION + 100
    results = await asyncio.gather(*(b.ping(a.contact()) for _ in range(count)))
    assert len(results) == count and all(r > 0 for r in results)


async def test_a_peer_may_open_max_streams_per_connection_at_once(make_nodes):
    # aioquic grants 128 streams; the node raises it (node/quic_internals.py).
    a, b = await make_nodes(2, bootstrap=False)
    await meet(a, b)
    conn = b.rpc.pooled(a.id)
    assert conn is not None
    assert conn.quic.peer_stream_credit() == MAX_STREAMS_PER_CONNECTION
    results = await asyncio.gather(*(b.ping(a.contact()) for _ in range(MAX_STREAMS_PER_CONNECTION - 1)))
    assert len(results) == MAX_STREAMS_PER_CONNECTION - 1
    assert not conn._blocked_probe_sent  # no request had to wait for credit


@pytest.mark.parametrize("limit", [MAX_DATAGRAM_BYTES, 1350])
async def test_datagrams_fill_up_to_the_configured_size_and_no_further(make_nodes, limit):
    a, b = await make_nodes(2, bootstrap=False, max_datagram_bytes=limit)
    await meet(a, b)
    key = NodeId.for_name("big")
    for _ in range(3):  # three providers: a VALUE answer of about 3.5 KB
        publisher = Identity.generate()
        a.store_.put(
            Record.create(publisher, key, os.urandom(1000), 1, 300, a.clock()),  # a plain value
            a.clock(),
            from_peer=publisher.node_id,
        )
    sent = count_datagrams(a)
    response, _, _ = await b._call(a.contact(), FindValue(1, key=key))
    assert len(response.records) == 3
    assert limit - 60 < sent["largest"] <= limit


async def test_full_packets_skip_the_streams_still_waiting(make_nodes, monkeypatch):
    # Once a packet is full the node's frame writer answers at once instead of asking the
    # stream for a frame that cannot fit.
    from aioquic.quic.stream import QuicStreamSender

    a, b = await make_nodes(2, bootstrap=False)
    await meet(a, b)
    offered, asked = [0], [0]
    original = QuicStreamSender.get_frame

    def counting(self, *args, **kwargs):
        asked[0] += 1
        return original(self, *args, **kwargs)

    node_version = NodeQuicConnection._write_stream_frame

    def offering(self, *args, **kwargs):
        offered[0] += 1
        return node_version(self, *args, **kwargs)

    monkeypatch.setattr(QuicStreamSender, "get_frame", counting)
    monkeypatch.setattr(NodeQuicConnection, "_write_stream_frame", offering)
    results = await asyncio.gather(*(b.ping(a.contact()) for _ in range(200)))
    assert len(results) == 200
    assert asked[0] > 0 and offered[0] > asked[0]


async def test_an_answer_carries_the_ack_of_its_request(make_nodes):
    a, b = await make_nodes(2, bootstrap=False)
    await meet(a, b)
    conn = b.rpc.pooled(a.id)
    assert conn is not None and conn.quic._ack_delay == ACK_DELAY_S
    await asyncio.sleep(3 * ACK_DELAY_S)
    sent = count_datagrams(a, b)
    pings = 5
    for _ in range(pings):
        await b.ping(a.contact())
        await asyncio.sleep(3 * ACK_DELAY_S)  # let the delayed ACK of the answer go out
    # Request, answer carrying the request's ACK, and the ACK of the answer: 3 datagrams.
    # Without the piggybacked ACK the server sends its ACK alone as well: 4.
    assert sent["n"] <= 3 * pings


async def test_a_cancelled_request_costs_a_few_datagrams_not_a_storm(make_nodes):
    # A finished lookup cancels its outstanding requests while their answers are on the
    # way: RESET_STREAM and STOP_SENDING go to the peer once. Answering a STOP_SENDING with
    # one of our own made both sides trade them until the stream was gone (67-118
    # datagrams for one cancelled PING).
    a, b = await make_nodes(2, bootstrap=False)
    await meet(a, b)
    sent = count_datagrams(a, b)
    for spins in range(1, 5):  # cancel at each point between sending and reading the answer
        sent["n"] = 0
        task = asyncio.create_task(b.ping(a.contact()))
        for _ in range(spins):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.3)
        assert sent["n"] <= 15, f"{sent['n']} datagrams after cancelling at spin {spins}"
    assert await b.ping(a.contact()) > 0  # and the connection still serves


async def test_fin_arrives_after_a_burst_of_large_writes(make_nodes):
    a, b = await make_nodes(2, bootstrap=False, store_burst_records=1000)
    await meet(a, b)
    # Large records fill packets; the FIN of each stream must still reach the peer,
    # or the streams never finish and credit runs out (older aioquic dropped such FINs).
    records = tuple(
        Record.create(b.identity, NodeId.for_name(f"s{i}"), os.urandom(1000), 1, 300, b.clock()) for i in range(60)
    )
    for _ in range(3):
        replies = await asyncio.gather(
            *(b._call(a.contact(), Store(i, records=records[i % 60 : i % 60 + 1])) for i in range(150))
        )
        assert all(isinstance(r[0], StoreResult) for r in replies)


async def test_a_record_met_again_in_lookups_is_verified_once(make_nodes, monkeypatch):
    from dhtscope.node import records

    nodes = await make_nodes(6)
    await nodes[1].advertise("calculator", "127.0.0.1:9001")
    checks = []
    real = records.verify_signature
    monkeypatch.setattr(records, "verify_signature", lambda *a: checks.append(1) or real(*a))
    seeker = nodes[5]
    seeker.store_.expire(seeker.clock() + 10**6)  # holds no copy of its own: it must ask
    for _ in range(3):
        found = await seeker.discover("calculator", quorum=None)  # every holder answers with the record
        assert [r.value for r in found.records] == [b"127.0.0.1:9001"]
    holders = sum(1 for h in found.lookup.hops if h.values)
    assert holders >= 2
    assert len(checks) == 1 and seeker.signatures.full_checks == 1


async def test_a_contact_heard_from_again_at_once_costs_no_routing_update(make_nodes, monkeypatch):
    clock = FakeClock(1_700_000_000.0)
    a, b = await make_nodes(2, bootstrap=False, clock=clock)
    await b.ping(a.contact())
    from dhtscope.node.routing import RoutingTable

    updates = []
    real = RoutingTable.seen

    def seen(table, c, now):
        if table is b.routing:
            updates.append(c)
        return real(table, c, now)

    monkeypatch.setattr(RoutingTable, "seen", seen)
    for _ in range(5):
        await b.ping(a.contact())
    assert updates == []  # within ROUTING_SEEN_INTERVAL_S of the first answer
    clock.advance(2.0)
    await b.ping(a.contact())
    assert len(updates) == 1
    # A contact that failed is forgotten at once: its next answer counts again.
    b._failed(a.contact())
    await b.ping(a.contact())
    assert len(updates) == 2 and a.id in b.routing
