"""Loss told apart from spurious retransmission: both ends, one end, noise, delayed and failed requests."""

from __future__ import annotations

from helpers.traces import End, ack, deliver, kinds, only, recording, rpc, start, stream

from dhtscope.tracing.analysis import ERROR, INFO, WARNING, analyse
from dhtscope.tracing.model import NodeEntry


def lost(end: End, t: float, pn: int, ptype: str = "1RTT") -> None:
    end.log(t, "quic:packet_lost", {"header": {"packet_type": ptype, "packet_number": pn}})


def pings(a: End, b: End, t: float, n: int) -> list[int]:
    return [deliver(a, b, t + i, {"frame_type": "ping"}) for i in range(n)]


def test_a_packet_declared_lost_that_arrived_is_a_spurious_retransmission_with_its_cost() -> None:
    c, s = End("provider1", "client", "sp01"), End("registry", "server", "sp01")
    start(c, s)
    pns = pings(c, s, 10, 20)
    lost(c, 60, pns[3])  # declared lost by a late timer; the registry's trace shows it arrived
    lost(c, 61, pns[4])
    deliver(s, c, 70, ack([0, 19]))
    a = analyse(recording(c, s))
    assert "packet_loss" not in kinds(a)
    f = only(a, "spurious_retransmission")
    assert f.severity == INFO and f.node == "provider1" and f.peer == "registry"
    assert "2 packets lost that registry received" in f.summary
    assert "nothing was lost" in f.summary and "bytes were resent" in f.summary
    assert "declared lost 47 ms after sending" in f.summary and "arrived within 0 ms" in f.summary
    assert {e.name for e in f.evidence} == {"quic:packet_lost", "quic:packet_received"}


def test_with_one_end_an_ack_proves_a_declared_loss_spurious() -> None:
    c, s = End("provider1", "client", "sp02"), End("registry", "server", "sp02")
    start(c, s)
    pns = pings(c, s, 10, 10)
    lost(c, 30, pns[2])
    deliver(s, c, 40, ack([0, 9]))  # the peer acknowledged every packet, the "lost" one too
    a = analyse(recording(c, nodes=[NodeEntry("registry", "registry-id", None, "registry")]))
    f = only(a, "spurious_retransmission")
    assert "registry acknowledged" in f.summary
    assert "packet_loss" not in kinds(a)


def test_with_one_end_an_unacknowledged_loss_cannot_be_confirmed() -> None:
    c, s = End("provider1", "client", "sp03"), End("registry", "server", "sp03")
    start(c, s)
    pns = pings(c, s, 10, 10)
    for pn in pns[5:]:
        lost(c, 30, pn)
    a = analyse(recording(c))
    f = only(a, "packet_loss")
    assert f.severity == INFO
    assert "could not be confirmed" in f.summary and "only the sender's trace exists" in f.summary
    assert "record both ends" in f.fix


def test_real_loss_within_noise_that_delayed_nothing_stays_info() -> None:
    c, s = End("provider1", "client", "ls01"), End("registry", "server", "ls01")
    start(c, s)
    pings(c, s, 10, 200)
    c.send(300, {"frame_type": "ping"})  # never arrives
    pings(c, s, 400, 10)
    f = only(analyse(recording(c, s)), "packet_loss")
    assert f.severity == INFO and "within the noise" in f.summary


def test_real_loss_that_held_up_a_request_is_a_warning_naming_the_stream() -> None:
    c, s = End("provider1", "client", "ls02"), End("registry", "server", "ls02")
    start(c, s)
    pings(c, s, 10, 200)
    c.send(300, stream(8))  # the request's first copy is lost...
    rpc(c, s, 350, 8, rid=4)  # ...its retransmission goes through and is answered
    pings(c, s, 400, 10)
    f = only(analyse(recording(c, s)), "packet_loss")
    assert f.severity == WARNING
    assert f.stream_refs == (("ls02", 8),)
    assert "1 request stream waited for retransmissions" in f.summary


def test_real_loss_that_made_a_request_fail_is_an_error_and_the_timeout_its_consequence() -> None:
    c, s = End("provider1", "client", "ls03"), End("registry", "server", "ls03")
    start(c, s)
    pings(c, s, 10, 50)
    deliver(s, c, 61, ack([0, 49]))
    c.log(100, "dht:rpc_sent", {"stream_id": 0, "type": "PING", "request_id": 1, "peer_id": "registry-id"})
    for i in range(4):  # every copy of the request is lost
        pn = c.send(100 + 200 * 2**i, stream(0))
        lost(c, 100 + 200 * 2 ** (i + 1) - 1, pn)
    c.log(2100, "dht:rpc_timeout", {"stream_id": 0, "type": "PING", "request_id": 1, "peer_id": "registry-id"})
    deliver(s, c, 2150, ack([0, 49]))
    pings(c, s, 2200, 5)
    a = analyse(recording(c, s))
    f = only(a, "packet_loss")
    assert f.severity == ERROR
    assert "1 request whose packets were lost failed" in f.summary
    assert any(e.name == "dht:rpc_timeout" for e in f.evidence)
    t = only(a, "rpc_timeout")
    assert t.caused_by == f.id and f.caused_by is None


