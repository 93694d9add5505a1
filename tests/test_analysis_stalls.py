"""Stalls and credit: silent peers, PTO backoff, flow-control starvation, stream credit running low."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers.traces import End, ack, deliver, kinds, only, recording, rpc, start, stream

from dhtscope.tracing.analysis import ERROR, INFO, MISSING, WARNING, analyse
from dhtscope.tracing.reader import open_recording

PTO_GAPS_MS = (300, 600, 1200, 2400, 4800)  # a PTO doubling from 300 ms: the 9-second silence


def _picoquic_stall_trace(path: Path) -> None:
    """A picoquic-shaped (draft-00, microseconds) client trace: data, a 9-second silence with PTO
    backoff while the server says nothing, then the connection resumes."""
    events: list[list[Any]] = []
    pn = 0
    srv = 0

    def sent(t_ms: float, frames: list[dict[str, Any]]) -> int:
        nonlocal pn
        events.append(
            [int(t_ms * 1000), "transport", "packet_sent",
             {"packet_type": "1RTT", "header": {"packet_size": 1252, "packet_number": pn}, "frames": frames}]
        )  # fmt: skip
        pn += 1
        return pn - 1

    def received(t_ms: float, frames: list[dict[str, Any]]) -> None:
        nonlocal srv
        events.append(
            [int(t_ms * 1000), "transport", "packet_received",
             {"packet_type": "1RTT", "header": {"packet_size": 55, "packet_number": srv}, "frames": frames}]
        )  # fmt: skip
        srv += 1

    t = 0.0
    offset = 0
    while t < 2000:  # a transfer with ACKs coming back every 40 ms (RTT 40 ms)
        p = sent(t, [{"frame_type": "stream", "stream_id": 4, "offset": offset, "length": 1200, "fin": False}])
        offset += 1200
        if p % 4 == 3:
            received(t + 40, [{"frame_type": "ack", "acked_ranges": [[0, p]]}])
        t += 10
    silence_from = t
    before = pn - 1
    probes: list[tuple[float, int]] = []
    for gap in PTO_GAPS_MS:  # the server went silent: PTO probes, each after twice the wait
        t += gap
        probes.append((t, sent(t, [{"frame_type": "stream", "stream_id": 4, "offset": offset, "length": 1200}])))
    for (_, lost_pn), (when, _) in zip(probes, probes[1:], strict=False):
        events.append(
            [int(when * 1000) - 1, "recovery", "packet_lost", {"packet_type": "1RTT", "packet_number": lost_pn}]
        )
    t += 200
    assert t - silence_from > 9000
    resumed = probes[-1][1]  # the last probe got through; the ones before it never did
    received(t, [{"frame_type": "ack", "acked_ranges": [[0, before], [resumed, resumed]]}])
    while pn < 550:
        t += 10
        p = sent(t, [{"frame_type": "stream", "stream_id": 4, "offset": offset, "length": 1200, "fin": False}])
        offset += 1200
        if p % 4 == 3:
            received(t + 40, [{"frame_type": "ack", "acked_ranges": [[0, before], [resumed, p]]}])
    events.sort(key=lambda e: e[0])
    doc = {
        "qlog_version": "draft-00",
        "title": "picoquic",
        "traces": [
            {
                "vantage_point": {"name": "edge-client", "type": "client"},
                "title": "picoquic",
                "event_fields": ["relative_time", "category", "event", "data"],
                "configuration": {"time_units": "us"},
                "common_fields": {"protocol_type": "QUIC_HTTP3", "reference_time": "1700000000000000"},
                "events": events,
            }
        ],
    }
    path.write_text(json.dumps(doc))


def test_a_nine_second_silence_with_pto_backoff_is_named_a_stall_not_only_loss(tmp_path: Path) -> None:
    path = tmp_path / "picoquic_stall.qlog"
    _picoquic_stall_trace(path)
    a = analyse(open_recording(path))
    f = only(a, "connection_stalled")
    assert f.severity == WARNING
    assert "The connection with edge-client's peer made no progress for 9.5 s" in f.summary
    assert "PTO backoff" in f.summary and "0.6 → 1.2 → 2.4 → 4.8 s" in f.summary
    assert "then it resumed" in f.summary
    assert f.evidence[0].name == "quic:packet_sent"
    # the losses themselves, from one end, are not confirmed
    loss = only(a, "packet_loss")
    assert loss.severity == INFO and "could not be confirmed" in loss.summary


def _frozen_registry() -> list[End]:
    ends: list[End] = []
    for n, name in enumerate(("provider1", "provider2")):
        c, s = End(name, "client", f"fz0{n}"), End("registry", "server", f"fz0{n}")
        start(c, s)
        for i in range(5):
            rpc(c, s, 10 + 10 * i, 4 * i, rid=i)
        # the registry froze at 100 ms: its trace says nothing more, its peers retransmit into silence
        t = 100.0
        for gap in (25, 50, 100, 200, 400, 800, 1600, 3200):
            t += gap
            c.send(t, stream(40, 30, True))
        c.log(
            t + 1000, "quic:connection_closed", {"owner": "local", "trigger": "idle_timeout", "reason": "Idle timeout"}
        )
        ends += [c, s]
    return ends


def test_a_frozen_peer_is_named_unresponsive_and_the_idle_timeouts_fold_into_it() -> None:
    a = analyse(recording(*_frozen_registry()))
    f = only(a, "peer_unresponsive")
    assert f.severity == ERROR and f.node == "registry" and set(f.connections) == {"fz00", "fz01"}
    assert "registry stopped answering" in f.summary
    assert "registry's own trace shows it neither received nor sent" in f.summary
    assert "2 connections ended by idle timeout" in f.summary
    assert "PTO backoff" in f.summary
    assert "idle_timeout" not in kinds(a)  # the silence already says why the connections ended
    assert a.summary()["root_causes"] == [f.id]


def test_a_silent_peer_whose_packets_were_sent_and_lost_is_a_stall_caused_by_one_way_loss() -> None:
    c, s = End("provider1", "client", "ow01"), End("registry", "server", "ow01")
    start(c, s)
    rpc(c, s, 10, 0)
    t = 100.0
    for gap in (100, 200, 400, 800, 1600, 3200):
        t += gap
        pn = c.send(t, stream(4, 30, True))
        s.recv(t + 0.5, pn, stream(4, 30, True))
        s.send(t + 1, ack([pn, pn]))  # the registry answers; its packets never arrive
    deliver(s, c, t + 100, ack([0, 20]))
    deliver(c, s, t + 200, {"frame_type": "ping"})
    a = analyse(recording(c, s))
    loss = only(a, "packet_loss")
    assert loss.node == "registry" and "only packets sent by registry were lost" in loss.summary
    stall = only(a, "connection_stalled")
    assert stall.caused_by == loss.id
    assert "registry kept sending too, but none of its packets arrived" in stall.summary
    assert "peer_unresponsive" not in kinds(a)


def test_a_short_silence_is_no_stall() -> None:
    c, s = End("provider1", "client", "sh01"), End("registry", "server", "sh01")
    start(c, s)
    t = 10.0
    for gap in (25, 50, 100, 200, 400):  # 0.8 s: the scheduling hiccups of a busy host
        t += gap
        c.send(t, {"frame_type": "ping"})
    deliver(s, c, t + 100, ack([0, 5]))
    deliver(c, s, t + 200, {"frame_type": "ping"})
    a = analyse(recording(c, s))
    assert "connection_stalled" not in kinds(a) and "peer_unresponsive" not in kinds(a)


def params(end: End, t: float, owner: str, **values: int) -> None:
    end.log(t, "quic:parameters_set", {"owner": owner, **values})


def test_a_sender_waiting_at_the_receivers_flow_control_limit_is_named_on_the_receiver() -> None:
    c, s = End("provider1", "client", "fc01"), End("registry", "server", "fc01")
    start(c, s)
    params(c, 1, "remote", initial_max_data=1_000_000, initial_max_stream_data_bidi_remote=1000)
    for i in range(4):  # 1,000 bytes of credit on stream 0: the sender reaches it...
        deliver(c, s, 10 + i, stream(0, 250, False, offset=250 * i))
    deliver(c, s, 20, {"frame_type": "stream_data_blocked", "stream_id": 0, "limit": 1000})
    deliver(s, c, 2500, {"frame_type": "max_stream_data", "stream_id": 0, "maximum": 2000})  # ...for 2.5 s
    deliver(c, s, 2510, stream(0, 500, True, offset=1000))
    a = analyse(recording(c, s))
    f = only(a, "flow_control_blocked")
    assert f.severity == WARNING and f.node == "registry" and f.peer == "provider1"
    assert "MAX_STREAM_DATA on 1 stream" in f.summary and "the longest 2.5 s" in f.summary
    assert "1 DATA_BLOCKED / STREAM_DATA_BLOCKED frame" in f.summary
    assert f.stream_refs == (("fc01", 0),)


def test_connection_credit_that_never_grows_while_data_waits_is_an_error() -> None:
    c, s = End("provider1", "client", "fc02"), End("registry", "server", "fc02")
    start(c, s)
    params(c, 1, "remote", initial_max_data=600, initial_max_stream_data_bidi_remote=100_000)
    c.log(
        5,
        "quic:stream_data_moved",
        {"stream_id": 0, "offset": 0, "length": 5000, "from": "application", "to": "transport"},
    )
    deliver(c, s, 10, stream(0, 600, False))
    deliver(s, c, 20, ack([0, 0]))
    s.log(3000, "quic:recovery_metrics_updated", {"smoothed_rtt": 1.0})
    c.log(3000, "quic:recovery_metrics_updated", {"smoothed_rtt": 1.0})
    f = only(analyse(recording(c, s)), "flow_control_blocked")
    assert f.severity == ERROR and "never grew again" in f.summary and "MAX_DATA" in f.summary


def test_a_brief_wait_for_credit_is_no_finding() -> None:
    c, s = End("provider1", "client", "fc03"), End("registry", "server", "fc03")
    params(c, 1, "remote", initial_max_data=1000, initial_max_stream_data_bidi_remote=100_000)
    deliver(c, s, 10, stream(0, 1000, False))
    deliver(s, c, 60, {"frame_type": "max_data", "maximum": 5000})
    deliver(c, s, 61, stream(0, 1000, True, offset=1000))
    assert "flow_control_blocked" not in kinds(analyse(recording(c, s)))


def _streams_on_credit(limit: int, opened: int, raise_at: float | None) -> list[End]:
    c, s = End("client", "client", "sc01"), End("registry", "server", "sc01")
    start(c, s)
    params(c, 1, "remote", initial_max_streams_bidi=limit)
    for i in range(opened):
        rpc(c, s, 10 + 10 * i, 4 * i, rid=i, fin_back=False)
    if raise_at is not None:
        deliver(s, c, raise_at, {"frame_type": "max_streams", "stream_type": "bidirectional", "maximum": 2 * limit})
    deliver(c, s, 5000, {"frame_type": "ping"})
    return [c, s]


def test_stream_credit_running_low_is_a_warning_before_it_runs_out() -> None:
    a = analyse(recording(*_streams_on_credit(10, 9, None)))
    f = only(a, "stream_credit_low")
    assert f.severity == WARNING and f.node == "client" and f.peer == "registry"
    assert "opened 8 of the 10 bidirectional streams registry allows" in f.summary  # 2 left: 20 %
    assert "9 streams registry never finished" in f.summary
    assert "stream_limit_exhausted" not in kinds(a)


def test_stream_credit_that_comes_back_soon_is_no_finding() -> None:
    assert "stream_credit_low" not in kinds(analyse(recording(*_streams_on_credit(10, 9, 200.0))))


def test_the_missing_fin_of_the_peer_is_the_streams_gap() -> None:
    c, s = End("client", "client", "fp01"), End("registry", "server", "fp01")
    start(c, s)
    rpc(c, s, 10, 0, fin_back=False)  # answered, never finished
    rpc(c, s, 20, 4)  # answered and finished
    deliver(c, s, 3000, {"frame_type": "ping"})  # the connection lived on
    a = analyse(recording(c, s))
    view = a.stream("fp01", 0)
    assert view is not None and view.missing == "fin_peer"
    assert view.step("fin_peer").status == MISSING and "never sent FIN" in view.step("fin_peer").note
    assert [st.status for st in view.steps] == ["done"] * 5
    finished = a.stream("fp01", 4)
    assert finished is not None and finished.missing is None
    assert a.summary()["streams_with_missing_step"] == 1
    # a FIN the recording ends too soon to see is not called missing
    c2, s2 = End("client", "client", "fp02"), End("registry", "server", "fp02")
    rpc(c2, s2, 10, 0, fin_back=False)
    view2 = analyse(recording(c2, s2)).stream("fp02", 0)
    assert view2 is not None and view2.missing is None
