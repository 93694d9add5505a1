"""Each fault scenario, recorded in-process over real QUIC, is named by the analysis on the right node."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dhtscope.node.constants import REQUEST_TIMEOUT_S
from dhtscope.node.node import Node, NodeError
from dhtscope.node.recording import NodeRecorder
from dhtscope.node.scenarios import STREAM_LIMIT_SCENARIO_STREAMS, Faults
from dhtscope.tracing.analysis import analyse
from dhtscope.tracing.reader import open_recording

TIMEOUT_S = 0.5


async def run_scenario(
    tmp_path: Path, scenario: str, pings: int = 0, timeout_s: float = TIMEOUT_S
) -> list[tuple[str, str, str]]:
    """Registry with the fault, two providers and a client; returns (kind, severity, node) findings."""
    names = ["registry", "provider1", "provider2", "client"]
    nodes = [
        Node(
            name=n,
            role=n.rstrip("12"),
            request_timeout_s=timeout_s,
            faults=Faults.for_scenario(scenario) if n == "registry" else None,
            recorder=NodeRecorder(tmp_path, n, "", n),
        )
        for n in names
    ]
    for node in nodes:
        await node.start()
    registry, *others = nodes
    try:
        for node in others:
            try:
                await node.bootstrap([("127.0.0.1", registry.port)])
            except NodeError:
                pass  # the fault may make joining impossible: that is what is recorded
        for i, provider in enumerate(others[:2], start=1):
            try:
                await provider.advertise("calculator", f"127.0.0.1:{9000 + i}")
            except NodeError:
                pass
        client = others[-1]
        for _ in range(pings):
            try:
                await client.ping(("127.0.0.1", registry.port))
            except NodeError:
                break
        try:
            await client.discover("calculator")
        except NodeError:
            pass
        await asyncio.sleep(1.2)  # let the recording show what did not happen
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))
    analysis = analyse(open_recording(tmp_path))
    return [(f.kind, f.severity, f.node) for f in analysis.findings]


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
    findings = await run_scenario(tmp_path, "stream-limit", pings=STREAM_LIMIT_SCENARIO_STREAMS + 12)
    assert ("stream_limit_exhausted", "error", "client") in findings
