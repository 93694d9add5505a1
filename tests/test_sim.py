"""The simulated network: converged tables, lookups under churn and loss, determinism."""

from __future__ import annotations

import random

import pytest

from dhtscope.node.constants import K
from dhtscope.node.ids import NodeId
from dhtscope.node.sim import SimNetwork, run_simulation

TIMING = ("build_s", "lookup_s")


def untimed(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in TIMING}


def test_every_lookup_succeeds_in_few_rounds_on_a_stable_network() -> None:
    result = run_simulation(2000, 200, seed=1)
    assert result["success_rate"] == 1.0
    assert result["median_rounds"] <= 4
    assert result["p95_rounds"] <= 6
    assert 1 <= result["median_messages"] <= 3 * K
    assert result["mean_hops_failed"] == 0.0
    for key in (
        "nodes",
        "lookups",
        "churn",
        "loss",
        "seed",
        "success_rate",
        "median_rounds",
        "p95_rounds",
        "median_messages",
        "p95_messages",
        "mean_hops_failed",
        "build_s",
        "lookup_s",
        "log2_nodes",
    ):
        assert key in result
    assert result["nodes"] == 2000 and result["lookups"] == 200
    assert result["log2_nodes"] == pytest.approx(10.97, abs=0.01)


def test_lookups_survive_a_fifth_of_nodes_going_offline() -> None:
    result = run_simulation(2000, 200, churn=0.2, seed=1)
    assert result["offline"] == 400
    assert result["success_rate"] >= 0.99
    assert result["mean_hops_failed"] > 0  # dead contacts were in the tables and got asked


def test_lookups_survive_packet_loss() -> None:
    result = run_simulation(1000, 100, loss=0.3, seed=2)
    assert result["success_rate"] >= 0.97
    assert result["mean_hops_failed"] > 0


def test_same_seed_gives_same_figures_and_another_seed_differs() -> None:
    a = run_simulation(400, 60, churn=0.1, loss=0.05, seed=5)
    b = run_simulation(400, 60, churn=0.1, loss=0.05, seed=5)
    c = run_simulation(400, 60, churn=0.1, loss=0.05, seed=6)
    assert untimed(a) == untimed(b)
    assert untimed(a) != untimed(c)


def test_network_built_by_joining_one_node_at_a_time_also_finds_values() -> None:
    result = run_simulation(150, 40, seed=3, build="join")
    assert result["build"] == "join"
    assert result["success_rate"] == 1.0


def test_converged_tables_hold_min_k_and_range_nodes_per_bucket() -> None:
    rng = random.Random(4)
    net = SimNetwork([rng.getrandbits(256) for _ in range(300)], k=8)
    net.build_converged(random.Random(9))
    values = net.values
    for x, table in zip(values, net.tables, strict=True):
        me = NodeId(x)
        per_bucket: dict[int, int] = {}
        for v in values:
            if v != x:
                i = me.bucket_index(NodeId(v))
                per_bucket[i] = per_bucket.get(i, 0) + 1
        got = {snap.index: len(snap.contacts) for snap in table.buckets()}
        assert got == {i: min(8, n) for i, n in per_bucket.items()}
        assert all(me.bucket_index(e.contact.node_id) == s.index for s in table.buckets() for e in s.contacts)


def test_true_closest_matches_brute_force_and_skips_offline_nodes() -> None:
    rng = random.Random(8)
    net = SimNetwork([rng.getrandbits(256) for _ in range(500)])
    net.churn(0.3, random.Random(1))
    for _ in range(20):
        key = rng.getrandbits(256)
        everyone = sorted(range(len(net)), key=lambda j: net.values[j] ^ key)
        assert net.true_closest(key, K) == everyone[:K]
        live = [j for j in everyone if net.online[j]]
        assert net.true_closest(key, K, live_only=True) == live[:K]


def test_lookup_from_a_node_finds_the_value_stored_at_the_k_closest() -> None:
    rng = random.Random(12)
    net = SimNetwork([rng.getrandbits(256) for _ in range(500)])
    net.build_converged(random.Random(1))
    key = NodeId(rng.getrandbits(256))
    holders = net.store(key.value)
    origin = next(j for j in range(len(net)) if j not in holders)
    result = net.lookup(origin, key, "find_value", value_quorum=1)
    assert result.found
    assert result.values == (f"value:{key.hex()}",)
    assert any(net.index[h.contact.node_id.value] in holders for h in result.hops if h.values)
    # find_node to the same key ends at exactly the true k closest.
    result = net.lookup(origin, key, "find_node")
    assert sorted(net.index[c.node_id.value] for c in result.closest) == sorted(holders)


def test_querier_evicts_offline_contacts_it_asked() -> None:
    rng = random.Random(13)
    net = SimNetwork([rng.getrandbits(256) for _ in range(400)])
    net.build_converged(random.Random(2))
    offline = set(net.churn(0.5, random.Random(3)))
    origin = next(j for j in range(len(net)) if j not in offline)
    result = net.lookup(origin, NodeId(rng.getrandbits(256)), "find_node")
    failed = [h.contact for h in result.hops if h.error is not None]
    assert failed
    assert all(net.index[c.node_id.value] in offline for c in failed)
    assert all(c.node_id not in net.tables[origin] for c in failed)
    assert all(net.online[net.index[c.node_id.value]] for c in result.closest)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(nodes=0, lookups=1),
        dict(nodes=10, lookups=-1),
        dict(nodes=10, lookups=1, churn=1.0),
        dict(nodes=10, lookups=1, loss=-0.1),
        dict(nodes=10, lookups=1, build="magic"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        run_simulation(**kwargs)


def test_tiny_network_where_everyone_holds_the_value() -> None:
    result = run_simulation(5, 3, seed=1)
    assert result["success_rate"] == 1.0
    assert result["median_messages"] == 0
