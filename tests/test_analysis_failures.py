"""Every connection failure named from its close code, trigger or packets, even from one end."""

from __future__ import annotations

from typing import Any

import pytest
from helpers.traces import End, NodeLog, deliver, kinds, node_started, only, recording, rpc, start, stream

from dhtscope.tracing.analysis import ERROR, INFO, WARNING, analyse
from dhtscope.tracing.model import NodeEntry


def close(code: int, space: str = "transport", reason: str = "") -> dict[str, Any]:
    return {"frame_type": "connection_close", "error_code": code, "error_space": space, "reason": reason}


def flight(a: End, b: End, t: float, *frames: dict[str, Any], ptype: str = "1RTT") -> int:
    """`a` sends a packet of `ptype`, `b` receives it half a millisecond later."""
    pn = a.send(t, *frames, ptype=ptype)
    b.recv(t + 0.5, pn, *frames, ptype=ptype)
    return pn


def handshake(c: End, s: End, t: float, done: bool = True) -> None:
    """Initial and Handshake flights; with `done`, HANDSHAKE_DONE and 1-RTT packets."""
    flight(c, s, t, {"frame_type": "crypto", "offset": 0, "length": 460}, ptype="initial")
    flight(s, c, t + 1, {"frame_type": "crypto", "offset": 0, "length": 640}, ptype="handshake")
    if done:
        flight(s, c, t + 2, {"frame_type": "handshake_done"})
        flight(c, s, t + 3, {"frame_type": "ping"})


@pytest.mark.parametrize(
    "alert, words, blamed",
    [
        (42, "bad certificate", "registry"),
        (45, "certificate expired", "registry"),
        (48, "unknown CA", "registry"),
        (40, "handshake failure", "provider1, registry"),
        (80, "internal error", "provider1"),
    ],
)
def test_a_tls_alert_in_the_handshake_is_an_error_named_on_the_end_to_blame(
    alert: int, words: str, blamed: str
) -> None:
    c, s = End("provider1", "client", "tl01"), End("registry", "server", "tl01")
    handshake(c, s, 0, done=False)
    flight(c, s, 5, close(0x100 + alert, reason="unable to get local issuer certificate"), ptype="handshake")
    a = analyse(recording(c, s))
    f = only(a, "handshake_failed")
    assert f.severity == ERROR
    assert f.node == blamed
    assert f"TLS alert {alert} ({words})" in f.summary
    assert '"unable to get local issuer certificate"' in f.summary
    assert f.fix and f.evidence[0].name == "quic:packet_sent"
    conn = a.connection("tl01")
    assert conn is not None and conn.close_name == f"TLS alert {alert} ({words})" and conn.closed_by == "provider1"


def test_one_certificate_refused_by_every_peer_is_one_finding_on_its_owner_with_consequences() -> None:
    ends: list[End] = []
    logs = [NodeLog(n) for n in ("registry", "provider1", "provider2", "client")]
    for log in logs:
        node_started(log, 0)
    logs[0].log(9000, "dht:record_expired", {"key": "00", "publisher": "11"})
    for n, name in enumerate(("provider1", "provider2", "client")):
        c, s = End(name, "client", f"bc0{n}"), End("registry", "server", f"bc0{n}")
        start(c, s, t=10 + n)
        handshake(c, s, 20 + n, done=False)
        flight(c, s, 30 + n, close(0x12A, reason="certificate verify failed"), ptype="handshake")
        ends += [c, s]
    a = analyse(recording(*ends, *logs))
    f = only(a, "handshake_failed")
    assert f.node == "registry" and len(f.connections) == 3
    assert "3 connections failed during the handshake" in f.summary
    assert "provider1, provider2, client refused the certificate registry presented" in f.cause
    isolated = [x for x in a.findings if x.kind == "isolated"]
    assert isolated and all(x.caused_by == f.id for x in isolated)
    assert a.summary()["root_causes"] == [f.id]


