"""The wire codec: one msgpack map per RPC message, versioned, with explicit limits.

A message travels alone on one direction of one bidirectional QUIC stream:
a 4-byte big-endian length, then the msgpack body, then the stream's FIN.
The length makes a message complete without waiting for FIN, so a peer that
never sends FIN still gets its answer read, and the missing FIN shows up
where it belongs: as stream credit that never comes back. Any malformed
input raises WireError.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar

import msgpack

from dhtscope.tracing.codes import ErrorCode  # one table for the node and the analysis

from .constants import (
    ID_BYTES,
    MAX_CONTACTS_PER_MESSAGE,
    MAX_MESSAGE_BYTES,
    MAX_RECORDS_PER_MESSAGE,
    WIRE_VERSION,
)
from .ids import CONTACT_V4_BYTES, CONTACT_V6_BYTES, Contact, NodeId, PackedContacts
from .records import Record, RecordError

# Contacts a node packs for its answers, kept packed: a FIND_NODE or FIND_VALUE answer carries
# up to 20, mostly the same ones answer after answer. The memory starts over when full.
MAX_PACKED_CONTACTS = 4096
_packed: dict[Contact, bytes] = {}
MAX_REASON_CHARS = 512
MAX_REQUEST_ID = (1 << 64) - 1


class WireError(Exception):
    """Bytes that are not a valid message; `code` says which ErrorCode answers them."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.MALFORMED) -> None:
        super().__init__(message)
        self.code = code


class MsgType(IntEnum):
    PING = 0x01
    PONG = 0x02
    STORE = 0x10
    STORE_RESULT = 0x11
    FIND_NODE = 0x20
    NODES = 0x21
    FIND_VALUE = 0x22
    VALUE = 0x23
    ERROR = 0x7F


@dataclass(frozen=True, slots=True)
class Sender:
    """Who sent a message: its claimed id and the UDP port it listens on (host comes from the packet)."""

    node_id: NodeId
    port: int


@dataclass(frozen=True)
class Message:
    TYPE: ClassVar[MsgType]
    request_id: int
    sender: Sender | None = field(default=None, kw_only=True)

    def is_request(self) -> bool:
        return self.TYPE in REQUEST_TYPES


@dataclass(frozen=True)
class Ping(Message):
    TYPE: ClassVar[MsgType] = MsgType.PING


@dataclass(frozen=True)
class Pong(Message):
    TYPE: ClassVar[MsgType] = MsgType.PONG


@dataclass(frozen=True)
class Store(Message):
    TYPE: ClassVar[MsgType] = MsgType.STORE
    records: tuple[Record, ...] = ()


@dataclass(frozen=True)
class StoreResult(Message):
    """One (accepted, reason) pair per record of the STORE, in order."""

    TYPE: ClassVar[MsgType] = MsgType.STORE_RESULT
    results: tuple[tuple[bool, str], ...] = ()


@dataclass(frozen=True)
class FindNode(Message):
    TYPE: ClassVar[MsgType] = MsgType.FIND_NODE
    target: NodeId = NodeId(0)


@dataclass(frozen=True)
class Nodes(Message):
    TYPE: ClassVar[MsgType] = MsgType.NODES
    contacts: Sequence[Contact] = ()


@dataclass(frozen=True)
class FindValue(Message):
    TYPE: ClassVar[MsgType] = MsgType.FIND_VALUE
    key: NodeId = NodeId(0)


@dataclass(frozen=True)
class Value(Message):
    """Records held under the key (possibly none) and the responder's closest contacts to it."""

    TYPE: ClassVar[MsgType] = MsgType.VALUE
    records: tuple[Record, ...] = ()
    contacts: Sequence[Contact] = ()


@dataclass(frozen=True)
class Error(Message):
    TYPE: ClassVar[MsgType] = MsgType.ERROR
    code: int = ErrorCode.INTERNAL
    reason: str = ""


REQUEST_TYPES = frozenset({MsgType.PING, MsgType.STORE, MsgType.FIND_NODE, MsgType.FIND_VALUE})
RESPONSE_FOR = {
    MsgType.PING: frozenset({MsgType.PONG, MsgType.ERROR}),
    MsgType.STORE: frozenset({MsgType.STORE_RESULT, MsgType.ERROR}),
    MsgType.FIND_NODE: frozenset({MsgType.NODES, MsgType.ERROR}),
    MsgType.FIND_VALUE: frozenset({MsgType.VALUE, MsgType.ERROR}),
}


