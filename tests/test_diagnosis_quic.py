"""Failures made over real QUIC on 127.0.0.1, recorded by aioquic's own qlog, named by the analysis.

A refused certificate, a peer that goes silent (everything to and from it dropped), and loss
of one end's datagrams only: the shapes of the bad-certificate, blackhole and one-way-loss
faults, made here with plain aioquic and a UDP relay so only the traces speak.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aioquic.asyncio import connect, serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.logger import QuicLogger
from helpers.quicpair import certificate

from dhtscope.tracing.analysis import ERROR, Analysis, analyse
from dhtscope.tracing.reader import open_recording

ALPN = "dhtscope/1"
IDLE_TIMEOUT_S = 3.5  # long enough for a silence to count as a stall, short enough for a test


class _Relay(asyncio.DatagramProtocol):
    """A UDP hop between client and server that can drop either direction."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.client: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.drop_to_server = False
        self.drop_to_client = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport (uvloop's is not a subclass)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if addr == self.server:
            if self.client is not None and not self.drop_to_client:
                self.transport.sendto(data, self.client)
        else:
            self.client = addr
            if not self.drop_to_server:
                self.transport.sendto(data, self.server)


class _Closing(QuicConnectionProtocol):
    """Logs how the connection ended into its own trace, as dhtscope's node does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trace = self._quic._quic_logger

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.ConnectionTerminated) and self._trace is not None:
            idle = event.reason_phrase == "Idle timeout"
            self._trace.log_event(
                category="connectivity",
                event="connection_closed",
                data={
                    "owner": "local",
                    "trigger": "idle_timeout" if idle else "error",
                    "connection_code": event.error_code,
                    "reason": event.reason_phrase,
                },
            )
        super().quic_event_received(event)


@dataclass
class _Pair:
    relay: _Relay
    port: int
    client_log: QuicLogger
    server_log: QuicLogger
    client_config: QuicConfiguration


@asynccontextmanager
async def _pair() -> AsyncIterator[_Pair]:
    cert, key = certificate()
    server_log, client_log = QuicLogger(), QuicLogger()
    scfg = QuicConfiguration(
        is_client=False, alpn_protocols=[ALPN], quic_logger=server_log, idle_timeout=IDLE_TIMEOUT_S
    )
    scfg.certificate, scfg.private_key = cert, key

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.write(b"pong" * 10)
        writer.write_eof()

    def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asyncio.ensure_future(echo(reader, writer))

    server = await serve("127.0.0.1", 0, configuration=scfg, stream_handler=on_stream, create_protocol=_Closing)
    server_addr = server._transport.get_extra_info("sockname")  # type: ignore[union-attr]
    loop = asyncio.get_running_loop()
    transport, relay = await loop.create_datagram_endpoint(
        lambda: _Relay(("127.0.0.1", server_addr[1])), local_addr=("127.0.0.1", 0)
    )
    ccfg = QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        quic_logger=client_log,
        idle_timeout=IDLE_TIMEOUT_S,
        verify_mode=ssl.CERT_NONE,
    )
    try:
        yield _Pair(relay, transport.get_extra_info("sockname")[1], client_log, server_log, ccfg)
    finally:
        transport.close()
        server.close()


def _analyse(tmp_path: Path, pair: _Pair) -> Analysis:
    for name, log in (("client", pair.client_log), ("server", pair.server_log)):
        doc = log.to_dict()
        for trace in doc["traces"]:
            trace["vantage_point"]["name"] = name
        (tmp_path / f"{name}.qlog").write_text(json.dumps(doc))
    return analyse(open_recording(tmp_path / "client.qlog", tmp_path / "server.qlog"))


async def _request(client: QuicConnectionProtocol) -> bytes:
    reader, writer = await client.create_stream()
    writer.write(b"ping")
    writer.write_eof()
    return await reader.read()


async def test_a_refused_certificate_is_named_on_the_end_that_presented_it(tmp_path: Path) -> None:
    async with _pair() as pair:
        pair.client_config.verify_mode = ssl.CERT_REQUIRED  # and no CA trusts the server's self-signed one
        with pytest.raises(ConnectionError):
            async with connect("127.0.0.1", pair.port, configuration=pair.client_config, wait_connected=True):
                pass
        await asyncio.sleep(0.1)
        a = _analyse(tmp_path, pair)
    failed = [f for f in a.findings if f.kind == "handshake_failed"]
    assert len(failed) == 1, [(f.kind, f.summary) for f in a.findings]
    f = failed[0]
    assert f.severity == ERROR and f.node == "server"
    assert (
        "TLS alert 42 (bad certificate)" in f.summary and "client refused the certificate server presented" in f.cause
    )
    assert a.summary()["root_causes"] == [f.id]


@pytest.mark.slow
async def test_a_peer_that_goes_silent_mid_run_is_unresponsive(tmp_path: Path) -> None:
    async with _pair() as pair:
        async with connect("127.0.0.1", pair.port, configuration=pair.client_config, create_protocol=_Closing) as c:
            assert await _request(c) == b"pong" * 10
            pair.relay.drop_to_server = pair.relay.drop_to_client = True  # the server is gone, as if frozen
            asyncio.ensure_future(_request(c))
            await asyncio.wait_for(c.wait_closed(), IDLE_TIMEOUT_S + 3)
        a = _analyse(tmp_path, pair)
    f = next((x for x in a.findings if x.kind == "peer_unresponsive"), None)
    assert f is not None, [(x.kind, x.summary) for x in a.findings]
    assert f.severity == ERROR and f.node == "server"
    assert "PTO backoff" in f.summary and "ended by idle timeout" in f.summary
    assert a.summary()["root_causes"] == [f.id]


@pytest.mark.slow
async def test_loss_of_one_ends_datagrams_is_named_on_that_end(tmp_path: Path) -> None:
    async with _pair() as pair:
        async with connect("127.0.0.1", pair.port, configuration=pair.client_config, create_protocol=_Closing) as c:
            assert await _request(c) == b"pong" * 10
            pair.relay.drop_to_client = True  # everything the server sends is lost from now on
            asyncio.ensure_future(_request(c))
            await asyncio.wait_for(c.wait_closed(), IDLE_TIMEOUT_S + 3)
        a = _analyse(tmp_path, pair)
    loss = next((x for x in a.findings if x.kind == "packet_loss" and x.severity != "info"), None)
    assert loss is not None, [(x.kind, x.summary) for x in a.findings]
    assert loss.node == "server" and loss.severity == ERROR
    assert "only packets sent by server were lost" in loss.summary
    assert a.summary()["root_causes"] == [loss.id]
    assert all(x.caused_by == loss.id for x in a.findings if x.severity != "info" and x is not loss)
