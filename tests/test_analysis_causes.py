"""Root causes first: stable ids, caused_by where the traces show the link, roots before consequences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.traces import (
    MANIFEST,
    End,
    NodeLog,
    deliver,
    node_started,
    only,
    recording,
    rpc,
    seed_bug_with_node_logs,
    start,
)

from dhtscope.tracing.analysis import INFO, WARNING, Finding, analyse
from dhtscope.tracing.analysis.causes import assign_ids, link, root_first
from dhtscope.tracing.reader import open_recording
from dhtscope.tracing.report import render_json

RECORDINGS = Path(__file__).resolve().parents[1] / "recordings"


def test_consequences_point_at_the_root_and_follow_it() -> None:
    a = analyse(recording(*seed_bug_with_node_logs(), nodes=MANIFEST))
    root = only(a, "stream_not_delivered")
    assert root.caused_by is None and root.id == "stream_not_delivered/registry"
    timeout = only(a, "rpc_timeout")
    assert timeout.caused_by == root.id  # the same streams
    isolated = [f for f in a.findings if f.kind == "isolated"]
    assert {f.node for f in isolated} == {"registry", "provider1"}
    assert all(f.caused_by == root.id for f in isolated)
    # the root comes first and its consequences right after it
    assert a.findings[0] is root
    assert a.consequences(root) == a.findings[1 : 1 + len(a.consequences(root))]
    assert a.roots() == [root]
    assert a.summary()["root_causes"] == [root.id]


def test_ids_are_unique_and_stable_and_json_carries_the_links() -> None:
    a = analyse(recording(*seed_bug_with_node_logs(), nodes=MANIFEST))
    b = analyse(recording(*seed_bug_with_node_logs(), nodes=MANIFEST))
    assert [f.id for f in a.findings] == [f.id for f in b.findings]
    assert len({f.id for f in a.findings}) == len(a.findings)
    doc = json.loads(render_json(a))
    by_id = {f["id"]: f for f in doc["findings"]}
    assert all("caused_by" in f for f in doc["findings"])
    assert all(f["caused_by"] is None or f["caused_by"] in by_id for f in doc["findings"])
    assert doc["summary"]["root_causes"] == ["stream_not_delivered/registry"]


def test_an_unrelated_finding_stays_its_own_root() -> None:
    # a stale contact on a node that no other finding touches has nothing to point at
    p1 = NodeLog("provider9")
    node_started(p1, 0)
    p1.log(10, "dht:routing_updated", {"action": "added", "peer_id": "gone-id", "address": "x", "bucket": 1})
    p1.log(
        100,
        "dht:lookup_round",
        {"lookup_id": "x", "round": 1, "peer_id": "gone-id", "rtt_ms": None, "returned": [], "error": "timed out"},
    )
    p1.log(3000, "dht:record_expired", {"key": "00", "publisher": "11"})
    ends = seed_bug_with_node_logs()
    a = analyse(recording(*ends, p1, nodes=MANIFEST))
    stale = only(a, "stale_contacts")
    assert stale.caused_by is None
    assert {"stream_not_delivered/registry", stale.id} <= set(a.summary()["root_causes"])
    assert a.findings[0].id == "stream_not_delivered/registry"  # the error's tree comes first


def test_a_timeout_behind_exhausted_stream_credit_is_its_consequence() -> None:
    c, s = End("client", "client", "sl01"), End("registry", "server", "sl01")
    start(c, s)
    for i in range(3):
        rpc(c, s, 10 + 10 * i, 4 * i, fin_back=False, rid=i)
    deliver(c, s, 100, {"frame_type": "streams_blocked", "limit": 3, "stream_type": "bidirectional"})
    c.log(100, "dht:rpc_sent", {"stream_id": 12, "type": "PING", "request_id": 9, "peer_id": "registry-id"})
    c.log(2100, "dht:rpc_timeout", {"stream_id": 12, "type": "PING", "request_id": 9, "peer_id": "registry-id"})
    a = analyse(recording(c, s))
    root = only(a, "stream_limit_exhausted")
    assert only(a, "rpc_timeout").caused_by == root.id


def _finding(kind: str, severity: str, node: str, first: float, **kw: object) -> Finding:
    return Finding(kind, severity, node, None, (), first, first + 1, (), "s", "c", **kw)  # type: ignore[arg-type]


def test_links_fold_to_the_root_and_cycles_are_broken() -> None:
    fs = assign_ids(
        [
            _finding("stream_not_delivered", "error", "registry", 0, stream_refs=(("c1", 0),)),
            _finding("rpc_timeout", WARNING, "provider1", 5, peer="registry", stream_refs=(("c1", 0),)),
            _finding("isolated", WARNING, "provider1", 0),
            _finding("application_not_visible", INFO, "x", 0),
        ]
    )
    linked = root_first(link(fs))
    assert [f.kind for f in linked][0] == "stream_not_delivered"
    assert {f.kind: f.caused_by for f in linked} == {
        "stream_not_delivered": None,
        "rpc_timeout": "stream_not_delivered/registry",
        "isolated": "stream_not_delivered/registry",  # via its own timeouts' cause, folded to the root
        "application_not_visible": None,
    }


@pytest.mark.skipif(not (RECORDINGS / "no-accept").is_dir(), reason="committed recordings absent")
def test_the_no_accept_recording_has_one_root_cause_and_everything_else_points_at_it() -> None:
    a = analyse(open_recording(RECORDINGS / "no-accept"))
    doc = json.loads(render_json(a))
    roots = [f for f in doc["findings"] if f["caused_by"] is None and f["severity"] != INFO]
    assert [(f["kind"], f["node"]) for f in roots] == [("stream_not_delivered", "registry")]
    others = [f for f in doc["findings"] if f["severity"] != INFO and f is not roots[0]]
    assert others and all(f["caused_by"] == roots[0]["id"] for f in others)
    # counts agree with the list: streams are (connection, stream id), ids repeating per connection
    assert doc["summary"]["streams"] == doc["streams"]["total"] == roots[0]["stream_count"]
    assert roots[0]["stream_count"] == len(roots[0]["stream_refs"]) > len(set(roots[0]["streams"]))
