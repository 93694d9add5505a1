"""Findings from the wire: real QUIC conversations captured as a sniffer on the path sees them, analysed."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "helpers"))

from quicpair import Plan, write_capture

from dhtscope.tracing.analysis import DONE, ERROR, INFO, MISSING, WARNING, Analysis, analyse
from dhtscope.tracing.capture import read_capture

CLIENT, SERVER = "10.0.0.1:50000", "10.1.0.1:4433"


def diagnose(tmp_path: Path, **kwargs: object) -> Analysis:
    cap = tmp_path / "c.pcapng"
    write_capture(cap, **kwargs)
    return analyse(read_capture(cap))


def kinds(a: Analysis, above: str = INFO) -> list[tuple[str, str, str | None]]:
    rank = {ERROR: 0, WARNING: 1, INFO: 2}
    return [(f.kind, f.severity, f.node) for f in a.findings if rank[f.severity] < rank[above]]


def only(a: Analysis, kind: str):
    [f] = [f for f in a.findings if f.kind == kind]
    return f


def test_a_peer_that_acknowledges_and_never_answers_is_an_error_that_claims_no_more_than_the_wire_shows(tmp_path):
    a = diagnose(tmp_path, plan=Plan(streams=2, answer=False, linger_s=1.5))
    f = only(a, "stream_not_answered")
    assert (f.severity, f.node, f.peer) == (ERROR, SERVER, CLIENT)
    assert f.streams == (0, 4) and f.stream_count == 2
    assert "never accepted" in f.cause and "never answered" in f.cause  # both possibilities, neither claimed
    assert "never returned stream credit" in f.summary
    assert "cannot be seen" in f.summary
    assert all(e.frame is not None and e.address.endswith(f"#frame {e.frame}") for e in f.evidence)
    assert [s.step("delivered").status for s in a.streams] == ["not visible", "not visible"]


def test_a_peer_that_closes_the_connection_a_while_after_requests_it_never_answered_is_named(tmp_path):
    (tmp_path / "late").mkdir()
    (tmp_path / "soon").mkdir()
    late = diagnose(tmp_path / "late", plan=Plan(streams=2, answer=False, close=False, server_close_s=0.5))
    assert kinds(late) == [("stream_not_answered", ERROR, SERVER)]
    soon = diagnose(tmp_path / "soon", plan=Plan(streams=2, answer=False, close=False, server_close_s=0.01))
    assert kinds(soon) == []  # closed before an answer was due: nothing to say about the answer


def test_no_finding_when_the_capture_ends_before_an_answer_was_due(tmp_path):
    a = diagnose(tmp_path, plan=Plan(streams=2, answer=False, linger_s=0.2))
    assert kinds(a) == []
    assert all(s.step("answered").status == MISSING for s in a.streams)


def test_a_healthy_conversation_raises_nothing_above_info(tmp_path):
    a = diagnose(tmp_path, plan=Plan(streams=5))
    assert kinds(a) == []
    assert [f.kind for f in a.findings] == ["application_not_visible"]
    assert all(s.missing is None and s.furthest == "answered" for s in a.streams)


def test_each_end_grants_stream_credit_and_the_json_says_so(tmp_path):
    a = diagnose(tmp_path, plan=Plan(streams=3))
    [conn] = a.connections
    by_role = {c.role: c for c in conn.stream_credit}
    assert set(by_role) == {"client", "server"}
    assert by_role["server"].grantor == SERVER and by_role["server"].peer_opened == 3
    assert by_role["server"].limit == 128  # aioquic's default grant
    assert conn.credit_to(CLIENT) is by_role["server"] and conn.credit_from(CLIENT) is by_role["client"]
    data = conn.to_json()["stream_credit"]
    assert data[1]["grants"][0]["limit"] == 128 and data[1]["peer_opened"] == 3 and data[1]["blocked"] == []


def test_packets_lost_after_the_capture_point_are_those_the_receiver_never_acknowledged(tmp_path):
    a = diagnose(tmp_path, plan=Plan(streams=6, drop=lambda n, from_client: n in (9, 12)))
    f = only(a, "packet_loss")
    assert f.severity in (WARNING, ERROR) and f.node == SERVER
    assert "never acknowledged though later ones were, and their data sent again" in f.summary
    assert all(e.frame is not None for e in f.evidence)


def test_packets_lost_before_the_capture_point_leave_a_gap_in_the_senders_numbers(tmp_path):
    a = diagnose(tmp_path, plan=Plan(streams=6, hide=lambda n, from_client: n in (9, 12)))
    f = only(a, "packet_loss")
    assert "2 missing from the sender's packet numbers" in f.summary


def test_packets_sent_before_the_peer_ever_answered_are_not_judged_lost(tmp_path):
    # The first Initial lost (a server still starting, say): retransmitted and answered, no loss to report.
    a = diagnose(tmp_path, plan=Plan(streams=2, drop=lambda n, from_client: n == 1))
    assert [f.kind for f in a.findings if f.kind == "packet_loss"] == []


def test_a_server_that_never_answers_the_handshake_is_named(tmp_path):
    a = diagnose(tmp_path, plan=Plan(drop=lambda n, from_client: from_client))
    assert kinds(a) == [("handshake_timeout", ERROR, SERVER)]
    assert "nothing came back" in a.findings[0].summary


def test_a_client_that_gives_up_on_a_silent_server_is_a_handshake_timeout_whatever_code_it_closes_with(tmp_path):
    a = diagnose(tmp_path, plan=Plan(give_up_s=0.5, drop=lambda n, from_client: from_client))
    assert kinds(a) == [("handshake_timeout", ERROR, SERVER)]
    assert "then it closed the connection" in a.findings[0].summary


def test_a_peer_gone_silent_mid_connection_is_unresponsive_as_the_wire_shows(tmp_path):
    # Every server datagram after its first flight never reaches the wire: the client retransmits into silence.
    a = diagnose(tmp_path, plan=Plan(streams=2, close=False, hide=lambda n, from_client: not from_client and n >= 4))
    f = only(a, "peer_unresponsive")
    assert f.node == SERVER and "on the wire nothing came from" in f.summary


def test_tls_and_alpn_failures_are_named_with_their_cause(tmp_path):
    (tmp_path / "tls").mkdir()
    (tmp_path / "alpn").mkdir()
    tls = only(diagnose(tmp_path / "tls", client_verify=True), "handshake_failed")
    assert "TLS alert 42 (bad certificate)" in tls.summary and tls.severity == ERROR
    alpn = only(diagnose(tmp_path / "alpn", server_alpn="other/1"), "alpn_mismatch")
    assert alpn.node == SERVER and "refused it" in alpn.summary


def test_an_application_close_is_named_by_its_code(tmp_path):
    f = only(diagnose(tmp_path, plan=Plan(close_code=0x06)), "application_close")
    assert f.node == CLIENT and "INTERNAL (0x6)" in f.summary


def test_a_request_cancelled_at_once_is_not_called_unanswered(tmp_path):
    a = diagnose(tmp_path, plan=Plan(streams=2, stop_sending=True))
    assert kinds(a) == []


def test_the_ends_of_a_stream_are_one_frame_on_the_wire_and_resets_are_not_counted_twice(tmp_path):
    a = diagnose(tmp_path, plan=Plan(streams=3, stop_sending=True, reset_stream=True))
    [reset] = [s for s in a.streams if s.resets]
    assert len({(e.path, e.frame) for e in reset.resets}) == len(reset.resets)
    sent, received = reset.step("sent"), reset.step("received")
    assert sent.status == received.status == DONE and sent.evidence.frame == received.evidence.frame
