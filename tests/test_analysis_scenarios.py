"""What the new fault scenarios look like in traces, and what the analysis must not mistake them for:
a request held back by flow control is not left unanswered, a request abandoned at once was never
the application's to take, crossed closes are named by the first one sent, a silence that left
requests unanswered is an error."""

from __future__ import annotations

from helpers.traces import End, NodeLog, ack, deliver, kinds, only, recording, start, stream

from dhtscope.tracing.analysis import ERROR, analyse


def _slow_store(c: End, s: End, sid: int, t: float, *, rest_at: float | None, gave_up_at: float) -> None:
    """A 300-byte STORE whose peer grants 128 bytes of credit at a time and takes each part 750 ms late."""
    c.log(t, "dht:rpc_sent", {"stream_id": sid, "type": "STORE", "request_id": sid, "offset": 0, "length": 300})
    first = deliver(c, s, t + 1, stream(sid, 128, fin=False))
    deliver(s, c, t + 2, ack([first, first]))
    s.log(
        t + 750,
        "quic:stream_data_moved",
        {"stream_id": sid, "offset": 0, "length": 128, "from": "transport", "to": "application"},
    )
    deliver(s, c, t + 751, {"frame_type": "max_stream_data", "stream_id": sid, "maximum": 256})
    second = deliver(c, s, t + 752, stream(sid, 128, fin=False, offset=128))
    deliver(s, c, t + 753, ack([second, second]))
    if rest_at is not None:
        s.log(
            t + 1500,
            "quic:stream_data_moved",
            {"stream_id": sid, "offset": 128, "length": 128, "from": "transport", "to": "application"},
        )
        deliver(s, c, t + 1501, {"frame_type": "max_stream_data", "stream_id": sid, "maximum": 384})
        last = deliver(c, s, t + 1502, stream(sid, 44, fin=True, offset=256))
        deliver(s, c, t + 1503, ack([last, last]))
        s.log(
            t + rest_at,
            "quic:stream_data_moved",
            {"stream_id": sid, "offset": 256, "length": 44, "fin": True, "from": "transport", "to": "application"},
        )
    c.log(
        t + gave_up_at,
        "dht:rpc_timeout",
        {"stream_id": sid, "type": "STORE", "request_id": sid, "timeout_ms": gave_up_at},
    )
    c.log(t + gave_up_at + 1, "quic:stream_state_updated", {"stream_id": sid, "new": "reset_sent", "error_code": 9})


def test_a_request_held_back_by_flow_control_is_not_called_unanswered() -> None:
    c, s = End("provider1", "client", "sc01"), End("registry", "server", "sc01")
    start(c, s)
    c.log(
        0.5,
        "quic:parameters_set",
        {"owner": "remote", "initial_max_stream_data_bidi_remote": 128, "initial_max_data": 512},
    )
    _slow_store(c, s, 0, 10, rest_at=None, gave_up_at=2000)  # the rest never reached the application
    _slow_store(c, s, 4, 3000, rest_at=2250, gave_up_at=2000)  # the whole of it, after the requester gave up
    deliver(c, s, 6000, {"frame_type": "ping"})
    a = analyse(recording(c, s))
    assert "no_response" not in kinds(a)
    assert only(a, "flow_control_blocked").node == "registry"
    timeout = only(a, "rpc_timeout")
    assert "only part of each request" in timeout.cause
    assert timeout.caused_by == "flow_control_blocked/registry"
    view = a.stream("sc01", 0)
    assert view is not None and "took 128 of the 300 bytes" in view.step("delivered").note


