"""The wire codec: round trips, framing, limits, and one error type for any bad input."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dhtscope.node.constants import MAX_CONTACTS_PER_MESSAGE, MAX_MESSAGE_BYTES, WIRE_VERSION
from dhtscope.node.ids import Contact, NodeId
from dhtscope.node.keys import Identity
from dhtscope.node.records import Record
from dhtscope.node.wire import (
    FRAME_HEADER_BYTES,
    Error,
    ErrorCode,
    FindNode,
    FindValue,
    FrameReader,
    Nodes,
    Ping,
    Pong,
    Sender,
    Store,
    StoreResult,
    Value,
    WireError,
    decode,
    encode,
)

IDENTITY = Identity.generate()
NOW = 1_700_000_000.0


def body(message) -> bytes:
    return encode(message)[FRAME_HEADER_BYTES:]


def sample_messages():
    sender = Sender(IDENTITY.node_id, 4500)
    contact = Contact(NodeId.random(), "127.0.0.1", 4501)
    record = Record.create(IDENTITY, NodeId.for_name("calculator"), b"127.0.0.1:9001", 1, 300, NOW, name="calculator")
    return [
        Ping(1, sender=sender),
        Pong(1, sender=sender),
        Store(2, records=(record,), sender=sender),
        StoreResult(2, results=((True, "stored"), (False, "too many"))),
        FindNode(3, target=NodeId.random()),
        Nodes(3, contacts=(contact, Contact(NodeId.random(), "2001:db8::7", 65535))),
        FindValue(4, key=NodeId.for_name("calculator")),
        Value(4, records=(record,), contacts=(contact,)),
        Error(5, code=ErrorCode.MALFORMED, reason="bad"),
    ]


@pytest.mark.parametrize("message", sample_messages(), ids=lambda m: m.TYPE.name)
def test_every_message_round_trips(message):
    assert decode(body(message)) == message


def test_frame_reader_returns_message_only_when_complete():
    frame = encode(Ping(7))
    reader = FrameReader()
    assert reader.feed(frame[:3]) is None
    assert reader.feed(frame[3:-1]) is None
    assert reader.feed(frame[-1:]) == Ping(7)


def test_frame_reader_refuses_declared_oversize_before_reading_it():
    reader = FrameReader()
    with pytest.raises(WireError) as info:
        reader.feed((MAX_MESSAGE_BYTES + 1).to_bytes(4, "big"))
    assert info.value.code == ErrorCode.MESSAGE_TOO_LARGE


def test_frame_reader_refuses_bytes_after_the_message():
    with pytest.raises(WireError, match="after the end"):
        FrameReader().feed(encode(Ping(1)) + b"x")


def test_stream_ending_inside_a_message_is_an_error():
    reader = FrameReader()
    reader.feed(encode(Ping(1))[:5])
    with pytest.raises(WireError, match="inside a message"):
        reader.finish()


@pytest.mark.parametrize(
    "raw, code",
    [
        (msgpack.packb({"v": 99, "t": 1, "id": 1}), ErrorCode.UNSUPPORTED_VERSION),
        (msgpack.packb({"v": WIRE_VERSION, "t": 0x55, "id": 1}), ErrorCode.UNKNOWN_TYPE),
        (msgpack.packb({"v": WIRE_VERSION, "t": 1, "id": -1}), ErrorCode.MALFORMED),
        (msgpack.packb([1, 2, 3]), ErrorCode.MALFORMED),
        (b"\xc1", ErrorCode.MALFORMED),
        (msgpack.packb({"v": WIRE_VERSION, "t": 0x20, "id": 1, "k": b"short"}), ErrorCode.MALFORMED),
        (msgpack.packb({"v": WIRE_VERSION, "t": 0x21, "id": 1, "c": [[b"x" * 32, "h", 70000]]}), ErrorCode.MALFORMED),
        (msgpack.packb({"v": WIRE_VERSION, "t": 0x21, "id": 1, "c": [b"x" * 37]}), ErrorCode.MALFORMED),
        (msgpack.packb({"v": WIRE_VERSION, "t": 0x21, "id": 1, "c": [b"x" * 36 + b"\0\0"]}), ErrorCode.MALFORMED),
        (msgpack.packb({"v": 1, "t": 1, "id": 1}), ErrorCode.UNSUPPORTED_VERSION),
    ],
)
def test_malformed_bodies_raise_wire_error_with_code(raw, code):
    with pytest.raises(WireError) as info:
        decode(raw)
    assert info.value.code == code


def test_too_many_contacts_is_refused():
    contacts = [NodeId.random().to_bytes() + bytes([127, 0, 0, 1]) + (1000).to_bytes(2, "big")] * (
        MAX_CONTACTS_PER_MESSAGE + 1
    )
    with pytest.raises(WireError, match="contacts"):
        decode(msgpack.packb({"v": WIRE_VERSION, "t": 0x21, "id": 1, "c": contacts}))


def test_encode_refuses_messages_over_the_limit():
    records = tuple(
        Record.create(IDENTITY, NodeId.random(), bytes(1000), 1, 300, NOW) for _ in range(MAX_MESSAGE_BYTES // 1000)
    )
    with pytest.raises(WireError) as info:
        encode(Store(1, records=records))
    assert info.value.code == ErrorCode.MESSAGE_TOO_LARGE


def test_a_contact_is_38_bytes_for_ipv4_and_twenty_and_a_record_fit_one_quic_packet():
    contacts = tuple(Contact(NodeId.random(), f"10.0.0.{i}", 4433) for i in range(20))
    record = Record.create(IDENTITY, NodeId.for_name("calculator"), b"127.0.0.1:9001", 1, 300, NOW, name="calculator")
    answer = encode(Value(2**63, records=(record,), contacts=contacts, sender=Sender(IDENTITY.node_id, 65535)))
    # 1,200-byte QUIC packets carry about 1,150 bytes of stream data after headers and the AEAD tag.
    assert len(answer) <= 1_150
    assert decode(answer[FRAME_HEADER_BYTES:]).contacts == contacts


def test_a_contact_that_is_not_an_ip_address_is_refused_by_name():
    with pytest.raises(WireError, match="'example.org' is not an IP address"):
        encode(Nodes(1, contacts=(Contact(NodeId.random(), "example.org", 4433),)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_decode_to_a_message_or_wire_error(data):
    try:
        message = decode(data)
    except WireError as exc:
        assert str(exc)
    else:
        assert message.TYPE is not None


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "t", "id", "s", "k", "c", "r", "a", "m"]), json_like))
def test_any_msgpack_map_decodes_to_a_message_or_wire_error(fields):
    fields.setdefault("v", WIRE_VERSION)
    try:
        message = decode(msgpack.packb(fields, use_bin_type=True))
    except WireError as exc:
        assert exc.code in set(ErrorCode)
    else:
        assert decode(encode(message)[FRAME_HEADER_BYTES:]) == message


def test_decoded_contacts_are_built_only_when_read_and_equal_the_originals(monkeypatch):
    from dhtscope.node import ids
    from dhtscope.node.ids import PackedContacts

    contacts = tuple(Contact(NodeId.random(), f"10.0.0.{i}", 4000 + i) for i in range(20)) + (
        Contact(NodeId.random(), "2001:db8::1", 4500),
    )
    built = []
    real = ids.unpack_contact
    monkeypatch.setattr(ids, "unpack_contact", lambda item: built.append(1) or real(item))
    message = decode(encode(Nodes(1, contacts=contacts))[FRAME_HEADER_BYTES:])
    assert isinstance(message.contacts, PackedContacts) and len(message.contacts) == 21
    assert message.contacts.id_values() == [c.node_id.value for c in contacts]
    assert built == []
    assert message.contacts[3] == contacts[3] and len(built) == 1
    assert message.contacts == contacts and contacts == message.contacts
    assert hash(message.contacts) == hash(contacts)
    assert message == Nodes(1, contacts=contacts)
    assert len(built) == 21  # each built once, then kept


def test_a_whole_frame_decodes_at_once_and_anything_else_is_left_to_the_reader():
    from dhtscope.node.wire import decode_whole

    framed = encode(Ping(7, sender=Sender(NodeId.random(), 4000)))
    assert decode_whole(framed) == Ping(7, sender=decode(framed[FRAME_HEADER_BYTES:]).sender)
    assert decode_whole(framed[:-1]) is None  # cut short: the reader waits for the rest
    assert decode_whole(framed + b"x") is None  # trailing bytes: the reader refuses them
    assert decode_whole(b"") is None and decode_whole(framed[:FRAME_HEADER_BYTES]) is None
    with pytest.raises(WireError):
        decode_whole((3).to_bytes(FRAME_HEADER_BYTES, "big") + b"\xc1\xc1\xc1")  # whole, and not msgpack
