"""What a probe or an advertisement reports: numbers that can be true, read the same in every front end."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dhtscope.node.cli import print_probe
from dhtscope.node.control import run_probe
from dhtscope.node.probes import lookup_summary, store_summary
from dhtscope.node.service import ServiceOptions, _work


def test_store_summary_counts_the_closest_found_and_this_node_apart() -> None:
    assert store_summary(4, 4, True) == "stored on 4 of the 4 closest nodes found, and on this node itself"
    assert store_summary(0, 1, False) == "stored on 0 of the 1 closest node found"


def test_lookup_summary_counts_every_round_the_hops_show() -> None:
    hops = [{"round": 1, "rtt_ms": 2.0}, {"round": 1, "rtt_ms": 2.5}, {"round": 2, "rtt_ms": None}]
    # The lookup itself counts only answered rounds (1); the table of hops shows round 2.
    assert lookup_summary(1, hops, 3) == "2 rounds (no answer in round 2), 3 messages"
    assert lookup_summary(1, hops[:1], 1) == "1 round, 1 message"


async def test_a_store_probe_on_a_node_that_keeps_a_copy_reports_both_plainly(
    make_nodes: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes = await make_nodes(5)
    result = await run_probe(nodes[0], "store", ["mykey", "myvalue"])
    assert result["stored_locally"]  # fewer than k nodes: every node, this one too, keeps it
    assert result["accepted"] == result["targets"] == 4
    assert result["replicas"] == 5  # what once read "stored on 5 of 4"
    result["elapsed_ms"] = 1.0
    print_probe(result)
    out = capsys.readouterr().out
    assert "stored on 4 of the 4 closest nodes found, and on this node itself" in out
    assert "5 of 4" not in out


async def test_advertise_reports_the_closest_found_and_this_node_apart(make_nodes: Any) -> None:
    registry, other = await make_nodes(2)
    provider = (await make_nodes(1, bootstrap=False))[0]
    await provider.bootstrap([("127.0.0.1", registry.port)])
    lines: list[str] = []
    opts = ServiceOptions(listen=("127.0.0.1", 0), advertise=[("calculator", "127.0.0.1:9001")])
    await asyncio.wait_for(_work(provider, opts, lambda event, text, **data: lines.append(text), asyncio.Event()), 10)
    assert lines == [
        "advertised calculator=127.0.0.1:9001: stored on 2 of the 2 closest nodes found, and on this node itself"
    ]