def _abandoned(cid: str, app_delay_ms: float, abandoned_after_ms: float) -> list[End]:
    """The registry's application takes a stream `app_delay_ms` after it arrives; a second stream is
    abandoned by its requester `abandoned_after_ms` after it arrived, before it was taken."""
    c, s = End("client", "client", cid), End("registry", "server", cid)
    start(c, s)
    pn = deliver(c, s, 10, stream(0, 95))
    deliver(s, c, 11, ack([pn, pn]))
    move = {"stream_id": 0, "offset": 0, "length": 95, "fin": True, "from": "transport", "to": "application"}
    s.log(10.5 + app_delay_ms, "quic:stream_data_moved", move)
    pn = deliver(c, s, 1000, stream(4, 95))
    deliver(s, c, 1001, ack([pn, pn]))
    deliver(c, s, 1000.5 + abandoned_after_ms, {"frame_type": "reset_stream", "stream_id": 4, "error_code": 9})
    c.log(1000.5 + abandoned_after_ms, "quic:stream_state_updated", {"stream_id": 4, "new": "reset_sent"})
    deliver(c, s, 5000, {"frame_type": "ping"})
    return [c, s]


def test_a_request_abandoned_sooner_than_a_slow_application_takes_any_is_not_called_undelivered() -> None:
    # The application takes streams 750 ms late (the flow-control scenario's): 100 ms is too soon to tell.
    assert "stream_not_delivered" not in kinds(analyse(recording(*_abandoned("sc02", 750, 100))))
    # A prompt application would have taken it within those 100 ms: never taken is a finding.
    assert only(analyse(recording(*_abandoned("sc03", 0.5, 100))), "stream_not_delivered").node == "registry"


def test_closes_that_cross_are_named_by_the_one_sent_first() -> None:
    c, s = End("client", "client", "sc04"), End("registry", "server", "sc04")
    c.log(0, "quic:connection_started", {"role": "client", "alpn_offered": "dhtscope/1"})
    s.log(0, "quic:connection_started", {"role": "server", "alpn_offered": "dhtscope/1"})
    s.send(
        19,
        {"frame_type": "connection_close", "error_space": "transport", "error_code": 0x0C, "reason": ""},
        ptype="handshake",
    )
    c.send(
        31,
        {
            "frame_type": "connection_close",
            "error_space": "transport",
            "error_code": 0x12D,
            "reason": "certificate expired",
        },
        ptype="handshake",
    )
    c.recv(
        31,
        0,
        {"frame_type": "connection_close", "error_space": "transport", "error_code": 0x0C, "reason": ""},
        ptype="handshake",
    )
    c.log(
        269,
        "quic:connection_closed",
        {"owner": "local", "trigger": "error", "connection_code": 0x12D, "reason": "certificate expired"},
    )
    a = analyse(recording(c, s))
    closed = only(a, "application_close")
    assert closed.node == "registry" and "certificate" not in closed.summary


def test_a_silence_that_left_requests_unanswered_is_an_error() -> None:
    c, s = End("client", "client", "sc05"), End("registry", "server", "sc05")
    start(c, s)
    pn = deliver(c, s, 10, {"frame_type": "ping"})
    deliver(s, c, 11, ack([pn, pn]))
    c.log(100, "dht:rpc_sent", {"stream_id": 0, "type": "FIND_VALUE", "request_id": 1, "offset": 0, "length": 95})
    t = 100.0
    for gap in (0, 300, 600, 1200, 2400):  # PTO backoff into the silence
        t += gap
        c.send(t, stream(0, 95))
    c.log(150, "quic:stream_state_updated", {"stream_id": 0, "new": "reset_sent", "error_code": 9})
    s.send(200, {"frame_type": "ping"})  # the registry's own packets go nowhere either
    s.log(5000, "quic:recovery_metrics_updated", {"smoothed_rtt": 1.0})
    c.log(5000, "quic:recovery_metrics_updated", {"smoothed_rtt": 1.0})
    f = only(analyse(recording(c, s)), "peer_unresponsive")
    assert f.node == "registry" and f.severity == ERROR
    assert "1 request went unanswered (abandoned by the requester)" in f.summary


