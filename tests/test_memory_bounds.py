"""Memory per connection and per node is bounded: unfinished requests, slow requests, unread answers, the budget."""

from __future__ import annotations

import asyncio

import pytest
from helpers.waiting import eventually

from dhtscope.node.ids import NodeId
from dhtscope.node.keys import Identity
from dhtscope.node.node import Node
from dhtscope.node.records import Record
from dhtscope.node.rpc import MemoryLimits, RemoteError
from dhtscope.node.wire import FRAME_HEADER_BYTES, ErrorCode, FindNode, FindValue, Ping, Pong, decode, encode


@pytest.fixture
async def node_with():
    started: list[Node] = []

    async def make(**limits) -> Node:
        node = Node(memory_limits=MemoryLimits(**limits))
        await node.start()
        started.append(node)
        return node

    yield make
    await asyncio.gather(*(n.stop() for n in started))


def partial_request(body_bytes: int, declared: int = 200_000) -> bytes:
    """The start of a request that says it is `declared` bytes long and sends only `body_bytes`."""
    return declared.to_bytes(FRAME_HEADER_BYTES, "big") + b"\x00" * body_bytes


async def ping_on(peer) -> None:
    """A PING on the peer's connection gets its PONG: the connection and the node still serve."""
    sid = await peer.send(encode(Ping(7)))
    await peer.wait(sid)
    assert isinstance(decode(bytes(peer.data[sid][FRAME_HEADER_BYTES:])), Pong)


async def test_unfinished_requests_past_the_connection_cap_are_reset_overloaded(node_with, raw_peer) -> None:
    node = await node_with(inbound_bytes_per_connection=10_000)
    peer = await raw_peer(node.port)
    streams = [await peer.send(partial_request(4_000), fin=False) for _ in range(3)]
    await peer.wait(streams[2])
    assert peer.resets == {streams[2]: ErrorCode.OVERLOADED}  # the one that crossed the cap, alone
    view = node.limits_view()
    assert view["counters"]["request_bytes_cap_resets"] == 1
    assert view["in_use"]["inbound_request_bytes"] == 2 * (4_000 + FRAME_HEADER_BYTES)
    await ping_on(peer)


async def test_a_connection_that_keeps_earning_refusals_is_closed(node_with, raw_peer) -> None:
    node = await node_with(inbound_bytes_per_connection=10_000, refusals_per_connection=2)
    peer = await raw_peer(node.port)
    for _ in range(6):  # the first two fill the cap; each later one is refused, the third refusal closes
        await peer.send(partial_request(4_000), fin=False)
    await eventually(lambda: peer.conn.closed, "the node to close the connection")
    assert node.limits_view()["counters"]["connections_closed_for_refusals"] == 1
    assert node.limits_view()["counters"]["request_bytes_cap_resets"] == 3
    await eventually(lambda: node.limits_view()["in_use"]["inbound_request_bytes"] == 0, "its bytes freed")


async def test_a_request_that_does_not_arrive_in_time_is_reset_and_its_bytes_freed(node_with, raw_peer) -> None:
    node = await node_with(arrival_deadline_s=0.2, sweep_s=0.05)
    peer = await raw_peer(node.port)
    slow = await peer.send(partial_request(100), fin=False)
    await peer.wait(slow)
    assert peer.resets[slow] == ErrorCode.REQUEST_TIMEOUT
    view = node.limits_view()
    assert view["counters"]["slow_request_resets"] == 1
    assert view["in_use"]["inbound_request_bytes"] == 0
    await ping_on(peer)


async def test_a_request_that_arrives_in_pieces_in_time_is_answered(node_with, raw_peer) -> None:
    node = await node_with(arrival_deadline_s=5.0, sweep_s=0.05)
    peer = await raw_peer(node.port)
    data = encode(FindNode(3, target=NodeId.random()))
    sid = await peer.send(data[:3], fin=False)
    await asyncio.sleep(0.2)  # several sweeps pass while the request is unfinished
    peer.conn.send(sid, data[3:], fin=True)
    await peer.wait(sid)
    assert sid not in peer.resets
    assert node.limits_view()["in_use"]["inbound_request_bytes"] == 0


