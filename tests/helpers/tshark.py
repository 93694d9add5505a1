"""tshark's own decoding of a capture, to check ours against (tests that use it skip without tshark)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from dhtscope.tracing.model import Recording

PACKETS = ("quic:packet_sent", "quic:packet_received")


def _tshark_raw(cap: Path, keys: Path) -> list[tuple[int, int, list[int]]]:
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(cap),
            "-o",
            f"tls.keylog_file:{keys}",
            "-T",
            "json",
            "--no-duplicate-keys",
            "-J",
            "frame quic",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result = []
    for pkt in json.loads(out.stdout):
        layers = pkt["_source"]["layers"]
        number = int(layers["frame"]["frame.number"]) if "frame" in layers else None
        quic = layers.get("quic")
        for q in quic if isinstance(quic, list) else [quic]:
            if not isinstance(q, dict):
                continue
            pn = q.get("quic.packet_number", (q.get("quic.short") or {}).get("quic.packet_number"))
            if pn is None:
                continue
            frames = q.get("quic.frame", [])
            frames = frames if isinstance(frames, list) else [frames]
            types = [int(f["quic.frame_type"]) for f in frames if isinstance(f, dict) and "quic.frame_type" in f]
            result.append((number, int(pn), types))
    return result


TSHARK_TYPES = {
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


def tshark_packets(cap: Path, keys: Path) -> list[tuple[int, int, list[str]]]:
    """(frame number, packet number, frame types) of every QUIC packet tshark decrypts, in capture order."""
    return [
        (n, pn, [TSHARK_TYPES.get(t, "stream" if 0x08 <= t <= 0x0F else "unknown") for t in types])
        for n, pn, types in _tshark_raw(cap, keys)
    ]


def decoded_packets(rec: Recording) -> list[tuple[int, int, list[str]]]:
    """The same, from our decoding: every connection's packets, in capture order."""
    out = []
    for trace in rec.traces:
        frames = trace.info.extra["frames"]
        for e in trace:
            if e.name in PACKETS and "packet_number" in e.data.get("header", {}):
                out.append(
                    (frames[e.record], e.data["header"]["packet_number"], [f["frame_type"] for f in e.data["frames"]])
                )
    out.sort(key=lambda p: p[0])  # stable: coalesced packets keep their order within a frame
    return out