def test_packets_sent_before_the_receivers_trace_began_or_after_it_closed_are_not_loss() -> None:
    c, s = End("provider1", "client", "ls04"), End("registry", "server", "ls04")
    pn = c.send(0, {"frame_type": "crypto", "offset": 0, "length": 460}, ptype="initial")  # the server was not up
    lost(c, 200, pn, "initial")
    start(c, s, t=300)
    pings(c, s, 310, 30)
    s.send(400, {"frame_type": "connection_close", "error_code": 0, "error_space": "application"})
    s.log(401, "quic:connection_closed", {"owner": "local", "trigger": "clean", "connection_code": 0})
    c.send(402, {"frame_type": "ping"})  # crossed the close: the registry stopped logging
    c.send(403, {"frame_type": "connection_close", "error_code": 0, "error_space": "application"})
    s.log(900, "quic:recovery_metrics_updated", {"smoothed_rtt": 1.0})
    a = analyse(recording(c, s))
    f = only(a, "packet_loss")
    assert f.severity == INFO and "could not be confirmed" in f.summary and "before the receiver's trace" in f.summary
    assert "nothing to fix" in f.fix


def test_loss_in_one_direction_only_says_so() -> None:
    c, s = End("provider1", "client", "ls05"), End("registry", "server", "ls05")
    start(c, s)
    pings(c, s, 10, 50)
    for i in range(10):
        s.send(100 + i, {"frame_type": "ping"})  # the registry's packets never arrive
    pings(s, c, 200, 20)
    pings(c, s, 300, 10)
    f = only(analyse(recording(c, s)), "packet_loss")
    assert f.node == "registry"
    assert "only packets sent by registry were lost (one direction)" in f.summary
    assert "sent by registry: 10/30" in f.summary
    assert f.direction == "sent" and f.to_json()["direction"] == "sent"


def test_a_healthy_cluster_with_spurious_pto_retransmissions_has_nothing_above_info() -> None:
    from helpers.traces import healthy_cluster

    ends = healthy_cluster()
    reg_p1 = ends[0]
    # The busy registry's timer fired before provider1's ACKs arrived: its packets were "lost".
    for pn in range(reg_p1.pn):
        lost(reg_p1, 140, pn)
    a = analyse(recording(*ends))
    assert [f for f in a.findings if f.severity != INFO] == []
    assert only(a, "spurious_retransmission").node == "registry"


def test_ends_seen_on_the_wire_cannot_confirm_loss_by_themselves() -> None:
    import dataclasses

    c, s = End("client", "client", "wr01", dhtscope=False), End("server", "server", "wr01", dhtscope=False)
    pings(c, s, 10, 20)
    for i in range(5):  # the observer saw them leave; it cannot see whether they arrived
        c.send(40 + i, {"frame_type": "ping"})
    s.log(100, "quic:recovery_metrics_updated", {"smoothed_rtt": 1.0})
    rec = recording(c, s)
    for t in rec.traces:
        t.info = dataclasses.replace(t.info, extra={**t.info.extra, "seen_on_wire": True})
    a = analyse(rec)
    assert [f for f in a.findings if f.kind == "packet_loss" and f.severity != INFO] == []


def test_with_one_end_packets_left_out_of_the_peers_acks_are_a_loss_that_cannot_be_confirmed() -> None:
    c, s = End("provider1", "client", "sk01"), End("registry", "server", "sk01")
    pns = pings(c, s, 10, 10)
    deliver(s, c, 30, ack([0, 3], [5, 9]))  # pn 4 never acknowledged, later ones were
    f = only(analyse(recording(c)), "packet_loss")
    assert f.severity == INFO
    assert "1 packet left out of the peer's ACKs" in f.summary and "could not be confirmed" in f.summary
    assert pns[4] == 4


def test_the_quinn_sample_under_loss_says_what_one_end_can() -> None:
    from helpers.traces import SAMPLES

    from dhtscope.tracing import reader

    sample = SAMPLES / "quinn_moq_clock_pub_loss.sqlog"
    if not sample.exists():
        return
    f = only(analyse(reader.open_recording(sample)), "packet_loss")
    assert f.severity == INFO and "left out of the peer's ACKs" in f.summary