@pytest.mark.parametrize(
    "code, name",
    [
        (0x03, "FLOW_CONTROL_ERROR"),
        (0x04, "STREAM_LIMIT_ERROR"),
        (0x0A, "PROTOCOL_VIOLATION"),
        (0x06, "FINAL_SIZE_ERROR"),
    ],
)
def test_a_transport_error_is_named_and_blames_the_end_that_broke_the_rule(code: int, name: str) -> None:
    c, s = End("provider1", "client", "te01"), End("registry", "server", "te01")
    start(c, s)
    handshake(c, s, 2)
    rpc(c, s, 10, 0)
    deliver(s, c, 40, close(code, reason="peer misbehaved"))
    a = analyse(recording(c, s))
    f = only(a, "connection_error")
    assert f.severity == ERROR
    assert f.node == "provider1"  # registry closed it because of what provider1 sent
    assert f"{name} (0x{code:x})" in f.summary and "registry closed" in f.summary


def test_an_internal_error_blames_the_end_that_closed() -> None:
    c, s = End("provider1", "client", "te02"), End("registry", "server", "te02")
    handshake(c, s, 2)
    deliver(s, c, 40, close(0x01))
    assert only(analyse(recording(c, s)), "connection_error").node == "registry"


def test_application_closes_are_named_by_the_alpns_registry() -> None:
    c, s = End("provider1", "client", "ap01"), End("registry", "server", "ap01")
    start(c, s)
    handshake(c, s, 2)
    deliver(s, c, 40, close(0x06, "application", "handler failed"))
    f = only(analyse(recording(c, s)), "application_close")
    assert f.severity == WARNING and "INTERNAL (0x6)" in f.summary and f.node == "registry"

    # HTTP/3: H3_NO_ERROR is a clean close, named; H3 names only under h3
    c, s = End("browser", "client", "ap02", dhtscope=False), End("web", "server", "ap02", dhtscope=False)
    c.log(0, "quic:alpn_information", {"client_alpns": ["h3"], "chosen_alpn": "h3"})
    handshake(c, s, 2)
    deliver(c, s, 40, close(0x100, "application"))
    a = analyse(recording(c, s))
    assert "application_close" not in kinds(a)
    conn = a.connection("ap02")
    assert conn is not None and conn.close_trigger == "clean" and conn.close_name == "H3_NO_ERROR (0x100)"

    c, s = End("browser", "client", "ap03", dhtscope=False), End("web", "server", "ap03", dhtscope=False)
    c.log(0, "quic:alpn_information", {"client_alpns": ["h3"]})
    handshake(c, s, 2)
    deliver(c, s, 40, close(0x10C, "application"))
    assert "H3_REQUEST_CANCELLED" in only(analyse(recording(c, s)), "application_close").summary

    # no registry for the ALPN: the code is shown, the finding stays info
    c, s = End("a", "client", "ap04", dhtscope=False), End("b", "server", "ap04", dhtscope=False)
    c.log(0, "quic:alpn_information", {"client_alpns": ["hq-interop"]})
    handshake(c, s, 2)
    deliver(c, s, 40, close(0x05, "application"))
    assert only(analyse(recording(c, s)), "application_close").severity == INFO


def test_a_clean_dhtscope_close_is_no_finding() -> None:
    c, s = End("provider1", "client", "ap05"), End("registry", "server", "ap05")
    start(c, s)
    handshake(c, s, 2)
    rpc(c, s, 10, 0)
    deliver(c, s, 40, close(0, "application", "node shutting down"))
    a = analyse(recording(c, s))
    assert a.findings == []
    conn = a.connection("ap05")
    assert conn is not None and conn.close_trigger == "clean" and conn.close_name == "NO_ERROR (0x0)"


def test_a_handshake_timeout_is_named_on_the_server_that_never_answered() -> None:
    c = End("provider1", "client", "ht01")
    c.log(0, "quic:connection_started", {"role": "client", "dst_ip": "127.0.0.1", "dst_port": 4500})
    for t in (1, 1000, 3000):
        c.send(t, {"frame_type": "crypto", "offset": 0, "length": 460}, ptype="initial")
    c.send(4000, close(0x0C), ptype="initial")  # an application closing mid-handshake shows APPLICATION_ERROR
    c.log(4001, "quic:connection_closed", {"owner": "local", "trigger": "clean", "reason": "handshake timeout"})
    nodes = [NodeEntry("registry", None, "127.0.0.1:4500", "registry")]
    a = analyse(recording(c, nodes=nodes))
    f = only(a, "handshake_timeout")
    assert f.severity == ERROR and f.node == "registry" and f.peer == "provider1"
    assert "nothing came back" in f.summary
    assert sum(1 for e in f.evidence if e.name == "quic:packet_sent") == 3


