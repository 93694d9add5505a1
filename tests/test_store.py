"""The record store, sans-I/O: limits, fair eviction between networks, clamped TTLs, expiry."""

from __future__ import annotations

import dataclasses

import pytest
from helpers.records import ALICE, BOB, KEY, NOW, SERVICE, make

from dhtscope.node.constants import MAX_KEPT_TTL_S, MAX_RECORDS_PER_NETWORK_PER_KEY, RECORD_TTL_S
from dhtscope.node.ids import NodeId
from dhtscope.node.keys import Identity
from dhtscope.node.records import Record
from dhtscope.node.store import RecordStore

VALID = make()


def test_store_keeps_many_providers_per_key_ordered_by_publisher() -> None:
    store = RecordStore()
    providers = [Identity.generate() for _ in range(10)]
    for i, ident in enumerate(providers):
        out = store.put(make(ident, value=f"10.0.0.{i}:9000".encode()), NOW)
        assert (out.accepted, out.action) == (True, "stored")
    got = store.get(KEY, NOW)
    assert [r.publisher for r in got] == sorted(p.node_id for p in providers)
    assert len(store) == 10 and store.keys() == [KEY]
    assert store.get(NodeId.for_name("nothing"), NOW) == []


def test_store_sequence_ordering_replaces_refreshes_and_refuses() -> None:
    store = RecordStore()
    v1, v2, v3 = make(seq=1), make(seq=2, value=b"a:1"), make(seq=3, value=b"b:2")
    assert store.put(v2, NOW).action == "stored"

    older = store.put(v1, NOW)
    assert (older.accepted, older.action) == (False, "refused")
    assert older.reason.startswith("older sequence number than the stored record")
    assert older.previous == v2

    same = store.put(v2, NOW + 1)
    assert (same.accepted, same.action) == (True, "refreshed")

    newer = store.put(v3, NOW)
    assert (newer.accepted, newer.action, newer.previous) == (True, "replaced", v2)
    assert store.get(KEY, NOW) == [v3]
    assert len(store) == 1 and store.count_for_publisher(ALICE.node_id) == 1


def test_store_refuses_equal_seq_with_different_contents() -> None:
    store = RecordStore()
    store.put(make(seq=5, value=b"a:1"), NOW)
    out = store.put(make(seq=5, value=b"b:2"), NOW)
    assert not out.accepted and "same sequence number (5)" in out.reason
    assert store.get(KEY, NOW)[0].value == b"a:1"


def test_store_refuses_bad_records_without_raising() -> None:
    store = RecordStore()
    out = store.put(dataclasses.replace(VALID, value=b"evil:1"), NOW, from_peer=BOB.node_id)
    assert (out.accepted, out.action, out.from_peer) == (False, "refused", BOB.node_id)
    assert "signature" in out.reason
    assert store.put(VALID, VALID.expires_at).reason.startswith("record expired")
    assert len(store) == 0


def test_full_key_gives_up_its_soonest_to_expire_to_a_newcomer() -> None:
    store = RecordStore(max_per_key=3)
    providers = [Identity.generate() for _ in range(3)]
    for i, ident in enumerate(providers):
        assert store.put(make(ident, ttl_s=100 + i), NOW).accepted
    out = store.put(make(BOB), NOW)
    assert (out.accepted, out.action) == (True, "stored")
    assert [r.publisher for r in out.evicted] == [providers[0].node_id]
    assert len(store.get(KEY, NOW)) == 3
    # A provider already there may still update its own record: same slot, nothing evicted.
    again = store.put(make(providers[1], seq=2), NOW)
    assert again.action == "replaced" and again.evicted == ()


def test_store_per_publisher_limit_refuses_with_its_value() -> None:
    store = RecordStore(max_per_peer=2)
    for service in ("a", "b"):
        assert store.put(make(key=NodeId.for_name(service), name=service), NOW).accepted
    out = store.put(make(key=NodeId.for_name("c"), name="c"), NOW)
    assert not out.accepted and "limit per publisher (max_per_peer=2)" in out.reason
    assert store.count_for_publisher(ALICE.node_id) == 2
    assert store.put(make(BOB, key=NodeId.for_name("c"), name="c"), NOW).accepted  # others unaffected


