"""A network-vantage trace split into its client and server ends, then analysed like any other."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "helpers"))

from conftest import ONE_QLOG_FILE
from quicpair import Plan, write_capture

from dhtscope.tracing.analysis import DONE, MISSING, NOT_VISIBLE, analyse
from dhtscope.tracing.capture import read_capture
from dhtscope.tracing.model import Event, Recording, TraceInfo
from dhtscope.tracing.reader import DocTrace, open_recording
from dhtscope.tracing.vantage import split_network_traces


def _steps(view):
    return {s.name: s.status for s in view.steps}


def test_capture_streams_are_sent_acked_received_and_answered_with_delivery_not_visible(tmp_path):
    cap = tmp_path / "c.pcapng"
    write_capture(cap, plan=Plan(streams=3))
    rec = split_network_traces(read_capture(cap))
    assert [t.info.vantage for t in rec.traces] == ["client", "server"]
    assert all(t.info.extra["seen_on_wire"] and not t.info.extra["application_visible"] for t in rec.traces)
    a = analyse(rec)
    [conn] = a.connections
    assert conn.client.node == "10.0.0.1:50000" and conn.server.node == "10.1.0.1:4433"
    assert conn.state == "closed" and conn.close_trigger == "clean"
    assert [s.stream_id for s in a.streams] == [0, 4, 8]
    for view in a.streams:
        assert _steps(view) == {
            "sent": DONE,
            "acked": DONE,
            "received": DONE,
            "delivered": NOT_VISIBLE,
            "answered": DONE,
        }
        assert view.fin_opener.status == DONE and view.fin_peer.status == DONE
    assert {f.kind for f in a.findings} == {"application_not_visible"}


def test_a_peer_that_acknowledges_and_never_answers_shows_the_missing_answer(tmp_path):
    cap = tmp_path / "c.pcapng"
    write_capture(cap, plan=Plan(streams=2, answer=False))
    a = analyse(split_network_traces(read_capture(cap)))
    for view in a.streams:
        steps = _steps(view)
        assert steps["acked"] == DONE and steps["received"] == DONE
        assert steps["delivered"] == NOT_VISIBLE and steps["answered"] == MISSING
        assert view.fin_peer.status == MISSING


def test_evidence_maps_back_to_capture_frames(tmp_path):
    cap = tmp_path / "c.pcapng"
    write_capture(cap, plan=Plan(streams=1))
    network = read_capture(cap)
    rec = split_network_traces(network)
    a = analyse(rec)
    [view] = a.streams
    sent = view.step("sent").evidence
    received = view.step("received").evidence
    by_index = {(t.info.path, t.info.index): t for t in rec.traces}
    sent_frame = by_index[(sent.path, sent.trace)].info.extra["frames"][sent.record]
    received_frame = by_index[(received.path, received.trace)].info.extra["frames"][received.record]
    # On the wire, the opener's sending and the peer's receipt are one and the same frame.
    assert sent_frame == received_frame
    first_stream = next(
        e for e in network.traces[0] if any(f["frame_type"] == "stream" for f in e.data.get("frames", ()))
    )
    assert sent_frame == network.traces[0].info.extra["frames"][first_stream.record]


def test_parameters_and_drops_land_at_the_right_end(tmp_path):
    cap = tmp_path / "c.pcapng"
    write_capture(cap, dsb=False)  # no keys: handshake and 1-RTT packets are dropped
    client, server = split_network_traces(read_capture(cap)).traces
    assert [e.data["owner"] for e in client if e.name == "quic:parameters_set"] == ["local"]
    senders_at_server = {e.data["details"]["sender"] for e in server if e.name == "quic:packet_dropped"}
    senders_at_client = {e.data["details"]["sender"] for e in client if e.name == "quic:packet_dropped"}
    assert senders_at_server == {"client"} and senders_at_client == {"server"}
    assert sum(1 for e in client if e.name == "quic:packet_sent") == sum(
        1 for e in server if e.name == "quic:packet_received"
    )


def test_a_foreign_network_trace_with_server_flow_is_split_the_other_way():
    events = [
        Event(0.0, "quic:packet_sent", {"header": {"packet_type": "1RTT", "packet_number": 0}}, "x", 0),
        Event(1.0, "quic:packet_received", {"header": {"packet_type": "1RTT", "packet_number": 0}}, "x", 1),
    ]
    info = TraceInfo(
        "net.qlog", 0, "network", "abcd", "tap", "qlog-0.3-json", "0.3", None, extra={"vantage_flow": "server"}
    )
    rec = split_network_traces(Recording(path="net.qlog", traces=[DocTrace(info, events)]))
    client, server = rec.traces
    assert [e.name for e in server] == ["quic:packet_sent", "quic:packet_received"]
    assert [e.name for e in client] == ["quic:packet_received", "quic:packet_sent"]
    assert (client.info.index, server.info.index) == (0, 1)
    assert client.info.node == "tap (client)"


def test_a_recording_without_network_traces_is_returned_as_is(tmp_path):
    rec = open_recording(ONE_QLOG_FILE)
    assert split_network_traces(rec) is rec


def test_names_given_for_addresses_label_the_ends(tmp_path):
    cap = tmp_path / "c.pcapng"
    write_capture(cap, plan=Plan(streams=1))
    network = read_capture(cap, names={"10.1.0.1": "registry", "10.0.0.1:50000": "provider1"})
    assert network.traces[0].info.node == "provider1 → registry"
    client, server = split_network_traces(network).traces
    assert (client.info.node, server.info.node) == ("provider1", "registry")
    [conn] = analyse(split_network_traces(network)).connections
    assert conn.label == "provider1 → registry"