def _contact_to_wire(c: Contact) -> bytes:
    """id (32 bytes) + IPv4 (4) or IPv6 (16) address + port (2, big-endian): 38 or 50 bytes.

    Twenty of them and a record fit in one 1,200-byte QUIC packet, so a FIND_VALUE answer
    is one datagram (with host strings it was two, and each datagram wakes the peer).
    """
    packed = _packed.get(c)
    if packed is None:
        packed = _pack_contact(c)
        if len(_packed) >= MAX_PACKED_CONTACTS:
            _packed.clear()
        _packed[c] = packed
    return packed


def _pack_contact(c: Contact) -> bytes:
    try:
        packed = _pack_ip(c.host)
    except OSError:
        raise WireError(f"contact host {c.host!r} is not an IP address") from None
    if not 0 < c.port <= 65535:
        raise WireError(f"contact port {c.port} is not a port number")
    return c.node_id.to_bytes() + packed + c.port.to_bytes(2, "big")


def _pack_ip(host: str) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return socket.inet_pton(socket.AF_INET6, host)


def _port(value: Any, what: str) -> int:
    if type(value) is not int or not 1 <= value <= 65535:
        raise WireError(f"{what} must be a port number 1..65535")
    return value


def _node_id(value: Any, what: str) -> NodeId:
    if type(value) is not bytes or len(value) != ID_BYTES:
        raise WireError(f"{what} must be {ID_BYTES} bytes")
    return NodeId.from_bytes(value)


def _contacts(value: Any) -> PackedContacts:
    """Every contact checked now (type, size, port); each becomes a Contact only when read."""
    if type(value) is not list:
        raise WireError("contacts must be a list")
    if len(value) > MAX_CONTACTS_PER_MESSAGE:
        raise WireError(f"more than {MAX_CONTACTS_PER_MESSAGE} contacts in one message")
    for item in value:
        if type(item) is not bytes:
            raise WireError("a contact must be bytes: id, IP address, port")
        size = len(item)
        if size != CONTACT_V4_BYTES and size != CONTACT_V6_BYTES:
            raise WireError(
                f"a contact must be {CONTACT_V4_BYTES} (IPv4) or {CONTACT_V6_BYTES} (IPv6) bytes, got {size}"
            )
        if not (item[-2] or item[-1]):
            raise WireError("a contact port must be 1..65535")
    return PackedContacts(value)


def _records(value: Any) -> tuple[Record, ...]:
    if type(value) is not list:
        raise WireError("records must be a list")
    if len(value) > MAX_RECORDS_PER_MESSAGE:
        raise WireError(f"more than {MAX_RECORDS_PER_MESSAGE} records in one message")
    out = []
    for n, item in enumerate(value):
        try:
            out.append(Record.from_wire(item))
        except RecordError as exc:
            raise WireError(f"record {n}: {exc}") from None
    return tuple(out)


FRAME_HEADER_BYTES = 4


def encode(message: Message, sender: Sender | None = None) -> bytes:
    """The framed bytes of one message, signed off by `sender` unless the message names its own.

    Raises WireError if they would exceed MAX_MESSAGE_BYTES.
    """
    body: dict[str, Any] = {"v": WIRE_VERSION, "t": int(message.TYPE), "id": message.request_id}
    sender = message.sender or sender
    if sender is not None:
        body["s"] = [sender.node_id.to_bytes(), sender.port]
    if isinstance(message, (Store, Value)):
        body["r"] = [r.to_wire() for r in message.records]
    if isinstance(message, (Nodes, Value)):
        body["c"] = [_contact_to_wire(c) for c in message.contacts]
    if isinstance(message, StoreResult):
        body["a"] = [[ok, reason] for ok, reason in message.results]
    if isinstance(message, FindNode):
        body["k"] = message.target.to_bytes()
    if isinstance(message, FindValue):
        body["k"] = message.key.to_bytes()
    if isinstance(message, Error):
        body["c"] = int(message.code)
        body["m"] = message.reason[:MAX_REASON_CHARS]
    data = msgpack.packb(body, use_bin_type=True)
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}", ErrorCode.MESSAGE_TOO_LARGE)
    return len(data).to_bytes(FRAME_HEADER_BYTES, "big") + data