def test_full_store_gives_up_a_record_instead_of_refusing() -> None:
    store = RecordStore(max_total=2)
    assert store.put(make(ALICE, ttl_s=50), NOW).accepted
    assert store.put(make(BOB), NOW).accepted
    out = store.put(make(Identity.generate(), key=NodeId.random(), name=None), NOW)
    assert out.accepted and [r.publisher for r in out.evicted] == [ALICE.node_id]
    assert len(store) == 2


def test_store_purges_expired_records_first_to_make_room() -> None:
    store = RecordStore(max_per_key=1)
    short = make(ALICE, ttl_s=10)
    store.put(short, NOW)
    out = store.put(make(BOB, now=NOW + 10), NOW + 10)
    assert (out.accepted, out.action) == (True, "stored")
    assert out.purged == (short,)
    assert [r.publisher for r in store.get(KEY, NOW + 10)] == [BOB.node_id]


def test_expired_record_from_same_publisher_does_not_block_a_lower_seq() -> None:
    # After its record expired, a restarted publisher may start over; the dead record is gone.
    store = RecordStore()
    store.put(make(seq=100, ttl_s=10), NOW)
    assert store.put(make(seq=1, now=NOW + 20), NOW + 20).action == "stored"


def test_expire_returns_exactly_the_expired_records() -> None:
    store = RecordStore()
    idents = [Identity.generate() for _ in range(6)]
    records = [make(ident, ttl_s=10.0 * (i + 1)) for i, ident in enumerate(idents)]
    for r in records:
        store.put(r, NOW)
    assert store.expire(NOW + 5) == []
    assert store.expire(NOW + 20) == records[:2]  # expires_at == now counts as expired
    assert store.expire(NOW + 20) == []
    assert store.next_expiry() == NOW + 30
    assert len(store) == 4
    assert store.get(KEY, NOW + 45) == sorted(records[4:], key=lambda r: r.publisher)  # get hides expired
    assert store.expire(NOW + 1000) == records[2:]
    assert len(store) == 0 and store.next_expiry() is None and store.keys() == []


def test_expire_skips_records_that_were_replaced() -> None:
    store = RecordStore()
    store.put(make(seq=1, ttl_s=10), NOW)
    newer = make(seq=2, ttl_s=100)
    store.put(newer, NOW)
    assert store.next_expiry() == NOW + 100  # the stale heap entry at NOW+10 is skipped
    assert store.expire(NOW + 50) == []
    assert store.get(KEY, NOW + 50) == [newer]


def test_heap_does_not_grow_without_bound_under_replacement() -> None:
    store = RecordStore()
    for seq in range(1, 400):
        store.put(make(seq=seq, ttl_s=600), NOW)
    assert len(store._heap) <= 2 * len(store) + 65


def test_records_and_keys_list_live_ones_when_given_now() -> None:
    store = RecordStore()
    other = NodeId.for_name("other")
    a = make(ttl_s=10)
    b = make(BOB, key=other, name="other", ttl_s=100)
    store.put(a, NOW)
    store.put(b, NOW)
    assert store.records() == sorted([a, b], key=lambda r: r.key)
    assert store.records(NOW + 50) == [b]
    assert store.keys(NOW + 50) == [other]
    assert len(store) == 2  # nothing removed until expire() or put()


# -- fairness: no network can monopolise a key or the store -------------------------------------


def squatters(store: RecordStore, n: int, origin: str, ttl_s: float = 3600.0) -> list[Record]:
    """`n` fresh identities each storing one advertisement of SERVICE from `origin`; those accepted."""
    accepted = []
    for i in range(n):
        record = make(Identity.generate(), value=f"6.6.6.6:{7000 + i}".encode(), ttl_s=ttl_s)
        if store.put(record, NOW, origin=origin).accepted:
            accepted.append(record)
    return accepted


