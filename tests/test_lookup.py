"""Lookup: the iterative FIND_NODE / FIND_VALUE state machine, driven by hand and over a small network."""

from __future__ import annotations

import random
from functools import cache

import pytest

from dhtscope.node.constants import ALPHA, K
from dhtscope.node.ids import Contact, NodeId
from dhtscope.node.lookup import Hop, Lookup, LookupResult
from dhtscope.node.routing import RoutingTable


def contact(value: int) -> Contact:
    return Contact(NodeId(value), "10.0.0.1", 4000 + value % 1000)


@cache
def small_net(n: int, seed: int) -> SmallNet:
    """Built once per (n, seed): driving lookups never changes the tables."""
    return SmallNet(n, seed)


class SmallNet:
    """Nodes whose tables saw every other node (k-buckets keep what fits)."""

    def __init__(self, n: int, seed: int) -> None:
        rng = random.Random(seed)
        self.contacts = [Contact(NodeId.random(rng), "10.0.0.1", 4433) for _ in range(n)]
        self.by_id = {c.node_id: c for c in self.contacts}
        self.tables = {c.node_id: RoutingTable(c.node_id) for c in self.contacts}
        for table in self.tables.values():
            for c in rng.sample(self.contacts, n):
                table.seen(c, 0.0)

    def true_closest(self, target: NodeId, count: int, skip: set[NodeId] = frozenset()) -> list[Contact]:
        live = [c for c in self.contacts if c.node_id not in skip]
        return sorted(live, key=lambda c: c.node_id.distance(target))[:count]

    def run(
        self,
        lookup: Lookup,
        rng: random.Random,
        dead: set[NodeId] = frozenset(),
        values: dict[NodeId, list[str]] | None = None,
        returned_count: int = K,
    ) -> int:
        """Answer queries in random order; return the most queries ever in flight."""
        now = 0.0
        in_flight: list[Contact] = []
        most = 0
        while not lookup.done:
            in_flight += lookup.next_queries(now)
            most = max(most, len(in_flight), lookup.in_flight)
            if not in_flight:
                break
            c = in_flight.pop(rng.randrange(len(in_flight)))
            now += 0.01
            if c.node_id in dead:
                lookup.on_failure(c, now, "timeout")
            else:
                returned = self.tables[c.node_id].closest(lookup.target, returned_count)
                lookup.on_response(c, now, returned, (values or {}).get(c.node_id))
        return most


# -- convergence on a small network -------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_find_node_converges_to_the_true_k_closest(seed: int) -> None:
    net = small_net(250, seed)
    rng = random.Random(seed)
    origin = net.contacts[0]
    target = NodeId.random(rng)
    lookup = Lookup(target, net.tables[origin.node_id].closest(target, K), "find_node", 0.0, self_id=origin.node_id)
    net.run(lookup, rng)
    result = lookup.result()
    expected = net.true_closest(target, K, skip={origin.node_id})
    assert list(result.closest) == expected
    assert result.found is True
    assert result.failed == 0
    assert result.messages == len(result.hops) >= K
    assert origin not in [h.contact for h in result.hops]


def test_lookup_respects_alpha_with_answers_out_of_order() -> None:
    net = small_net(250, 1)
    rng = random.Random(7)
    origin = net.contacts[5]
    target = NodeId.random(rng)
    for alpha in (1, 2, ALPHA, 5):
        lookup = Lookup(target, net.tables[origin.node_id].closest(target, K), "find_node", 0.0, alpha=alpha)
        most = net.run(lookup, rng)
        assert most == alpha
        assert list(lookup.result().closest) == net.true_closest(target, K)


def test_next_queries_gives_nothing_more_while_alpha_are_in_flight() -> None:
    seeds = [contact(v) for v in range(1, 11)]
    lookup = Lookup(NodeId(0), seeds, "find_node", 0.0, alpha=3)
    first = lookup.next_queries(0.0)
    assert first == seeds[:3]  # nearest first
    assert lookup.next_queries(0.1) == []
    lookup.on_response(first[1], 0.2, [])
    assert lookup.next_queries(0.3) == [seeds[3]]
    assert lookup.in_flight == 3


# -- failures -----------------------------------------------------------


def test_lookup_routes_around_dead_nodes_and_never_retries_them() -> None:
    net = small_net(250, 11)
    rng = random.Random(11)
    origin = net.contacts[0]
    target = NodeId.random(rng)
    # Kill the 5 nodes truly closest to the target: the lookup must find the next ones.
    dead = {c.node_id for c in net.true_closest(target, 5, skip={origin.node_id})}
    lookup = Lookup(target, net.tables[origin.node_id].closest(target, K), "find_node", 0.0, self_id=origin.node_id)
    # Responders do not know who is dead; with only k contacts per answer the 5
    # dead would crowd out the 16th..20th live nodes, so answers carry 2k.
    net.run(lookup, rng, dead=dead, returned_count=2 * K)
    result = lookup.result()
    assert list(result.closest) == net.true_closest(target, K, skip=dead | {origin.node_id})
    failed_hops = [h for h in result.hops if h.error is not None]
    assert result.failed == len(failed_hops) == 5
    assert {h.contact.node_id for h in failed_hops} == dead
    assert all(h.rtt_s is None and h.returned == () for h in failed_hops)
    asked = [h.contact.node_id for h in result.hops]
    assert len(asked) == len(set(asked))


