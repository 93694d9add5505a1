"""tracing.analysis on synthetic recordings shaped like dhtscope/aioquic traces, and on real foreign qlogs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers.traces import (
    SAMPLES,
    T0,
    End,
    ListTrace,
    NodeLog,
    ack,
    deliver,
    healthy_cluster,
    kinds,
    needs_samples,
    no_accept_cluster,
    node_started,
    only,
    recording,
    routing,
    rpc,
    start,
    steps,
    stream,
    write_sqlog,
)

from dhtscope.tracing.analysis import (
    DONE,
    ERROR,
    INFO,
    MISSING,
    NOT_VISIBLE,
    STEPS,
    UNKNOWN,
    WARNING,
    analyse,
)
from dhtscope.tracing.model import Event

# ----------------------------------------------------------------------------- healthy


@pytest.mark.parametrize("folded", [True, False], ids=["moves-folded-into-dht-events", "separate-moves"])
def test_healthy_recording_has_no_errors_and_every_stream_is_answered(folded: bool) -> None:
    a = analyse(recording(*healthy_cluster(folded)))
    assert kinds(a, ERROR) == []
    assert kinds(a) == []
    assert len(a.connections) == 2
    assert all(not c.one_ended for c in a.connections)
    assert len(a.streams) == 5
    for s in a.streams:
        assert s.missing is None, s
        assert s.furthest == "answered"
        assert [st.status for st in s.steps] == [DONE] * 5
        assert s.fin_opener.status == DONE and s.fin_peer.status == DONE
    conn = a.connection("aa01")
    assert conn is not None
    assert conn.client is not None and conn.client.node == "provider1"
    assert conn.server is not None and conn.server.node == "registry"
    assert conn.rtt_ms == 1.5
    assert conn.streams == 4
    assert conn.bytes_client_to_server == 3 * 30 + 40  # three requests, one answer to the registry's PING
    # the registry-opened stream (id 1) has the registry as opener
    s1 = a.stream("aa01", 1)
    assert s1 is not None and s1.opener == "registry" and s1.peer == "provider1" and s1.opener_role == "server"
    assert a.summary()["findings"] == {ERROR: 0, WARNING: 0, INFO: 0}
    # both ends of every connection are there; only the node-level traces are absent
    assert len(a.blind_spots) == 1 and "node.sqlog" in a.blind_spots[0]


def test_a_folded_delivery_labels_its_dht_event_in_the_timeline() -> None:
    a = analyse(recording(*healthy_cluster(folded=True)))
    view = a.stream("aa01", 0)
    assert view is not None
    rows = {e.step: (e.name, e.detail) for e in a.timeline(view) if e.step}
    assert rows["delivered"] == ("dht:rpc_received", "request STORE #0; app took 30 bytes FIN")
    assert rows["answered"][0] == "dht:rpc_response"


# ----------------------------------------------------------------------------- the seed's bug


def test_stream_not_delivered_names_the_receiving_node_and_groups_its_streams() -> None:
    ends, cid = no_accept_cluster()
    a = analyse(recording(*ends))
    f = only(a, "stream_not_delivered")
    assert f.severity == ERROR
    assert f.node == "registry"
    assert f.streams == (0, 4)
    assert f.connection == cid
    assert set(f.stream_refs) == {(cid, 0), (cid, 4)}
    assert "handle every StreamDataReceived" in f.cause
    assert "2 streams" in f.summary
    assert {e.name for e in f.evidence} >= {"quic:packet_sent", "quic:packet_received"}
    # the registry-opened stream was fine
    assert steps(a, cid, 1)["delivered"] == DONE
    view = a.stream(cid, 0)
    assert view is not None
    assert steps(a, cid, 0) == {
        "sent": DONE,
        "acked": DONE,
        "received": DONE,
        "delivered": MISSING,
        "answered": MISSING,
    }
    assert view.missing == "delivered"
    assert view.furthest == "received"
    assert view.request_type == "STORE" and view.request_id == 1
    assert view.timed_out is not None
    # the requester's timeouts are reported, and their cause points at the delivery step
    t = only(a, "rpc_timeout")
    assert t.severity == WARNING and t.node == "provider1" and t.peer == "registry"
    assert t.streams == (0, 4)
    assert "stream_not_delivered" in t.cause
    assert "after 5000 ms" in t.summary
    # no_response needs delivery: it must not fire for undelivered streams
    assert "no_response" not in kinds(a)


def test_missing_step_is_the_first_not_reached_and_steps_carry_evidence() -> None:
    ends, cid = no_accept_cluster()
    a = analyse(recording(*ends))
    view = a.stream(cid, 4)
    assert view is not None
    sent, acked, received = view.step("sent"), view.step("acked"), view.step("received")
    assert sent.node == "provider1" and acked.node == "provider1" and received.node == "registry"
    assert sent.evidence is not None and sent.evidence.name == "quic:packet_sent"
    assert acked.evidence is not None and acked.evidence.name == "quic:packet_received"
    assert received.evidence is not None and received.evidence.path.endswith("bb01-server-0.sqlog")
    assert sent.time_ms is not None and acked.time_ms is not None and received.time_ms is not None
    assert sent.time_ms < received.time_ms < acked.time_ms
    # evidence points at the right record of the right trace
    trace = next(t for t in recording(*ends).traces if t.info.path == received.evidence.path)
    ev = trace[received.evidence.record]
    assert ev.name == "quic:packet_received"
    assert any(fr.get("stream_id") == 4 for fr in ev.data["frames"])


def test_ack_of_a_range_covers_the_stream_packet_and_single_number_ranges_work() -> None:
    c, s = End("a", "client", "cc01"), End("b", "server", "cc01")
    start(c, s)
    deliver(c, s, 10, {"frame_type": "ping"})  # pn 0
    deliver(c, s, 11, stream(0))  # pn 1 carries stream 0
    deliver(c, s, 12, stream(4))  # pn 2 carries stream 4
    deliver(s, c, 20, {"frame_type": "ack", "acked_ranges": [[0, 1]]})  # covers pn 1 only
    a = analyse(recording(c, s))
    assert steps(a, "cc01", 0)["acked"] == DONE
    assert steps(a, "cc01", 4)["acked"] == MISSING
    # a later single-number range acknowledges pn 2
    deliver(s, c, 30, {"frame_type": "ack", "acked_ranges": [[2]]})
    a = analyse(recording(c, s))
    assert steps(a, "cc01", 4)["acked"] == DONE
    # an ACK in another packet number space does not count
    c2, s2 = End("a", "client", "cc02"), End("b", "server", "cc02")
    deliver(c2, s2, 1, stream(0))
    pn = s2.send(2, ack([0, 0]), ptype="handshake")
    c2.recv(3, pn, ack([0, 0]), ptype="handshake")
    a = analyse(recording(c2, s2))
    assert steps(a, "cc02", 0)["acked"] == MISSING


def test_data_written_but_never_sent_is_a_missing_sent_step() -> None:
    c, s = End("a", "client", "dd01"), End("b", "server", "dd01")
    start(c, s)
    rpc(c, s, 10, 0)
    c.log(
        50,
        "quic:stream_data_moved",
        {"stream_id": 4, "offset": 0, "length": 30, "fin": True, "from": "application", "to": "transport"},
    )
    a = analyse(recording(c, s))
    view = a.stream("dd01", 4)
    assert view is not None
    assert view.missing == "sent"
    assert "no packet carried them" in view.step("sent").note


# ----------------------------------------------------------------------------- visibility


def test_foreign_peer_without_application_events_makes_delivery_not_visible() -> None:
    c = End("dht", "client", "ee01")
    s = End(None, "server", "ee01", dhtscope=False, path="/x/quicgo_server.qlog")
    rpc(c, s, 10, 0, take=False)  # the foreign server logs transport events only
    a = analyse(recording(c, s))
    view = a.stream("ee01", 0)
    assert view is not None
    assert view.step("delivered").status == NOT_VISIBLE
    assert view.missing == "answered"
    assert "stream_not_delivered" not in kinds(a)
    info = only(a, "application_not_visible")
    assert info.severity == INFO
    assert info.node == "quicgo_server"  # no node name: the file stem
    assert any("logs no application events" in b for b in a.blind_spots)
    assert kinds(a, ERROR) == []


def test_one_ended_connection_leaves_the_peer_steps_unknown_and_says_so() -> None:
    c, s = End("provider1", "client", "ff01"), End("registry", "server", "ff01")
    start(c, s)
    rpc(c, s, 10, 0, take=False)
    rpc(c, s, 20, 4)
    a = analyse(recording(c))
    conn = a.connection("ff01")
    assert conn is not None and conn.one_ended and conn.server is None
    v0, v4 = a.stream("ff01", 0), a.stream("ff01", 4)
    assert v0 is not None and v4 is not None
    assert v0.one_ended
    assert {k: v for k, v in steps(a, "ff01", 0).items()} == {
        "sent": DONE,
        "acked": DONE,
        "received": UNKNOWN,
        "delivered": UNKNOWN,
        "answered": UNKNOWN,
    }
    assert v0.missing is None  # unknown is not missing
    assert "peer's steps are unknown" in v0.note
    assert steps(a, "ff01", 4)["answered"] == DONE  # the answer arrived at the opener
    assert v4.step("answered").node == "provider1"
    assert any("no trace from the other end" in b for b in a.blind_spots)
    assert kinds(a, ERROR) == []


def test_peer_only_trace_uses_the_peers_own_ack() -> None:
    c, s = End("provider1", "client", "ff02"), End("registry", "server", "ff02")
    rpc(c, s, 10, 0, take=False)
    a = analyse(recording(s))
    st = steps(a, "ff02", 0)
    assert st["sent"] == UNKNOWN
    assert st["acked"] == DONE  # the registry's packet_sent acknowledged the packet
    assert st["received"] == DONE
    assert st["delivered"] == MISSING
    # one-ended: the finding needs both ends' evidence
    assert "stream_not_delivered" not in kinds(a)


def test_reader_warnings_become_blind_spots() -> None:
    ends = healthy_cluster()
    a = analyse(recording(*ends, warnings=["/rec/x.sqlog: truncated last record at byte 10 skipped"]))
    assert any("truncated last record" in b for b in a.blind_spots)


# ----------------------------------------------------------------------------- transport findings


def test_stream_limit_exhausted_blames_the_peer_that_never_finished_its_streams() -> None:
    c, s = End("provider1", "client", "gg01"), End("registry", "server", "gg01")
    start(c, s)
    for i in range(3):
        rpc(c, s, 10 + 10 * i, 4 * i, fin_back=False, rid=i)
    blocked = c.send(100, {"frame_type": "streams_blocked", "limit": 3, "stream_type": "bidirectional"})
    s.recv(100.5, blocked, {"frame_type": "streams_blocked", "limit": 3, "stream_type": "bidirectional"})
    a = analyse(recording(c, s))
    f = only(a, "stream_limit_exhausted")
    assert f.severity == ERROR
    assert f.node == "provider1" and f.peer == "registry"
    assert f.streams == (0, 4, 8)
    assert "limit" in f.summary and "3" in f.summary
    assert f.evidence[0].name == "quic:packet_sent"
    for sid in (0, 4, 8):
        view = a.stream("gg01", sid)
        assert view is not None and view.fin_peer.status == MISSING and view.fin_opener.status == DONE


def test_stream_limit_raised_later_is_no_finding() -> None:
    c, s = End("provider1", "client", "gg02"), End("registry", "server", "gg02")
    rpc(c, s, 10, 0)
    c.send(20, {"frame_type": "streams_blocked", "limit": 1, "stream_type": "bidirectional"})
    deliver(s, c, 30, {"frame_type": "max_streams", "maximum": 2, "stream_type": "bidirectional"})
    a = analyse(recording(c, s))
    assert "stream_limit_exhausted" not in kinds(a)
    # a unidirectional block is not about request streams
    c2, s2 = End("provider1", "client", "gg03"), End("registry", "server", "gg03")
    rpc(c2, s2, 10, 0)
    c2.send(20, {"frame_type": "streams_blocked", "limit": 1, "stream_type": "unidirectional"})
    assert "stream_limit_exhausted" not in kinds(analyse(recording(c2, s2)))


def test_packet_loss_counts_what_the_receivers_trace_never_shows() -> None:
    c, s = End("provider1", "client", "hh01"), End("registry", "server", "hh01")
    for i in range(20):
        deliver(c, s, 10 + i, {"frame_type": "ping"})
    deliver(s, c, 30.5, ack([0, 19]))
    for i in range(10):
        pn = c.send(40 + i, {"frame_type": "ping"})  # never arrives
        if i < 4:
            c.log(45 + i, "quic:packet_lost", {"type": "1RTT", "packet_number": pn})
    deliver(s, c, 500, ack([0, 19]))  # the server keeps running after the losses
    a = analyse(recording(c, s))
    f = only(a, "packet_loss")
    assert f.severity == WARNING  # far more than noise, but no request failed
    assert f.node == "provider1"
    assert "10 of 32 packets lost (31.2%)" in f.summary  # both directions of the connection count
    assert "sent by provider1: 10/30; sent to provider1: 0/2" in f.summary
    assert "never shows them" in f.summary
    assert f.evidence and f.evidence[0].name == "quic:packet_sent"


def test_a_loss_the_receiver_contradicts_is_a_spurious_retransmission_and_none_is_no_finding() -> None:
    c, s = End("provider1", "client", "hh02"), End("registry", "server", "hh02")
    for i in range(30):
        deliver(c, s, 10 + i, {"frame_type": "ping"})
    assert "packet_loss" not in kinds(analyse(recording(c, s)))
    c.log(60, "quic:packet_lost", {"type": "1RTT", "packet_number": 3})  # recovery's opinion only
    a = analyse(recording(c, s))
    assert "packet_loss" not in kinds(a)
    f = only(a, "spurious_retransmission")
    assert f.severity == INFO
    assert "1 packet lost that registry received" in f.summary


def test_loss_is_attributed_to_the_node_common_to_all_lossy_connections() -> None:
    ends = []
    for n, name in enumerate(("provider1", "provider2", "provider3")):
        c, s = End(name, "client", f"ii0{n}"), End("registry", "server", f"ii0{n}")
        for i in range(30):
            if i % 4:
                deliver(c, s, 10 + i, {"frame_type": "ping"})
            else:
                c.send(10 + i, {"frame_type": "ping"})
        deliver(s, c, 200, {"frame_type": "ping"})
        ends += [c, s]
    a = analyse(recording(*ends))
    f = only(a, "packet_loss")
    assert f.node == "registry"
    assert len(f.connections) == 3
    assert f.severity == WARNING  # 27% lost, but nothing waited on it: no request failed
    assert "only packets sent to registry were lost" in f.summary


def test_alpn_mismatch_names_the_node_whose_alpn_differs() -> None:
    ends = []
    for n, name in enumerate(("provider1", "provider2")):
        c, s = End(name, "client", f"jj0{n}"), End("registry", "server", f"jj0{n}")
        start(c, s, alpn="dhtscope/1", alpn_server="dhtscope/0-mismatch")
        for e, owner in ((c, "remote"), (s, "local")):
            e.log(
                10,
                "quic:connection_closed",
                {
                    "owner": owner,
                    "trigger": "alpn_mismatch",
                    "connection_code": 376,
                    "reason": "No common ALPN protocols",
                },
            )
        ends += [c, s]
    a = analyse(recording(*ends))
    f = only(a, "alpn_mismatch")
    assert f.severity == ERROR
    assert f.node == "registry"
    assert set(f.connections) == {"jj00", "jj01"}
    assert "0x178" in f.summary and "dhtscope/0-mismatch" in f.summary
    conn = a.connection("jj00")
    assert conn is not None and conn.state == "closed" and conn.close_trigger == "alpn_mismatch"
    assert conn.close_code == 376 and conn.closed_by == "registry"


def test_alpn_mismatch_from_a_close_frame_names_both_ends_when_it_cannot_tell() -> None:
    c = End("a", "client", "kk01", dhtscope=False)
    s = End("b", "server", "kk01", dhtscope=False)
    c.log(0, "quic:alpn_information", {"client_alpns": ["h3"]})
    close = {
        "frame_type": "connection_close",
        "error_code": 376,
        "error_space": "transport",
        "raw_error_code": 376,
        "reason": "No common ALPN protocols",
    }
    deliver(s, c, 5, close)
    a = analyse(recording(c, s))
    f = only(a, "alpn_mismatch")
    assert f.node == "a, b"
    conn = a.connection("kk01")
    assert conn is not None and conn.closed_by == "b" and conn.close_trigger == "alpn_mismatch"


# ----------------------------------------------------------------------------- application findings


def test_no_response_names_the_node_that_took_the_request_and_never_answered() -> None:
    c, s = End("provider1", "client", "ll01"), End("registry", "server", "ll01")
    start(c, s)
    rpc(c, s, 10, 0, answer=False)
    rpc(c, s, 20, 4)  # answered: not part of the finding
    c.log(
        5010,
        "dht:rpc_timeout",
        {"stream_id": 0, "type": "STORE", "request_id": 1, "peer_id": "registry-id", "timeout_ms": 5000},
    )
    c.log(5010, "quic:stream_state_updated", {"stream_id": 0, "new": "reset_sent", "error_code": 1})
    reset = {"frame_type": "reset_stream", "stream_id": 0, "error_code": 1, "final_size": 30}
    deliver(c, s, 5011, reset)
    # the registry resets its side only because the requester gave up (STOP_SENDING): still no answer
    s.log(5012, "quic:stream_state_updated", {"stream_id": 0, "new": "reset_sent", "error_code": 1})
    deliver(s, c, 5013, reset)
    a = analyse(recording(c, s))
    f = only(a, "no_response")
    assert f.severity == ERROR
    assert f.node == "registry"
    assert f.streams == (0,)
    assert "STORE" in f.summary and "timed out" in f.summary
    assert any(e.name == "dht:rpc_received" for e in f.evidence)
    view = a.stream("ll01", 0)
    assert view is not None and view.missing == "answered" and view.furthest == "delivered"
    assert len(view.resets) >= 2
    assert "answered" in only(a, "rpc_timeout").cause or "no_response" in only(a, "rpc_timeout").cause


def test_an_error_reset_before_the_requester_gives_up_is_an_answer() -> None:
    c, s = End("provider1", "client", "ll02"), End("registry", "server", "ll02")
    start(c, s)
    rpc(c, s, 10, 0, answer=False)
    s.log(15, "quic:stream_state_updated", {"stream_id": 0, "new": "reset_sent", "error_code": 5})
    deliver(s, c, 16, {"frame_type": "reset_stream", "stream_id": 0, "error_code": 5, "final_size": 0})
    s.log(3000, "quic:recovery_metrics_updated", {"smoothed_rtt": 1.0})
    a = analyse(recording(c, s))
    assert "no_response" not in kinds(a)
    view = a.stream("ll02", 0)
    assert view is not None and view.step("answered").status == DONE
    assert "reset" in view.step("answered").note


def test_no_response_waits_for_evidence_that_the_peer_ran_on() -> None:
    c, s = End("provider1", "client", "ll03"), End("registry", "server", "ll03")
    rpc(c, s, 10, 0, answer=False)  # the recording ends right after the request arrived
    assert "no_response" not in kinds(analyse(recording(c, s)))
    s.log(2000, "quic:recovery_metrics_updated", {"smoothed_rtt": 1.0})
    assert "no_response" in kinds(analyse(recording(c, s)))


def test_rpc_timeouts_are_grouped_per_requester_and_peer() -> None:
    ends = []
    for n, name in enumerate(("provider1", "provider2")):
        c, s = End(name, "client", f"mm0{n}"), End("registry", "server", f"mm0{n}")
        start(c, s)
        for k in range(n + 1):
            rpc(c, s, 10 + k * 10, 4 * k, take=False, rid=k)
            c.log(
                5000 + k,
                "dht:rpc_timeout",
                {
                    "stream_id": 4 * k,
                    "type": "FIND_NODE",
                    "request_id": k,
                    "peer_id": "registry-id",
                    "timeout_ms": 5000,
                },
            )
        ends += [c, s]
    a = analyse(recording(*ends))
    timeouts = sorted((f for f in a.findings if f.kind == "rpc_timeout"), key=lambda f: f.node or "")
    assert [(f.node, f.peer, len(f.evidence)) for f in timeouts] == [
        ("provider1", "registry", 1),
        ("provider2", "registry", 2),
    ]
    assert "FIND_NODE×2" in timeouts[1].summary


# ----------------------------------------------------------------------------- DHT findings


def test_bootstrap_only_flags_a_node_that_only_ever_knew_one_contact() -> None:
    reg, p1, cl = NodeLog("registry"), NodeLog("provider1"), NodeLog("client")
    for log in (reg, p1, cl):
        node_started(log, 0)
    routing(reg, 10, "added", "provider1")
    routing(reg, 11, "added", "client")
    routing(p1, 10, "added", "registry")
    routing(p1, 20, "added", "client")
    routing(cl, 11, "added", "registry")
    reg.log(10_000, "dht:record_expired", {"key": "00", "publisher": "11"})
    a = analyse(recording(reg, p1, cl))
    f = only(a, "bootstrap_only")
    assert f.severity == WARNING and f.node == "client"
    assert "never held more than 1 contact" in f.summary and "3 nodes" in f.summary
    # a short recording proves nothing
    reg.events.pop()
    assert "bootstrap_only" not in kinds(analyse(recording(reg, p1, cl)))


def test_node_whose_table_stayed_empty_is_isolated_not_bootstrap_only() -> None:
    reg, p1, cl = NodeLog("registry"), NodeLog("provider1"), NodeLog("client")
    for log in (reg, p1, cl):
        node_started(log, 0)
    routing(reg, 10, "added", "provider1")
    routing(p1, 10, "added", "registry")
    routing(p1, 20, "added", "registry2")
    reg.log(10_000, "dht:record_expired", {"key": "00", "publisher": "11"})
    a = analyse(recording(reg, p1, cl))
    f = only(a, "isolated")
    assert f.node == "client" and "stayed empty" in f.summary
    assert all(x.node != "client" for x in a.findings if x.kind == "bootstrap_only")


def _failing_contact(evict: bool) -> NodeLog:
    p1 = NodeLog("provider1")
    node_started(p1, 0)
    routing(p1, 10, "added", "registry")
    routing(p1, 11, "added", "provider2")
    if evict:
        # dhtscope evicts as soon as the RPC fails, before the lookup logs the failed round
        routing(p1, 99, "evicted", "provider2")
    p1.log(
        100,
        "dht:lookup_round",
        {
            "lookup_id": "x-1",
            "round": 1,
            "peer_id": "provider2-id",
            "address": "x",
            "rtt_ms": None,
            "returned": [],
            "values": 0,
            "error": "timed out",
        },
    )
    p1.log(
        2000,
        "dht:lookup_round",
        {
            "lookup_id": "x-2",
            "round": 1,
            "peer_id": "registry-id",
            "address": "x",
            "rtt_ms": 1.0,
            "returned": [],
            "values": 0,
            "error": None,
        },
    )
    return p1


def test_stale_contact_failed_and_never_evicted() -> None:
    f = only(analyse(recording(_failing_contact(evict=False))), "stale_contacts")
    assert f.node == "provider1" and "provider2" in f.summary
    assert f.evidence[0].name == "dht:lookup_round"
    assert "stale_contacts" not in kinds(analyse(recording(_failing_contact(evict=True))))


def test_stale_contact_from_a_connection_rpc_timeout() -> None:
    p1 = NodeLog("provider1")
    node_started(p1, 0)
    routing(p1, 10, "added", "registry")
    c, s = End("provider1", "client", "nn01"), End("registry", "server", "nn01")
    c.log(1, "dht:peer_identified", {"peer_id": "registry-id", "verified": True})
    rpc(c, s, 20, 0, take=False)
    c.log(
        5020,
        "dht:rpc_timeout",
        {"stream_id": 0, "type": "PING", "request_id": 1, "peer_id": "registry-id", "timeout_ms": 5000},
    )
    p1.log(9000, "dht:record_expired", {"key": "00", "publisher": "11"})
    a = analyse(recording(p1, c, s))
    f = only(a, "stale_contacts")
    assert f.peer == "registry"
    assert f.evidence[0].name == "dht:rpc_timeout"


def test_store_under_replicated_counts_nodes_that_had_joined() -> None:
    logs = {n: NodeLog(n) for n in ("registry", "provider1", "provider2", "provider3")}
    for i, log in enumerate(logs.values()):
        node_started(log, i)
        routing(log, 10 + i, "added", "registry" if log.node != "registry" else "provider1")
    p1 = logs["provider1"]
    p1.log(100, "dht:lookup_started", {"lookup_id": "p1-1", "kind": "find_node", "target": "ab" * 32})
    p1.log(150, "dht:store_result", {"key": "ab" * 32, "name": "svc", "replicas": 1, "targets": 1, "refused": []})
    f = only(analyse(recording(*logs.values())), "store_under_replicated")
    assert f.node == "provider1"
    assert "on 1 of 3 reachable nodes" in f.summary
    assert "found only 1 of the 3" in f.cause
    # a node that joined after the STORE began does not count against it
    late = NodeLog("provider4")
    node_started(late, 120)
    routing(late, 130, "added", "registry")
    assert "on 1 of 3" in only(analyse(recording(*logs.values(), late)), "store_under_replicated").summary
    # fully replicated: no finding
    p1.events[-1] = Event(
        p1.events[-1].time_ms,
        "dht:store_result",
        {"key": "ab" * 32, "replicas": 3, "targets": 3},
        "dht:store_result",
        p1.events[-1].record,
    )
    assert "store_under_replicated" not in kinds(analyse(recording(*logs.values())))


def test_lookup_missed_when_another_node_held_an_unexpired_record() -> None:
    key = "cd" * 32
    reg, cl = NodeLog("registry"), NodeLog("client")
    node_started(reg, 0)
    node_started(cl, 0)
    reg.log(
        1000,
        "dht:record_stored",
        {"key": key, "publisher": "p1", "seq": 1, "expires_at_ms": T0 + 300_000, "from_peer": "p1", "name": "calc"},
    )
    cl.log(2000, "dht:lookup_started", {"lookup_id": "c-1", "kind": "find_value", "target": key})
    cl.log(
        2100,
        "dht:lookup_finished",
        {
            "lookup_id": "c-1",
            "kind": "find_value",
            "rounds": 1,
            "messages": 1,
            "found": False,
            "values": 0,
            "closest": [],
        },
    )
    f = only(analyse(recording(reg, cl)), "lookup_missed")
    assert f.node == "client" and f.peer == "registry"
    assert "'calc'" in f.summary
    assert {e.name for e in f.evidence} == {"dht:lookup_finished", "dht:record_stored"}
    # once expired on the holder, nothing was missed
    reg.log(1500, "dht:record_expired", {"key": key, "publisher": "p1"})
    assert "lookup_missed" not in kinds(analyse(recording(reg, cl)))


# ----------------------------------------------------------------------------- timeline, JSON, speed


def test_timeline_is_in_time_order_across_both_ends_with_step_labels() -> None:
    ends, cid = no_accept_cluster()
    healthy = healthy_cluster()
    a = analyse(recording(*healthy))
    view = a.stream("aa01", 4)
    assert view is not None
    tl = a.timeline(view)
    times = [e.time_ms for e in tl]
    assert times == sorted(times)
    assert {e.node for e in tl} == {"provider1", "registry"}
    labelled = [e.step for e in tl if e.step in STEPS]
    assert labelled == ["sent", "received", "delivered", "answered", "acked"]
    assert any(e.name == "dht:rpc_sent" for e in tl) and any(e.name == "dht:rpc_response" for e in tl)
    assert all(e.evidence.path for e in tl)
    assert any("ACK" in e.detail for e in tl)
    # stream 4's timeline has nothing from stream 0
    assert not any("STREAM 0 " in e.detail for e in tl)
    b = analyse(recording(*ends))
    seed = b.stream(cid, 0)
    assert seed is not None
    assert "delivered" not in [e.step for e in b.timeline(seed)]


def test_to_json_has_the_documented_keys_and_serialises() -> None:
    ends, cid = no_accept_cluster()
    a = analyse(recording(*ends))
    doc = json.loads(json.dumps(a.to_json()))
    assert set(doc) >= {"findings", "connections", "streams", "summary", "blind_spots"}
    f = next(x for x in doc["findings"] if x["kind"] == "stream_not_delivered")
    assert set(f) >= {"kind", "severity", "node", "streams", "evidence", "summary", "cause"}
    assert f["streams"] == [0, 4]
    assert all(set(e) >= {"file", "record", "name", "time_ms"} for e in f["evidence"])
    assert doc["streams"]["total"] == 3
    affected = {(s["connection"], s["stream_id"]) for s in doc["streams"]["affected"]}
    assert affected == {(cid, 0), (cid, 4)}  # only affected streams are listed
    assert doc["summary"]["findings"]["error"] == 1
    assert doc["connections"][0]["client"]["node"] == "provider1"


def test_analysis_is_one_pass_and_fast_on_large_traces() -> None:
    c, s = End("a", "client", "zz01"), End("b", "server", "zz01")
    for i in range(6000):
        sid = 4 * i
        pn = deliver(c, s, i, stream(sid))
        if i % 10 == 9:
            deliver(s, c, i + 0.7, ack([pn - 9, pn]))
    reads = 0

    class Counting(ListTrace):
        def __getitem__(self, record: int) -> Event:
            nonlocal reads
            reads += 1
            return super().__getitem__(record)

    rec = recording(c, s)
    rec.traces = [Counting(t.info, t._events) for t in rec.traces]  # type: ignore[attr-defined]
    began = time.perf_counter()
    a = analyse(rec)
    elapsed = time.perf_counter() - began
    assert reads == sum(len(t) for t in rec.traces)  # every event read exactly once
    assert len(a.streams) == 6000
    assert all(st.step("acked").status == DONE for st in a.streams)
    assert elapsed < 5.0


def test_trace_without_node_name_falls_back_to_the_file_stem_and_unknown_vantage_pairs() -> None:
    c = End(None, "client", "yy01", dhtscope=False, path="/x/left.qlog")
    s = End(None, "unknown", "yy01", dhtscope=False, path="/x/right.qlog")
    rpc(c, s, 1, 0, take=False)
    a = analyse(recording(c, s))
    conn = a.connection("yy01")
    assert conn is not None and conn.client is not None and conn.server is not None
    assert (conn.client.node, conn.server.node) == ("left", "right")


def test_two_ends_with_one_name_are_told_apart_by_role() -> None:
    c = End("aioquic", "client", "yy02", dhtscope=False, path="/x/client.qlog")
    s = End("aioquic", "server", "yy02", dhtscope=False, path="/x/server.qlog")
    rpc(c, s, 1, 0, take=False)
    a = analyse(recording(c, s))
    view = a.stream("yy02", 0)
    assert view is not None
    assert (view.opener, view.peer) == ("aioquic (client)", "aioquic (server)")


def test_summary_keys_and_evidence_address() -> None:
    ends, cid = no_accept_cluster()
    a = analyse(recording(*ends))
    s = a.summary()
    assert set(s) >= {
        "nodes",
        "traces",
        "connections",
        "streams",
        "events",
        "findings",
        "first_ms",
        "last_ms",
        "duration_ms",
    }
    assert (s["nodes"], s["traces"], s["connections"], s["streams"]) == (2, 2, 1, 3)
    assert s["events"] == sum(len(e.events) for e in ends)
    assert s["duration_ms"] == pytest.approx(5100.0)
    ev = only(a, "stream_not_delivered").evidence[0]
    assert ev.address == f"{ev.path}#{ev.record}"


# ----------------------------------------------------------------------------- real foreign traces

reader = pytest.importorskip("dhtscope.tracing.reader")


@needs_samples
@pytest.mark.parametrize(
    "name",
    [
        "aioquic_client_success.qlog",
        "aioquic_draft01_parallel10.qlog",
        "picoquic_binlog_ref.qlog",
        "quicgo_client_ndjson_truncated.qlog",
        "quinn_moq_clock_pub_loss.sqlog",
    ],
)
def test_foreign_samples_are_analysed_without_errors_or_guesses(name: str) -> None:
    a = analyse(reader.open_recording(SAMPLES / name))
    assert kinds(a, ERROR) == []
    assert "application_not_visible" in kinds(a, INFO)
    assert any("no trace from the other end" in b for b in a.blind_spots)
    for s in a.streams:
        assert s.step("delivered").status in (UNKNOWN, NOT_VISIBLE)
    json.dumps(a.to_json())


@needs_samples
def test_aioquic_client_sample_follows_its_request_stream() -> None:
    a = analyse(reader.open_recording(SAMPLES / "aioquic_client_success.qlog"))
    assert len(a.connections) == 1
    conn = a.connections[0]
    assert conn.odcid == "fcabe9223fe7d8c1" and conn.server is None
    assert conn.state == "closed" and conn.close_code == 256
    assert conn.rtt_ms is not None and conn.rtt_ms > 0
    view = a.stream(conn.id, 0)
    assert view is not None
    assert steps(a, conn.id, 0) == {
        "sent": DONE,
        "acked": DONE,
        "received": UNKNOWN,
        "delivered": UNKNOWN,
        "answered": DONE,
    }
    assert view.fin_opener.status == DONE
    assert len(a.timeline(view)) >= 3


@needs_samples
def test_quicgo_sample_reports_truncation_and_parallel_streams() -> None:
    a = analyse(reader.open_recording(SAMPLES / "quicgo_client_ndjson_truncated.qlog"))
    assert any("truncated" in b for b in a.blind_spots)
    assert len(a.streams) > 10
    assert all(s.step("sent").status == DONE for s in a.streams)
    assert a.summary()["events"] > 10_000


@needs_samples
def test_server_failed_sample_shows_the_close_reason() -> None:
    a = analyse(reader.open_recording(SAMPLES / "aioquic_server_failed.qlog"))
    conn = a.connections[0]
    assert conn.client is None and conn.server is not None
    assert conn.close_code == 298 and "issuer certificate" in (conn.close_reason or "")
    assert conn.close_name == "TLS alert 42 (bad certificate)"
    assert "alpn_mismatch" not in kinds(a)
    # From one end, the close frame is the evidence: the failed handshake is an error, named.
    f = only(a, "handshake_failed")
    assert f.severity == ERROR and f.node == "aioquic"  # the end whose certificate was refused
    assert "bad certificate" in f.summary and "unable to get local issuer certificate" in f.summary
    assert f.evidence[0].name == "quic:packet_received"
    assert f.fix


@needs_samples
def test_several_foreign_files_at_once() -> None:
    a = analyse(
        reader.open_recording(SAMPLES / "aioquic_client_success.qlog", SAMPLES / "quinn_moq_clock_pub_loss.sqlog")
    )
    assert len(a.connections) == 2
    assert a.summary()["traces"] == 2


# ----------------------------------------------------------------------------- through the reader


def test_a_dhtscope_recording_read_from_disk_finds_the_seeds_bug(tmp_path: Path) -> None:
    ends, cid = no_accept_cluster()
    for e in ends:
        write_sqlog(tmp_path / str(e.node) / f"{cid}-{e.vantage}-0.sqlog", str(e.node), e.vantage, cid, e.events)
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {
                "dhtscope_version": "0.1.0",
                "created_ms": T0,
                "nodes": [
                    {
                        "name": "registry",
                        "id": "registry-id",
                        "address": "127.0.0.1:4500",
                        "role": "registry",
                        "dir": "registry",
                    },
                    {
                        "name": "provider1",
                        "id": "provider1-id",
                        "address": "127.0.0.1:4501",
                        "role": "provider",
                        "dir": "provider1",
                    },
                ],
            }
        )
    )
    a = analyse(reader.open_recording(tmp_path))
    f = only(a, "stream_not_delivered")
    assert f.node == "registry" and f.streams == (0, 4)
    assert f.evidence[0].path.endswith(".sqlog")
    assert a.summary()["nodes"] == 2
