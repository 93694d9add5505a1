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


def _deliver(src: quic_internals.NodeQuicConnection, dst: quic_internals.NodeQuicConnection, now: float) -> int:
    """Every datagram `src` has to send, received by `dst` (and nothing sent back); how many."""
    datagrams = src.datagrams_to_send(now=now)
    addr = ("127.0.0.1", 2 if dst._is_client else 1)  # where each end sees the other (as _pair moves them)
    for data, _ in datagrams:
        dst.receive_datagram(data, addr, now=now)
    return len(datagrams)


def test_a_finished_stream_leaves_the_stream_table_as_soon_as_it_finishes() -> None:
    client, server, _ = _pair(None)
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, b"request", end_stream=True)
    _deliver(client, server, 2.0)
    assert _received(server, sid) == 7
    credit = server.local_stream_credit()
    server.ack_with_next_packet()  # the answer carries the request's ACK, as Conn.send arranges
    server.send_stream_data(sid, b"answer", end_stream=True)
    _deliver(server, client, 2.01)
    # Request FIN acknowledged and answer FIN received, in one datagram: gone before the
    # client builds another packet.
    assert sid not in client._streams
    assert sid in server._streams  # the server waits for the ACK of its answer
    client.ack_with_next_packet()
    client.send_ping(1)  # something for that ACK to ride on
    _deliver(client, server, 2.02)
    assert sid not in server._streams and not server._sendable
    assert server.local_stream_credit() == credit + 1  # the peer may open one more stream


def _requests(client: quic_internals.NodeQuicConnection, count: int) -> list[int]:
    """`count` one-message request streams opened by `client`, each finished; their stream ids."""
    sids = []
    for _ in range(count):
        sid = client.get_next_available_stream_id()
        client.send_stream_data(sid, b"request", end_stream=True)
        sids.append(sid)
    return sids


def test_building_a_packet_visits_only_the_streams_with_a_frame_to_send(monkeypatch: pytest.MonkeyPatch) -> None:
    client, server, _ = _pair(None)
    sids = _requests(client, 60)
    _deliver(client, server, 2.0)
    assert _received(server, sids[0]) == 7
    _deliver(server, client, 2.01)  # ACKs; the 60 requests stay unanswered
    visits, limits = [0], [0]
    has_frame = quic_internals.NodeQuicConnection._has_frame_to_send
    stream_limits = quic_internals.NodeQuicConnection._write_stream_limits

    def counting_visit(self, stream):  # type: ignore[no-untyped-def]
        visits[0] += 1
        return has_frame(self, stream)

    def counting_limits(self, builder, space, stream):  # type: ignore[no-untyped-def]
        limits[0] += 1
        return stream_limits(self, builder, space, stream)

    monkeypatch.setattr(quic_internals.NodeQuicConnection, "_has_frame_to_send", counting_visit)
    monkeypatch.setattr(quic_internals.NodeQuicConnection, "_write_stream_limits", counting_limits)
    assert len(server._streams) == 60
    server.send_stream_data(sids[7], b"one answer", end_stream=True)
    assert _deliver(server, client, 2.02) == 1
    # aioquic asks all 60 open streams twice in every packet (limits, then frames).
    assert visits[0] == 1 and limits[0] == 0
    assert _received(client, sids[7]) == 10


def test_answers_to_many_streams_share_one_packet() -> None:
    client, server, _ = _pair(None)
    sids = _requests(client, 20)
    _deliver(client, server, 2.0)
    _received(server, sids[0])
    for sid in sids:
        server.send_stream_data(sid, b"answer %d" % sid, end_stream=True)
    assert _deliver(server, client, 2.01) == 1
    assert sum(1 for e in iter(client.next_event, None) if getattr(e, "end_stream", False)) == 20


def test_a_lost_answer_is_sent_again() -> None:
    client, server, _ = _pair(None)
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, b"request", end_stream=True)
    _deliver(client, server, 2.0)
    _received(server, sid)
    server.send_stream_data(sid, b"answer", end_stream=True)
    assert len(server.datagrams_to_send(now=2.01)) == 1  # lost on the way
    assert not server._sendable
    now = 2.01
    for _ in range(10):  # the loss timer fires; the stream has a frame to send again
        timer = server.get_timer()
        assert timer is not None
        now = max(now, timer)
        server.handle_timer(now=now)
        if _deliver(server, client, now) and _received(client, sid):
            break
    else:
        raise AssertionError("the lost answer was never sent again")
