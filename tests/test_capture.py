"""Captures made here from real QUIC conversations (aioquic client and server in one process),
read back: containers, link types, QUIC versions, keys right, wrong and missing, and errors."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))

from quicpair import V1, V2, Plan, record, write_capture, write_datagrams
from tshark import decoded_packets, tshark_packets

from dhtscope.tracing.capture import CaptureError, is_capture, read_capture, read_capture_with_summary, read_keylog
from dhtscope.tracing.capture.files import open_capture
from dhtscope.tracing.capture.versions import version_name

PACKETS = ("quic:packet_sent", "quic:packet_received")


def packets(trace):
    return [e for e in trace if e.name in PACKETS]


def frame_types(trace):
    return [f["frame_type"] for e in packets(trace) for f in e.data.get("frames", ())]


def stream_frames(trace, name):
    return [f for e in trace if e.name == name for f in e.data.get("frames", ()) if f["frame_type"] == "stream"]


def assert_fully_decrypted(rec, streams=3):
    assert len(rec.traces) == 1
    trace = rec.traces[0]
    assert not [e for e in trace if e.name == "quic:packet_dropped"], rec.warnings
    assert trace.info.extra["decrypted"] == "full"
    sent = {f["stream_id"] for f in stream_frames(trace, "quic:packet_sent")}
    assert len(sent) == streams
    answered = {f["stream_id"] for f in stream_frames(trace, "quic:packet_received") if f["fin"]}
    assert answered == sent


# ----------------------------------------------------------------------------- containers


@pytest.mark.parametrize("fmt", ["pcapng", "pcap"])
@pytest.mark.parametrize("link", ["ethernet", "raw"])
def test_formats_and_link_types_written_by_the_writer_decrypt_fully(tmp_path, fmt, link):
    cap, keys = tmp_path / f"c.{fmt}", tmp_path / "keys.log"
    conv = write_capture(cap, fmt=fmt, link=link, dsb=False, keylog_path=keys)
    rec = read_capture(cap, keylog=keys)
    assert_fully_decrypted(rec)
    info = rec.traces[0].info
    assert info.format == fmt
    assert info.vantage == "network"
    assert info.odcid == conv.odcid.hex()
    assert info.node == "10.0.0.1:50000 → 10.1.0.1:4433"
    assert info.extra["capture"] is True
    assert len(info.extra["frames"]) == len(rec.traces[0])


def test_pcapng_secrets_block_decrypts_without_a_key_file(tmp_path):
    cap = tmp_path / "c.pcapng"
    write_capture(cap, dsb=True)
    rec = read_capture(cap)
    assert_fully_decrypted(rec)
    assert rec.warnings == []


def test_without_any_keys_initial_packets_still_decode_and_each_connection_says_why(tmp_path):
    cap = tmp_path / "c.pcapng"
    conv = write_capture(cap, dsb=False)
    rec = read_capture(cap)
    trace = rec.traces[0]
    kinds = {e.data["header"]["packet_type"] for e in packets(trace)}
    assert kinds == {"initial"}  # Initial keys come from the connection id alone
    dropped = [e for e in trace if e.name == "quic:packet_dropped"]
    assert dropped and all(e.data["trigger"] == "key_unavailable" for e in dropped)
    assert {e.data["details"]["sender"] for e in dropped} == {"client", "server"}
    assert trace.info.extra["decrypted"] == "partial"
    [line] = [w for w in rec.warnings if w.startswith("connection")]
    random = conv.keylog.split()[1]
    assert f"no keys for client random {random}" in line and "no key log given" in line
    # The client's ALPN and transport parameters are in the Initial: readable without keys.
    assert any(e.name == "quic:alpn_information" and e.data["client_alpns"] == ["dhtscope/1"] for e in trace)


def test_wrong_keys_are_named_as_such(tmp_path):
    cap, keys = tmp_path / "c.pcapng", tmp_path / "keys.log"
    conv = write_capture(cap, dsb=False)
    wrong = "\n".join(
        f"{label} {random} {os.urandom(len(secret) // 2).hex()}"
        for label, random, secret in (line.split() for line in conv.keylog.splitlines())
    )
    keys.write_text(wrong)
    rec = read_capture(cap, keylog=keys)
    [line] = [w for w in rec.warnings if w.startswith("connection")]
    assert "wrong keys for client random" in line and "fail AEAD" in line
    triggers = {e.data["trigger"] for e in rec.traces[0] if e.name == "quic:packet_dropped"}
    assert triggers == {"decryption_failure"}


def test_a_key_log_for_another_connection_matches_none(tmp_path):
    cap, other, keys = tmp_path / "c.pcapng", tmp_path / "other.pcapng", tmp_path / "keys.log"
    write_capture(cap, dsb=False)
    write_capture(other, dsb=False, keylog_path=keys)
    rec = read_capture(cap, keylog=keys)
    assert any("matches no connection in the capture" in w for w in rec.warnings)
    assert any("no keys for client random" in w for w in rec.warnings)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nanos", [False, True])
def test_pcap_byte_orders_and_resolutions_give_the_datagrams_times(tmp_path, order, nanos):
    conv, datagrams = record()
    cap = tmp_path / "c.pcap"
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    raw = tmp_path / "raw.pcap"
    write_datagrams(raw, datagrams, fmt="pcap", link="raw")
    with open_capture(raw) as f:
        frames = [data for _, _, _, data, _ in f.frames()]
    body = bytearray(struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, 101))
    for (t, *_), frame in zip(datagrams, frames, strict=True):
        sec = int(t)
        frac = round((t - sec) * (1e9 if nanos else 1e6))
        body += struct.pack(order + "IIII", sec, frac, len(frame), len(frame)) + frame
    cap.write_bytes(bytes(body))
    rec = read_capture(cap, keylog=_keys(tmp_path, conv))
    assert_fully_decrypted(rec)
    first = packets(rec.traces[0])[0]
    assert first.time_ms == pytest.approx(datagrams[0][0] * 1000.0, abs=1e-3)


def _keys(tmp_path: Path, conv) -> Path:
    path = tmp_path / "keys.log"
    path.write_text(conv.keylog)
    return path


def _raw_frames(tmp_path: Path, datagrams) -> list[bytes]:
    raw = tmp_path / "raw.pcap"
    write_datagrams(raw, datagrams, fmt="pcap", link="raw")
    with open_capture(raw) as f:
        return [data for _, _, _, data, _ in f.frames()]


def _wrap(linktype: int, ip: bytes, outgoing: bool) -> bytes:
    v6 = ip[0] >> 4 == 6
    proto = 0x86DD if v6 else 0x0800
    if linktype == 113:  # SLL
        return struct.pack(">HHH8sH", 4 if outgoing else 0, 1, 6, b"\x02" * 6 + b"\0\0", proto) + ip
    if linktype == 276:  # SLL2
        return struct.pack(">HHIHBB8s", proto, 0, 2, 1, 4 if outgoing else 0, 6, b"\x02" * 6 + b"\0\0") + ip
    if linktype == 0:  # BSD loopback in this host's byte order
        return struct.pack("=I", 30 if v6 else 2) + ip
    if linktype == 108:  # OpenBSD loopback, network byte order
        return struct.pack(">I", 24 if v6 else 2) + ip
    if linktype == 1:  # Ethernet with an 802.1Q tag
        return b"\x02" * 6 + b"\x04" * 6 + struct.pack(">HHH", 0x8100, 42, proto) + ip
    return ip  # 228 / 229 / 101: the IP packet itself


@pytest.mark.parametrize(
    "linktype,ipv6",
    [
        (113, False),
        (276, False),
        (276, True),
        (0, False),
        (0, True),
        (108, False),
        (1, False),
        (228, False),
        (229, True),
    ],
    ids=["sll", "sll2", "sll2-v6", "null", "null-v6", "loop", "vlan", "ipv4", "ipv6"],
)
def test_every_link_type_reaches_the_quic_packets(tmp_path, linktype, ipv6):
    conv, datagrams = record(ipv6=ipv6)
    frames = _raw_frames(tmp_path, datagrams)
    body = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype))
    for (t, src, _dst, _data), ip in zip(datagrams, frames, strict=True):
        frame = _wrap(linktype, ip, outgoing=src == conv.client)
        body += struct.pack("<IIII", int(t), int((t % 1) * 1e6), len(frame), len(frame)) + frame
    cap = tmp_path / "c.pcap"
    cap.write_bytes(bytes(body))
    rec = read_capture(cap, keylog=_keys(tmp_path, conv))
    assert_fully_decrypted(rec)
    if ipv6:
        assert rec.traces[0].info.extra["client"] == "[2001:db8::1]:50000"


def _pcapng_block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)


def test_pcapng_interfaces_keep_their_own_link_types_and_time_resolutions(tmp_path):
    conv, datagrams = record()
    raw = _raw_frames(tmp_path, datagrams)
    blocks = [_pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    # Interface 0: Ethernet, microseconds (no if_tsresol). Interface 1: raw IP, nanoseconds.
    blocks.append(_pcapng_block(1, struct.pack("<HHI", 1, 0, 0)))
    tsresol = struct.pack("<HHB3x", 9, 1, 9) + b"\0\0\0\0"
    blocks.append(_pcapng_block(1, struct.pack("<HHI", 101, 0, 0) + tsresol))
    blocks.append(_pcapng_block(0x0A, struct.pack("<II", 0x544C534B, len(conv.keylog)) + conv.keylog.encode()))
    for i, ((t, *_), ip) in enumerate(zip(datagrams, raw, strict=True)):
        iface = i % 2
        frame = _wrap(1, ip, False) if iface == 0 else ip
        units = round(t * (1e6 if iface == 0 else 1e9))
        blocks.append(
            _pcapng_block(
                6, struct.pack("<IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(frame), len(frame)) + frame
            )
        )
    cap = tmp_path / "multi.pcapng"
    cap.write_bytes(b"".join(blocks))
    rec = read_capture(cap)
    assert_fully_decrypted(rec)
    times = sorted({e.time_ms for e in packets(rec.traces[0])})
    assert times[0] == pytest.approx(datagrams[0][0] * 1000.0, abs=1e-3)
    assert times[-1] == pytest.approx(datagrams[-1][0] * 1000.0, abs=1e-3)


def test_ipv4_fragments_are_skipped_with_a_counted_note(tmp_path):
    conv, datagrams = record()
    raw = _raw_frames(tmp_path, datagrams)
    body = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))
    for (t, *_), ip in zip(datagrams, raw, strict=True):
        body += struct.pack("<IIII", int(t), 0, len(ip), len(ip)) + ip
    frag = bytearray(raw[0])
    frag[6] |= 0x20  # more fragments
    body += struct.pack("<IIII", int(datagrams[-1][0]) + 1, 0, len(frag), len(frag)) + bytes(frag)
    cap = tmp_path / "c.pcap"
    cap.write_bytes(bytes(body))
    rec = read_capture(cap, keylog=_keys(tmp_path, conv))
    assert any("1 frame(s) skipped: IPv4 fragments" in w for w in rec.warnings)


# ----------------------------------------------------------------------------- QUIC


@pytest.mark.parametrize("version", [V1, V2], ids=["v1", "v2"])
@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_quic_versions_over_ipv4_and_ipv6(tmp_path, version, ipv6):
    cap = tmp_path / "c.pcapng"
    write_capture(cap, version=version, ipv6=ipv6)
    rec = read_capture(cap)
    assert_fully_decrypted(rec)
    header = packets(rec.traces[0])[0].data["header"]
    assert header["version"] == f"{version:08x}"
    assert rec.traces[0].info.extra["version"] == version_name(version)


def test_key_update_is_followed_into_the_next_key_generation(tmp_path):
    cap = tmp_path / "c.pcapng"
    write_capture(cap, plan=Plan(key_update=True))
    rec = read_capture(cap)
    assert_fully_decrypted(rec, streams=4)
    trace = rec.traces[0]
    updates = [e.data["key_type"] for e in trace if e.name == "quic:key_updated"]
    assert updates == ["client_1rtt_secret", "server_1rtt_secret"]
    phases = {e.data["header"]["key_phase"] for e in packets(trace) if e.data["header"]["packet_type"] == "1RTT"}
    assert phases == {0, 1}


def test_coalesced_packets_are_each_decoded_from_one_frame(tmp_path):
    cap = tmp_path / "c.pcapng"
    write_capture(cap)
    trace = read_capture(cap).traces[0]
    frames = trace.info.extra["frames"]
    per_frame: dict[int, list[str]] = {}
    for e in packets(trace):
        per_frame.setdefault(frames[e.record], []).append(e.data["header"]["packet_type"])
    assert any(types[:2] == ["initial", "handshake"] for types in per_frame.values())


def test_retry_switches_initial_keys_and_keeps_the_connection(tmp_path):
    cap = tmp_path / "c.pcapng"
    conv = write_capture(cap, retry=True)
    rec = read_capture(cap)
    assert_fully_decrypted(rec)
    trace = rec.traces[0]
    assert trace.info.odcid == conv.odcid.hex()
    kinds = [e.data["header"]["packet_type"] for e in packets(trace)]
    assert kinds[:2] == ["initial", "retry"]
    initial_dcids = [e.data["header"]["dcid"] for e in packets(trace) if e.data["header"]["packet_type"] == "initial"]
    retry_scid = next(e.data["header"]["scid"] for e in packets(trace) if e.data["header"]["packet_type"] == "retry")
    assert initial_dcids[0] == conv.odcid.hex() and retry_scid in initial_dcids


def test_every_frame_type_aioquic_sends_is_read(tmp_path):
    cap = tmp_path / "c.pcapng"
    write_capture(cap, plan=Plan(reset_stream=True, stop_sending=True, datagram=True, ping=True))
    rec = read_capture(cap)
    types = set(frame_types(rec.traces[0]))
    expected = {"crypto", "ack", "padding", "stream", "new_connection_id", "handshake_done", "reset_stream"}
    expected |= {"stop_sending", "datagram", "ping", "connection_close"}
    assert expected <= types
    close = next(f for e in packets(rec.traces[0]) for f in e.data["frames"] if f["frame_type"] == "connection_close")
    assert close["error_code"] == 0 and close["reason"] == "done" and close["error_space"] == "application"


def test_alpn_and_transport_parameters_from_both_sides(tmp_path):
    cap = tmp_path / "c.pcapng"
    write_capture(cap)
    trace = read_capture(cap).traces[0]
    alpn = [e.data for e in trace if e.name == "quic:alpn_information"]
    assert alpn[-1]["chosen_alpn"] == "dhtscope/1"
    owners = {e.data["owner"]: e.data for e in trace if e.name == "quic:parameters_set"}
    assert owners["client"]["initial_max_streams_bidi"] == 128
    assert owners["server"]["original_destination_connection_id"] == trace.info.odcid


def test_alpn_mismatch_close_is_readable_from_initial_packets_alone(tmp_path):
    cap = tmp_path / "c.pcapng"
    write_capture(cap, dsb=False, server_alpn="other/1")
    trace = read_capture(cap).traces[0]
    closes = [f for e in packets(trace) for f in e.data["frames"] if f["frame_type"] == "connection_close"]
    assert closes and closes[0]["error_code"] == 0x178


def test_many_interleaved_connections_and_a_nat_rebinding_are_attributed_by_connection_id(tmp_path):
    all_datagrams = []
    convs = []
    for i in range(12):
        conv, datagrams = record(client_port=40000 + i, host_suffix=i + 1, start_s=1_780_000_000.0)
        convs.append(conv)
        if i == 0:
            # Half way through, the client's NAT mapping changes port: the connection ids say who it is.
            moved = (conv.client[0], 61000)
            half = len(datagrams) // 2
            datagrams = datagrams[:half] + [
                (t, moved if src == conv.client else src, moved if dst == conv.client else dst, d)
                for t, src, dst, d in datagrams[half:]
            ]
        all_datagrams.extend(datagrams)
    all_datagrams.sort(key=lambda d: d[0])
    cap = tmp_path / "many.pcapng"
    write_datagrams(cap, all_datagrams, keylog="".join(c.keylog for c in convs))
    rec, summary = read_capture_with_summary(cap)
    assert summary.connections == 12 and summary.decrypted == summary.packets
    assert sorted(t.info.odcid for t in rec.traces) == sorted(c.odcid.hex() for c in convs)
    for trace in rec.traces:
        assert {f["stream_id"] for f in stream_frames(trace, "quic:packet_sent")} == {0, 4, 8}
    assert not rec.warnings


def test_stateless_reset_is_recognised_by_its_announced_token(tmp_path):
    conv, datagrams = record()
    cap0 = tmp_path / "c0.pcapng"
    write_datagrams(cap0, datagrams, keylog=conv.keylog)
    trace = read_capture(cap0).traces[0]
    token = next(e.data["stateless_reset_token"] for e in trace if e.data.get("owner") == "server")
    dcid = next(
        e.data["header"]["dcid"] for e in packets(trace) if e.name == "quic:packet_sent" and "1RTT" in str(e.data)
    )
    reset = bytes([0x40 | 0x3F]) + bytes.fromhex(dcid) + os.urandom(24) + bytes.fromhex(token)
    t = datagrams[-1][0] + 0.01
    datagrams = [*datagrams, (t, conv.server, conv.client, reset)]
    cap = tmp_path / "c.pcapng"
    write_datagrams(cap, datagrams, keylog=conv.keylog)
    last = packets(read_capture(cap).traces[0])[-1]
    assert last.data["header"]["packet_type"] == "stateless_reset"
    assert last.data["stateless_reset_token"] == token


def test_unsupported_version_is_named_and_its_packets_counted(tmp_path):
    header = bytes([0xC0]) + (0xFF00001D).to_bytes(4, "big") + b"\x08" + os.urandom(8) + b"\x08" + os.urandom(8)
    datagrams = [
        (1_780_000_000.0 + i / 100, ("10.0.0.9", 5000), ("10.1.0.1", 443), header + os.urandom(1100)) for i in range(3)
    ]
    cap = tmp_path / "draft.pcapng"
    write_datagrams(cap, datagrams)
    rec = read_capture(cap)
    assert len(rec.traces) == 1
    [line] = [w for w in rec.warnings if w.startswith("connection")]
    assert "QUIC version 0xff00001d (draft-29) is not supported: 3 packet(s) counted" in line


# ----------------------------------------------------------------------------- bad input


def test_a_truncated_capture_is_read_up_to_where_it_stops(tmp_path):
    cap = tmp_path / "c.pcapng"
    write_capture(cap)
    whole = read_capture(cap)
    data = cap.read_bytes()
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(data[: len(data) - 40])
    rec = read_capture(cut)
    [line] = [w for w in rec.warnings if "truncated" in w]
    n = len(whole.traces[0].info.extra and set(whole.traces[0].info.extra["frames"]))
    assert f"capture truncated at frame {n} (byte " in line and f"read the {n - 1} frames before it" in line
    assert len(packets(rec.traces[0])) < len(packets(whole.traces[0]))


def test_a_truncated_pcap_says_where_it_stops(tmp_path):
    cap = tmp_path / "c.pcap"
    write_capture(cap, fmt="pcap", dsb=False)
    data = cap.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-10])
    rec = read_capture(cut)
    assert any("capture truncated at frame" in w and "frames before it" in w for w in rec.warnings)


@pytest.mark.parametrize(
    "content,message",
    [
        (b'{"qlog_version": "0.3"}', "not a pcap or pcapng file (starts with 0x7b22716c)"),
        (b"", "empty file"),
    ],
)
def test_not_a_capture_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "x.bin"
    path.write_bytes(content)
    assert not is_capture(path)
    with pytest.raises(CaptureError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_capture(path)


def test_a_directory_or_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, what in ((tmp_path, "a directory"), (fifo, "not a regular file"), (tmp_path / "nope", "no such file")):
        assert not is_capture(path)
        with pytest.raises(CaptureError, match=what):
            read_capture(path)


def test_a_key_log_without_quic_secrets_is_refused(tmp_path):
    keys = tmp_path / "keys.log"
    keys.write_text("CLIENT_RANDOM " + "00" * 32 + " " + "11" * 48 + "\n")
    with pytest.raises(CaptureError, match="not an NSS key log with TLS 1.3 secrets"):
        read_keylog(keys)


def test_importing_the_capture_package_does_not_load_aioquic():
    code = (
        "import sys, dhtscope.tracing.capture, dhtscope.tracing.capture.writer, dhtscope.tracing.vantage;"
        "print('aioquic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------- tshark


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (apt-get install tshark)")
def test_decoded_frames_agree_with_tshark(tmp_path):
    cap, keys = tmp_path / "c.pcapng", tmp_path / "keys.log"
    write_capture(cap, dsb=False, keylog_path=keys, plan=Plan(key_update=True, reset_stream=True, ping=True))
    theirs = tshark_packets(cap, keys)
    ours = decoded_packets(read_capture(cap, keylog=keys))
    assert len(ours) == len(theirs) > 10
    assert ours == theirs


# ----------------------------------------------------------------------------- writer


def test_written_frames_carry_valid_ip_and_udp_checksums(tmp_path):
    import dpkt

    from dhtscope.tracing.capture.writer import CaptureWriter

    cap = tmp_path / "w.pcap"
    with CaptureWriter(cap, fmt="pcap") as w:
        w.write(1.0, ("10.0.0.1", 1000), ("10.0.0.2", 2000), b"hello")
        w.write(2.0, ("2001:db8::1", 1000), ("2001:db8::2", 2000), b"hello6")
    with open_capture(cap) as f:
        frames = [data for _, _, _, data, _ in f.frames()]
    v4 = dpkt.ethernet.Ethernet(frames[0]).data
    v6 = dpkt.ethernet.Ethernet(frames[1]).data
    # Recomputing over the received bytes gives 0 (ones' complement) when the checksum is right.
    assert dpkt.in_cksum(bytes(frames[0][14:34])) == 0
    udp4 = bytes(frames[0][34:])
    pseudo4 = v4.src + v4.dst + struct.pack(">BBH", 0, 17, len(udp4))
    assert dpkt.in_cksum(pseudo4 + udp4) == 0
    udp6 = bytes(frames[1][54:])
    pseudo6 = v6.src + v6.dst + struct.pack(">IxxxB", len(udp6), 17)
    assert dpkt.in_cksum(pseudo6 + udp6) == 0


async def test_the_writer_flushes_within_its_interval_while_an_event_loop_runs(tmp_path):
    import asyncio

    from dhtscope.tracing.capture.writer import CaptureWriter

    cap = tmp_path / "live.pcapng"
    w = CaptureWriter(cap, flush_interval_s=0.05)
    header = cap.stat().st_size
    w.write(1.0, ("10.0.0.1", 1000), ("10.0.0.2", 2000), b"x" * 100)
    for _ in range(100):  # wait for the timer, not for a deadline: the assertion is on the bytes
        await asyncio.sleep(0.05)
        if cap.stat().st_size > header:
            break
    assert cap.stat().st_size > header
    w.close()


def test_pcap_cannot_carry_a_key_log(tmp_path):
    from dhtscope.tracing.capture.writer import CaptureWriter

    with pytest.raises(CaptureError, match="only pcapng carries a key log"):
        CaptureWriter(tmp_path / "x.pcap", fmt="pcap", keylog="CLIENT_TRAFFIC_SECRET_0 00 00")


def test_version_negotiation_is_read_and_the_offered_version_named(tmp_path):
    from aioquic.quic.packet import encode_quic_version_negotiation

    client, server = ("10.0.0.1", 5000), ("10.1.0.1", 443)
    dcid, scid = os.urandom(8), os.urandom(8)
    initial = bytes([0xC0]) + (0x1A2A3A4A).to_bytes(4, "big") + b"\x08" + dcid + b"\x08" + scid + os.urandom(1200)
    vn = encode_quic_version_negotiation(source_cid=dcid, destination_cid=scid, supported_versions=[V1, V2])
    cap = tmp_path / "vn.pcapng"
    write_datagrams(cap, [(1_780_000_000.0, client, server, initial), (1_780_000_000.001, server, client, vn)])
    rec = read_capture(cap)
    [trace] = rec.traces
    info = [e.data for e in trace if e.name == "quic:version_information"]
    assert info[-1]["server_versions"] == ["00000001", "6b3343cf"]
    assert packets(trace)[-1].data["header"]["packet_type"] == "version_negotiation"
    assert any("0x1a2a3a4a (reserved for negotiation) is not supported" in w for w in rec.warnings)
