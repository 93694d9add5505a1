"""Signed records, the record store and advertisements: all sans-I/O, time passed in."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from helpers.records import ALICE, BOB, KEY, NOW, SERVICE, make
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dhtscope.node.constants import (
    MAX_CLOCK_SKEW_S,
    MAX_KEPT_TTL_S,
    MAX_RECORD_TTL_S,
    MAX_SERVICE_NAME_BYTES,
    MAX_VALUE_BYTES,
    RECORD_TTL_S,
    REPUBLISH_MARGIN_S,
)
from dhtscope.node.ids import NodeId
from dhtscope.node.keys import Identity
from dhtscope.node.records import (
    SIGNATURE_DOMAIN,
    Advertisements,
    Record,
    RecordError,
    RecordRejected,
    verify,
)
from dhtscope.node.store import RecordStore


def resigned(record: Record, identity: Identity, **changes: object) -> Record:
    """`record` with fields changed and a valid signature by `identity` over the result."""
    changed = dataclasses.replace(record, **changes)
    return dataclasses.replace(changed, signature=identity.sign(changed.signed_payload()))


def reason_of(record: Record, now: float = NOW) -> str:
    with pytest.raises(RecordRejected) as info:
        verify(record, now)
    return info.value.reason


VALID = make()
VALID_WIRE = VALID.to_wire()


# ---------------------------------------------------------------- Record: signing and wire


def test_created_record_verifies_and_carries_its_fields() -> None:
    verify(VALID, NOW)
    assert VALID.publisher == ALICE.node_id
    assert VALID.public_key == ALICE.public_key
    assert VALID.expires_at == NOW + RECORD_TTL_S
    assert len(VALID.signature) == 64


@pytest.mark.parametrize("name", [SERVICE, None])
def test_wire_round_trip_through_msgpack_preserves_every_field(name: str | None) -> None:
    record = make(name=name, key=KEY if name else NodeId.random())
    wire = msgpack.unpackb(msgpack.packb(record.to_wire(), use_bin_type=True), raw=False)
    back = Record.from_wire(wire)
    assert back == record
    verify(back, NOW)


def test_wire_map_omits_absent_name() -> None:
    assert "n" not in make(name=None, key=NodeId.random()).to_wire()
    assert VALID_WIRE["n"] == SERVICE


def test_signed_payload_is_domain_separated_and_covers_every_field_but_the_signature() -> None:
    payload = VALID.signed_payload()
    assert payload.startswith(SIGNATURE_DOMAIN)
    other = make(BOB)
    variants = [
        dataclasses.replace(VALID, key=NodeId.random(), name=None),
        dataclasses.replace(VALID, publisher=BOB.node_id),
        dataclasses.replace(VALID, public_key=BOB.public_key),
        dataclasses.replace(VALID, value=b"10.0.0.5:9001"),
        dataclasses.replace(VALID, seq=2),
        dataclasses.replace(VALID, expires_at=VALID.expires_at + 0.001),
        dataclasses.replace(VALID, name=None),
    ]
    assert len({v.signed_payload() for v in variants} | {payload}) == len(variants) + 1
    assert dataclasses.replace(VALID, signature=other.signature).signed_payload() == payload


def test_int_and_float_expiry_sign_the_same_bytes() -> None:
    record = make(now=1000, ttl_s=300)  # ints in, float out
    assert dataclasses.replace(record, expires_at=1300).signed_payload() == record.signed_payload()


def test_create_refuses_oversized_value_and_mismatched_name() -> None:
    with pytest.raises(RecordError, match="value is"):
        make(value=b"x" * (MAX_VALUE_BYTES + 1))
    with pytest.raises(RecordError, match="not SHA-256 of the name"):
        make(name="not-calculator")


def _wire(**changes: object) -> dict[str, object]:
    obj = dict(VALID_WIRE)
    for k, v in changes.items():
        if v is _DROP:
            obj.pop(k, None)
        else:
            obj[k] = v
    return obj


_DROP = object()


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ([1, 2], "must be a map"),
        (b"\x00" * 10, "must be a map"),
        (None, "must be a map"),
        (_wire(k=_DROP), "missing its key"),
        (_wire(p=_DROP), "missing its publisher"),
        (_wire(pk=_DROP), "missing its public key"),
        (_wire(v=_DROP), "missing its value"),
        (_wire(s=_DROP), "missing its sequence number"),
        (_wire(e=_DROP), "missing its expiry time"),
        (_wire(sig=_DROP), "missing its signature"),
        (_wire(k="ab" * 32), "key (field 'k') must be bytes"),
        (_wire(k=b"\x01" * 31), "key must be 32 bytes"),
        (_wire(p=b"\x01" * 33), "publisher must be 32 bytes"),
        (_wire(pk=b"\x01" * 31), "public key must be 32 bytes"),
        (_wire(sig=b"\x01" * 63), "signature must be 64 bytes"),
        (_wire(v="10.0.0.5:9000"), "value (field 'v') must be bytes"),
        (_wire(v=b"x" * (MAX_VALUE_BYTES + 1)), f"more than the {MAX_VALUE_BYTES}-byte limit"),
        (_wire(s=True), "must be an integer"),
        (_wire(s=1.0), "must be an integer"),
        (_wire(s=-1), "sequence number must be an integer from 0"),
        (_wire(s=1 << 64), "sequence number must be an integer from 0"),
        (_wire(e="soon"), "must be a number"),
        (_wire(e=False), "must be a number"),
        (_wire(e=float("nan")), "finite"),
        (_wire(e=float("inf")), "finite"),
        (_wire(e=10**400), "out of range"),
        (_wire(n=42), "name (field 'n') must be a string"),
        (_wire(n="x" * (MAX_SERVICE_NAME_BYTES + 1)), f"more than the {MAX_SERVICE_NAME_BYTES}-byte limit"),
        (_wire(n="other-service"), "key is not SHA-256 of the name"),
        (_wire(n="\ud800"), "not valid UTF-8"),
        (_wire(n="é" * (MAX_SERVICE_NAME_BYTES // 2 + 1)), f"more than the {MAX_SERVICE_NAME_BYTES}-byte limit"),
    ],
)
def test_from_wire_rejects_malformed_input_with_a_reason(obj: object, fragment: str) -> None:
    with pytest.raises(RecordError) as info:
        Record.from_wire(obj)
    assert fragment in info.value.reason


def test_from_wire_ignores_unknown_fields_and_accepts_int_expiry() -> None:
    record = make(now=1000, ttl_s=300)
    back = Record.from_wire({**record.to_wire(), "e": 1300, "future": [1, 2]})
    assert back == record
    verify(back, 1000)


_ANY = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.binary(max_size=80),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
_SIZED_BYTES = st.sampled_from([0, 31, 32, 33, 63, 64, 65, MAX_VALUE_BYTES + 1]).flatmap(
    lambda n: st.binary(min_size=n, max_size=n)
)


def _accepts_or_record_error(obj: object) -> None:
    try:
        record = Record.from_wire(obj)
    except RecordError:
        return
    assert isinstance(record, Record)
    try:
        verify(record, NOW)  # whatever parsed must also verify or be rejected, nothing else
    except RecordRejected:
        pass


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["k", "p", "pk", "v", "s", "e", "sig", "n", "x"]), _ANY | _SIZED_BYTES))
def test_from_wire_on_any_map_gives_a_record_or_record_error(obj: dict[str, object]) -> None:
    _accepts_or_record_error(obj)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(sorted(VALID_WIRE) + ["x"]),
        st.just(_DROP) | _ANY | _SIZED_BYTES,
        max_size=3,
    )
)
def test_from_wire_on_mutated_valid_maps_gives_a_record_or_record_error(changes: dict[str, object]) -> None:
    _accepts_or_record_error(_wire(**changes))


def _outcome(parse, obj: object) -> object:
    try:
        return parse(obj)
    except RecordError:
        return RecordError


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(VALID_WIRE) + ["x"]), st.just(_DROP) | _ANY | _SIZED_BYTES, max_size=2))
def test_one_pass_parse_and_field_by_field_parse_agree(changes: dict[str, object]) -> None:
    # from_wire takes a one-pass path for well-formed maps; it must accept exactly what
    # the field-by-field path accepts, and give the same record.
    obj = _wire(**changes)
    assert _outcome(Record.from_wire, obj) == _outcome(Record._from_wire_checked, obj)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_from_wire_on_random_bytes_and_their_msgpack_decoding_never_raises_anything_else(data: bytes) -> None:
    _accepts_or_record_error(data)
    try:
        decoded = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:  # msgpack's own errors are the wire codec's business, not this module's
        return
    _accepts_or_record_error(decoded)


# ---------------------------------------------------------------- Record: verification


@pytest.mark.parametrize(
    "field_change",
    [
        {"value": b"6.6.6.6:666"},
        {"seq": 2},
        {"expires_at": VALID.expires_at + 60},
        {"signature": bytes(64)},
        {"signature": make(seq=2).signature},
        {"name": None},
        {"key": NodeId.for_name("evil"), "name": "evil"},
    ],
)
def test_tampered_record_is_rejected_for_its_signature(field_change: dict[str, object]) -> None:
    tampered = dataclasses.replace(VALID, **field_change)
    assert "signature does not match" in reason_of(tampered)


def test_impostor_claiming_another_nodes_id_is_rejected() -> None:
    # Mallory signs correctly with her own key but claims Bob's id as publisher.
    mallory = Identity.generate()
    impostor = resigned(make(mallory), mallory, publisher=BOB.node_id)
    assert reason_of(impostor) == "publisher id does not match its public key"


def test_impostor_with_victims_public_key_but_own_signature_is_rejected() -> None:
    mallory = Identity.generate()
    forged = resigned(make(mallory), mallory, publisher=BOB.node_id, public_key=BOB.public_key)
    assert "signature does not match" in reason_of(forged)


def test_expired_record_is_rejected_at_and_after_its_expiry() -> None:
    verify(VALID, VALID.expires_at - 0.001)
    assert "expired" in reason_of(VALID, now=VALID.expires_at)
    assert "expired 10.0 s ago" in reason_of(VALID, now=VALID.expires_at + 10)


def test_record_claiming_too_long_a_life_is_rejected() -> None:
    limit = MAX_RECORD_TTL_S + MAX_CLOCK_SKEW_S
    verify(make(ttl_s=limit), NOW)  # exactly the limit is tolerated
    reason = reason_of(make(ttl_s=limit + 1))
    assert "maximum TTL" in reason and f"{MAX_RECORD_TTL_S:.0f} s" in reason


def test_verify_rejects_malformed_record_built_in_memory() -> None:
    assert "value is" in reason_of(dataclasses.replace(VALID, value=b"x" * (MAX_VALUE_BYTES + 1)))
    assert "finite" in reason_of(dataclasses.replace(VALID, expires_at=float("nan")))


# ---------------------------------------------------------------- Advertisements


def test_advertisement_record_is_signed_with_the_configured_ttl() -> None:
    ads = Advertisements(ALICE, ttl_s=20, margin_s=5)
    record = ads.add(KEY, b"10.0.0.5:9000", SERVICE, NOW)
    verify(record, NOW)
    assert record.expires_at == NOW + 20 and record.name == SERVICE
    assert record.seq >= int(NOW * 1000)
    assert ads.all() == [record] and ads.next_due() == NOW + 15


def test_due_republishes_before_expiry_with_higher_seq() -> None:
    ads = Advertisements(ALICE, ttl_s=20, margin_s=5)
    first = ads.add(KEY, b"10.0.0.5:9000", SERVICE, NOW)
    assert ads.due(NOW + 14.9) == []
    [again] = ads.due(NOW + 15)
    assert again.seq > first.seq and again.expires_at == NOW + 35
    assert again.value == first.value and again.expires_at > first.expires_at
    assert ads.next_due() == NOW + 30
    store = RecordStore()
    store.put(first, NOW)
    assert store.put(again, NOW + 15).action == "replaced"


def test_due_after_a_long_pause_still_republishes_once() -> None:
    ads = Advertisements(ALICE, ttl_s=20, margin_s=5)
    ads.add(KEY, b"v", SERVICE, NOW)
    assert len(ads.due(NOW + 1000)) == 1
    assert ads.due(NOW + 1000) == []


def test_seq_increases_across_restarts_and_stalled_clocks() -> None:
    before = Advertisements(ALICE).add(KEY, b"v", SERVICE, NOW)
    after_restart = Advertisements(ALICE).add(KEY, b"v", SERVICE, NOW + 0.5)
    assert after_restart.seq > before.seq
    ads = Advertisements(ALICE)
    seqs = [ads.add(KEY, b"v", SERVICE, NOW).seq for _ in range(3)]  # same instant
    assert seqs == sorted(set(seqs))


def test_remove_stops_republishing_only_the_matching_value() -> None:
    ads = Advertisements(ALICE, ttl_s=20, margin_s=5)
    ads.add(KEY, b"v1", SERVICE, NOW)
    assert not ads.remove(KEY, b"other")
    assert ads.remove(KEY, b"v1")
    assert ads.due(NOW + 100) == [] and ads.next_due() is None and ads.all() == []


def test_second_value_under_one_key_replaces_the_first() -> None:
    ads = Advertisements(ALICE)
    ads.add(KEY, b"v1", SERVICE, NOW)
    second = ads.add(KEY, b"v2", SERVICE, NOW)
    assert ads.all() == [second] and len(ads) == 1


@pytest.mark.parametrize(("ttl_s", "margin_s"), [(0, 0), (MAX_KEPT_TTL_S + 1, 60), (20, 20), (20, -1)])
def test_advertisements_refuse_impossible_timing(ttl_s: float, margin_s: float) -> None:
    with pytest.raises(ValueError):
        Advertisements(ALICE, ttl_s=ttl_s, margin_s=margin_s)


def test_default_advertisements_follow_the_protocol_timing() -> None:
    ads = Advertisements(ALICE)
    record = ads.add(KEY, b"v", SERVICE, NOW)
    assert record.expires_at == NOW + RECORD_TTL_S
    assert ads.next_due() == NOW + RECORD_TTL_S - REPUBLISH_MARGIN_S


# -- the signature cache ------------------------------------------------------------------------


def test_signature_cache_checks_a_record_once_however_often_it_comes_back(monkeypatch):
    from dhtscope.node import records

    checks = []
    real = records.verify_signature
    monkeypatch.setattr(records, "verify_signature", lambda *a: checks.append(1) or real(*a))
    cache = records.SignatureCache()
    record = Record.create(ALICE, KEY, b"127.0.0.1:9001", 7, RECORD_TTL_S, NOW, SERVICE)
    for _ in range(5):
        cache.verify(record, NOW + 1)
        cache.verify(dataclasses.replace(record), NOW + 1)  # an equal copy, as the next answer decodes it
    assert len(checks) == 1 and cache.full_checks == 1 and cache.hits == 9
    # A newer sequence number is another record: checked once too.
    newer = Record.create(ALICE, KEY, b"127.0.0.1:9001", 8, RECORD_TTL_S, NOW, SERVICE)
    cache.verify(newer, NOW + 1)
    cache.verify(newer, NOW + 1)
    assert len(checks) == 2


def test_signature_cache_never_accepts_a_forgery_of_a_checked_record():
    from dhtscope.node.records import SignatureCache

    cache = SignatureCache()
    record = Record.create(ALICE, KEY, b"127.0.0.1:9001", 7, RECORD_TTL_S, NOW, SERVICE)
    cache.verify(record, NOW)
    # Same key, publisher and seq, another value under the old signature: checked in full, refused.
    forged = dataclasses.replace(record, value=b"10.6.6.6:9001")
    with pytest.raises(RecordRejected, match="signature"):
        cache.verify(forged, NOW)
    cache.verify(record, NOW)  # the genuine one is still known
    assert cache.full_checks == 2


def test_signature_cache_still_refuses_a_checked_record_once_it_expired():
    from dhtscope.node.records import SignatureCache

    cache = SignatureCache()
    record = Record.create(ALICE, KEY, b"127.0.0.1:9001", 7, RECORD_TTL_S, NOW, SERVICE)
    cache.verify(record, NOW)
    with pytest.raises(RecordRejected, match="expired"):
        cache.verify(record, NOW + RECORD_TTL_S + 1)


def test_signature_cache_holds_at_most_its_limit_least_recently_used_out():
    from dhtscope.node.records import SignatureCache

    cache = SignatureCache(max_entries=2)
    first, second, third = (
        Record.create(ALICE, KEY, b"127.0.0.1:9001", seq, RECORD_TTL_S, NOW, SERVICE) for seq in (1, 2, 3)
    )
    cache.verify(first, NOW)
    cache.verify(second, NOW)
    cache.verify(first, NOW)  # first is now the most recently used
    cache.verify(third, NOW)  # second goes
    assert len(cache) == 2
    cache.verify(first, NOW)
    assert cache.full_checks == 3
    cache.verify(second, NOW)
    assert cache.full_checks == 4
