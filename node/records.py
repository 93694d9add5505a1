"""Signed provider records, and the advertisements this node republishes (the store is node/store.py).

Sans-I/O: nothing here reads a clock, a socket or an event loop; `now` is always an argument
(unix seconds, float).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .constants import (
    ID_BYTES,
    MAX_CLOCK_SKEW_S,
    MAX_KEPT_TTL_S,
    MAX_RECORD_TTL_S,
    MAX_SERVICE_NAME_BYTES,
    MAX_VALUE_BYTES,
    MAX_VERIFIED_RECORDS,
    RECORD_TTL_S,
    REPUBLISH_MARGIN_S,
)
from .ids import NodeId
from .keys import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Identity, verify_signature

# Domain separation: a signature over a record can never be replayed as a signature over
# anything else this key signs (handshakes, other message kinds, a future record layout).
SIGNATURE_DOMAIN = b"dhtscope-record-v1\0"

# msgpack's largest unsigned integer; a wire seq beyond it could not be re-encoded.
MAX_SEQ = (1 << 64) - 1


class RecordError(ValueError):
    """A record that is malformed: wrong types, wrong lengths, missing fields, over a size limit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RecordRejected(RecordError):
    """A well-formed record that must not be stored: bad signature, wrong publisher, expired..."""


# Wire field names: short, because a FIND_VALUE reply carries up to MAX_RECORDS_PER_MESSAGE of them.
_F_KEY = "k"
_F_PUBLISHER = "p"
_F_PUBLIC_KEY = "pk"
_F_VALUE = "v"
_F_SEQ = "s"
_F_EXPIRES = "e"
_F_SIGNATURE = "sig"
_F_NAME = "n"

_FIELD_LABELS = {
    _F_KEY: "key",
    _F_PUBLISHER: "publisher",
    _F_PUBLIC_KEY: "public key",
    _F_VALUE: "value",
    _F_SEQ: "sequence number",
    _F_EXPIRES: "expiry time",
    _F_SIGNATURE: "signature",
    _F_NAME: "name",
}


