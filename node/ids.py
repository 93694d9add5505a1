"""256-bit node ids and keys, and the XOR metric between them."""

from __future__ import annotations

import hashlib
import random
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from .constants import ID_BITS, ID_BYTES

_HEX_LEN = ID_BYTES * 2
_new = object.__new__
_set = object.__setattr__  # how a frozen dataclass sets its own fields


@dataclass(frozen=True, slots=True, order=True)
class NodeId:
    """A point in the 256-bit key space: a node id or a record key."""

    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value < (1 << ID_BITS):
            raise ValueError(f"id out of range for {ID_BITS} bits")

    @classmethod
    def from_bytes(cls, data: bytes) -> NodeId:
        if len(data) != ID_BYTES:
            raise ValueError(f"id must be {ID_BYTES} bytes, got {len(data)}")
        # ID_BYTES bytes are always in range: skip __init__'s check (this runs for every
        # id on the wire, several per message).
        node_id = _new(cls)
        _set(node_id, "value", int.from_bytes(data, "big"))
        return node_id

    @classmethod
    def from_hex(cls, text: str) -> NodeId:
        if len(text) != _HEX_LEN:
            raise ValueError(f"id must be {_HEX_LEN} hex digits, got {len(text)}")
        try:
            return cls(int(text, 16))
        except ValueError:
            raise ValueError(f"id is not hexadecimal: {text!r}") from None

    @classmethod
    def from_public_key(cls, public_key: bytes) -> NodeId:
        """A node's id is SHA-256 of its raw public key, so it cannot be claimed without the key."""
        return cls.from_bytes(hashlib.sha256(public_key).digest())

    @classmethod
    def for_name(cls, name: str) -> NodeId:
        """The key a service (or any named value) is stored under: SHA-256 of its UTF-8 name."""
        return cls.from_bytes(hashlib.sha256(name.encode("utf-8")).digest())

    @classmethod
    def parse(cls, text: str) -> NodeId:
        """A 64-digit hex id as is; anything else is a name and is hashed."""
        if len(text) == _HEX_LEN:
            try:
                return cls(int(text, 16))
            except ValueError:
                pass
        return cls.for_name(text)

    @classmethod
    def random(cls, rng: random.Random | None = None) -> NodeId:
        return cls((rng or random).getrandbits(ID_BITS))

    def to_bytes(self) -> bytes:
        return self.value.to_bytes(ID_BYTES, "big")

    def hex(self) -> str:
        return format(self.value, f"0{_HEX_LEN}x")

    def short(self) -> str:
        return self.hex()[:8]

    def distance(self, other: NodeId) -> int:
        return self.value ^ other.value

    def bucket_index(self, other: NodeId) -> int:
        """Index of the bucket `other` falls in, seen from self: 0..255, or -1 for self."""
        return (self.value ^ other.value).bit_length() - 1

    def __str__(self) -> str:
        return self.hex()

    def __repr__(self) -> str:
        return f"NodeId({self.short()}…)"


@dataclass(frozen=True, slots=True)
class Contact:
    """How to reach a node: its id and the address it listens on."""

    node_id: NodeId
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.node_id.short()}@{self.address}"


CONTACT_V4_BYTES = ID_BYTES + 4 + 2  # a packed contact: id, IPv4 address, port
CONTACT_V6_BYTES = ID_BYTES + 16 + 2


def unpack_contact(item: bytes) -> Contact:
    """A contact from its packed bytes (id, IPv4 or IPv6 address, big-endian port), already size-checked."""
    if len(item) == CONTACT_V4_BYTES:
        a, b, c, d = item[ID_BYTES : ID_BYTES + 4]
        host = f"{a}.{b}.{c}.{d}"
    else:
        host = socket.inet_ntop(socket.AF_INET6, item[ID_BYTES : ID_BYTES + 16])
    return Contact(NodeId.from_bytes(item[:ID_BYTES]), host, int.from_bytes(item[-2:], "big"))


class PackedContacts(Sequence[Contact]):
    """Contacts as a message carried them, checked already, each made a `Contact` only when read.

    A lookup's three answers repeat most of their 20 contacts: `id_values()` lets it skip the
    ones it knows without building them. Compares equal to a tuple of the same contacts.
    """

    __slots__ = ("_packed", "_made")

    def __init__(self, packed: Sequence[bytes]) -> None:
        self._packed = tuple(packed)
        self._made: list[Contact | None] = [None] * len(self._packed)

    def id_values(self) -> list[int]:
        """Each contact's node id as an integer, in order, without building the contacts."""
        return [int.from_bytes(item[:ID_BYTES], "big") for item in self._packed]

    def __len__(self) -> int:
        return len(self._packed)

    @overload
    def __getitem__(self, index: int) -> Contact: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Contact, ...]: ...
    def __getitem__(self, index: int | slice) -> Contact | tuple[Contact, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self._packed))))
        made = self._made[index]
        if made is None:
            made = self._made[index] = unpack_contact(self._packed[index])
        return made

    def __iter__(self) -> Iterator[Contact]:
        for i in range(len(self._packed)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedContacts):
            return self._packed == other._packed
        if isinstance(other, (tuple, list)):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"PackedContacts({list(self)!r})"
