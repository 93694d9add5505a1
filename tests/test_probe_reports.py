"""What a probe or an advertisement reports: numbers that can be true, read the same in every front end."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from dhtscope.node.cli import print_probe
from dhtscope.node.control import run_probe
from dhtscope.node.probes import (
    KnownNode,
    ProbeError,
    lookup_summary,
    name_probe_target,
    resolve_node,
    store_summary,
)
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


KNOWN = [
    KnownNode("5a130cba" + "0" * 56, "registry", "127.0.0.1:4500"),
    KnownNode("5a13ffff" + "1" * 56, None, "127.0.0.1:4501"),
    KnownNode("77aa0000" + "2" * 56, "client", "127.0.0.1:4502"),
]


def test_a_node_is_named_by_name_full_id_or_unique_id_prefix() -> None:
    assert resolve_node("registry", KNOWN).node == KNOWN[0]
    assert resolve_node(KNOWN[2].node_id.upper(), KNOWN).node == KNOWN[2]
    ref = resolve_node("5a130cba", KNOWN)
    assert (ref.how, ref.node_id) == ("prefix", KNOWN[0].node_id)
    assert ref.note() == "5a130cba is the id prefix of registry 5a130cba… at 127.0.0.1:4500"
    with pytest.raises(ProbeError) as exc:
        resolve_node("5a13", KNOWN)
    assert "id prefix 5a13 matches 2 nodes" in str(exc.value)
    assert "registry 5a130cba…" in str(exc.value) and "5a13ffff…" in str(exc.value)
    hashed = resolve_node("calculator", KNOWN)
    assert hashed.how == "hashed" and hashed.node_id == hashlib.sha256(b"calculator").hexdigest()
    assert "hashed as a name" in hashed.note()
    assert resolve_node("5a1", KNOWN).how == "hashed"  # too short to name one node


def test_the_tui_and_the_node_resolve_ping_and_find_node_targets_alike() -> None:
    assert name_probe_target("ping", ["registry"], KNOWN)[0] == ["127.0.0.1:4500"]
    assert name_probe_target("ping", ["127.0.0.1:9"], KNOWN) == (["127.0.0.1:9"], None)
    assert name_probe_target("find_node", ["77aa"], KNOWN)[0] == [KNOWN[2].node_id]
    with pytest.raises(ProbeError, match="no known node"):
        name_probe_target("ping", ["nobody"], KNOWN)
    assert name_probe_target("find_value", ["5a13"], KNOWN) == (["5a13"], None)  # keys stay keys


@pytest.fixture
def running_node() -> Iterator[dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dhtscope.node", "--listen", "127.0.0.1:0", "--json-lines", "--exit-on-stdin-eof"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    yield json.loads(proc.stdout.readline())
    proc.terminate()
    proc.wait(10)


def test_probe_find_node_with_an_id_prefix_finds_that_node_not_a_hash(
    running_node: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from dhtscope.tui.cli import main

    prefix = running_node["id"][:8]
    assert main(["probe", "--to", running_node["address"], "find-node", prefix]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"{prefix} is the id prefix of {prefix}…")
    assert main(["probe", "--to", running_node["address"], "--json", "find-node", "calculator"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["resolved_as"] == "hashed" and "hashed as a name" in result["target_note"]