class FrameReader:
    """Collects one framed message from a stream's bytes, refusing oversize input as soon as it is declared."""

    __slots__ = ("_buf", "_expected")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._expected: int | None = None

    def feed(self, data: bytes) -> Message | None:
        """Add bytes; returns the message once complete. Raises WireError for bad or excess bytes."""
        self._buf += data
        if self._expected is None:
            if len(self._buf) < FRAME_HEADER_BYTES:
                return None
            self._expected = int.from_bytes(self._buf[:FRAME_HEADER_BYTES], "big")
            if self._expected > MAX_MESSAGE_BYTES:
                raise WireError(
                    f"declared message length {self._expected} exceeds {MAX_MESSAGE_BYTES} bytes",
                    ErrorCode.MESSAGE_TOO_LARGE,
                )
        have = len(self._buf) - FRAME_HEADER_BYTES
        if have < self._expected:
            return None
        if have > self._expected:
            raise WireError(f"{have - self._expected} bytes after the end of the message")
        return decode(bytes(self._buf[FRAME_HEADER_BYTES:]))

    def finish(self) -> None:
        """The stream ended (FIN): raise WireError if a message was cut short."""
        if self._expected is None or len(self._buf) - FRAME_HEADER_BYTES < self._expected:
            raise WireError(f"stream ended after {len(self._buf)} bytes, inside a message")

    @property
    def buffered(self) -> int:
        return len(self._buf)


def decode_whole(data: bytes) -> Message | None:
    """The message when `data` is exactly one whole frame (how a request or answer usually arrives), else None.

    Saves a FrameReader and two copies per message; anything else goes to a FrameReader.
    Raises WireError only for a complete frame whose body is bad.
    """
    size = len(data) - FRAME_HEADER_BYTES
    if size <= 0 or int.from_bytes(data[:FRAME_HEADER_BYTES], "big") != size:
        return None
    return decode(data[FRAME_HEADER_BYTES:])


def decode(data: bytes) -> Message:
    """One message from its msgpack body (without the frame header); WireError for anything else."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}", ErrorCode.MESSAGE_TOO_LARGE)
    if not data:
        raise WireError("empty message")
    try:
        body = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types for bad bytes; all mean the same here
        raise WireError(f"not a msgpack message ({type(exc).__name__})") from None
    if type(body) is not dict:
        raise WireError("a message must be a msgpack map")
    version = body.get("v")
    if version != WIRE_VERSION:
        raise WireError(
            f"unsupported wire version {version!r} (this node speaks {WIRE_VERSION})", ErrorCode.UNSUPPORTED_VERSION
        )
    raw_type = body.get("t")
    try:
        if type(raw_type) is not int:
            raise ValueError(raw_type)
        mtype = MsgType(raw_type)
    except ValueError:
        raise WireError(f"unknown message type {raw_type!r}", ErrorCode.UNKNOWN_TYPE) from None
    request_id = body.get("id")
    if type(request_id) is not int or not 0 <= request_id <= MAX_REQUEST_ID:
        raise WireError("request id must be an unsigned 64-bit integer")
    sender = None
    if "s" in body:
        s = body["s"]
        if type(s) is not list or len(s) != 2:
            raise WireError("sender must be [id, port]")
        sender = Sender(_node_id(s[0], "sender id"), _port(s[1], "sender port"))
    if mtype is MsgType.PING:
        return Ping(request_id=request_id, sender=sender)
    if mtype is MsgType.PONG:
        return Pong(request_id=request_id, sender=sender)
    if mtype is MsgType.STORE:
        return Store(records=_records(body.get("r")), request_id=request_id, sender=sender)
    if mtype is MsgType.STORE_RESULT:
        results = body.get("a")
        if (
            type(results) is not list
            or len(results) > MAX_RECORDS_PER_MESSAGE
            or not all(type(x) is list and len(x) == 2 and type(x[0]) is bool and type(x[1]) is str for x in results)
        ):
            raise WireError("store results must be a list of [accepted, reason]")
        return StoreResult(results=tuple((ok, reason) for ok, reason in results), request_id=request_id, sender=sender)
    if mtype is MsgType.FIND_NODE:
        return FindNode(target=_node_id(body.get("k"), "target"), request_id=request_id, sender=sender)
    if mtype is MsgType.NODES:
        return Nodes(contacts=_contacts(body.get("c")), request_id=request_id, sender=sender)
    if mtype is MsgType.FIND_VALUE:
        return FindValue(key=_node_id(body.get("k"), "key"), request_id=request_id, sender=sender)
    if mtype is MsgType.VALUE:
        return Value(
            records=_records(body.get("r")), contacts=_contacts(body.get("c")), request_id=request_id, sender=sender
        )
    code, reason = body.get("c"), body.get("m")
    if type(code) is not int or type(reason) is not str:
        raise WireError("an error must carry an integer code and a reason")
    return Error(code=code, reason=reason[:MAX_REASON_CHARS], request_id=request_id, sender=sender)
