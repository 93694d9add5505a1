"""Signed records for the record and store tests: fixed identities, one service key, a fixed now."""

from __future__ import annotations

from dhtscope.node.constants import RECORD_TTL_S
from dhtscope.node.ids import NodeId
from dhtscope.node.keys import Identity
from dhtscope.node.records import Record

NOW = 1_700_000_000.0
SERVICE = "calculator"
KEY = NodeId.for_name(SERVICE)

ALICE = Identity.generate()
BOB = Identity.generate()


def make(
    identity: Identity = ALICE,
    *,
    key: NodeId = KEY,
    value: bytes = b"10.0.0.5:9000",
    seq: int = 1,
    ttl_s: float = RECORD_TTL_S,
    now: float = NOW,
    name: str | None = SERVICE,
) -> Record:
    """A record signed by `identity`, valid at NOW unless told otherwise."""
    return Record.create(identity, key, value, seq, ttl_s, now, name=name)