@dataclass(frozen=True, slots=True)
class Record:
    """One publisher's signed value under one key, e.g. a provider's endpoint for a service."""

    key: NodeId
    publisher: NodeId
    public_key: bytes
    value: bytes
    seq: int
    expires_at: float
    signature: bytes
    name: str | None = None

    @classmethod
    def create(
        cls,
        identity: Identity,
        key: NodeId,
        value: bytes,
        seq: int,
        ttl_s: float,
        now: float,
        name: str | None = None,
    ) -> Record:
        """Sign a new record that lives `ttl_s` seconds from `now`; RecordError if malformed."""
        unsigned = cls(
            key=key,
            publisher=identity.node_id,
            public_key=identity.public_key,
            value=bytes(value) if isinstance(value, (bytearray, memoryview)) else value,
            seq=seq,
            expires_at=float(now + ttl_s),
            signature=b"",
            name=name,
        )
        problem = _structural_problem(unsigned, check_signature_length=False)
        if problem is not None:
            raise RecordError(problem)
        return _replace_signature(unsigned, identity.sign(unsigned.signed_payload()))

    def signed_payload(self) -> bytes:
        """Canonical bytes the signature covers: every field but the signature, in a fixed array."""
        # A fixed-position array (not a map) leaves no freedom in key order, and msgpack's
        # length-prefixed bytes/str make field boundaries unambiguous. expires_at is always
        # packed as float64 so an int on the wire and a float in memory sign the same.
        body = msgpack.packb(
            [
                self.key.to_bytes(),
                self.publisher.to_bytes(),
                bytes(self.public_key),
                bytes(self.value),
                self.seq,
                float(self.expires_at),
                self.name,
            ],
            use_bin_type=True,
        )
        return SIGNATURE_DOMAIN + body

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-friendly map with short keys; `name` is left out when absent."""
        obj: dict[str, Any] = {
            _F_KEY: self.key.to_bytes(),
            _F_PUBLISHER: self.publisher.to_bytes(),
            _F_PUBLIC_KEY: bytes(self.public_key),
            _F_VALUE: bytes(self.value),
            _F_SEQ: self.seq,
            _F_EXPIRES: float(self.expires_at),
            _F_SIGNATURE: bytes(self.signature),
        }
        if self.name is not None:
            obj[_F_NAME] = self.name
        return obj

    @classmethod
    def from_wire(cls, obj: object) -> Record:
        """Parse a decoded wire map; RecordError for anything malformed. Does not check the signature."""
        record = _well_formed(obj)
        if record is not None:
            return record
        return cls._from_wire_checked(obj)

    @classmethod
    def _from_wire_checked(cls, obj: object) -> Record:
        """from_wire field by field, naming the first thing that is wrong."""
        if not isinstance(obj, Mapping):
            raise RecordError(f"a record must be a map, got {type(obj).__name__}")
        # Unknown fields are ignored so a newer peer can add optional fields; they are not signed,
        # so they can never change what this version trusts.
        key = _id_field(obj, _F_KEY)
        publisher = _id_field(obj, _F_PUBLISHER)
        public_key = _bytes_field(obj, _F_PUBLIC_KEY)
        value = _bytes_field(obj, _F_VALUE)
        seq = _required(obj, _F_SEQ)
        if type(seq) is not int:  # bool is an int subclass; a bool seq is a type error
            raise _wrong_type(_F_SEQ, "an integer", seq)
        expires = _required(obj, _F_EXPIRES)
        if type(expires) not in (int, float):
            raise _wrong_type(_F_EXPIRES, "a number", expires)
        try:
            expires_at = float(expires)  # type: ignore[arg-type]  # int or float: checked just above
        except OverflowError:
            raise RecordError("expiry time is out of range") from None
        signature = _bytes_field(obj, _F_SIGNATURE)
        name = obj.get(_F_NAME)
        if name is not None and not isinstance(name, str):
            raise _wrong_type(_F_NAME, "a string", name)
        record = cls(
            key=key,
            publisher=publisher,
            public_key=public_key,
            value=value,
            seq=seq,
            expires_at=expires_at,
            signature=signature,
            name=name,
        )
        problem = _structural_problem(record)
        if problem is not None:
            raise RecordError(problem)
        return record

    def verify(self, now: float) -> None:
        """Same as the module-level `verify(self, now)`."""
        verify(self, now)

    def ttl_left(self, now: float) -> float:
        """Seconds until this record expires (negative once expired)."""
        return self.expires_at - now

    def __repr__(self) -> str:
        label = self.name if self.name is not None else self.key.short()
        return f"Record({label} by {self.publisher.short()} seq={self.seq} value={self.value!r})"


def verify(record: Record, now: float) -> None:
    """Raise RecordRejected(reason) unless `record` may be stored and served at time `now`."""
    problem = _structural_problem(record)
    if problem is not None:
        raise RecordRejected(problem)
    if record.publisher != NodeId.from_public_key(record.public_key):
        raise RecordRejected("publisher id does not match its public key")
    # Time checks come before the signature check: they are cheap, and a flood of stale or
    # far-future records should not cost an Ed25519 verification each.
    _check_times(record, now)
    if not verify_signature(record.public_key, record.signature, record.signed_payload()):
        raise RecordRejected(
            "signature does not match the record's contents; it was altered or signed with another key"
        )


class SignatureCache:
    """`verify` that checks each record's signature once, however many answers repeat the record.

    Keyed by (key, publisher, seq), LRU, at most `max_entries`. A hit needs the very record
    that was checked, every field and the signature equal: a forgery that reuses a checked
    record's key, publisher and seq is checked in full like any other. Expiry is checked on
    every call, since it depends on `now`.
    """

    def __init__(self, max_entries: int = MAX_VERIFIED_RECORDS) -> None:
        self.max_entries = max_entries
        self.full_checks = 0  # records checked in full: structure, key, times and Ed25519 signature
        self.hits = 0  # records accepted without one
        self._checked: OrderedDict[tuple[int, int, int], Record] = OrderedDict()

    def verify(self, record: Record, now: float) -> None:
        """Same as the module-level `verify(record, now)`: RecordRejected unless it may be used at `now`."""
        key = (record.key.value, record.publisher.value, record.seq)
        checked = self._checked.get(key)
        if checked is not None and checked == record:
            _check_times(record, now)
            self._checked.move_to_end(key)
            self.hits += 1
            return
        self.full_checks += 1
        verify(record, now)
        self._checked[key] = record
        self._checked.move_to_end(key)
        if len(self._checked) > self.max_entries:
            self._checked.popitem(last=False)

    def __len__(self) -> int:
        return len(self._checked)


def _check_times(record: Record, now: float) -> None:
    """RecordRejected if `record` has expired at `now`, or claims to live longer than any record may."""
    if record.expires_at <= now:
        raise RecordRejected(
            f"record expired {now - record.expires_at:.1f} s ago; the publisher must republish (or its clock is behind)"
        )
    limit_s = MAX_RECORD_TTL_S + MAX_CLOCK_SKEW_S
    if record.expires_at - now > limit_s:
        raise RecordRejected(
            f"record claims to live {record.expires_at - now:.0f} s, more than the "
            f"{MAX_RECORD_TTL_S:.0f} s maximum TTL plus {MAX_CLOCK_SKEW_S:.0f} s clock skew; "
            "lower its TTL or check the publisher's clock"
        )


def _structural_problem(record: Record, *, check_signature_length: bool = True) -> str | None:
    """Why the record's fields are malformed, or None; shared by from_wire, create and verify."""
    if not isinstance(record.key, NodeId) or not isinstance(record.publisher, NodeId):
        return "key and publisher must be node ids"
    for label, data in (("public key", record.public_key), ("value", record.value), ("signature", record.signature)):
        if not isinstance(data, bytes):
            return f"{label} must be bytes, got {type(data).__name__}"
    if len(record.public_key) != PUBLIC_KEY_BYTES:
        return f"public key must be {PUBLIC_KEY_BYTES} bytes, got {len(record.public_key)}"
    if check_signature_length and len(record.signature) != SIGNATURE_BYTES:
        return f"signature must be {SIGNATURE_BYTES} bytes, got {len(record.signature)}"
    if len(record.value) > MAX_VALUE_BYTES:
        return f"value is {len(record.value)} bytes, more than the {MAX_VALUE_BYTES}-byte limit"
    if type(record.seq) is not int or not 0 <= record.seq <= MAX_SEQ:
        return "sequence number must be an integer from 0 to 2**64-1"
    if not isinstance(record.expires_at, (int, float)) or isinstance(record.expires_at, bool):
        return "expiry time must be a number"
    # NaN would compare false with everything and slip through every time check.
    if not math.isfinite(record.expires_at):
        return "expiry time must be a finite number"
    if record.name is not None:
        if not isinstance(record.name, str):
            return "name must be a string"
        try:
            encoded = record.name.encode("utf-8")
        except UnicodeEncodeError:
            return "name is not valid UTF-8"
        if len(encoded) > MAX_SERVICE_NAME_BYTES:
            return f"name is {len(encoded)} bytes, more than the {MAX_SERVICE_NAME_BYTES}-byte limit"
        # Otherwise anyone could attach a misleading human name to an arbitrary key.
        if record.key != NodeId.for_name(record.name):
            return f"key is not SHA-256 of the name {record.name!r}"
    return None


