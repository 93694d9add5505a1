"""Capture decoding speed: dhtscope's reader beside tshark on the same capture and keys.

Builds a capture of many QUIC connections (aioquic client and server in one process, every
datagram written by CaptureWriter, secrets in a key log file), then times

    dhtscope: read_capture (decrypt, attribute, parse every frame, build qlog events)
    tshark:   tshark -o tls.keylog_file:KEYS -T json -r CAP > /dev/null   (where installed)

and prints packets per second for each and their ratio; `make bench` runs it as its capture section.

    .venv/bin/python bench/capture_bench.py                      # 1,000 connections
    .venv/bin/python bench/capture_bench.py --connections 5000 --streams 40 --json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "helpers"))

from quicpair import T0, Plan, record  # noqa: E402  (test helpers by path)

from dhtscope.tracing.capture import read_capture_with_summary  # noqa: E402
from dhtscope.tracing.capture.writer import CaptureWriter  # noqa: E402

# Connections start this far apart: thousands overlap in time as on a busy server.
CONNECTION_SPACING_S = 0.002


def build(directory: Path, connections: int, streams: int, request_bytes: int) -> tuple[Path, Path, int]:
    """A pcapng of `connections` interleaved connections and its key log; returns the datagram count."""
    cap, keys = directory / "bench.pcapng", directory / "bench.keys"
    datagrams = []
    keylog = []
    plan = Plan(streams=streams, request=b"r" * request_bytes, answer_bytes=b"a" * request_bytes)
    for i in range(connections):
        conv, got = record(
            client_port=20000 + i % 40000,
            host_suffix=1 + i // 40000 * 256 + i % 250,
            plan=plan,
            start_s=T0 + i * CONNECTION_SPACING_S,
        )
        datagrams.extend(got)
        keylog.append(conv.keylog)
    datagrams.sort(key=lambda d: d[0])
    with CaptureWriter(cap) as writer:
        for t, src, dst, data in datagrams:
            writer.write(t, src, dst, data)
    keys.write_text("".join(keylog))
    return cap, keys, len(datagrams)


def time_dhtscope(cap: Path, keys: Path) -> tuple[float, int, int, int]:
    import dhtscope.tracing.capture.decoder  # noqa: F401  (aioquic's import, once per process, is not decoding)

    start = time.perf_counter()
    rec, summary = read_capture_with_summary(cap, keylog=keys)
    elapsed = time.perf_counter() - start
    if summary.decrypted != summary.packets:
        raise SystemExit(f"bench capture did not decrypt fully: {rec.warnings[:3]}")
    return elapsed, summary.packets, summary.connections, sum(len(t) for t in rec.traces)


def time_tshark(cap: Path, keys: Path) -> float | None:
    tshark = shutil.which("tshark")
    if tshark is None:
        return None
    start = time.perf_counter()
    subprocess.run(
        [tshark, "-o", f"tls.keylog_file:{keys}", "-T", "json", "-r", str(cap)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=20, help="request streams per connection")
    parser.add_argument("--request-bytes", type=int, default=2000, help="bytes each way on each stream")
    parser.add_argument("--keep", type=Path, help="build the capture in this directory and keep it")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        cap, keys, datagrams = build(directory, args.connections, args.streams, args.request_bytes)
        built_s = time.perf_counter() - t
        ours_s, packets, conns, events = time_dhtscope(cap, keys)
        theirs_s = time_tshark(cap, keys)
        result = {
            "connections": conns,
            "datagrams": datagrams,
            "packets": packets,
            "events": events,
            "capture_bytes": cap.stat().st_size,
            "build_s": round(built_s, 2),
            "dhtscope_s": round(ours_s, 3),
            "dhtscope_packets_per_s": round(packets / ours_s),
            "tshark_s": round(theirs_s, 3) if theirs_s is not None else None,
            "tshark_packets_per_s": round(packets / theirs_s) if theirs_s else None,
            "ratio": round(theirs_s / ours_s, 2) if theirs_s else None,
        }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"capture: {conns} connections, {datagrams} datagrams, {packets} QUIC packets, "
        f"{result['capture_bytes'] / 1e6:.1f} MB (built in {built_s:.1f} s)"
    )
    print(f"dhtscope  {ours_s:8.2f} s  {result['dhtscope_packets_per_s']:>10,} packets/s")
    if theirs_s is None:
        print("tshark    not installed (apt-get install tshark): no comparison")
    else:
        print(f"tshark    {theirs_s:8.2f} s  {result['tshark_packets_per_s']:>10,} packets/s  (-T json, keys)")
        print(f"dhtscope is {result['ratio']:.2f}x tshark's rate (target: at least 1.0x)")


if __name__ == "__main__":
    main()