def test_one_public_subnet_holds_at_most_its_share_of_a_key() -> None:
    store = RecordStore()
    kept = squatters(store, 64, "6.6.6.6")
    assert len(kept) == MAX_RECORDS_PER_NETWORK_PER_KEY
    # another address of the same /24 counts against the same share
    out = store.put(make(Identity.generate(), value=b"6.6.6.7:1"), NOW, origin="6.6.6.7")
    assert not out.accepted and "6.6.6.0/24" in out.reason and "limit per network per key" in out.reason
    honest = store.put(make(BOB, value=b"1.2.3.4:9000"), NOW, origin="1.2.3.4")
    assert honest.accepted and honest.evicted == ()
    assert store.count_for_network("6.6.6.200") == MAX_RECORDS_PER_NETWORK_PER_KEY


def test_a_private_network_is_limited_per_address_not_per_subnet() -> None:
    store = RecordStore()
    assert len(squatters(store, 20, "10.0.0.9")) == MAX_RECORDS_PER_NETWORK_PER_KEY
    # a neighbour on the same LAN is another network
    assert store.put(make(BOB, value=b"10.0.0.10:9000"), NOW, origin="10.0.0.10").accepted


def test_honest_provider_gets_in_after_64_squatters_on_loopback_filled_the_key() -> None:
    # Loopback is exempt from the per-network share (a local cluster lives there), so squatters
    # from 127.0.0.1 can fill the key; the newcomer still gets in and a squatter goes.
    store = RecordStore()
    kept = squatters(store, 64, "127.0.0.1", ttl_s=RECORD_TTL_S)
    assert len(kept) == 64 and len(store.get(KEY, NOW)) == 64
    honest = make(BOB, value=b"127.0.0.1:9001", now=NOW + 1)
    out = store.put(honest, NOW + 1, origin="127.0.0.1")
    assert out.accepted and len(out.evicted) == 1 and out.evicted[0] in kept
    assert honest in store.get(KEY, NOW + 1) and len(store.get(KEY, NOW + 1)) == 64


def test_full_key_evicts_from_the_network_holding_the_most_records() -> None:
    store = RecordStore(max_per_key=24, max_per_network_per_key=8)
    big = squatters(store, 8, "6.6.6.6") + squatters(store, 8, "7.7.7.7")
    small = [make(Identity.generate(), value=f"8.8.{i}.1:1".encode()) for i in range(8)]
    for i, record in enumerate(small):
        assert store.put(record, NOW, origin=f"8.8.{i}.1").accepted  # eight networks of one record
    assert len(store.get(KEY, NOW)) == 24
    # the key is full: each newcomer from another network pushes out a record of whichever big
    # network holds more, until both are down to one record, like everyone else
    for i in range(14):
        out = store.put(make(Identity.generate(), value=b"9.9.9.9:1"), NOW, origin=f"9.9.{i}.9")
        assert out.accepted and out.evicted[0] in big
    assert all(r in store.get(KEY, NOW) for r in small)


def test_a_network_already_holding_the_most_evicts_its_own_records() -> None:
    store = RecordStore(max_per_key=4, max_per_network_per_key=4)
    honest = make(BOB, value=b"1.2.3.4:9000")
    assert store.put(honest, NOW, origin="1.2.3.4").accepted
    first = squatters(store, 3, "6.6.6.6")
    for _ in range(10):  # the key is full, and the squatters' network holds the most: it pays
        record = make(Identity.generate(), value=b"6.6.6.6:1")
        out = store.put(record, NOW, origin="6.6.6.6")
        assert out.accepted and out.evicted[0] in first
        first = [*first, record]
    assert honest in store.get(KEY, NOW)
    # loopback has no share: its newcomers take the place of its own soonest to expire
    store = RecordStore(max_per_key=4)
    assert store.put(honest, NOW, origin="1.2.3.4").accepted
    squatters(store, 20, "127.0.0.1")
    assert honest in store.get(KEY, NOW) and len(store.get(KEY, NOW)) == 4