def test_lookup_ends_when_every_seed_fails() -> None:
    seeds = [contact(v) for v in (1, 2, 3, 4)]
    lookup = Lookup(NodeId(0), seeds, "find_node", 0.0, alpha=2)
    while not lookup.done:
        queries = lookup.next_queries(1.0)
        assert queries
        for c in queries:
            lookup.on_failure(c, 6.0, "timeout")
    result = lookup.result()
    assert result.found is False
    assert result.failed == 4 and result.messages == 4
    assert result.closest == () and result.rounds == 0
    assert lookup.next_queries(7.0) == []


def test_empty_seeds_is_done_at_once_and_found_nothing() -> None:
    lookup = Lookup(NodeId(5), [], "find_value", 0.0)
    assert lookup.done
    assert lookup.next_queries(0.0) == []
    result = lookup.result()
    assert result.found is False and result.messages == 0 and result.values == ()


def test_reporting_a_contact_that_was_not_queried_is_an_error() -> None:
    seeds = [contact(1), contact(2)]
    lookup = Lookup(NodeId(0), seeds, "find_node", 0.0, alpha=1)
    lookup.next_queries(0.0)
    with pytest.raises(ValueError, match="in flight"):
        lookup.on_response(contact(2), 1.0, [])
    lookup.on_response(contact(1), 1.0, [])
    with pytest.raises(ValueError):
        lookup.on_failure(contact(1), 1.0, "twice")


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        Lookup(NodeId(0), [], "find_everything", 0.0)
    with pytest.raises(ValueError):
        Lookup(NodeId(0), [], "find_node", 0.0, value_quorum=1)
    with pytest.raises(ValueError):
        Lookup(NodeId(0), [], "find_value", 0.0, value_quorum=0)


# -- self and termination -----------------------------------------------


def test_lookup_never_queries_self_even_when_others_return_it() -> None:
    me = contact(3)
    seeds = [me, contact(1), contact(2)]
    lookup = Lookup(NodeId(0), seeds, "find_node", 0.0, self_id=me.node_id)
    asked = []
    while not lookup.done:
        for c in lookup.next_queries(0.0):
            asked.append(c)
            lookup.on_response(c, 0.1, [me, contact(4)])
    assert me not in asked
    assert me not in lookup.result().closest
    assert set(asked) == {contact(1), contact(2), contact(4)}


def test_done_once_the_k_closest_answered_even_if_farther_queries_are_in_flight() -> None:
    far = [contact(v) for v in (100, 101)]
    lookup = Lookup(NodeId(0), far, "find_node", 0.0, k=2, alpha=2)
    assert lookup.next_queries(0.0) == far
    # The first answer reveals two much closer nodes.
    lookup.on_response(far[0], 0.1, [contact(1), contact(2)])
    assert not lookup.done
    assert lookup.next_queries(0.1) == [contact(1)]  # alpha is full again: far[1] is in flight
    lookup.on_response(contact(1), 0.2, [])
    assert lookup.next_queries(0.2) == [contact(2)]
    lookup.on_response(contact(2), 0.3, [])
    assert lookup.done  # far[1] is still in flight, but no longer among the k closest
    assert lookup.in_flight == 1
    assert lookup.result().closest == (contact(1), contact(2))
    lookup.on_response(far[1], 0.4, [])  # a late answer is still recorded
    assert len(lookup.result().hops) == 4


# -- find_value ---------------------------------------------------------


def test_find_value_stops_at_quorum_and_collects_values() -> None:
    net = small_net(250, 21)
    rng = random.Random(21)
    origin = net.contacts[0]
    key = NodeId.random(rng)
    holders = net.true_closest(key, K, skip={origin.node_id})
    values = {c.node_id: ["endpoint-a", "endpoint-b"] for c in holders}
    lookup = Lookup(
        key, net.tables[origin.node_id].closest(key, K), "find_value", 0.0, self_id=origin.node_id, value_quorum=2
    )
    net.run(lookup, rng, values=values)
    result = lookup.result()
    assert lookup.done
    assert result.found is True
    assert result.values == ("endpoint-a", "endpoint-b")  # de-duplicated, first-seen order
    with_values = [h for h in result.hops if h.values]
    assert len(with_values) == 2
    assert all(h.values == 2 for h in with_values)
    assert result.messages < K  # stopped well before asking all k closest
    assert lookup.next_queries(9.0) == []


