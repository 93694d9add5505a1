"""Real QUIC conversations for capture tests: aioquic's sans-I/O client and server in one
process, every datagram written with CaptureWriter as a sniffer on the path would see it."""

from __future__ import annotations

import datetime
import io
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicProtocolVersion, encode_quic_retry, pull_quic_header
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dhtscope.tracing.capture.writer import CaptureWriter

V1 = QuicProtocolVersion.VERSION_1
V2 = QuicProtocolVersion.VERSION_2
ALPN = "dhtscope/1"
T0 = 1_780_000_000.0  # a fixed epoch second: captures made twice are alike


@lru_cache(maxsize=1)
def certificate() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "capture-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert, key


@dataclass
class Conversation:
    """What one run did: the key log text, stream ids, and the endpoints' addresses."""

    keylog: str
    client: tuple[str, int]
    server: tuple[str, int]
    streams: list[int] = field(default_factory=list)
    datagrams: int = 0
    odcid: bytes = b""
    client_random_lines: int = 0


@dataclass
class Plan:
    """What the client does once the handshake is done."""

    streams: int = 3
    request: bytes = b"ping" * 50
    answer: bool = True  # the server writes back and finishes each stream
    answer_bytes: bytes = b"pong" * 80
    key_update: bool = False
    reset_stream: bool = False
    stop_sending: bool = False
    datagram: bool = False
    ping: bool = False
    close: bool = True
    linger_s: float = 0.2  # the client closes this long after its requests, once answered
    drop: Callable[[int, bool], bool] | None = None  # (datagram number, client sent) -> lose it after the sniffer
    hide: Callable[[int, bool], bool] | None = None  # ... -> lose it before the sniffer: never captured
    close_code: int = 0  # the client's CONNECTION_CLOSE error code (an application code)
    give_up_s: float | None = None  # the client closes if its handshake is not done this long after it began
    server_close_s: float | None = None  # the server closes the connection this long after the requests