def _dialled_early(started_ms: float) -> list[End]:
    """provider3 dials the registry at +0.1 s, retransmitting its Initial with PTO backoff; the
    registry's node trace says it started at `started_ms`; its end answers from +3.1 s on."""
    c, s, reg = End("provider3", "client", "ns01"), End("registry", "server", "ns01"), NodeLog("registry")
    c.log(0, "quic:connection_started", {"role": "client", "alpn_offered": "dhtscope/1"})
    reg.log(started_ms, "dht:node_started", {"node_id": "registry-id", "role": "registry", "name": "registry"})
    crypto = {"frame_type": "crypto", "offset": 0, "length": 300}
    t = 100.0
    for gap in (0, 200, 400, 800, 1600):
        t += gap
        c.send(t, crypto, ptype="initial")
    s.log(3100, "quic:connection_started", {"role": "server", "alpn_offered": "dhtscope/1"})
    s.recv(3100, c.pn - 1, crypto, ptype="initial")
    c.recv(3102, s.send(3101, ack([c.pn - 1, c.pn - 1]), crypto, ptype="initial"), crypto, ptype="initial")
    for i in range(5):
        pn = deliver(c, s, 3200 + 10 * i, {"frame_type": "ping"})
        deliver(s, c, 3201 + 10 * i, ack([pn, pn]))
    return [c, s, reg]


def test_a_peer_dialled_before_its_process_ran_is_told_at_info_not_as_a_stall() -> None:
    a = analyse(recording(*_dialled_early(started_ms=3050)))
    assert kinds(a, "warning") == [] and kinds(a, ERROR) == []
    f = only(a, "connection_stalled")
    assert f.node == "registry" and "before it was running" in f.summary
    # Running all along, the registry left provider3 waiting three seconds: that is a stall.
    a = analyse(recording(*_dialled_early(started_ms=-500)))
    assert only(a, "connection_stalled").severity == "warning"


def test_the_masked_copy_of_a_clean_close_sent_in_handshake_packets_is_not_a_failure() -> None:
    c, s = End("client", "client", "mc01"), End("registry", "server", "mc01")
    start(c, s)
    pn = deliver(c, s, 10, {"frame_type": "ping"})
    deliver(s, c, 11, ack([pn, pn]))
    masked = {"frame_type": "connection_close", "error_space": "transport", "error_code": 0x0C, "reason": ""}
    real = {"frame_type": "connection_close", "error_space": "application", "error_code": 0, "reason": "bye"}
    s.recv(20.5, c.send(20, masked, ptype="handshake"), masked, ptype="handshake")
    s.recv(20.5, c.send(20, real), real)
    c.log(30, "quic:connection_closed", {"owner": "local", "trigger": "clean", "connection_code": 0, "reason": "bye"})
    a = analyse(recording(c, s))
    assert kinds(a) == []
    assert a.connections[0].close_trigger == "clean"


def test_an_application_that_takes_whole_requests_after_their_requesters_timed_out_is_named() -> None:
    c, s = End("provider1", "client", "sl01"), End("registry", "server", "sl01")
    start(c, s)
    for i, sid in enumerate((0, 4)):
        t = 10.0 + 1000 * i
        c.log(t, "dht:rpc_sent", {"stream_id": sid, "type": "PING", "request_id": sid, "offset": 0, "length": 59})
        pn = deliver(c, s, t, stream(sid, 59))  # the whole request, FIN and all
        deliver(s, c, t + 1, ack([pn, pn]))
        c.log(t + 500, "dht:rpc_timeout", {"stream_id": sid, "type": "PING", "request_id": sid, "timeout_ms": 500})
        c.log(t + 501, "quic:stream_state_updated", {"stream_id": sid, "new": "reset_sent", "error_code": 9})
        taken = {"stream_id": sid, "type": "PING", "request_id": sid, "offset": 0, "length": 59, "fin": True}
        s.log(t + 750, "dht:rpc_received", taken)
    deliver(c, s, 4000, {"frame_type": "ping"})
    a = analyse(recording(c, s))
    f = only(a, "no_response")
    assert f.node == "registry" and f.severity == ERROR and f.stream_count == 2
    assert "only after the requesters had timed out" in f.summary and "750 ms (median)" in f.summary
    assert all(t.caused_by == f.id for t in a.findings if t.kind == "rpc_timeout")