def _well_formed(obj: object) -> Record | None:
    """The record of a wire map in the usual shape, checked in one pass; None for anything else.

    Every record in a VALUE answer goes through here. Whatever this does not accept goes
    to `Record._from_wire_checked`, which finds the precise problem to report.
    """
    if type(obj) is not dict:
        return None
    get = obj.get
    key, publisher, public_key = get(_F_KEY), get(_F_PUBLISHER), get(_F_PUBLIC_KEY)
    value, seq, expires, signature, name = get(_F_VALUE), get(_F_SEQ), get(_F_EXPIRES), get(_F_SIGNATURE), get(_F_NAME)
    if not (
        type(key) is bytes
        and len(key) == ID_BYTES
        and type(publisher) is bytes
        and len(publisher) == ID_BYTES
        and type(public_key) is bytes
        and len(public_key) == PUBLIC_KEY_BYTES
        and type(value) is bytes
        and len(value) <= MAX_VALUE_BYTES
        and type(signature) is bytes
        and len(signature) == SIGNATURE_BYTES
        and type(seq) is int
        and 0 <= seq <= MAX_SEQ
        and type(expires) is float
        and math.isfinite(expires)
    ):
        return None
    if name is not None:
        if type(name) is not str:
            return None
        try:
            encoded = name.encode("utf-8")
        except UnicodeEncodeError:
            return None
        if len(encoded) > MAX_SERVICE_NAME_BYTES or hashlib.sha256(encoded).digest() != key:
            return None
    return Record(
        key=NodeId.from_bytes(key),
        publisher=NodeId.from_bytes(publisher),
        public_key=public_key,
        value=value,
        seq=seq,
        expires_at=expires,
        signature=signature,
        name=name,
    )