def test_full_store_evicts_from_the_flooding_network_not_the_honest_one() -> None:
    store = RecordStore(max_total=50)
    flood = Identity.generate()
    for i in range(50):
        key = NodeId.for_name(f"junk{i}")
        assert store.put(make(flood, key=key, name=None, value=b"x"), NOW, origin="127.0.0.1").accepted
    honest = make(BOB, value=b"1.2.3.4:9000")
    out = store.put(honest, NOW, origin="1.2.3.4")
    assert out.accepted and out.evicted and out.evicted[0].publisher == flood.node_id
    for i in range(50, 200):  # the flood goes on: it only ever pushes out its own records
        key = NodeId.for_name(f"junk{i}")
        assert store.put(make(flood, key=key, name=None, value=b"x"), NOW, origin="127.0.0.1").accepted
    assert store.get(KEY, NOW) == [honest] and len(store) == 50


def test_eviction_picks_the_soonest_to_expire_within_the_biggest_network() -> None:
    store = RecordStore(max_total=3)
    a = make(ALICE, key=NodeId.for_name("a"), name=None, ttl_s=100)
    b = make(BOB, key=NodeId.for_name("b"), name=None, ttl_s=50)
    c = make(Identity.generate(), key=NodeId.for_name("c"), name=None, ttl_s=10)
    store.put(a, NOW, origin="6.6.6.6")
    store.put(b, NOW, origin="6.6.6.7")
    store.put(c, NOW, origin="1.2.3.4")  # expires first, but its network holds one record
    out = store.put(make(key=NodeId.for_name("d"), name=None), NOW, origin="5.5.5.5")
    assert out.evicted == (b,)


# -- how long a record is kept -------------------------------------------------------------------


def test_a_ttl_over_the_maximum_is_clamped_and_the_outcome_says_so() -> None:
    store = RecordStore()
    long = make(ttl_s=3600)
    out = store.put(long, NOW, origin="1.2.3.4")
    assert out.accepted and out.kept_until == NOW + MAX_KEPT_TTL_S
    assert out.clamped and "kept 600 s, not the 3600 s" in out.summary
    assert out.summary.startswith("stored; TTL clamped")
    assert store.get(KEY, NOW + MAX_KEPT_TTL_S - 1) == [long]
    assert store.get(KEY, NOW + MAX_KEPT_TTL_S) == []
    assert store.expire(NOW + MAX_KEPT_TTL_S) == [long]


def test_a_ttl_within_the_maximum_is_kept_as_asked() -> None:
    out = RecordStore().put(make(ttl_s=300), NOW)
    assert out.kept_until == NOW + 300 and not out.clamped and out.summary == "stored"


def test_a_reloaded_record_keeps_its_old_deadline() -> None:
    store = RecordStore()
    out = store.put(make(ttl_s=3600), NOW, keep_until=NOW + 100)
    assert out.kept_until == NOW + 100 and not out.clamped
    assert not store.put(make(BOB, ttl_s=300), NOW, keep_until=NOW - 1).accepted


# -- advertisements must carry an endpoint -------------------------------------------------------


@pytest.mark.parametrize("value", [b"nonsense", b"", b"127.0.0.1:0", b"\xff\xfe", b" 1.2.3.4:80"])
def test_an_advertisement_without_an_endpoint_is_refused_with_a_reason(value: bytes) -> None:
    out = RecordStore().put(make(value=value), NOW)
    assert not out.accepted and f"advertisement of {SERVICE!r}" in out.reason


@pytest.mark.parametrize("value", [b"127.0.0.1:9001", b"[2001:db8::1]:443", b"https://calc.example:8443/v1"])
def test_an_advertisement_with_an_endpoint_is_stored(value: bytes) -> None:
    assert RecordStore().put(make(value=value), NOW).accepted


def test_a_plain_value_under_a_hashed_key_is_not_an_advertisement() -> None:
    out = RecordStore().put(make(name=None, value=b"anything at all"), NOW)
    assert out.accepted
