"""QUIC frame parsing: every RFC 9000 frame type (and DATAGRAM) round-trips through an encoder."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dhtscope.tracing.capture.frames import parse_frames

VARINT_MAX = (1 << 62) - 1
varints = st.integers(0, VARINT_MAX)
small = st.integers(0, 1 << 20)


def enc(v: int) -> bytes:
    if v < 1 << 6:
        return v.to_bytes(1, "big")
    if v < 1 << 14:
        return (v | 0x4000).to_bytes(2, "big")
    if v < 1 << 30:
        return (v | 0x80000000).to_bytes(4, "big")
    return (v | 0xC000000000000000).to_bytes(8, "big")


def encode(frame: dict) -> bytes:
    """The wire form of a qlog frame object as parse_frames returns it (test-only encoder)."""
    t = frame["frame_type"]
    if t == "padding":
        return b"\0" * frame["length"]
    if t == "ping":
        return b"\x01"
    if t == "ack":
        ranges = frame["acked_ranges"][::-1]
        ecn = "ect0" in frame
        out = enc(3 if ecn else 2) + enc(ranges[0][1]) + enc(round(frame["ack_delay"] * 1000) >> 3)
        out += enc(len(ranges) - 1) + enc(ranges[0][1] - ranges[0][0])
        lo = ranges[0][0]
        for r_lo, r_hi in ranges[1:]:
            out += enc(lo - r_hi - 2) + enc(r_hi - r_lo)
            lo = r_lo
        if ecn:
            out += enc(frame["ect0"]) + enc(frame["ect1"]) + enc(frame["ce"])
        return out
    if t == "reset_stream":
        return b"\x04" + enc(frame["stream_id"]) + enc(frame["error_code"]) + enc(frame["final_size"])
    if t == "stop_sending":
        return b"\x05" + enc(frame["stream_id"]) + enc(frame["error_code"])
    if t == "crypto":
        return b"\x06" + enc(frame["offset"]) + enc(frame["length"]) + b"c" * frame["length"]
    if t == "new_token":
        token = bytes.fromhex(frame["token"])
        return b"\x07" + enc(len(token)) + token
    if t == "stream":
        return (
            bytes([0x08 | 0x04 | 0x02 | int(frame["fin"])])
            + enc(frame["stream_id"])
            + enc(frame["offset"])
            + enc(frame["length"])
            + b"s" * frame["length"]
        )
    if t == "max_data":
        return b"\x10" + enc(frame["maximum"])
    if t == "max_stream_data":
        return b"\x11" + enc(frame["stream_id"]) + enc(frame["maximum"])
    if t == "max_streams":
        return (b"\x12" if frame["stream_type"] == "bidirectional" else b"\x13") + enc(frame["maximum"])
    if t == "data_blocked":
        return b"\x14" + enc(frame["limit"])
    if t == "stream_data_blocked":
        return b"\x15" + enc(frame["stream_id"]) + enc(frame["limit"])
    if t == "streams_blocked":
        return (b"\x16" if frame["stream_type"] == "bidirectional" else b"\x17") + enc(frame["limit"])
    if t == "new_connection_id":
        cid = bytes.fromhex(frame["connection_id"])
        return (
            b"\x18"
            + enc(frame["sequence_number"])
            + enc(frame["retire_prior_to"])
            + bytes([len(cid)])
            + cid
            + bytes.fromhex(frame["reset_token"])
        )
    if t == "retire_connection_id":
        return b"\x19" + enc(frame["sequence_number"])
    if t in ("path_challenge", "path_response"):
        return (b"\x1a" if t == "path_challenge" else b"\x1b") + bytes.fromhex(frame["data"])
    if t == "connection_close":
        reason = frame["reason"].encode()
        if frame["error_space"] == "transport":
            return b"\x1c" + enc(frame["error_code"]) + enc(frame["trigger_frame_type"]) + enc(len(reason)) + reason
        return b"\x1d" + enc(frame["error_code"]) + enc(len(reason)) + reason
    if t == "handshake_done":
        return b"\x1e"
    if t == "datagram":
        return b"\x31" + enc(frame["length"]) + b"d" * frame["length"]
    raise AssertionError(t)


def _ack(draw_ranges: list[tuple[int, int]], delay: int, ecn: tuple[int, int, int] | None) -> dict:
    # Build descending, non-adjacent ranges from (gap, length) pairs.
    hi = sum(gap + length + 2 for gap, length in draw_ranges) + 5
    ranges = []
    for gap, length in draw_ranges:
        lo = hi - length
        ranges.append([lo, hi])
        hi = lo - gap - 2
    frame = {"frame_type": "ack", "ack_delay": (delay << 3) / 1000.0, "acked_ranges": ranges[::-1]}
    if ecn:
        frame["ect0"], frame["ect1"], frame["ce"] = ecn
    return frame


cid = st.binary(min_size=1, max_size=20).map(bytes.hex)
frames = st.one_of(
    st.integers(1, 50).map(lambda n: {"frame_type": "padding", "length": n, "payload_length": n}),
    st.just({"frame_type": "ping"}),
    st.builds(
        _ack,
        st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 1000)), min_size=1, max_size=5),
        st.integers(0, 1 << 20),
        st.none() | st.tuples(small, small, small),
    ),
    st.builds(
        lambda s, c, f: {"frame_type": "reset_stream", "stream_id": s, "error_code": c, "final_size": f},
        varints,
        varints,
        varints,
    ),
    st.builds(lambda s, c: {"frame_type": "stop_sending", "stream_id": s, "error_code": c}, varints, varints),
    st.builds(lambda o, n: {"frame_type": "crypto", "offset": o, "length": n}, varints, st.integers(0, 64)),
    st.binary(max_size=40).map(lambda b: {"frame_type": "new_token", "length": len(b), "token": b.hex()}),
    st.builds(
        lambda s, o, n, fin: {"frame_type": "stream", "stream_id": s, "offset": o, "length": n, "fin": fin},
        varints,
        varints,
        st.integers(0, 64),
        st.booleans(),
    ),
    st.builds(lambda m: {"frame_type": "max_data", "maximum": m}, varints),
    st.builds(lambda s, m: {"frame_type": "max_stream_data", "stream_id": s, "maximum": m}, varints, varints),
    st.builds(
        lambda bidi, m: {"frame_type": "max_streams", "stream_type": bidi, "maximum": m},
        st.sampled_from(["bidirectional", "unidirectional"]),
        varints,
    ),
    st.builds(lambda m: {"frame_type": "data_blocked", "limit": m}, varints),
    st.builds(lambda s, m: {"frame_type": "stream_data_blocked", "stream_id": s, "limit": m}, varints, varints),
    st.builds(
        lambda bidi, m: {"frame_type": "streams_blocked", "stream_type": bidi, "limit": m},
        st.sampled_from(["bidirectional", "unidirectional"]),
        varints,
    ),
    st.builds(
        lambda seq, r, c, tok: {
            "frame_type": "new_connection_id",
            "sequence_number": seq,
            "retire_prior_to": r,
            "length": len(c) // 2,
            "connection_id": c,
            "reset_token": tok.hex(),
        },
        varints,
        varints,
        cid,
        st.binary(min_size=16, max_size=16),
    ),
    st.builds(lambda seq: {"frame_type": "retire_connection_id", "sequence_number": seq}, varints),
    st.builds(
        lambda k, d: {"frame_type": k, "data": d.hex()},
        st.sampled_from(["path_challenge", "path_response"]),
        st.binary(min_size=8, max_size=8),
    ),
    st.builds(
        lambda code, trig, reason: {
            "frame_type": "connection_close",
            "error_space": "transport",
            "error_code": code,
            "raw_error_code": code,
            "reason": reason,
            "trigger_frame_type": trig,
        },
        varints,
        varints,
        st.text(max_size=30),
    ),
    st.builds(
        lambda code, reason: {
            "frame_type": "connection_close",
            "error_space": "application",
            "error_code": code,
            "raw_error_code": code,
            "reason": reason,
        },
        varints,
        st.text(max_size=30),
    ),
    st.just({"frame_type": "handshake_done"}),
    st.integers(0, 64).map(lambda n: {"frame_type": "datagram", "length": n}),
)


def _no_adjacent_padding(fs: list[dict]) -> bool:
    return not any(a["frame_type"] == b["frame_type"] == "padding" for a, b in zip(fs, fs[1:], strict=False))


@given(st.lists(frames, min_size=1, max_size=12).filter(_no_adjacent_padding))
def test_frames_round_trip_through_parse(fs):
    parsed = parse_frames(b"".join(encode(f) for f in fs))
    assert parsed.problem is None
    assert parsed.frames == fs
    assert len(parsed.crypto) == sum(1 for f in fs if f["frame_type"] == "crypto")
    assert [c.hex() for _, c, _ in parsed.new_cids] == [
        f["connection_id"] for f in fs if f["frame_type"] == "new_connection_id"
    ]


@given(st.binary(max_size=200))
def test_any_bytes_parse_to_frames_or_one_stated_problem(data):
    parsed = parse_frames(data)
    assert isinstance(parsed.frames, list)
    assert parsed.problem is None or isinstance(parsed.problem, str)


def test_an_unknown_frame_type_ends_the_parse_with_a_note():
    parsed = parse_frames(b"\x01" + enc(0x4000AF) + b"\x01")
    assert [f["frame_type"] for f in parsed.frames] == ["ping", "unknown"]
    assert parsed.problem == f"unknown frame type 0x{0x4000AF:x}"


def test_a_stream_frame_without_length_runs_to_the_end_of_the_packet():
    parsed = parse_frames(bytes([0x09]) + enc(4) + b"abc")
    assert parsed.frames == [{"frame_type": "stream", "stream_id": 4, "offset": 0, "length": 3, "fin": True}]
