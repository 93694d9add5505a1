"""Shared fixtures: real nodes over QUIC on 127.0.0.1 (ephemeral ports), a raw QUIC peer, and the sample paths."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from helpers.traces import ONE_QLOG_FILE, SAMPLES, needs_samples  # noqa: F401 (test files import them from here)

from dhtscope.node.keys import Identity
from dhtscope.node.node import Node
from dhtscope.node.transport import Conn, Endpoint


@pytest.fixture
def sock_dir() -> Iterator[str]:
    """A short directory for unix sockets: tmp_path can exceed a socket path's 107-byte limit."""
    path = tempfile.mkdtemp(dir="/tmp", prefix="dhts-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _known_controls(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control fingerprints trusted on first use go to a file of the test's, never the user's."""
    path = tmp_path_factory.mktemp("known") / "known_controls"
    monkeypatch.setenv("DHTSCOPE_KNOWN_CONTROLS", str(path))


@pytest.fixture
async def make_nodes():
    """make_nodes(n, **kwargs): n started nodes, all but the first bootstrapped through the first."""
    started: list[Node] = []

    async def make(n: int, bootstrap: bool = True, **kwargs: Any) -> list[Node]:
        nodes = [Node(name=f"n{i}", **kwargs) for i in range(n)]
        for node in nodes:
            await node.start()
            started.append(node)
        if bootstrap:
            for node in nodes[1:]:
                await node.bootstrap([("127.0.0.1", nodes[0].port)])
        return nodes

    yield make
    await asyncio.gather(*(node.stop() for node in started))


class RawPeer:
    """A QUIC peer that writes arbitrary bytes on streams and records what comes back."""

    def __init__(self) -> None:
        self.data: dict[int, bytearray] = {}
        self.fin: set[int] = set()
        self.resets: dict[int, int] = {}
        self.changed = asyncio.Event()
        self.endpoint: Endpoint | None = None
        self.conn: Conn | None = None

    async def connect(self, port: int) -> RawPeer:
        self.endpoint = Endpoint(Identity.generate(), self)
        await self.endpoint.listen("127.0.0.1", 0)
        self.conn = await self.endpoint.connect(("127.0.0.1", port))
        return self

    async def send(self, data: bytes, fin: bool = True) -> int:
        assert self.conn is not None
        await self.conn.wait_for_credit()
        return self.conn.start_stream(data, fin)

    async def wait(self, stream_id: int, timeout_s: float = 5.0) -> None:
        """Until the stream ended: FIN or reset from the node."""

        async def done() -> None:
            while stream_id not in self.fin and stream_id not in self.resets:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(done(), timeout_s)

    async def close(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.close()

    # ConnectionOwner
    def connection_ready(self, conn: Conn) -> None:
        pass

    def stream_data(self, conn: Conn, stream_id: int, data: bytes, fin: bool) -> None:
        self.data.setdefault(stream_id, bytearray()).extend(data)
        if fin:
            self.fin.add(stream_id)
        self.changed.set()

    def stream_reset(self, conn: Conn, stream_id: int, error_code: int) -> None:
        self.resets[stream_id] = error_code
        self.changed.set()

    def stop_sending(self, conn: Conn, stream_id: int, error_code: int) -> None:
        conn.reset(stream_id, error_code)

    def connection_lost(self, conn: Conn) -> None:
        self.changed.set()


@pytest.fixture
async def raw_peer():
    peers: list[RawPeer] = []

    async def make(port: int) -> RawPeer:
        peer = await RawPeer().connect(port)
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        await peer.close()