def converse(
    writer: CaptureWriter | None,
    *,
    version: int = V1,
    ipv6: bool = False,
    client_port: int = 50000,
    server_port: int = 4433,
    retry: bool = False,
    server_alpn: str = ALPN,
    client_verify: bool = False,
    plan: Plan | None = None,
    start_s: float = T0,
    host_suffix: int = 1,
) -> Conversation:
    """Run one connection to completion, writing each datagram to `writer` (if any)."""
    plan = plan or Plan()
    cert, key = certificate()
    secrets = io.StringIO()
    if ipv6:
        caddr, saddr = (f"2001:db8::{host_suffix:x}", client_port), ("2001:db8::ffff", server_port)
    else:
        caddr, saddr = (f"10.0.{host_suffix >> 8 & 255}.{host_suffix & 255}", client_port), ("10.1.0.1", server_port)

    ccfg = QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        secrets_log_file=secrets,
        verify_mode=ssl.CERT_REQUIRED if client_verify else ssl.CERT_NONE,
        supported_versions=[version],
        max_datagram_frame_size=65536 if plan.datagram else None,
    )
    scfg = QuicConfiguration(
        is_client=False,
        alpn_protocols=[server_alpn],
        supported_versions=[version],
        max_datagram_frame_size=65536 if plan.datagram else None,
    )
    scfg.certificate = cert
    scfg.private_key = key
    client = QuicConnection(configuration=ccfg)
    server: QuicConnection | None = None
    now = start_s
    client.connect(saddr, now=now)
    conv = Conversation(keylog="", client=caddr, server=saddr)
    retried = False
    sent_requests = False
    answered: set[int] = set()
    number = 0
    requests_at = 0.0

    def deliver(data: bytes, from_client: bool) -> None:
        nonlocal server, retried, number
        number += 1
        if plan.hide is not None and plan.hide(number, from_client):
            return  # lost on the way to the sniffer
        if plan.drop is not None and plan.drop(number, from_client):
            if writer is not None:
                writer.write(now, caddr if from_client else saddr, saddr if from_client else caddr, data)
            return  # the sniffer saw it; the path lost it after
        if writer is not None:
            writer.write(now, caddr if from_client else saddr, saddr if from_client else caddr, data)
        conv.datagrams += 1
        if from_client:
            if server is None:
                header = pull_quic_header(Buffer(data=data), host_cid_length=8)
                if retry and not retried:
                    retried = True
                    conv.odcid = header.destination_cid
                    reply = encode_quic_retry(
                        version=header.version,
                        source_cid=os.urandom(8),
                        destination_cid=header.source_cid,
                        original_destination_cid=header.destination_cid,
                        retry_token=b"retry-token-" + os.urandom(8),
                    )
                    deliver(reply, False)
                    return
                odcid = conv.odcid if retry else header.destination_cid
                conv.odcid = odcid
                server = QuicConnection(
                    configuration=scfg,
                    original_destination_connection_id=odcid,
                    retry_source_connection_id=header.destination_cid if retry else None,
                )
            server.receive_datagram(data, caddr, now)
        else:
            client.receive_datagram(data, saddr, now)

    for _ in range(20000):
        moved = False
        for data, _addr in client.datagrams_to_send(now):
            deliver(data, True)
            moved = True
        if server is not None:
            for data, _addr in server.datagrams_to_send(now):
                deliver(data, False)
                moved = True
        # Application behaviour.
        ev = client.next_event()
        while ev is not None:
            if isinstance(ev, events.HandshakeCompleted) and not sent_requests:
                sent_requests = True
                requests_at = now
                for i in range(plan.streams):
                    sid = client.get_next_available_stream_id()
                    fin = not (plan.reset_stream and i == 0)
                    client.send_stream_data(sid, plan.request, end_stream=fin)
                    conv.streams.append(sid)
                if plan.reset_stream and conv.streams:
                    client.reset_stream(conv.streams[0], 0x09)
                if plan.stop_sending and len(conv.streams) > 1:
                    client.stop_stream(conv.streams[1], 0x0A)
                if plan.datagram:
                    client.send_datagram_frame(b"dgram")
                if plan.ping:
                    client.send_ping(7)
            elif isinstance(ev, events.ConnectionTerminated):
                pass
            ev = client.next_event()
        if server is not None:
            ev = server.next_event()
            while ev is not None:
                if (
                    isinstance(ev, events.StreamDataReceived)
                    and ev.end_stream
                    and plan.answer
                    and ev.stream_id not in answered
                ):
                    answered.add(ev.stream_id)
                    try:
                        server.send_stream_data(ev.stream_id, plan.answer_bytes, end_stream=True)
                    except RuntimeError:
                        pass  # the client asked the server to stop sending on this one
                ev = server.next_event()
        if moved:
            now += 0.0005
            continue
        # Nothing in flight: the next step of the plan, or a timer.
        if sent_requests and plan.key_update and client._handshake_confirmed and not getattr(client, "_ku_done", False):
            client._ku_done = True  # type: ignore[attr-defined]
            client.request_key_update()
            sid = client.get_next_available_stream_id()
            client.send_stream_data(sid, b"after key update", end_stream=True)
            conv.streams.append(sid)
            continue
        if (
            plan.give_up_s is not None
            and not sent_requests
            and now >= start_s + plan.give_up_s
            and not getattr(client, "_closing", False)
        ):
            client._closing = True  # type: ignore[attr-defined]
            client.close(error_code=plan.close_code, reason_phrase="handshake timeout")
            continue
        server_close_at = requests_at + plan.server_close_s if plan.server_close_s is not None else None
        server_closes = server is not None and not getattr(server, "_closing", False)
        if server_close_at is not None and sent_requests and server_closes and now >= server_close_at:
            assert server is not None
            server._closing = True  # type: ignore[attr-defined]
            server.close(error_code=0, reason_phrase="shutting down")
            continue
        done_streams = not plan.answer or len(answered) >= len(conv.streams) - (1 if plan.reset_stream else 0)
        close_due = sent_requests and done_streams and plan.close and not getattr(client, "_closing", False)
        if close_due and now >= requests_at + plan.linger_s:
            client._closing = True  # type: ignore[attr-defined]
            client.close(error_code=plan.close_code, reason_phrase="done")
            continue
        timers = [t for t in (client.get_timer(), server.get_timer() if server else None) if t is not None]
        if close_due:
            timers.append(requests_at + plan.linger_s)
        if plan.give_up_s is not None and not sent_requests and not getattr(client, "_closing", False):
            timers.append(start_s + plan.give_up_s)
        if server_close_at is not None and sent_requests and not getattr(server, "_closing", False):
            timers.append(server_close_at)
        if not timers:
            break
        t = min(timers)
        if t > start_s + 30:
            break
        now = max(now, t)
        if client.get_timer() is not None and client.get_timer() <= now:
            client.handle_timer(now)
        if server is not None and server.get_timer() is not None and server.get_timer() <= now:
            server.handle_timer(now)
        if getattr(client, "_closing", False) and client._state.name in ("DRAINING", "TERMINATED"):
            break
    conv.keylog = secrets.getvalue()
    return conv


Datagram = tuple[float, tuple[str, int], tuple[str, int], bytes]


class Held:
    """Stands in for a CaptureWriter: keeps the datagrams to write later, in any order or file."""

    def __init__(self) -> None:
        self.datagrams: list[Datagram] = []

    def write(self, t: float, src: tuple[str, int], dst: tuple[str, int], data: bytes) -> None:
        self.datagrams.append((t, src, dst, data))


def record(**kwargs: object) -> tuple[Conversation, list[Datagram]]:
    """One conversation and its datagrams, not yet written anywhere."""
    held = Held()
    conv = converse(held, **kwargs)  # type: ignore[arg-type]
    return conv, held.datagrams


def write_datagrams(
    path: Path, datagrams: list[Datagram], *, fmt: str = "pcapng", link: str = "ethernet", keylog: str | None = None
) -> None:
    """Datagrams as a capture; `keylog` goes in a DSB before them (pcapng only)."""
    with CaptureWriter(path, fmt=fmt, link=link, keylog=keylog) as writer:
        for t, src, dst, data in datagrams:
            writer.write(t, src, dst, data)


def write_capture(
    path: Path,
    *,
    fmt: str = "pcapng",
    link: str = "ethernet",
    dsb: bool = True,
    keylog_path: Path | None = None,
    **kwargs: object,
) -> Conversation:
    """One conversation as a capture file; its key log in a DSB and/or beside it."""
    conv, datagrams = record(**kwargs)
    # The key log is known once the handshake ran; a DSB goes before the packets it opens.
    write_datagrams(path, datagrams, fmt=fmt, link=link, keylog=conv.keylog if dsb and fmt == "pcapng" else None)
    if keylog_path is not None:
        keylog_path.write_text(conv.keylog)
    return conv