def fill_key(node: Node, name: str, records: int = 64) -> NodeId:
    """`records` providers of ~1 KB each under `name`: a FIND_VALUE answer of about 80 KB."""
    key = NodeId.for_name(name)
    now = node.clock()
    for i in range(records):
        value = f"https://127.0.0.1:{10000 + i}/".encode() + b"x" * 1000
        record = Record.create(Identity.generate(), key, value, 1, 300, now, name=name)
        assert node.store_.put(record, now).accepted
    return key


async def test_requests_of_a_peer_that_never_reads_are_refused_then_it_is_closed(node_with, raw_peer) -> None:
    node = await node_with(unread_answer_bytes_per_connection=200_000, refusals_per_connection=5)
    key = fill_key(node, "calculator")
    peer = await raw_peer(node.port)
    # From now on the peer neither reads nor acknowledges anything.
    peer.endpoint.datagram_received = lambda data, addr: None
    for i in range(10):
        await peer.send(encode(FindValue(100 + i, key=key)))
    await eventually(lambda: node.limits_view()["counters"].get("connections_closed_for_refusals", 0) == 1, "a close")
    await eventually(lambda: not node.rpc.endpoint.all, "the connection to go")
    counters = node.limits_view()["counters"]
    # Two answers (about 160 KB) are held; the third request finds no room for another and
    # is refused before any work, and so are the next ones, until the connection is closed.
    assert counters["unread_answer_resets"] >= 6
    assert counters["connections_closed_for_refusals"] == 1
    assert node.limits_view()["in_use"]["unread_answer_bytes"] == 0  # freed with the connection


async def test_an_answer_larger_than_the_cap_is_reset_and_its_buffer_freed(node_with, raw_peer) -> None:
    node = await node_with(unread_answer_bytes_per_connection=50_000)  # less than one 80 KB answer
    key = fill_key(node, "calculator")
    peer = await raw_peer(node.port)
    peer.endpoint.datagram_received = lambda data, addr: None
    first = await peer.send(encode(FindValue(1, key=key)))
    await eventually(lambda: node.limits_view()["counters"].get("unread_answer_resets", 0) == 1, "a reset")
    conn = next(iter(node.rpc.endpoint.all))
    assert conn.quic.unacked_send_bytes(first) == 0  # the buffer was freed, not just forgotten
    assert node.limits_view()["in_use"]["unread_answer_bytes"] == 0


async def test_past_the_node_budget_work_is_shed_overloaded_but_pings_are_answered(node_with) -> None:
    node = await node_with(node_budget_bytes=1)
    client = Node()
    await client.start()
    try:
        # The budget refuses new connections too: make the connection first with a normal budget.
        node.rpc.memory = MemoryLimits()
        await client.ping(("127.0.0.1", node.port))
        node.rpc.memory = MemoryLimits(node_budget_bytes=1)
        with pytest.raises(RemoteError) as refused:
            await client._call(("127.0.0.1", node.port), FindNode(1, target=NodeId.random()))
        assert refused.value.code == ErrorCode.OVERLOADED
        assert await client.ping(("127.0.0.1", node.port)) > 0
        assert node.limits_view()["counters"]["shed_requests"] == 1
    finally:
        await client.stop()


async def test_past_the_node_budget_new_connections_are_refused(node_with) -> None:
    from dhtscope.node.node import NodeError

    node = await node_with(node_budget_bytes=1)
    client = Node(request_timeout_s=2.0)
    await client.start()
    try:
        with pytest.raises(NodeError, match="memory budget"):
            await client.ping(("127.0.0.1", node.port))
        assert node.limits_view()["counters"]["shed_connections"] == 1
    finally:
        await client.stop()
