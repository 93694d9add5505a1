"""The handshake over real QUIC: certificates refused with the TLS alert that says why, and how a
handshake that never completes is closed and recorded."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from helpers.waiting import eventually

from dhtscope.node.certificates import (
    BAD_CERTIFICATE_ALERT,
    CERTIFICATE_EXPIRED_ALERT,
    UNSUPPORTED_CERTIFICATE_ALERT,
    CertificateRefused,
    check_peer_certificate,
    make_certificate,
)
from dhtscope.node.keys import Identity
from dhtscope.node.node import Node, NodeError
from dhtscope.node.recording import NodeRecorder
from dhtscope.node.scenarios import Faults
from dhtscope.node.transport import TransportError
from dhtscope.tracing.analysis import ERROR, analyse
from dhtscope.tracing.reader import open_recording

CRYPTO_ERROR = 0x100


def _refusal(cert: x509.Certificate, expected=None, now_s: float | None = None) -> int:
    with pytest.raises(CertificateRefused) as info:
        check_peer_certificate(cert, time.time() if now_s is None else now_s, expected)
    return info.value.alert


def test_a_node_certificate_proves_the_id_its_key_hashes_to() -> None:
    me = Identity.generate()
    cert, _ = make_certificate(me, time.time())
    assert check_peer_certificate(cert, time.time(), me.node_id) == me.node_id


def test_each_bad_certificate_is_refused_with_the_alert_that_names_why() -> None:
    me, other = Identity.generate(), Identity.generate()
    now = time.time()
    assert _refusal(make_certificate(me, now, "expired")[0]) == CERTIFICATE_EXPIRED_ALERT
    assert _refusal(make_certificate(me, now, "not-ed25519")[0]) == UNSUPPORTED_CERTIFICATE_ALERT
    assert _refusal(make_certificate(me, now)[0], now_s=now - 10 * 86_400) == CERTIFICATE_EXPIRED_ALERT  # not yet
    assert _refusal(make_certificate(me, now)[0], expected=other.node_id) == BAD_CERTIFICATE_ALERT


def test_a_certificate_signed_by_another_key_is_refused() -> None:
    me, signer = Identity.generate(), Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, me.node_id.hex())])
    now = datetime.datetime.now(datetime.UTC)
    forged = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(me.private_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(signer, None)
    )
    assert _refusal(forged) == BAD_CERTIFICATE_ALERT


@pytest.mark.parametrize(
    "fault, alert", [("expired", CERTIFICATE_EXPIRED_ALERT), ("not-ed25519", UNSUPPORTED_CERTIFICATE_ALERT)]
)
async def test_a_server_with_a_bad_certificate_is_refused_in_the_handshake(make_nodes, fault, alert) -> None:
    server, client = await make_nodes(2, bootstrap=False)
    server.faults.certificate = fault
    with pytest.raises(NodeError, match=f"code 0x{CRYPTO_ERROR + alert:x}"):
        await client.ping(("127.0.0.1", server.port))
    server.faults.certificate = None  # the node keeps serving: a good certificate is accepted again
    assert await client.ping(("127.0.0.1", server.port)) > 0


async def test_a_client_with_an_expired_certificate_is_refused_by_the_server(make_nodes) -> None:
    server, client = await make_nodes(2, bootstrap=False, request_timeout_s=2.0)
    client.faults.certificate = "expired"
    with pytest.raises(NodeError, match=f"code 0x{CRYPTO_ERROR + CERTIFICATE_EXPIRED_ALERT:x}"):
        await client.ping(("127.0.0.1", server.port))
    assert client.id not in server.routing


async def test_a_contact_whose_key_is_not_its_id_is_refused_in_the_handshake(make_nodes) -> None:
    a, b, c = await make_nodes(3, bootstrap=False)
    wrong = dataclasses.replace(c.contact(), port=b.port)  # c's id at b's address
    with pytest.raises(NodeError, match=f"code 0x{CRYPTO_ERROR + BAD_CERTIFICATE_ALERT:x}.*not the"):
        await a.ping(wrong)


async def test_a_refused_certificate_is_named_by_the_analysis_on_the_node_that_presented_it(tmp_path: Path) -> None:
    nodes = [
        Node(name=n, faults=Faults.for_scenario("bad-certificate") if n == "registry" else None,
             recorder=NodeRecorder(tmp_path, n, "", n))
        for n in ("registry", "provider")
    ]  # fmt: skip
    for node in nodes:
        await node.start()
    try:
        with pytest.raises(NodeError):
            await nodes[1].ping(("127.0.0.1", nodes[0].port))
        await eventually(lambda: not nodes[1].rpc.endpoint.all, "the refused connection to end")
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))
    failed = [f for f in analyse(open_recording(tmp_path)).findings if f.kind == "handshake_failed"]
    assert [(f.node, f.severity) for f in failed] == [("registry", ERROR)]
    assert "certificate expired" in failed[0].summary


async def test_a_handshake_that_times_out_is_closed_cleanly_and_recorded_as_such(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    silent, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    port = silent.get_extra_info("sockname")[1]
    node = Node(name="dialler", recorder=NodeRecorder(tmp_path, "dialler", "", "client"))
    await node.start()
    try:
        with pytest.raises(TransportError, match="no QUIC handshake"):
            await node.rpc.endpoint.connect(("127.0.0.1", port), timeout_s=0.3)
        await eventually(lambda: not node.rpc.endpoint.all, "the abandoned connection to end")
    finally:
        await node.stop()
        silent.close()
    events = [e for t in open_recording(tmp_path).traces for e in t]
    closes = [e.data for e in events if e.name == "quic:connection_closed"]
    assert [c["trigger"] for c in closes] == ["handshake_timeout"]
    frames = [
        fr for e in events if e.name == "quic:packet_sent" for fr in e.data.get("frames", [])
        if fr.get("frame_type") == "connection_close"
    ]  # fmt: skip
    # A clean close before the handshake, not the APPLICATION_ERROR an application's close becomes there.
    assert frames and all(fr["error_code"] == 0 and fr.get("error_space") != "application" for fr in frames)
