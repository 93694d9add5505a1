"""QUIC frames (RFC 9000 section 19, RFC 9221 DATAGRAM) parsed into qlog frame objects.

Pure Python on purpose: the decrypted payload is plain bytes and the shapes are the ones
dhtscope's analysis and aioquic's own qlog use (`frame_type`, `stream_id`, `acked_ranges`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_ACK_DELAY_EXPONENT = 3  # RFC 9000 18.2; Initial and Handshake ACKs always use it

FRAME_NAMES = {
    0x00: "padding",
    0x01: "ping",
    0x02: "ack",
    0x03: "ack",
    0x04: "reset_stream",
    0x05: "stop_sending",
    0x06: "crypto",
    0x07: "new_token",
    0x10: "max_data",
    0x11: "max_stream_data",
    0x12: "max_streams",
    0x13: "max_streams",
    0x14: "data_blocked",
    0x15: "stream_data_blocked",
    0x16: "streams_blocked",
    0x17: "streams_blocked",
    0x18: "new_connection_id",
    0x19: "retire_connection_id",
    0x1A: "path_challenge",
    0x1B: "path_response",
    0x1C: "connection_close",
    0x1D: "connection_close",
    0x1E: "handshake_done",
    0x30: "datagram",
    0x31: "datagram",
}


class FrameError(ValueError):
    """A frame that runs past the end of its packet or breaks its own encoding."""


@dataclass
class Payload:
    """One packet's frames, and what the connection tracker needs from them."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    crypto: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, data)
    new_cids: list[tuple[int, bytes, bytes]] = field(default_factory=list)  # (sequence, cid, reset token)
    retired: list[int] = field(default_factory=list)
    problem: str | None = None  # why parsing stopped early, if it did


def varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the QUIC variable-length integer at `pos`."""
    first = buf[pos]
    kind = first >> 6
    if kind == 0:
        return first, pos + 1
    if kind == 1:
        return ((first & 0x3F) << 8) | buf[pos + 1], pos + 2
    if kind == 2:
        end = pos + 4
        if end > len(buf):
            raise IndexError
        return int.from_bytes(buf[pos:end], "big") & 0x3FFFFFFF, end
    end = pos + 8
    if end > len(buf):
        raise IndexError
    return int.from_bytes(buf[pos:end], "big") & 0x3FFFFFFFFFFFFFFF, end


def _bytes(buf: bytes, pos: int, n: int) -> tuple[bytes, int]:
    end = pos + n
    if end > len(buf):
        raise IndexError
    return buf[pos:end], end


def parse_frames(buf: bytes, ack_delay_exponent: int = DEFAULT_ACK_DELAY_EXPONENT) -> Payload:
    """Every frame of a decrypted packet payload; an unknown or broken frame ends the parse."""
    out = Payload()
    frames = out.frames
    n = len(buf)
    pos = 0
    try:
        while pos < n:
            start = pos
            ftype, pos = varint(buf, pos)
            if ftype == 0x00:
                while pos < n and buf[pos] == 0:
                    pos += 1
                frames.append({"frame_type": "padding", "length": pos - start, "payload_length": pos - start})
            elif 0x08 <= ftype <= 0x0F:
                sid, pos = varint(buf, pos)
                offset = 0
                if ftype & 0x04:
                    offset, pos = varint(buf, pos)
                if ftype & 0x02:
                    length, pos = varint(buf, pos)
                    if pos + length > n:
                        raise IndexError
                else:
                    length = n - pos
                pos += length
                frames.append(
                    {
                        "frame_type": "stream",
                        "stream_id": sid,
                        "offset": offset,
                        "length": length,
                        "fin": bool(ftype & 0x01),
                    }
                )
            elif ftype == 0x02 or ftype == 0x03:
                largest, pos = varint(buf, pos)
                delay, pos = varint(buf, pos)
                count, pos = varint(buf, pos)
                first_range, pos = varint(buf, pos)
                hi = largest
                lo = hi - first_range
                if lo < 0:
                    raise FrameError("ACK range below packet number 0")
                ranges = [[lo, hi]]
                for _ in range(count):
                    gap, pos = varint(buf, pos)
                    length, pos = varint(buf, pos)
                    hi = lo - gap - 2
                    lo = hi - length
                    if lo < 0:
                        raise FrameError("ACK range below packet number 0")
                    ranges.append([lo, hi])
                ranges.reverse()
                frame: dict[str, Any] = {
                    "frame_type": "ack",
                    "ack_delay": (delay << ack_delay_exponent) / 1000.0,
                    "acked_ranges": ranges,
                }
                if ftype == 0x03:
                    frame["ect0"], pos = varint(buf, pos)
                    frame["ect1"], pos = varint(buf, pos)
                    frame["ce"], pos = varint(buf, pos)
                frames.append(frame)
            elif ftype == 0x01:
                frames.append({"frame_type": "ping"})
            elif ftype == 0x06:
                offset, pos = varint(buf, pos)
                length, pos = varint(buf, pos)
                data, pos = _bytes(buf, pos, length)
                out.crypto.append((offset, data))
                frames.append({"frame_type": "crypto", "offset": offset, "length": length})
            elif ftype == 0x04:
                sid, pos = varint(buf, pos)
                code, pos = varint(buf, pos)
                final, pos = varint(buf, pos)
                frames.append({"frame_type": "reset_stream", "stream_id": sid, "error_code": code, "final_size": final})
            elif ftype == 0x05:
                sid, pos = varint(buf, pos)
                code, pos = varint(buf, pos)
                frames.append({"frame_type": "stop_sending", "stream_id": sid, "error_code": code})
            elif ftype == 0x07:
                length, pos = varint(buf, pos)
                token, pos = _bytes(buf, pos, length)
                frames.append({"frame_type": "new_token", "length": length, "token": token.hex()})
            elif ftype == 0x10:
                maximum, pos = varint(buf, pos)
                frames.append({"frame_type": "max_data", "maximum": maximum})
            elif ftype == 0x11:
                sid, pos = varint(buf, pos)
                maximum, pos = varint(buf, pos)
                frames.append({"frame_type": "max_stream_data", "stream_id": sid, "maximum": maximum})
            elif ftype == 0x12 or ftype == 0x13:
                maximum, pos = varint(buf, pos)
                frames.append(
                    {
                        "frame_type": "max_streams",
                        "stream_type": "bidirectional" if ftype == 0x12 else "unidirectional",
                        "maximum": maximum,
                    }
                )
            elif ftype == 0x14:
                limit, pos = varint(buf, pos)
                frames.append({"frame_type": "data_blocked", "limit": limit})
            elif ftype == 0x15:
                sid, pos = varint(buf, pos)
                limit, pos = varint(buf, pos)
                frames.append({"frame_type": "stream_data_blocked", "stream_id": sid, "limit": limit})
            elif ftype == 0x16 or ftype == 0x17:
                limit, pos = varint(buf, pos)
                frames.append(
                    {
                        "frame_type": "streams_blocked",
                        "stream_type": "bidirectional" if ftype == 0x16 else "unidirectional",
                        "limit": limit,
                    }
                )
            elif ftype == 0x18:
                seq, pos = varint(buf, pos)
                retire, pos = varint(buf, pos)
                if pos >= n:
                    raise IndexError
                length = buf[pos]
                if not 1 <= length <= 20:
                    raise FrameError(f"NEW_CONNECTION_ID with a {length}-byte connection id")
                cid, pos = _bytes(buf, pos + 1, length)
                token, pos = _bytes(buf, pos, 16)
                out.new_cids.append((seq, cid, token))
                frames.append(
                    {
                        "frame_type": "new_connection_id",
                        "sequence_number": seq,
                        "retire_prior_to": retire,
                        "length": length,
                        "connection_id": cid.hex(),
                        "reset_token": token.hex(),
                    }
                )
            elif ftype == 0x19:
                seq, pos = varint(buf, pos)
                out.retired.append(seq)
                frames.append({"frame_type": "retire_connection_id", "sequence_number": seq})
            elif ftype == 0x1A or ftype == 0x1B:
                data, pos = _bytes(buf, pos, 8)
                frames.append(
                    {"frame_type": "path_challenge" if ftype == 0x1A else "path_response", "data": data.hex()}
                )
            elif ftype == 0x1C or ftype == 0x1D:
                code, pos = varint(buf, pos)
                trigger = None
                if ftype == 0x1C:
                    trigger, pos = varint(buf, pos)
                length, pos = varint(buf, pos)
                reason, pos = _bytes(buf, pos, length)
                frame = {
                    "frame_type": "connection_close",
                    "error_space": "transport" if ftype == 0x1C else "application",
                    "error_code": code,
                    "raw_error_code": code,
                    "reason": reason.decode("utf-8", errors="replace"),
                }
                if trigger is not None:
                    frame["trigger_frame_type"] = trigger
                frames.append(frame)
            elif ftype == 0x1E:
                frames.append({"frame_type": "handshake_done"})
            elif ftype == 0x30 or ftype == 0x31:
                if ftype == 0x31:
                    length, pos = varint(buf, pos)
                    if pos + length > n:
                        raise IndexError
                else:
                    length = n - pos
                pos += length
                frames.append({"frame_type": "datagram", "length": length})
            else:
                frames.append({"frame_type": "unknown", "raw_frame_type": ftype})
                out.problem = f"unknown frame type 0x{ftype:x}"
                break
    except IndexError:
        out.problem = f"frame at byte {start} runs past the end of the packet"
    except FrameError as exc:
        out.problem = f"frame at byte {start}: {exc}"
    return out