def test_find_value_without_quorum_asks_all_k_closest_and_merges_values() -> None:
    seeds = [contact(v) for v in (1, 2, 3, 4)]
    lookup = Lookup(NodeId(0), seeds, "find_value", 0.0, k=4, alpha=4, value_key=lambda v: v["id"])
    answers = {
        1: [{"id": "a", "n": 1}],
        2: [{"id": "b", "n": 2}, {"id": "a", "n": 3}],
        3: [],
        4: None,
    }
    for c in lookup.next_queries(0.0):
        lookup.on_response(c, 0.5, [], answers[c.node_id.value])
    assert lookup.done
    result = lookup.result()
    assert result.values == ({"id": "a", "n": 1}, {"id": "b", "n": 2})
    assert result.found is True and result.messages == 4


def test_find_value_that_finds_nothing_is_not_found() -> None:
    seeds = [contact(v) for v in (1, 2)]
    lookup = Lookup(NodeId(0), seeds, "find_value", 0.0, value_quorum=1)
    for c in lookup.next_queries(0.0):
        lookup.on_response(c, 0.5, [])
    assert lookup.done
    result = lookup.result()
    assert result.found is False and result.values == ()
    assert result.closest == tuple(seeds)


# -- hops and rounds ----------------------------------------------------


def test_hops_record_round_rtt_and_what_came_back() -> None:
    a, b = contact(0b1000), contact(0b1001)
    lookup = Lookup(NodeId(0), [a, b], "find_node", 10.0, k=3, alpha=2)
    assert lookup.next_queries(10.0) == [a, b]
    c1, c2 = contact(0b0100), contact(0b0010)
    lookup.on_response(a, 10.25, [c1])
    assert lookup.next_queries(10.25) == [c1]
    lookup.on_response(c1, 10.5, [c2])
    # c2 learned from a round-2 answer is round 3, but b now also returns it: round 2 wins.
    lookup.on_response(b, 11.0, [c2])
    assert lookup.next_queries(11.0) == [c2]
    lookup.on_failure(c2, 16.0, "timeout")
    assert lookup.done
    result = lookup.result()
    assert isinstance(result, LookupResult)
    assert result.hops == (
        Hop(1, a, 10.0, 0.25, (c1,), 0, None),
        Hop(2, c1, 10.25, 0.25, (c2,), 0, None),
        Hop(1, b, 10.0, 1.0, (c2,), 0, None),
        Hop(2, c2, 11.0, None, (), 0, "timeout"),
    )
    assert result.rounds == 2  # c2 failed, so round 2 is the deepest that answered
    assert result.closest == (c1, a, b)
    assert result.messages == 4 and result.failed == 1


def test_rounds_grow_with_the_distance_travelled() -> None:
    # A chain: each node only knows the next one, one bit closer to the target.
    chain = [contact(1 << n) for n in range(8, 0, -1)]
    lookup = Lookup(NodeId(0), chain[:1], "find_node", 0.0, k=1, alpha=1)
    position = {c: i for i, c in enumerate(chain)}
    while not lookup.done:
        for c in lookup.next_queries(0.0):
            i = position[c]
            lookup.on_response(c, 0.0, chain[i + 1 : i + 2])
    result = lookup.result()
    assert result.rounds == len(chain)
    assert [h.round for h in result.hops] == list(range(1, len(chain) + 1))
    assert result.closest == (chain[-1],)


def test_packed_answers_build_only_the_contacts_the_lookup_does_not_know(monkeypatch):
    from dhtscope.node import ids
    from dhtscope.node.wire import FRAME_HEADER_BYTES, Nodes, decode, encode

    built = []
    real = ids.unpack_contact
    monkeypatch.setattr(ids, "unpack_contact", lambda item: built.append(1) or real(item))
    target = NodeId(1 << 200)
    seeds = [contact(v) for v in range(1, 4)]
    lookup = Lookup(target, seeds, "find_node", 0.0)
    asked = lookup.next_queries(0.0)
    # Each answer repeats the three seeds and brings two new contacts.
    for i, peer in enumerate(asked):
        fresh = [contact(100 + 10 * i), contact(101 + 10 * i)]
        answer = decode(encode(Nodes(1, contacts=tuple(seeds + fresh)))[FRAME_HEADER_BYTES:])
        lookup.on_response(peer, 0.1, answer.contacts)
    assert len(built) == 6  # the two new ones of each answer; the repeated seeds never
    known = {c.node_id.value for c, _ in lookup.shortlist()}
    assert known == {1, 2, 3, 100, 101, 110, 111, 120, 121}
    assert lookup.hops[0].returned == tuple(seeds) + (contact(100), contact(101))
