"""RoutingTable: k-buckets, LRU eviction only after a failed PING, closest(), refresh."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dhtscope.node.constants import ID_BITS, K
from dhtscope.node.diversity import AddressLimits
from dhtscope.node.ids import Contact, NodeId
from dhtscope.node.routing import BucketSnapshot, RoutingChange, RoutingTable

SELF = NodeId(0x5A5A << (ID_BITS - 16))


def in_bucket(index: int, low: int = 0, self_id: NodeId = SELF) -> NodeId:
    """An id in bucket `index` seen from self_id: bit `index` flipped, `low` in the lower bits."""
    return NodeId(self_id.value ^ (1 << index) ^ (low % (1 << index) if index else 0))


def contact(node_id: NodeId, port: int = 4433, host: str = "10.0.0.1") -> Contact:
    return Contact(node_id, host, port)


def full_bucket(k: int = 3, index: int = 200) -> tuple[RoutingTable, list[Contact]]:
    table = RoutingTable(SELF, k=k)
    members = [contact(in_bucket(index, low=n + 1)) for n in range(k)]
    for t, c in enumerate(members):
        assert table.seen(c, float(t)).action == "added"
    return table, members


# -- seen ---------------------------------------------------------------


def test_seen_adds_a_new_contact_to_its_bucket() -> None:
    table = RoutingTable(SELF)
    c = contact(in_bucket(255, low=7))
    change = table.seen(c, 1.0)
    assert change == RoutingChange("added", c, 255)
    assert len(table) == 1
    assert c.node_id in table
    assert table.get(c.node_id) == c
    assert table.last_seen(c.node_id) == 1.0


def test_seen_never_adds_self() -> None:
    table = RoutingTable(SELF)
    change = table.seen(contact(SELF), 1.0)
    assert change.action == "ignored"
    assert len(table) == 0
    assert SELF not in table
    assert table.buckets() == []


def test_seen_known_contact_moves_to_tail_and_takes_new_address() -> None:
    table, members = full_bucket(k=3)
    moved = contact(members[0].node_id, port=9999)
    change = table.seen(moved, 10.0)
    assert change.action == "updated"
    assert change.previous == members[0]
    assert table.get(moved.node_id) == moved
    assert table.last_seen(moved.node_id) == 10.0
    order = [e.contact for e in table.buckets()[0].contacts]
    assert order == [members[1], members[2], moved]
    assert len(table) == 3


def test_seen_known_contact_same_address_has_no_previous() -> None:
    table, members = full_bucket(k=3)
    change = table.seen(members[1], 5.0)
    assert change.action == "updated" and change.previous is None


# -- full bucket: eviction only after a failed ping ---------------------


def test_full_bucket_caches_newcomer_and_asks_to_ping_oldest() -> None:
    table, members = full_bucket(k=3)
    newcomer = contact(in_bucket(200, low=99))
    change = table.seen(newcomer, 10.0)
    assert change.action == "replacement_cached"
    assert change.ping == members[0]  # least recently seen
    assert newcomer.node_id not in table
    assert members[0].node_id in table
    snap = table.buckets()[0]
    assert [e.contact for e in snap.replacements] == [newcomer]
    assert len(table) == 3


def test_oldest_answering_ping_keeps_its_place_and_newcomer_stays_cached() -> None:
    table, members = full_bucket(k=3)
    newcomer = contact(in_bucket(200, low=99))
    ping = table.seen(newcomer, 10.0).ping
    assert ping is not None
    assert table.seen(ping, 11.0).action == "updated"  # it answered
    assert ping.node_id in table
    assert newcomer.node_id not in table
    snap = table.buckets()[0]
    assert [e.contact for e in snap.contacts] == [members[1], members[2], members[0]]
    assert [e.contact for e in snap.replacements] == [newcomer]
    # The next newcomer now pings the new oldest.
    assert table.seen(contact(in_bucket(200, low=98)), 12.0).ping == members[1]


def test_oldest_failing_ping_is_evicted_and_newcomer_promoted() -> None:
    table, members = full_bucket(k=3)
    newcomer = contact(in_bucket(200, low=99))
    ping = table.seen(newcomer, 10.0).ping
    assert ping is not None
    change = table.failed(ping.node_id, 15.0)
    assert change is not None
    assert change.action == "evicted"
    assert change.contact == members[0]
    assert change.promoted == newcomer
    assert change.bucket == 200
    assert members[0].node_id not in table
    assert newcomer.node_id in table
    assert table.last_seen(newcomer.node_id) == 10.0
    assert table.buckets()[0].replacements == ()
    assert len(table) == 3


def test_promotion_takes_the_most_recently_seen_replacement() -> None:
    table, members = full_bucket(k=3)
    a, b = contact(in_bucket(200, low=50)), contact(in_bucket(200, low=51))
    table.seen(a, 10.0)
    table.seen(b, 11.0)
    table.seen(a, 12.0)  # a seen again: now the most recent candidate
    change = table.failed(members[1].node_id, 13.0)
    assert change is not None and change.promoted == a
    assert [e.contact for e in table.buckets()[0].replacements] == [b]


def test_replacement_cache_is_bounded_and_keeps_the_most_recent() -> None:
    table = RoutingTable(SELF, k=2, replacement_size=3)
    for n in range(2):
        table.seen(contact(in_bucket(100, low=n)), 0.0)
    newcomers = [contact(in_bucket(100, low=10 + n)) for n in range(5)]
    for t, c in enumerate(newcomers):
        table.seen(c, float(t))
    assert [e.contact for e in table.buckets()[0].replacements] == newcomers[-3:]


def test_failed_on_a_replacement_drops_it_from_the_cache() -> None:
    table, _ = full_bucket(k=3)
    newcomer = contact(in_bucket(200, low=99))
    table.seen(newcomer, 10.0)
    change = table.failed(newcomer.node_id, 11.0)
    assert change is not None and change.action == "removed" and change.contact == newcomer
    assert table.buckets()[0].replacements == ()
    assert len(table) == 3


def test_failed_without_replacement_removes_and_promotes_nothing() -> None:
    table = RoutingTable(SELF)
    c = contact(in_bucket(30, low=3))
    table.seen(c, 0.0)
    change = table.failed(c.node_id, 1.0)
    assert change == RoutingChange("evicted", c, 30)
    assert len(table) == 0
    assert table.buckets() == []  # empty buckets are dropped, not kept around


def test_failed_on_unknown_or_self_changes_nothing() -> None:
    table, _ = full_bucket(k=3)
    assert table.failed(in_bucket(17, low=1), 1.0) is None
    assert table.failed(SELF, 1.0) is None
    assert len(table) == 3


def test_failures_before_evict_keeps_contact_until_threshold_and_seen_resets_it() -> None:
    table = RoutingTable(SELF, failures_before_evict=2)
    c = contact(in_bucket(40, low=1))
    table.seen(c, 0.0)
    assert table.failed(c.node_id, 1.0) is None
    assert table.failures(c.node_id) == 1
    table.seen(c, 2.0)  # it answered after all
    assert table.failures(c.node_id) == 0
    assert table.failed(c.node_id, 3.0) is None
    change = table.failed(c.node_id, 4.0)
    assert change is not None and change.action == "evicted"
    assert c.node_id not in table


# -- closest ------------------------------------------------------------


def test_closest_sorts_by_xor_distance_and_honours_count_and_exclude() -> None:
    rng = random.Random(3)
    table = RoutingTable(SELF)
    all_contacts = []
    for _ in range(300):
        c = contact(NodeId.random(rng))
        if table.seen(c, 0.0).action == "added":
            all_contacts.append(c)
    target = NodeId.random(rng)
    expected = sorted(all_contacts, key=lambda c: c.node_id.distance(target))
    assert table.closest(target, 7) == expected[:7]
    assert table.closest(target, 7, exclude=expected[0].node_id) == expected[1:8]
    assert table.closest(target, 0) == []
    assert table.closest(target, 10_000) == expected


def test_closest_to_self_and_to_a_contact_id() -> None:
    table = RoutingTable(SELF)
    cs = [contact(in_bucket(i, low=i * 7919)) for i in (0, 3, 100, 254, 255)]
    for c in cs:
        table.seen(c, 0.0)
    assert table.closest(SELF, 5) == cs  # bucket order is distance order from self
    assert table.closest(cs[2].node_id, 1) == [cs[2]]
    assert table.closest(cs[2].node_id, 1, exclude=cs[2].node_id) != [cs[2]]


def test_empty_table_has_no_closest() -> None:
    assert RoutingTable(SELF).closest(NodeId(1)) == []


# -- refresh ------------------------------------------------------------


def test_stale_buckets_of_fresh_table_is_empty() -> None:
    assert RoutingTable(SELF).stale_buckets(0.0) == []


def test_stale_buckets_covers_nearest_non_empty_bucket_out_to_255() -> None:
    table = RoutingTable(SELF)
    table.seen(contact(in_bucket(250, low=1)), 0.0)
    table.seen(contact(in_bucket(253, low=1)), 0.0)
    assert table.stale_buckets(0.0) == list(range(250, 256))
    table.touch_bucket(252, 100.0)
    table.touch_bucket(255, 100.0)
    assert table.stale_buckets(200.0, refresh_s=600.0) == [250, 251, 253, 254]
    assert table.stale_buckets(700.0, refresh_s=600.0) == list(range(250, 256))
    assert table.buckets()[1].last_touched is None
    with pytest.raises(ValueError):
        table.touch_bucket(256, 0.0)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.integers(0, ID_BITS - 1), st.integers(0, 2**32), st.integers(0, 2**ID_BITS - 1))
def test_random_id_in_bucket_lands_in_that_bucket(index: int, seed: int, self_value: int) -> None:
    table = RoutingTable(NodeId(self_value))
    node_id = table.random_id_in_bucket(index, random.Random(seed))
    assert NodeId(self_value).bucket_index(node_id) == index
    assert table.seen(contact(node_id), 0.0).bucket == index


def test_random_id_in_bucket_varies_in_low_bits() -> None:
    table = RoutingTable(SELF)
    rng = random.Random(1)
    assert len({table.random_id_in_bucket(200, rng) for _ in range(20)}) == 20
    with pytest.raises(ValueError):
        table.random_id_in_bucket(-1, rng)


# -- display ------------------------------------------------------------


def test_buckets_snapshot_lists_non_empty_buckets_nearest_first_with_last_seen() -> None:
    table = RoutingTable(SELF)
    a, b = contact(in_bucket(255, low=1)), contact(in_bucket(9, low=1))
    table.seen(a, 1.0)
    table.seen(b, 2.0)
    snaps = table.buckets()
    assert all(isinstance(s, BucketSnapshot) for s in snaps)
    assert [s.index for s in snaps] == [9, 255]
    assert snaps[0].contacts[0].contact == b and snaps[0].contacts[0].last_seen == 2.0
    assert table.contacts() == [b, a]


# -- properties ---------------------------------------------------------

# Ids clustered in a few buckets so that small buckets fill up and evict.
ids = st.builds(
    lambda index, low: in_bucket(index, low), st.sampled_from([0, 1, 2, 5, 254, 255]), st.integers(0, 2**ID_BITS)
) | st.just(SELF)
ops = st.lists(st.tuples(st.sampled_from(["seen", "failed"]), ids, st.integers(4000, 4010)), max_size=80)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(ops, st.integers(1, 4), st.integers(0, 3), ids)
def test_table_invariants_hold_under_any_sequence_of_seen_and_failed(
    operations: list[tuple[str, NodeId, int]], k: int, replacement_size: int, target: NodeId
) -> None:
    table = RoutingTable(SELF, k=k, replacement_size=replacement_size)
    for t, (op, node_id, port) in enumerate(operations):
        before = len(table)
        if op == "seen":
            change = table.seen(contact(node_id, port), float(t))
            if change.action == "replacement_cached":
                assert change.ping is not None and change.ping.node_id in table
                assert len(table) == before
            if node_id != SELF:
                assert (node_id in table) == (change.action in ("added", "updated"))
        else:
            change = table.failed(node_id, float(t))
            assert node_id not in table
            if change is not None and change.action == "evicted":
                assert len(table) == before - (change.promoted is None)
    snaps = table.buckets()
    everyone = [e.contact for s in snaps for e in s.contacts]
    assert SELF not in table
    assert len(everyone) == len(table) == len(set(c.node_id for c in everyone))
    for snap in snaps:
        assert len(snap.contacts) <= k
        assert len(snap.replacements) <= replacement_size
        assert all(SELF.bucket_index(e.contact.node_id) == snap.index for e in snap.contacts + snap.replacements)
        # LRU order: oldest first.
        assert [e.last_seen for e in snap.contacts] == sorted(e.last_seen for e in snap.contacts)
        assert not ({e.contact.node_id for e in snap.replacements} & {e.contact.node_id for e in snap.contacts})
    expected = sorted(everyone, key=lambda c: c.node_id.distance(target))
    for count in (1, k, K, len(everyone) + 1):
        assert table.closest(target, count) == expected[:count]
    if everyone:
        skip = everyone[0].node_id
        assert table.closest(target, K, exclude=skip) == [c for c in expected if c.node_id != skip][:K]


@settings(derandomize=True, max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**ID_BITS - 1), max_size=120), st.integers(0, 2**ID_BITS - 1))
def test_closest_equals_brute_force_on_uniform_ids(values: list[int], target: int) -> None:
    table = RoutingTable(SELF, k=4)
    for v in values:
        table.seen(contact(NodeId(v)), 0.0)
    everyone = table.contacts()
    t = NodeId(target)
    assert table.closest(t, 10) == sorted(everyone, key=lambda c: c.node_id.distance(t))[:10]


def test_promoted_replacement_takes_its_place_in_last_seen_order() -> None:
    table, members = full_bucket(k=3)  # members seen at 0, 1, 2
    newcomer = contact(in_bucket(200, low=99))
    table.seen(newcomer, 3.0)
    table.seen(members[1], 10.0)  # answered a ping after the newcomer was cached
    table.failed(members[0].node_id, 11.0)
    order = [(e.contact, e.last_seen) for e in table.buckets()[0].contacts]
    assert order == [(members[2], 2.0), (newcomer, 3.0), (members[1], 10.0)]
    # So the next full-bucket ping goes to the truly least recently seen.
    assert table.seen(contact(in_bucket(200, low=98)), 12.0).ping == members[2]


# -- address diversity ----------------------------------------------------------


LIMITS = AddressLimits()


def spread(n: int, start: int = 0) -> list[NodeId]:
    """n ids in distinct far buckets (255 down), so bucket sizes never get in the way."""
    return [in_bucket(255 - (start + i) % 200, low=start + i + 1) for i in range(n)]


def test_thirty_identities_on_one_public_address_get_at_most_the_table_cap() -> None:
    table = RoutingTable(SELF, limits=LIMITS)
    actions = [table.seen(contact(i, port=5000 + n, host="6.6.6.6"), float(n)).action for n, i in enumerate(spread(30))]
    assert actions.count("added") == LIMITS.per_address_per_table
    assert actions.count("refused") == 30 - LIMITS.per_address_per_table
    assert len(table) == LIMITS.per_address_per_table
    change = table.seen(contact(spread(1, 100)[0], host="6.6.6.6"), 99.0)
    assert change.action == "refused" and "6.6.6.6" in change.reason and "per address" in change.reason


def test_one_public_subnet_gets_at_most_the_subnet_cap() -> None:
    table = RoutingTable(SELF, limits=LIMITS)
    ids = spread(40)
    added = [table.seen(contact(i, host=f"6.6.6.{n}"), 0.0).action == "added" for n, i in enumerate(ids)]
    assert sum(added) == LIMITS.per_subnet_per_table
    # IPv6: the /48 is the subnet
    table = RoutingTable(SELF, limits=LIMITS)
    for n, i in enumerate(ids):
        table.seen(contact(i, host=f"2a00:1450:4001:{n:x}::1"), 0.0)
    assert len(table) == LIMITS.per_subnet_per_table


def test_per_bucket_caps_hold_inside_one_bucket() -> None:
    table = RoutingTable(SELF, limits=LIMITS)
    same_bucket = [in_bucket(250, low=n + 1) for n in range(10)]
    by_address = [table.seen(contact(i, port=5000 + n, host="6.6.6.6"), 0.0).action for n, i in enumerate(same_bucket)]
    assert by_address.count("added") == LIMITS.per_address_per_bucket
    table = RoutingTable(SELF, limits=LIMITS)
    by_subnet = [table.seen(contact(i, host=f"7.7.7.{n}"), 0.0).action for n, i in enumerate(same_bucket)]
    assert by_subnet.count("added") == LIMITS.per_subnet_per_bucket


def test_loopback_is_exempt_so_a_local_cluster_of_32_fits() -> None:
    table = RoutingTable(SELF, limits=LIMITS)
    for n, i in enumerate(spread(32)):
        assert table.seen(contact(i, port=4500 + n, host="127.0.0.1"), 0.0).action == "added"
    assert len(table) == 32
    strict = RoutingTable(SELF, limits=AddressLimits(exempt_loopback=False))
    for n, i in enumerate(spread(32)):
        strict.seen(contact(i, port=4500 + n, host="127.0.0.1"), 0.0)
    assert len(strict) == LIMITS.per_address_per_table


def test_private_addresses_are_capped_per_address_but_not_per_subnet() -> None:
    table = RoutingTable(SELF, limits=LIMITS)
    for n, i in enumerate(spread(30)):
        assert table.seen(contact(i, host=f"10.0.0.{n + 1}"), 0.0).action == "added"
    extra = [table.seen(contact(i, port=6000 + n, host="10.0.0.1"), 0.0).action for n, i in enumerate(spread(5, 50))]
    assert extra.count("added") == LIMITS.per_address_per_table - 1


def test_an_evicted_contact_frees_its_address_for_another() -> None:
    table = RoutingTable(SELF, limits=LIMITS)
    ids = spread(LIMITS.per_address_per_table + 1)
    for n, i in enumerate(ids[:-1]):
        table.seen(contact(i, port=5000 + n, host="6.6.6.6"), 0.0)
    assert table.admissible(contact(ids[-1], host="6.6.6.6")) is not None
    table.failed(ids[0], 1.0)
    assert table.admissible(contact(ids[-1], host="6.6.6.6")) is None
    assert table.seen(contact(ids[-1], host="6.6.6.6"), 2.0).action == "added"


def test_a_known_contact_moving_to_a_full_address_is_refused_and_keeps_its_old_one() -> None:
    table = RoutingTable(SELF, limits=LIMITS)
    ids = spread(LIMITS.per_address_per_table + 1)
    for n, i in enumerate(ids[:-1]):
        table.seen(contact(i, port=5000 + n, host="6.6.6.6"), 0.0)
    mover = contact(ids[-1], host="1.2.3.4")
    table.seen(mover, 0.0)
    assert table.seen(contact(ids[-1], host="6.6.6.6"), 1.0).action == "refused"
    assert table.get(ids[-1]) == mover
    # moving to another port of the same address is not a new address
    assert table.seen(contact(ids[-1], port=1, host="1.2.3.4"), 2.0).action == "updated"


def test_promotion_skips_a_replacement_over_the_address_cap() -> None:
    table = RoutingTable(SELF, k=2, limits=LIMITS)
    index = 200
    a, b = (contact(in_bucket(index, low=n + 1), host=f"1.2.{n}.1") for n in range(2))
    table.seen(a, 0.0)
    table.seen(b, 1.0)
    fits = contact(in_bucket(index, low=10), host="5.5.5.5")
    over = contact(in_bucket(index, low=11), host="6.6.6.6")
    assert table.seen(fits, 2.0).action == "replacement_cached"
    assert table.seen(over, 3.0).action == "replacement_cached"  # within the caps when cached
    for n, i in enumerate(spread(LIMITS.per_address_per_table)):  # then 6.6.6.6 fills its share elsewhere
        assert table.seen(contact(i, port=7000 + n, host="6.6.6.6"), 4.0).action == "added"
    change = table.failed(a.node_id, 5.0)
    assert change.promoted == fits  # the most recent candidate is over the cap now
    assert over.node_id not in table


hosts = st.sampled_from(["6.6.6.6", "6.6.6.7", "7.7.7.7", "10.0.0.1", "127.0.0.1", "2a00:1450::1", "2a00:1450::2"])
limited_ops = st.lists(st.tuples(st.sampled_from(["seen", "failed"]), ids, hosts, st.integers(4000, 4003)), max_size=80)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(limited_ops, st.integers(1, 4), st.integers(0, 3))
def test_address_caps_hold_under_any_sequence_of_seen_and_failed(
    operations: list[tuple[str, NodeId, str, int]], k: int, replacement_size: int
) -> None:
    limits = AddressLimits(1, 2, 2, 3)
    table = RoutingTable(SELF, k=k, replacement_size=replacement_size, limits=limits)
    for t, (op, node_id, host, port) in enumerate(operations):
        if op == "seen":
            table.seen(contact(node_id, port, host), float(t))
        else:
            table.failed(node_id, float(t))
        per_address: dict[str, int] = {}
        per_subnet: dict[str, int] = {}
        for snap in table.buckets():
            in_bucket_address: dict[str, int] = {}
            in_bucket_subnet: dict[str, int] = {}
            for e in snap.contacts:
                group = limits.group(e.contact.host)
                for counts, name in (
                    (per_address, group.address),
                    (per_subnet, group.subnet),
                    (in_bucket_address, group.address),
                    (in_bucket_subnet, group.subnet),
                ):
                    if name is not None:
                        counts[name] = counts.get(name, 0) + 1
            assert max(in_bucket_address.values(), default=0) <= limits.per_address_per_bucket
            assert max(in_bucket_subnet.values(), default=0) <= limits.per_subnet_per_bucket
        assert max(per_address.values(), default=0) <= limits.per_address_per_table
        assert max(per_subnet.values(), default=0) <= limits.per_subnet_per_table
        assert per_address == table._per_address and per_subnet == table._per_subnet