def _replace_signature(record: Record, signature: bytes) -> Record:
    return Record(
        key=record.key,
        publisher=record.publisher,
        public_key=record.public_key,
        value=record.value,
        seq=record.seq,
        expires_at=record.expires_at,
        signature=signature,
        name=record.name,
    )


def _required(obj: Mapping[Any, Any], name: str) -> object:
    if name not in obj:
        raise RecordError(f"record is missing its {_FIELD_LABELS[name]} (field {name!r})")
    return obj[name]


def _wrong_type(name: str, expected: str, got: object) -> RecordError:
    return RecordError(f"{_FIELD_LABELS[name]} (field {name!r}) must be {expected}, got {type(got).__name__}")


def _bytes_field(obj: Mapping[Any, Any], name: str) -> bytes:
    data = _required(obj, name)
    if not isinstance(data, (bytes, bytearray)):
        raise _wrong_type(name, "bytes", data)
    return bytes(data)


def _id_field(obj: Mapping[Any, Any], name: str) -> NodeId:
    data = _bytes_field(obj, name)
    if len(data) != ID_BYTES:
        raise RecordError(f"{_FIELD_LABELS[name]} must be {ID_BYTES} bytes, got {len(data)}")
    return NodeId.from_bytes(data)


# --------------------------------------------------------------------------------------------
# What this node publishes


@dataclass(slots=True)
class _Advert:
    name: str | None
    record: Record


@dataclass
class Advertisements:
    """The records THIS node publishes, re-signed with a new seq before each one expires."""

    identity: Identity
    ttl_s: float = RECORD_TTL_S
    margin_s: float = REPUBLISH_MARGIN_S
    _adverts: dict[NodeId, _Advert] = field(default_factory=dict, init=False, repr=False)
    _last_seq: int = field(default=-1, init=False, repr=False)

    def __post_init__(self) -> None:
        # Stores keep a record at most MAX_KEPT_TTL_S: a longer TTL would vanish before republishing.
        if not 0 < self.ttl_s <= MAX_KEPT_TTL_S:
            raise ValueError(f"ttl_s must be in (0, {MAX_KEPT_TTL_S}] seconds, got {self.ttl_s}")
        if not 0 <= self.margin_s < self.ttl_s:
            raise ValueError(f"margin_s must be at least 0 and below ttl_s ({self.ttl_s}), got {self.margin_s}")

    def add(self, key: NodeId, value: bytes, name: str | None, now: float) -> Record:
        """Advertise `value` under `key` from now on; returns the signed record to STORE."""
        # Stores keep one record per (key, publisher), so a second value under the same key
        # would overwrite the first everywhere: one advertisement per key, the latest wins.
        record = self._sign(key, value, name, now)
        self._adverts[key] = _Advert(name, record)
        return record

    def remove(self, key: NodeId, value: bytes | None = None) -> bool:
        """Stop republishing `key` (only if its value is `value`, when given); True if removed."""
        advert = self._adverts.get(key)
        if advert is None or (value is not None and advert.record.value != value):
            return False
        # Copies already stored elsewhere stay until they expire; there is no delete RPC.
        del self._adverts[key]
        return True

    def due(self, now: float) -> list[Record]:
        """Fresh re-signed records (new seq, new expiry) for every advertisement due by `now`."""
        fresh: list[Record] = []
        for key in sorted(self._adverts):
            advert = self._adverts[key]
            if advert.record.expires_at - self.margin_s <= now:
                advert.record = self._sign(key, advert.record.value, advert.name, now)
                fresh.append(advert.record)
        return fresh

    def next_due(self) -> float | None:
        """When the next advertisement must be republished, or None if there are none."""
        # A node advertises a handful of services; a scan is simpler than a heap and as fast.
        if not self._adverts:
            return None
        return min(a.record.expires_at for a in self._adverts.values()) - self.margin_s

    def all(self) -> list[Record]:
        """The current record of every advertisement, in key order."""
        return [self._adverts[k].record for k in sorted(self._adverts)]

    def __len__(self) -> int:
        return len(self._adverts)

    def __contains__(self, key: object) -> bool:
        return key in self._adverts

    def _sign(self, key: NodeId, value: bytes, name: str | None, now: float) -> Record:
        # Seeded from the clock in milliseconds, so a restarted node (whose counter starts over)
        # still outbids the records it stored before; +1 keeps it strictly increasing when the
        # clock stalls or steps back.
        self._last_seq = max(self._last_seq + 1, int(now * 1000))
        return Record.create(self.identity, key, value, self._last_seq, self.ttl_s, now, name)
