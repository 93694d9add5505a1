"""The control endpoint under hostile or careless clients: slots, deadlines, deep JSON, TLS, mistakes."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers.waiting import eventually

from dhtscope.node.control import (
    HELLO_TIMEOUT_S,
    MAX_CONTROL_CLIENTS,
    ControlClient,
    ControlError,
    ControlServer,
    FingerprintMismatch,
    _client_tls,
    known_controls_path,
    loads_line,
    parse_control_target,
)
from dhtscope.node.keys import Identity
from dhtscope.node.node import Node

TOKEN = "s3cret-token"


@pytest.fixture
async def served() -> AsyncIterator[Any]:
    """served(target, token=None, identity=None): a started node with a started control server."""
    started: list[tuple[Node, ControlServer]] = []

    async def make(target: str, token: str | None = None, identity: Identity | None = None) -> ControlServer:
        node = Node(identity, name="a")
        await node.start()
        server = ControlServer(node, target, token=token)
        started.append((node, server))
        await server.start()
        return server

    yield make
    for node, server in started:
        await server.close()
        await node.stop()


async def test_idle_unauthenticated_sockets_cannot_keep_the_rightful_client_out(served: Any) -> None:
    server = await served("tcp:127.0.0.1:0", token=TOKEN)
    target = parse_control_target(server.description)
    idle = []
    for _ in range(MAX_CONTROL_CLIENTS):  # TLS done, never a hello: they wait in their own small pool
        idle.append(await asyncio.open_connection(target.host, target.port, ssl=_client_tls(), server_hostname=""))
    for _ in range(MAX_CONTROL_CLIENTS):  # not even TLS: asyncio drops them after the handshake timeout
        idle.append(await asyncio.open_connection(target.host, target.port))
    client = await ControlClient.connect(server.description, TOKEN, timeout_s=HELLO_TIMEOUT_S * 3)
    assert (await client.request("snapshot"))["node"]["name"] == "a"
    assert server.clients == 1 and server.refused >= MAX_CONTROL_CLIENTS - 4
    await client.close()
    for _, writer in idle:
        writer.close()


async def test_a_client_that_never_says_hello_is_closed_after_the_deadline(served: Any) -> None:
    server = await served("tcp:127.0.0.1:0", token=TOKEN)
    target = parse_control_target(server.description)
    reader, writer = await asyncio.open_connection(target.host, target.port, ssl=_client_tls(), server_hostname="")
    reply = json.loads(await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT_S * 5))
    assert reply["ok"] is False and "no hello" in reply["error"]
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


def test_deep_json_is_refused_before_decoding() -> None:
    with pytest.raises(ValueError, match="deeper than 32"):
        loads_line(b"[" * 30_000 + b"]" * 30_000)
    assert loads_line(b'{"op": "x", "s": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}')["op"] == "x"


async def test_a_30000_deep_line_is_a_clear_error_and_the_session_goes_on(served: Any, sock_dir: str) -> None:
    server = await served(f"{sock_dir}/c.sock")
    reader, writer = await asyncio.open_unix_connection(f"{sock_dir}/c.sock")
    writer.write(b"[" * 30_000 + b"]" * 30_000 + b"\n")
    reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
    assert reply["ok"] is False and "deeper than 32 levels" in reply["error"]
    writer.write(b'{"id": 2, "op": "snapshot"}\n')
    assert json.loads(await asyncio.wait_for(reader.readline(), 5))["ok"] is True
    writer.close()
    assert server.clients <= 1


async def test_stopping_with_subscribers_that_never_read_logs_no_traceback(
    served: Any, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = await served(f"{sock_dir}/c.sock")
    node = server.node
    readers = []
    for _ in range(3):
        reader, writer = await asyncio.open_unix_connection(f"{sock_dir}/c.sock")
        writer.write(b'{"id": 1, "op": "subscribe"}\n')
        readers.append((reader, writer))
    await eventually(lambda: len(node.listeners) == 3, "three subscribers")
    peer = Node()
    await peer.start()
    try:
        with caplog.at_level(logging.DEBUG):
            for _ in range(300):
                await peer.ping(("127.0.0.1", node.port))
            await server.close()
    finally:
        await peer.stop()
    assert not [r for r in caplog.records if r.exc_info or "CancelledError" in r.getMessage()]
    assert node.listeners == []


async def test_the_tls_key_is_pinned_by_its_fingerprint(served: Any) -> None:
    identity = Identity.generate()
    server = await served("tcp:127.0.0.1:0", token=TOKEN, identity=identity)
    assert server.fingerprint == "SHA256:" + identity.node_id.hex()
    client = await ControlClient.connect(server.description, TOKEN, fingerprints=[server.fingerprint])
    assert client.fingerprint == server.fingerprint
    await client.close()
    wrong = "SHA256:" + Identity.generate().node_id.hex()
    with pytest.raises(FingerprintMismatch, match="not the pinned"):
        await ControlClient.connect(server.description, TOKEN, fingerprints=[wrong])
    with pytest.raises(ControlError, match="not SHA256: and 64 hex digits"):
        await ControlClient.connect(server.description, TOKEN, fingerprints=["SHA256:abc"])


async def test_trust_on_first_use_warns_once_and_refuses_another_key_later(
    served: Any, caplog: pytest.LogCaptureFixture
) -> None:
    first = await served("tcp:127.0.0.1:0", token=TOKEN)
    with caplog.at_level(logging.WARNING, logger="dhtscope.control"):
        for _ in range(2):
            client = await ControlClient.connect(first.description, TOKEN)
            await client.close()
    warnings = [r.getMessage() for r in caplog.records if "first use" in r.getMessage()]
    assert len(warnings) == 1 and first.fingerprint in warnings[0]
    assert first.fingerprint in known_controls_path().read_text()
    port = parse_control_target(first.description).port
    await first.close()
    await first.node.stop()
    impostor = await served(f"tcp:127.0.0.1:{port}", token=TOKEN)  # another key at the same address
    with pytest.raises(FingerprintMismatch, match="was trusted there before"):
        await ControlClient.connect(impostor.description, TOKEN)


async def test_plain_tcp_is_served_on_loopback_only(served: Any) -> None:
    server = await served("tcp+plain:127.0.0.1:0", token=TOKEN)
    assert server.description.startswith("tcp+plain:127.0.0.1:") and server.fingerprint is None
    client = await ControlClient.connect(server.description, TOKEN)
    assert client.hello["name"] == "a"
    await client.close()
    for host in ("0.0.0.0", "192.0.2.1", "[::]"):
        with pytest.raises(ControlError, match="loopback addresses only"):
            ControlServer(Node(), f"tcp+plain:{host}:0", token=TOKEN)


def _node_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dhtscope.node", *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


async def test_every_control_mistake_is_one_line_without_a_traceback(served: Any, sock_dir: str) -> None:
    in_use = f"{sock_dir}/in-use.sock"
    await served(in_use)
    existing = Path(sock_dir) / "a-file"
    existing.write_text("not a socket")
    cases = {
        "in use by another running node": ["--control", in_use],
        "exists and is not a socket": ["--control", str(existing)],
        "needs a token": ["--control", "tcp:127.0.0.1:0"],
        "No such file or directory": ["--control", "/nonexistent-dir/x.sock"],
        "loopback addresses only": ["--control", "tcp+plain:0.0.0.0:0", "--control-token", "t"],
    }
    for expected, args in cases.items():
        done = await asyncio.to_thread(_node_cli, *args)
        assert done.returncode != 0, args
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], done.stderr
        assert "Traceback" not in done.stderr and done.stdout == ""


def test_the_node_prints_its_control_fingerprint_at_start(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    node_id = Identity.load_or_create(str(key)).node_id.hex()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dhtscope.node",
            "--key",
            str(key),
            "--control",
            "tcp:127.0.0.1:0",
            "--control-token",
            TOKEN,
            "--exit-on-stdin-eof",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # started
        line = proc.stdout.readline()
    finally:
        proc.communicate(timeout=20)
    assert f"SHA256:{node_id}" in line and "--fingerprint" in line
