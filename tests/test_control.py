"""The control endpoint against real nodes over QUIC: unix and TCP, subscriptions, probes, bad input."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import stat
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers.waiting import eventually

from dhtscope.node.control import (
    MAX_CONTROL_LINE_BYTES,
    REFUSED,
    ControlClient,
    ControlError,
    ControlServer,
    _client_tls,
    _DropOldest,
    parse_control_target,
)
from dhtscope.node.node import Node, NodeError

TOKEN = "s3cret-token"


@pytest.fixture
async def nodes() -> AsyncIterator[Any]:
    started: list[Node] = []

    async def make(name: str, **kwargs: Any) -> Node:
        node = Node(name=name, **kwargs)
        await node.start()
        started.append(node)
        return node

    yield make
    await asyncio.gather(*(n.stop() for n in started))


@pytest.fixture
async def servers() -> AsyncIterator[Any]:
    started: list[ControlServer] = []

    async def make(node: Node, target: str, token: str | None = None) -> ControlServer:
        server = ControlServer(node, target, token=token)
        await server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        await server.close()


async def send_line(writer: asyncio.StreamWriter, data: bytes | dict[str, Any]) -> None:
    writer.write(data if isinstance(data, bytes) else (json.dumps(data) + "\n").encode())
    await writer.drain()


async def read_reply(reader: asyncio.StreamReader) -> dict[str, Any]:
    line = await asyncio.wait_for(reader.readline(), 5)
    assert line, "connection closed instead of replying"
    return json.loads(line)


async def wait_until(check: Any, timeout_s: float = 5.0) -> None:
    async def loop() -> None:
        while not check():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(loop(), timeout_s)


async def test_snapshot_over_unix_socket_is_0600_and_cleaned_up(nodes: Any, sock_dir: str) -> None:
    a = await nodes("a")
    path = os.path.join(sock_dir, "a.sock")
    # A stale socket (its process died without unlinking) is replaced.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    server = ControlServer(a, path)
    await server.start()
    try:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert server.description == f"unix:{path}"
        # A second server on a live socket must not steal it.
        with pytest.raises(ControlError, match="in use"):
            await ControlServer(a, path).start()
        client = await ControlClient.connect(server.description)
        assert client.hello["id"] == a.id.hex() and client.hello["name"] == "a"
        assert client.hello["address"] == a.address
        snap = await client.request("snapshot")
        assert snap["node"]["id"] == a.id.hex()
        assert {"connections", "routing", "records"} <= snap.keys()
        await client.close()
    finally:
        await server.close()
    assert not os.path.exists(path)
    with pytest.raises(ControlError, match="cannot reach control endpoint"):
        await ControlClient.connect(path, timeout_s=1)


async def test_subscribe_receives_live_events_after_ping(nodes: Any, servers: Any, sock_dir: str) -> None:
    a, b = await nodes("a"), await nodes("b")
    server = await servers(a, os.path.join(sock_dir, "a.sock"))
    client = await ControlClient.connect(server.description)
    assert (await client.request("subscribe"))["subscribed"] is True
    await b.ping(("127.0.0.1", a.port))

    async def first_ping_received() -> dict[str, Any]:
        async for event in client.events():
            if event["name"] == "dht:rpc_received" and event["data"].get("type") == "PING":
                return event
        raise AssertionError("event stream ended")

    event = await asyncio.wait_for(first_ping_received(), 5)
    assert event["node"] == "a"
    assert re.fullmatch(r"[0-9a-f]+", event["conn"])
    assert isinstance(event["time_ms"], float | int) and event["time_ms"] > 0
    await client.close()


async def test_probe_find_value_returns_hops_and_remote_records(nodes: Any, servers: Any, sock_dir: str) -> None:
    a = await nodes("a", request_timeout_s=1.0)
    b = await nodes("b", request_timeout_s=1.0)
    c = await nodes("c", request_timeout_s=1.0)
    for n in (b, c):
        await n.bootstrap([("127.0.0.1", a.port)])
    await c.advertise("svc", "10.0.0.7:80")
    server = await servers(a, os.path.join(sock_dir, "a.sock"))
    client = await ControlClient.connect(server.description)

    result = await client.request("probe", kind="find_value", args=["svc"])
    assert result["ok"] is True and result["op"] == "find-value"
    assert result["hops"], "a lookup through two peers has hops"
    for hop in result["hops"]:
        assert {"round", "node", "address", "rtt_ms", "returned", "values", "error"} <= hop.keys()
    assert {h["node"] for h in result["hops"]} <= {b.id.hex(), c.id.hex()}
    [record] = result["records"]
    assert record["value"] == "10.0.0.7:80" and record["publisher"] == c.id.hex()
    assert record["signature"] == "valid" and record["expires_in_s"] > 0

    by_address = await client.request("probe", kind="ping", args=[b.address])
    assert by_address["to"] == b.address and by_address["rtt_ms"] > 0
    by_id = await client.request("probe", kind="ping", args=[b.id.hex()])
    assert by_id["node"] == b.id.hex() and by_id["to"] == b.address
    with pytest.raises(ControlError, match="routing table"):
        await client.request("probe", kind="ping", args=["ab" * 32])

    # A slow probe runs on its own: a snapshot on the same connection answers first.
    b.faults.stall = True
    slow = asyncio.create_task(client.request("probe", kind="ping", args=[b.address]))
    await eventually(lambda: any(session._probes for session in server._sessions), "the probe to be running")
    await client.request("snapshot")
    assert not slow.done()
    with pytest.raises(ControlError, match="ping failed"):
        await slow
    await client.close()


async def test_tcp_with_the_right_token_works(nodes: Any, servers: Any) -> None:
    a = await nodes("a")
    server = await servers(a, "tcp:127.0.0.1:0", token=TOKEN)
    assert re.fullmatch(r"tcp:127\.0\.0\.1:\d+", server.description)
    assert parse_control_target(server.description).port == int(server.description.rsplit(":", 1)[1])
    client = await ControlClient.connect(server.description, token=TOKEN)
    assert client.hello["id"] == a.id.hex()
    assert (await client.request("snapshot"))["node"]["name"] == "a"
    await client.close()


async def test_tcp_wrong_or_missing_token_is_refused_and_served_nothing(nodes: Any, servers: Any) -> None:
    a = await nodes("a")
    server = await servers(a, "tcp:127.0.0.1:0", token=TOKEN)
    listeners = len(a.listeners)
    for token in ("wrong", None, TOKEN + "x"):
        with pytest.raises(ControlError) as info:
            await ControlClient.connect(server.description, token=token)
        assert str(info.value) == REFUSED
    target = parse_control_target(server.description)
    for first in ({"id": 1, "op": "hello", "token": "nope"}, {"id": 1, "op": "snapshot"}, b"garbage\n"):
        reader, writer = await asyncio.open_connection(target.host, target.port, ssl=_client_tls(), server_hostname="")
        await send_line(writer, first)
        await send_line(writer, {"id": 2, "op": "snapshot"})
        reply = await read_reply(reader)
        assert reply["ok"] is False and reply["error"] == REFUSED
        assert "result" not in reply
        assert await asyncio.wait_for(reader.read(), 5) == b"", "nothing after a refusal"
        writer.close()
    assert len(a.listeners) == listeners


async def test_tcp_without_a_token_cannot_be_constructed() -> None:
    node = Node(name="a")
    for token in (None, ""):
        with pytest.raises(ControlError, match="needs a token"):
            ControlServer(node, "tcp:127.0.0.1:0", token=token)


async def test_malformed_lines_get_errors_and_the_node_still_answers(nodes: Any, servers: Any, sock_dir: str) -> None:
    a, b = await nodes("a"), await nodes("b")
    server = await servers(a, os.path.join(sock_dir, "a.sock"))
    reader, writer = await asyncio.open_unix_connection(server.target.path)
    bad: list[tuple[bytes | dict[str, Any], str]] = [
        (b"this is not json\n", "not JSON"),
        (b"[1, 2, 3]\n", "not an object"),
        (b"\xff\xfe\n", "not JSON"),
        ({"id": 3, "op": "reboot"}, "unknown op"),
        ({"id": 4, "op": "probe", "kind": "ping", "args": "127.0.0.1:1"}, "list"),
        ({"id": 5, "op": "probe", "kind": 7, "args": []}, "kind"),
        ({"id": 6, "op": "probe", "kind": "store", "args": ["k"]}, "2 argument"),
        ({"id": 7, "op": "probe", "kind": "ping", "args": ["nowhere"]}, "HOST:PORT"),
        ({"id": 8, "op": "scenario", "name": "meltdown"}, "scenario name"),
        ({"id": 9, "op": "scenario", "name": "loss", "loss": "lots"}, "loss"),
    ]
    for line, error in bad:
        await send_line(writer, line)
        reply = await read_reply(reader)
        assert reply["ok"] is False and error in reply["error"], reply
        assert reply["id"] == (line.get("id") if isinstance(line, dict) else None)
    await send_line(writer, {"id": "after", "op": "snapshot"})
    reply = await read_reply(reader)
    assert reply["ok"] is True and reply["id"] == "after"
    assert await b.ping(("127.0.0.1", a.port)) > 0
    assert a.faults.names() == []
    writer.close()


async def test_over_long_line_closes_only_that_connection(nodes: Any, servers: Any, sock_dir: str) -> None:
    a = await nodes("a")
    server = await servers(a, os.path.join(sock_dir, "a.sock"))
    other = await ControlClient.connect(server.description)
    reader, writer = await asyncio.open_unix_connection(server.target.path)
    writer.write(b'{"id": 1, "op": "snapshot", "pad": "' + b"x" * MAX_CONTROL_LINE_BYTES + b'"}\n')
    reply = await read_reply(reader)
    assert reply["ok"] is False and "longer than" in reply["error"]
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert (await other.request("snapshot"))["node"]["name"] == "a"
    fresh = await ControlClient.connect(server.description)
    assert (await fresh.request("hello"))["name"] == "a"
    await asyncio.gather(other.close(), fresh.close())


async def test_scenario_switches_faults_live(nodes: Any, servers: Any, sock_dir: str) -> None:
    a = await nodes("a")
    server = await servers(a, os.path.join(sock_dir, "a.sock"))
    client = await ControlClient.connect(server.description)
    await client.request("subscribe")
    addr = ("127.0.0.1", a.port)
    assert await (await nodes("before", request_timeout_s=0.5)).ping(addr) > 0

    reply = await client.request("scenario", name="no-accept")
    assert reply["faults"] == ["no-accept"] and a.faults.no_accept is True
    with pytest.raises(NodeError):
        await (await nodes("during", request_timeout_s=0.5)).ping(addr)

    async def scenario_event() -> dict[str, Any]:
        async for event in client.events():
            if event["name"] == "dht:scenario_changed":
                return event
        raise AssertionError("event stream ended")

    event = await asyncio.wait_for(scenario_event(), 5)
    assert event["data"]["scenario"] == "no-accept" and event["conn"] is None

    assert (await client.request("scenario", name="healthy"))["faults"] == []
    assert await (await nodes("after", request_timeout_s=0.5)).ping(addr) > 0

    reply = await client.request("scenario", name="alpn-mismatch")
    assert any("new connections" in note for note in reply["notes"])
    with pytest.raises(NodeError):
        await (await nodes("alpn", request_timeout_s=0.5)).ping(addr)
    await client.close()


async def test_client_disconnect_removes_the_listener(nodes: Any, servers: Any, sock_dir: str) -> None:
    a = await nodes("a")
    server = await servers(a, os.path.join(sock_dir, "a.sock"))
    before = len(a.listeners)
    client = await ControlClient.connect(server.description)
    await client.request("subscribe")
    assert len(a.listeners) == before + 1
    await client.request("unsubscribe")
    assert len(a.listeners) == before
    await client.request("subscribe")
    await client.close()
    await wait_until(lambda: len(a.listeners) == before and server.clients == 0)
    # An abrupt end (no unsubscribe, socket just dropped) cleans up the same way.
    reader, writer = await asyncio.open_unix_connection(server.target.path)
    await send_line(writer, {"id": 1, "op": "subscribe"})
    assert (await read_reply(reader))["ok"] is True
    assert len(a.listeners) == before + 1
    writer.transport.abort()
    await wait_until(lambda: len(a.listeners) == before and server.clients == 0)


async def test_subscription_queue_drops_oldest_and_counts() -> None:
    queue: _DropOldest[int] = _DropOldest(3)
    for i in range(5):
        queue.put(i)
    assert await queue.get() == (2, None)
    assert [await queue.get() for _ in range(3)] == [(0, 2), (0, 3), (0, 4)]
    queue.close()
    assert await queue.get() == (0, None)
