"""What an idle connection keeps: no handshake buffers, no per-stream entries, two connection ids."""

from __future__ import annotations

import asyncio

from dhtscope.node.constants import ACTIVE_CONNECTION_IDS
from dhtscope.node.node import Node
from dhtscope.node.quic_internals import _NO_CRYPTO_OUTPUT


async def _pair() -> tuple[Node, Node]:
    server = Node(name="server")
    client = Node(name="client", client_mode=True)
    await server.start()
    await client.start()
    return server, client


def _conns(node: Node) -> list:
    assert node.rpc is not None
    return list(node.rpc.endpoint.all)


async def test_an_idle_connection_keeps_no_handshake_buffers_and_no_per_stream_entries() -> None:
    server, client = await _pair()
    try:
        for _ in range(3):
            await asyncio.gather(*(client.ping(("127.0.0.1", server.port)) for _ in range(40)))
        [out] = _conns(client)
        [inn] = _conns(server)
        for conn in (out, inn):
            # aioquic allocates 3 x 16 KiB of handshake output per connection; after it, one shared empty buffer.
            assert set(map(id, conn.quic._crypto_buffers.values())) == {id(_NO_CRYPTO_OUTPUT)}
            assert conn._sent_offsets == {} and conn._received_offsets == {}  # 120 requests, nothing kept per stream
            # The handshake's ephemeral key shares (a client makes three) are gone.
            context = conn.quic.tls
            assert context._ec_private_keys == [] and context._x25519_private_key is None
            assert context._x448_private_key is None
        # Still serving after the handshake buffers went (both directions write and read).
        assert await client.ping(("127.0.0.1", server.port)) > 0
    finally:
        await asyncio.gather(client.stop(), server.stop())


async def test_each_end_issues_its_peer_only_the_fewest_connection_ids() -> None:
    server, client = await _pair()
    try:
        await client.ping(("127.0.0.1", server.port))
        await asyncio.sleep(0.05)  # NEW_CONNECTION_ID frames follow the handshake
        for node in (client, server):
            [conn] = _conns(node)
            ids = [cid for cid, c in node.rpc.endpoint.connections.items() if c is conn]
            assert len(ids) <= ACTIVE_CONNECTION_IDS + 1  # the ids we issued (and the server's original one)
            assert conn.quic._local_active_connection_id_limit == ACTIVE_CONNECTION_IDS
    finally:
        await asyncio.gather(client.stop(), server.stop())


async def test_connections_share_one_frame_handler_table_bound_to_each_connection() -> None:
    server, client = await _pair()
    other = Node(name="other", client_mode=True)
    await other.start()
    try:
        await client.ping(("127.0.0.1", server.port))
        await other.ping(("127.0.0.1", server.port))
        a, b = _conns(server)
        table_a = getattr(a.quic, "_QuicConnection__frame_handlers")  # noqa: B009
        table_b = getattr(b.quic, "_QuicConnection__frame_handlers")  # noqa: B009
        assert table_a.keys() == table_b.keys()
        assert all(table_a[k][1] is table_b[k][1] for k in table_a)  # one frozenset per kind, not per connection
        assert table_a._table is table_b._table  # one table of functions per class, not a dict per connection
        handler, _ = table_a[0x08]  # a STREAM frame is handled by the connection it arrived on
        assert handler.__self__ is a.quic and handler.__func__ is type(a.quic)._handle_stream_frame
        assert await client.ping(("127.0.0.1", server.port)) > 0
    finally:
        await asyncio.gather(client.stop(), other.stop(), server.stop())
