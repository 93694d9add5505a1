"""Each fault scenario, recorded in-process over real QUIC, is named by the analysis on the right node."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers.scenario_run import TIMEOUT_S, play

from dhtscope.node.constants import REQUEST_TIMEOUT_S
from dhtscope.node.node import Node, NodeError
from dhtscope.node.recording import NodeRecorder
from dhtscope.node.scenarios import SCENARIO_HELP, SCENARIOS, Faults, apply_scenario
from dhtscope.tracing.analysis import ERROR, INFO, Analysis, analyse
from dhtscope.tracing.reader import open_recording


async def run_scenario(tmp_path: Path, scenario: str, timeout_s: float = TIMEOUT_S) -> list[tuple[str, str, str]]:
    """Registry with the fault, two providers and a client; returns (kind, severity, node) findings."""
    analysis = await record_scenario(tmp_path, scenario, timeout_s)
    return [(f.kind, f.severity, f.node) for f in analysis.findings]


async def record_scenario(tmp_path: Path, scenario: str, timeout_s: float = TIMEOUT_S) -> Analysis:
    """Record the registry with the fault, two providers and a client, and analyse the recording."""
    played = await play(tmp_path, scenario, timeout_s=timeout_s, capture=False)
    return analyse(open_recording(played.recording))


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_scenario_switched_on_is_recognised_and_explained(name):
    faults = Faults()
    apply_scenario(faults, name)
    assert faults.active_scenario() == name
    assert Faults.from_names(faults.names()).active_scenario() == name  # as a viewer reads it back
    assert SCENARIO_HELP[name]
    assert bool(faults.names()) == (name != "healthy")


async def test_a_blackhole_switched_on_live_silences_the_node_until_switched_off(make_nodes):
    registry, client = await make_nodes(2, bootstrap=False, request_timeout_s=1.0)
    registry.faults.blackhole_after_s = 0.0
    assert await client.ping(("127.0.0.1", registry.port)) > 0
    registry.set_scenario("blackhole")
    with pytest.raises(NodeError, match="timed out"):
        await client.ping(("127.0.0.1", registry.port))
    registry.set_scenario("healthy")
    assert await client.ping(("127.0.0.1", registry.port)) > 0  # the same connection carries on
    registry.faults.blackhole_after_s = 60.0
    registry.set_scenario("blackhole")  # on again: silent only once its own delay has passed
    assert await client.ping(("127.0.0.1", registry.port)) > 0


async def test_healthy_recording_has_no_error_finding(tmp_path):
    # The default request timeout: on a loaded machine the faults' short one could time a
    # healthy request out, and that would rightly be an error finding.
    findings = await run_scenario(tmp_path, "healthy", timeout_s=REQUEST_TIMEOUT_S)
    assert [f for f in findings if f[1] == "error"] == []


@pytest.mark.parametrize(
    "scenario, kind",
    [
        ("no-accept", "stream_not_delivered"),
        ("stall", "no_response"),
        ("alpn-mismatch", "alpn_mismatch"),
    ],
)
async def test_fault_on_the_registry_is_named_on_the_registry(tmp_path, scenario, kind):
    findings = await run_scenario(tmp_path, scenario)
    assert (kind, "error", "registry") in findings


async def test_loss_on_the_registry_is_named(tmp_path):
    findings = await run_scenario(tmp_path, "loss")
    assert any(k == "packet_loss" and "registry" in node for k, _, node in findings)


async def test_stream_limit_names_the_blocked_connection(tmp_path):
    findings = await run_scenario(tmp_path, "stream-limit")  # PING bursts past the credit: see play()
    assert ("stream_limit_exhausted", "error", "client") in findings


async def test_a_certificate_its_peers_refuse_is_named_on_the_registry(tmp_path):
    analysis = await record_scenario(tmp_path, "bad-certificate")
    failed = [f for f in analysis.findings if f.kind == "handshake_failed"]
    assert [(f.node, f.severity) for f in failed] == [("registry", ERROR)]
    assert "TLS alert 45 (certificate expired)" in failed[0].summary
    assert all(f.caused_by == failed[0].id for f in analysis.findings if f is not failed[0] and f.severity != INFO)


async def test_loss_of_what_the_registry_sends_is_named_on_its_sending_direction(tmp_path):
    analysis = await record_scenario(tmp_path, "one-way-loss")
    loss = [f for f in analysis.findings if f.kind == "packet_loss" and f.severity != INFO]
    assert [(f.node, f.direction) for f in loss] == [("registry", "sent")]


async def _recorded(tmp_path: Path, nodes: list[Node], work) -> Analysis:  # type: ignore[no-untyped-def]
    for node in nodes:
        await node.start()
    try:
        await work(*nodes)
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))
    return analyse(open_recording(tmp_path))


def _node(tmp_path: Path, name: str, faults: Faults | None = None, timeout_s: float = REQUEST_TIMEOUT_S) -> Node:
    return Node(name=name, faults=faults, request_timeout_s=timeout_s, recorder=NodeRecorder(tmp_path, name, "", name))


@pytest.mark.slow
async def test_a_registry_that_reads_slowly_and_grants_little_credit_is_named_flow_control_blocked(tmp_path):
    async def work(registry: Node, provider: Node) -> None:
        await provider.bootstrap([("127.0.0.1", registry.port)])
        report = await provider.advertise("calculator", "127.0.0.1:9001")  # a STORE larger than the window
        assert report.replicas == 2  # slow, not broken: the STORE got through once credit grew

    analysis = await _recorded(
        tmp_path, [_node(tmp_path, "registry", Faults.for_scenario("flow-control")), _node(tmp_path, "provider")], work
    )
    blocked = [f for f in analysis.findings if f.kind == "flow_control_blocked"]
    assert [(f.node, f.peer) for f in blocked] == [("registry", "provider")]
    assert "MAX_STREAM_DATA" in blocked[0].summary
    assert not [f for f in analysis.findings if f.severity == ERROR]


@pytest.mark.slow
async def test_a_registry_that_goes_silent_mid_run_is_named_unresponsive(tmp_path):
    faults = Faults.for_scenario("blackhole")
    faults.blackhole_after_s = 0.5

    async def work(registry: Node, client: Node) -> None:
        await client.ping(("127.0.0.1", registry.port))  # answered: the silence begins later
        await asyncio.sleep(faults.blackhole_after_s)
        with pytest.raises(NodeError):
            await client.ping(("127.0.0.1", registry.port))
        await asyncio.sleep(3.0)  # the client's PTO probes go unanswered: what the analysis reads

    analysis = await _recorded(
        tmp_path, [_node(tmp_path, "registry", faults), _node(tmp_path, "client", timeout_s=1.0)], work
    )
    silent = [f for f in analysis.findings if f.kind in ("peer_unresponsive", "connection_stalled")]
    assert [(f.kind, f.node) for f in silent] == [("peer_unresponsive", "registry")]
    assert "PTO backoff" in silent[0].summary
    assert all(f.caused_by == silent[0].id for f in analysis.findings if f is not silent[0] and f.severity != INFO)