def test_an_idle_timeout_after_idleness_is_info() -> None:
    c, s = End("provider1", "client", "id01"), End("registry", "server", "id01")
    start(c, s)
    handshake(c, s, 2)
    rpc(c, s, 10, 0)
    for e, owner in ((c, "local"), (s, "local")):
        e.log(60_100, "quic:connection_closed", {"owner": owner, "trigger": "idle_timeout", "reason": "Idle timeout"})
    f = only(analyse(recording(c, s)), "idle_timeout")
    assert f.severity == INFO


def test_a_stateless_reset_is_an_error_on_the_end_that_forgot_the_connection() -> None:
    c, s = End("provider1", "client", "sr01"), End("registry", "server", "sr01")
    start(c, s)
    handshake(c, s, 2)
    rpc(c, s, 10, 0)
    c.log(50, "quic:packet_received", {"header": {"packet_type": "stateless_reset"}, "frames": []})
    c.log(50.1, "quic:connection_closed", {"owner": "remote", "trigger": "stateless_reset"})
    f = only(analyse(recording(c, s)), "stateless_reset")
    assert f.severity == ERROR and f.node == "registry" and "lost the connection's state" in f.cause


def test_version_negotiation_failure_is_an_error_and_a_successful_one_info() -> None:
    c = End("client", "client", "vn01", dhtscope=False)
    c.send(0, {"frame_type": "crypto", "offset": 0, "length": 460}, ptype="initial")
    c.log(5, "quic:packet_received", {"header": {"packet_type": "version_negotiation"}, "frames": []})
    c.log(5.1, "quic:version_information", {"server_versions": [0xFF00001D], "client_versions": [1]})
    assert only(analyse(recording(c)), "version_negotiation_failed").severity == ERROR

    c = End("client", "client", "vn02", dhtscope=False)
    c.log(5, "quic:packet_received", {"header": {"packet_type": "version_negotiation"}, "frames": []})
    c.log(5.1, "quic:version_information", {"server_versions": [1], "client_versions": [2, 1], "chosen_version": 1})
    assert only(analyse(recording(c)), "version_negotiation").severity == INFO


def test_rejected_zero_rtt_is_named_on_the_server() -> None:
    c, s = End("client", "client", "zr01", dhtscope=False), End("server", "server", "zr01", dhtscope=False)
    c.send(0, {"frame_type": "crypto", "offset": 0, "length": 460}, ptype="initial")
    for _ in range(2):
        c.send(0.1, stream(0, 500, False), ptype="0RTT")  # the server drops what it cannot read
    handshake(c, s, 1)
    flight(s, c, 5, {"frame_type": "ack", "acked_ranges": [[3, 5]]})
    f = only(analyse(recording(c, s)), "zero_rtt_rejected")
    assert f.severity == WARNING and f.node == "server" and "2 packets" in f.summary

    # accepted: the server acknowledged the 0-RTT packets
    c, s = End("client", "client", "zr02", dhtscope=False), End("server", "server", "zr02", dhtscope=False)
    c.send(0, {"frame_type": "crypto", "offset": 0, "length": 460}, ptype="initial")
    c.send(0.1, stream(0, 500, False), ptype="0RTT")
    handshake(c, s, 1)
    deliver(s, c, 5, {"frame_type": "ack", "acked_ranges": [[0, 5]]})
    assert "zero_rtt_rejected" not in kinds(analyse(recording(c, s)))


def test_reset_codes_in_the_timeline_carry_their_names() -> None:
    c, s = End("provider1", "client", "rc01"), End("registry", "server", "rc01")
    start(c, s)
    rpc(c, s, 10, 0, answer=False)
    reset = {"frame_type": "reset_stream", "stream_id": 0, "error_code": 9, "final_size": 30}
    deliver(c, s, 2000, reset)
    a = analyse(recording(c, s))
    view = a.stream("rc01", 0)
    assert view is not None
    details = [e.detail for e in a.timeline(view)]
    assert any("RESET_STREAM 0 code 9 (CANCELLED)" in d for d in details)
