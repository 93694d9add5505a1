"""The aioquic internals dhtscope relies on are all named in one contract, checked against the installed aioquic."""

from __future__ import annotations

import aioquic
import pytest
from aioquic.quic import connection as aioquic_connection

from dhtscope.node import quic_internals


def test_installed_aioquic_keeps_every_clause_of_the_contract() -> None:
    assert quic_internals.check_contract() == []


def test_pinned_series_is_the_checked_one() -> None:
    assert aioquic.__version__.startswith(quic_internals.CHECKED_SERIES + ".")


def test_a_missing_private_method_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(aioquic_connection.QuicConnection, "_write_stream_frame")
    problems = quic_internals.check_contract()
    assert problems == ["QuicConnection._write_stream_frame no longer exists"]


def test_a_changed_signature_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def _set_state(self, state, reason):  # type: ignore[no-untyped-def]  # a stand-in with one more parameter
        pass

    monkeypatch.setattr(aioquic_connection.QuicConnection, "_set_state", _set_state)
    problems = quic_internals.check_contract()
    assert problems == ["QuicConnection._set_state takes (state, reason), not (state)"]


def test_a_missing_instance_attribute_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    original = aioquic_connection.QuicConnection.__init__

    def without_ack_delay(self, *args, **kwargs):  # type: ignore[no-untyped-def]  # wraps aioquic's own
        original(self, *args, **kwargs)
        del self._ack_delay

    monkeypatch.setattr(aioquic_connection.QuicConnection, "__init__", without_ack_delay)
    assert "connection._ack_delay no longer exists" in quic_internals.check_contract()


def test_transport_reaches_aioquic_internals_only_through_this_module() -> None:
    import inspect
    import re

    from dhtscope.node import rpc, transport

    private = re.compile(r"\.quic\._[a-z]|\.tls\._|_loss\._")
    for module in (transport, rpc):
        assert not private.findall(inspect.getsource(module)), module.__name__


def _pair(read_window: quic_internals.ReadWindow | None, check=None):  # type: ignore[no-untyped-def]
    """A client and a server NodeQuicConnection in memory, and a function that moves datagrams until both are quiet."""
    import time

    from aioquic.buffer import Buffer
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.packet import pull_quic_header

    from dhtscope.node.certificates import make_certificate
    from dhtscope.node.keys import Identity

    def config(is_client: bool) -> QuicConfiguration:
        cert, key = make_certificate(Identity.generate(), time.time())
        return QuicConfiguration(
            is_client=is_client, alpn_protocols=["dhtscope/1"], certificate=cert, private_key=key, verify_mode=0
        )

    server_config = config(False)
    if read_window is not None:
        server_config.max_data = read_window.connection_bytes
        server_config.max_stream_data = read_window.stream_bytes
    client = quic_internals.NodeQuicConnection(configuration=config(True), check_certificate=check)
    client.connect(("127.0.0.1", 2), now=0.0)
    ends: dict[str, quic_internals.NodeQuicConnection] = {}

    def pump(start: float = 1.0) -> None:
        for i in range(50):
            now = start + i * 0.05  # past any pacing delay
            moved = False
            for data, _ in client.datagrams_to_send(now=now):
                if "server" not in ends:
                    odcid = pull_quic_header(Buffer(data=data), host_cid_length=8).destination_cid
                    ends["server"] = quic_internals.NodeQuicConnection(
                        configuration=server_config, original_destination_connection_id=odcid, read_window=read_window
                    )
                ends["server"].receive_datagram(data, ("127.0.0.1", 1), now=now)
                moved = True
            if "server" in ends:
                for data, _ in ends["server"].datagrams_to_send(now=now):
                    client.receive_datagram(data, ("127.0.0.1", 2), now=now)
                    moved = True
            if not moved:
                return

    pump()
    return client, ends["server"], pump


def _received(conn: quic_internals.NodeQuicConnection, stream_id: int) -> int:
    from aioquic.quic import events

    got = 0
    while (event := conn.next_event()) is not None:
        if isinstance(event, events.StreamDataReceived) and event.stream_id == stream_id:
            got += len(event.data)
    return got


def test_with_a_read_window_credit_grows_only_as_the_application_reads() -> None:
    window = quic_internals.ReadWindow(stream_bytes=128, connection_bytes=512)
    client, server, pump = _pair(window)
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, b"x" * 300, end_stream=True)
    pump()
    assert _received(server, sid) == 128  # the initial window, and no more while nothing is read
    pump(5.0)
    assert _received(server, sid) == 0
    server.application_read(sid, 128, fin=False)
    pump(10.0)
    assert _received(server, sid) == 128  # credit = what was read + the window
    server.application_read(sid, 128, fin=False)
    pump(15.0)
    assert _received(server, sid) == 44


def test_without_a_read_window_aioquic_grants_credit_as_it_receives() -> None:
    client, server, pump = _pair(None)
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, b"x" * 3000, end_stream=True)
    pump()
    assert _received(server, sid) == 3000


def test_a_refused_certificate_closes_the_handshake_with_its_tls_alert() -> None:
    from aioquic.quic import events

    from dhtscope.node.certificates import UNSUPPORTED_CERTIFICATE_ALERT, CertificateRefused

    def refuse(cert):  # type: ignore[no-untyped-def]
        raise CertificateRefused(UNSUPPORTED_CERTIFICATE_ALERT, "not for us")

    client, server, pump = _pair(None, check=refuse)
    client.handle_timer(now=60.0)  # the closing period ends
    ended = [e for e in iter(client.next_event, None) if isinstance(e, events.ConnectionTerminated)]
    assert [(e.error_code, e.reason_phrase) for e in ended] == [(0x100 + UNSUPPORTED_CERTIFICATE_ALERT, "not for us")]
