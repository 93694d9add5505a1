"""The live trace writer: file layout, flushing, the packet_received trap, crash safety."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest
from aioquic.quic import events as quic_events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.logger import QuicLoggerTrace
from helpers.quicpair import certificate

from dhtscope.tracing.reader import open_recording, open_trace_file
from dhtscope.tracing.seqfiles import MAX_HELD_RECORDS, InlineSink, ProcessSink, Spool
from dhtscope.tracing.writer import (
    LiveQuicLogger,
    LiveTrace,
    NodeTrace,
    TraceFiles,
    write_manifest,
    write_node_entry,
)

RS = b"\x1e"


def _records(path: Path) -> list[dict]:
    """Every complete JSON-SEQ record on disk right now (header included)."""
    data = path.read_bytes()
    assert data.startswith(RS)
    return [orjson.loads(chunk) for chunk in data.split(RS)[1:]]


# --------------------------------------------------------------------------- file layout


def test_header_and_events_follow_trace_events_doc(tmp_path: Path) -> None:
    before = time.time() * 1000
    trace = LiveTrace(tmp_path, "alpha", is_client=True, odcid=bytes.fromhex("C0FFEE"), flush_interval_s=10)
    trace.log_event(category="transport", event="parameters_set", data={"owner": "local", "token": b"\xab\xcd"})
    trace.log("dht:rpc_sent", {"stream_id": 0, "type": "PING", "request_id": 7, "peer_id": bytes(2)})
    trace.close()
    assert trace.path == tmp_path / "c0ffee-client-0.sqlog"
    header, *events = _records(trace.path)
    assert header == {
        "qlog_version": "0.3",
        "qlog_format": "JSON-SEQ",
        "file_schema": "urn:ietf:params:qlog:file:sequential",
        "serialization_format": "application/qlog+json-seq",
        "title": "dhtscope alpha",
        "trace": {
            "vantage_point": {"type": "client", "name": "alpha"},
            "common_fields": {
                "ODCID": "c0ffee",
                "group_id": "c0ffee",
                "reference_time": header["trace"]["common_fields"]["reference_time"],
                "time_format": "relative",
                "protocol_type": ["QUIC", "DHT"],
            },
        },
    }
    assert before <= header["trace"]["common_fields"]["reference_time"] <= time.time() * 1000
    assert [e["name"] for e in events] == ["transport:parameters_set", "dht:rpc_sent"]
    assert events[0]["data"]["token"] == "abcd"  # bytes become hex
    assert events[1]["data"]["peer_id"] == "0000"
    assert all(0 <= e["time"] < 5000 for e in events)  # ms relative to reference_time

    read = open_trace_file(trace.path)[0]
    assert (read.info.vantage, read.info.odcid, read.info.node) == ("client", "c0ffee", "alpha")
    assert [e.name for e in read] == ["quic:parameters_set", "dht:rpc_sent"]
    assert read[0].time_ms == pytest.approx(time.time() * 1000, abs=5000)
    assert not read.info.warnings


def test_file_names_never_collide(tmp_path: Path) -> None:
    logger = LiveQuicLogger(tmp_path, "alpha")
    odcid = bytes.fromhex("0102030405060708")
    traces = [
        logger.start_trace(True, odcid),
        logger.start_trace(False, odcid),
        logger.start_trace(True, odcid),
        logger.start_trace(False, odcid),
    ]
    # Another node's logger writing into the same directory must not collide either.
    other = LiveQuicLogger(tmp_path, "beta").start_trace(True, odcid)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "0102030405060708-client-0.sqlog",
        "0102030405060708-client-1.sqlog",
        "0102030405060708-client-2.sqlog",
        "0102030405060708-server-0.sqlog",
        "0102030405060708-server-1.sqlog",
    ]
    assert len({t.path for t in traces + [other]}) == 5
    logger.close()
    other.close()
    assert logger.traces == []


def test_compact_frames_are_written_as_aioquics_dicts(tmp_path: Path) -> None:
    from aioquic.quic.packet import QuicFrameType, QuicStreamFrame

    trace = LiveTrace(tmp_path, "alpha", is_client=False, odcid=b"\x01", flush_interval_s=10)
    plain = QuicLoggerTrace(is_client=False, odcid=b"\x01")  # aioquic's own dicts, to compare with
    stream = QuicStreamFrame(data=b"abc", fin=True, offset=7)
    calls = [
        ("encode_stream_frame", (stream, 4)),
        ("encode_ack_frame", ([range(0, 3), range(5, 6)], 0.002)),
        ("encode_padding_frame", ()),
        ("encode_ping_frame", ()),
        ("encode_connection_limit_frame", (QuicFrameType.MAX_DATA, 1000)),
        ("encode_connection_limit_frame", (QuicFrameType.MAX_STREAMS_BIDI, 512)),
        ("encode_connection_limit_frame", (QuicFrameType.MAX_STREAMS_UNI, 3)),
        ("encode_max_stream_data_frame", (4096, 8)),
        ("encode_stop_sending_frame", (9, 12)),  # not made compact: aioquic's dict as it is
    ]
    frames = [getattr(trace, name)(*args) for name, args in calls]
    assert all(isinstance(f, tuple) for f in frames[:-1])  # nothing built on the request path but a tuple
    trace.log_event(category="transport", event="packet_sent", data={"frames": frames, "header": {"packet_number": 1}})
    trace.close()
    [event] = _records(trace.path)[1:]
    assert event["data"]["frames"] == [getattr(plain, name)(*args) for name, args in calls]
    assert event["data"]["header"] == {"packet_number": 1}


# --------------------------------------------------------------------------- flushing


def _clocked(interval_s: float) -> tuple[TraceFiles, list[float]]:
    """Files whose spool hands over by a clock the test moves (no event loop runs)."""
    now = [1_000_000.0]
    files = TraceFiles()
    Spool(files, InlineSink(files), interval_s, clock=lambda: now[0])
    return files, now


def test_held_until_the_interval_then_handed_over_on_the_next_event(tmp_path: Path) -> None:
    files, now = _clocked(0.2)
    trace = LiveTrace(tmp_path, "alpha", is_client=True, odcid=b"\x01", files=files)
    trace.log("dht:rpc_sent", {"n": 1})
    assert len(_records(trace.path)) == 1  # header only: the event is held
    now[0] += 0.25
    trace.log("dht:rpc_sent", {"n": 2})  # the last handover is old: this one hands both over
    assert [r["data"]["n"] for r in _records(trace.path)[1:]] == [1, 2]
    trace.log("dht:rpc_sent", {"n": 3})
    assert len(_records(trace.path)) == 3
    trace.flush()
    assert len(_records(trace.path)) == 4
    trace.close()
    trace.log("dht:rpc_sent", {"n": 4})  # after close: ignored, no error
    assert len(_records(trace.path)) == 4
    # Event times are the injected clock's, relative to the header's reference time.
    times = [r["time"] for r in _records(trace.path)[1:]]
    expected = [1_000_000_000.0 - trace.reference_ms] + [1_000_000_250.0 - trace.reference_ms] * 2
    assert times == pytest.approx(expected, abs=0.002)


def test_a_burst_without_an_event_loop_is_handed_over_in_bounded_batches(tmp_path: Path) -> None:
    files, _ = _clocked(3600)
    trace = LiveTrace(tmp_path, "alpha", is_client=True, odcid=b"\x06", files=files)
    for n in range(MAX_HELD_RECORDS + 10):
        trace.log("dht:rpc_sent", {"n": n})
    # One batch went out (the file's opening and the events before it); the rest is held.
    assert len(_records(trace.path)) - 1 == MAX_HELD_RECORDS - 1
    trace.close()
    assert len(_records(trace.path)) - 1 == MAX_HELD_RECORDS + 10


def test_reader_follows_a_file_being_written(tmp_path: Path) -> None:
    trace = LiveTrace(tmp_path, "alpha", is_client=True, odcid=b"\x05", flush_interval_s=10)
    live = open_trace_file(trace.path)[0]  # header only so far
    assert len(live) == 0 and live.info.odcid == "05"
    for n in range(10):
        trace.log("dht:rpc_sent", {"n": n})
    assert live.refresh() == 0  # still buffered
    trace.flush()
    assert live.refresh() == 10
    trace.log_event(category="transport", event="packet_received", data={"frames": []})
    trace.close()
    assert live.refresh() == 1
    assert [e.name for e in live.iter_range(9, None)] == ["dht:rpc_sent", "quic:packet_received"]


def test_event_loop_timer_hands_over_without_further_events(tmp_path: Path) -> None:
    async def scenario() -> int:
        trace = LiveTrace(tmp_path, "alpha", is_client=True, odcid=b"\x02", flush_interval_s=0.01)
        trace.log("dht:rpc_sent", {"n": 1})
        assert len(_records(trace.path)) == 1
        timer = trace._spool._timer
        assert timer is not None and timer.when() - asyncio.get_running_loop().time() <= 0.01
        await asyncio.sleep(0.05)
        count = len(_records(trace.path))
        trace.close()
        return count

    assert asyncio.run(scenario()) == 2


def test_packet_received_is_written_with_the_frames_aioquic_adds_after_logging_it(tmp_path: Path) -> None:
    trace = LiveTrace(tmp_path, "alpha", is_client=False, odcid=b"\x03", flush_interval_s=0)
    frames: list[dict] = []
    trace.log_event(
        category="transport", event="packet_received", data={"frames": frames, "header": {"packet_number": 5}}
    )
    frames.append({"frame_type": "ack"})
    # aioquic logs this while still handling the packet's frames.
    trace.log_event(category="recovery", event="metrics_updated", data={"cwnd": 1})
    frames.append({"frame_type": "stream", "stream_id": 0})
    trace.log_event(category="transport", event="packet_sent", data={"frames": []})
    # aioquic's own events never hand over (it may be inside a packet), even with the interval passed.
    assert len(_records(trace.path)) == 1
    trace.flush()  # what the caller does between aioquic's calls
    names = [(r["name"], len(r["data"].get("frames", []))) for r in _records(trace.path)[1:]]
    assert names == [("transport:packet_received", 2), ("recovery:metrics_updated", 0), ("transport:packet_sent", 0)]
    trace.close()


def test_datagram_and_spin_bit_events_are_left_out_and_still_end_a_held_packet(tmp_path: Path) -> None:
    trace = LiveTrace(tmp_path, "alpha", is_client=False, odcid=b"\x04", flush_interval_s=0)
    frames: list[dict] = []
    trace.log_event(category="transport", event="packet_received", data={"frames": frames})
    trace.log_event(category="connectivity", event="spin_bit_updated", data={"state": True})
    frames.append({"frame_type": "ping"})
    trace.log_event(category="transport", event="datagrams_received", data={"count": 1})
    trace.log_event(category="transport", event="datagrams_sent", data={"count": 1})
    trace.flush()
    assert [(r["name"], len(r["data"].get("frames", []))) for r in _records(trace.path)[1:]] == [
        ("transport:packet_received", 1)
    ]
    trace.close()


# --------------------------------------------------------------------------- real aioquic

CLIENT_ADDR = ("10.0.0.1", 1111)
SERVER_ADDR = ("10.0.0.2", 4433)
PACKET_SPACE = {"initial": "initial", "handshake": "handshake", "0RTT": "application", "1RTT": "application"}


def _run_connection(client_logger: object, server_logger: object, flush_each: bool) -> dict[str, bytes]:
    """A client and a server QuicConnection passing datagrams directly, on a fake clock."""
    cert, key = certificate()
    client_conf = QuicConfiguration(is_client=True, alpn_protocols=["dht"], quic_logger=client_logger)
    client_conf.verify_mode = ssl.CERT_NONE
    server_conf = QuicConfiguration(is_client=False, alpn_protocols=["dht"], quic_logger=server_logger)
    server_conf.certificate, server_conf.private_key = cert, key
    clock = [1000.0]
    client = QuicConnection(configuration=client_conf)
    client.connect(SERVER_ADDR, now=clock[0])
    server = QuicConnection(
        configuration=server_conf, original_destination_connection_id=client.original_destination_connection_id
    )
    received = {"client": b"", "server": b""}

    def pump(idle_rounds: int = 5) -> None:
        idle = 0
        while idle < idle_rounds:
            clock[0] += 0.002  # time must move: aioquic paces its sends
            now = clock[0]
            moved = False
            for src, dst, addr, who in (
                (client, server, CLIENT_ADDR, "server"),
                (server, client, SERVER_ADDR, "client"),
            ):
                timer = src.get_timer()
                if timer is not None and timer <= now:
                    src.handle_timer(now)
                for datagram, _ in src.datagrams_to_send(now=now):
                    dst.receive_datagram(datagram, addr, now=now)
                    moved = True
                    if flush_each and isinstance(dst._quic_logger, LiveTrace):
                        dst._quic_logger.flush()
                    event = dst.next_event()
                    while event is not None:
                        if isinstance(event, quic_events.StreamDataReceived):
                            received[who] += event.data
                        event = dst.next_event()
            idle = 0 if moved else idle + 1

    pump()
    for _ in range(3):  # requests and answers: packets carry ACK and STREAM frames together
        stream_id = client.get_next_available_stream_id()
        client.send_stream_data(stream_id, b"q" * 30_000, end_stream=True)
        pump()
        server.send_stream_data(stream_id, b"a" * 40_000, end_stream=True)
        pump()
    client.close()
    for _ in range(200):
        clock[0] += 0.05
        pump(1)
        if client._state == server._state == QuicConnectionState.TERMINATED:
            break
    assert client._state == server._state == QuicConnectionState.TERMINATED
    return received


def _frame_key(frame: dict) -> tuple:
    return tuple(frame.get(k) for k in ("frame_type", "stream_id", "offset", "length", "fin"))


@pytest.mark.parametrize("flush_each", [False, True], ids=["no-explicit-flush", "flush-per-datagram"])
def test_received_packets_have_complete_frames(tmp_path: Path, flush_each: bool) -> None:
    # One logger shared by both ends, as when a QuicConfiguration is copied between nodes.
    logger = LiveQuicLogger(tmp_path, "shared")
    received = _run_connection(logger, logger, flush_each)
    assert received == {"server": b"q" * 90_000, "client": b"a" * 120_000}
    assert logger.traces == []  # aioquic ended both traces at termination

    rec = open_recording(tmp_path)
    assert not rec.warnings
    by_vantage = {t.info.vantage: t for t in rec.traces}
    assert set(by_vantage) == {"client", "server"}
    assert by_vantage["client"].info.odcid == by_vantage["server"].info.odcid
    checked = with_stream = 0
    for receiver, sender in (("server", "client"), ("client", "server")):
        sent = {
            (PACKET_SPACE[e.data["header"]["packet_type"]], e.data["header"]["packet_number"]): e.data["frames"]
            for e in by_vantage[sender]
            if e.name == "quic:packet_sent"
        }
        for event in by_vantage[receiver]:
            if event.name != "quic:packet_received":
                continue
            header = event.data["header"]
            key = (PACKET_SPACE[header["packet_type"]], header["packet_number"])
            assert event.data["frames"], f"{receiver} packet {key} logged with no frames"
            assert [_frame_key(f) for f in event.data["frames"]] == [_frame_key(f) for f in sent[key]], key
            checked += 1
            with_stream += any(f["frame_type"] == "stream" for f in event.data["frames"])
    assert checked > 50 and with_stream > 20


def test_end_trace_accepts_traces_of_other_loggers(tmp_path: Path) -> None:
    first = LiveQuicLogger(tmp_path / "a", "a")
    second = LiveQuicLogger(tmp_path / "b", "b")
    trace = first.start_trace(True, b"\x09")
    trace.log("dht:rpc_sent", {"n": 1})
    second.end_trace(trace)  # ends it although `second` did not start it
    assert trace.closed
    assert len(_records(trace.path)) == 2
    second.end_trace(QuicLoggerTrace(is_client=True, odcid=b"\x01"))  # not ours at all: ignored
    first.end_trace(trace)  # twice: harmless
    first.close()


# --------------------------------------------------------------------------- node files


def test_node_trace_manifest_and_recording(tmp_path: Path) -> None:
    entry = {"name": "alpha", "id": "aa" * 32, "address": "127.0.0.1:4000", "role": "bootstrap", "dir": "alpha"}
    with NodeTrace(tmp_path / "alpha", "alpha", entry) as node:
        node.log(
            "dht:node_started",
            {"node_id": "aa" * 32, "address": "127.0.0.1:4000", "role": "bootstrap", "scenario": "test"},
        )
        node.log("dht:lookup_started", {"lookup_id": 1, "kind": "find_node", "target": b"\xff"})
    assert node.path == tmp_path / "alpha" / "node.sqlog"
    header = _records(node.path)[0]
    assert header["trace"]["vantage_point"] == {"type": "unknown", "name": "alpha"}
    assert "ODCID" not in header["trace"]["common_fields"]
    assert orjson.loads((tmp_path / "alpha" / "node.json").read_bytes()) == entry

    restarted = NodeTrace(tmp_path / "alpha", "alpha", entry)  # a restart keeps the old file
    assert restarted.path.name == "node-0.sqlog"
    restarted.close()

    conn = LiveQuicLogger(tmp_path / "alpha", "alpha").start_trace(False, b"\xab")
    conn.log("quic:connection_closed", {"owner": "remote", "trigger": "clean"})
    conn.close()
    write_node_entry(
        tmp_path / "beta", {"name": "beta", "id": "bb", "address": "127.0.0.1:4001", "role": "peer", "dir": "beta"}
    )
    path = write_manifest(tmp_path, [entry], "0.1.0")
    created = orjson.loads(path.read_bytes())["created_ms"]
    write_manifest(
        tmp_path,
        [entry, {"name": "beta", "id": "bb", "address": "127.0.0.1:4001", "role": "peer", "dir": "beta"}],
        "0.1.0",
    )
    manifest = orjson.loads(path.read_bytes())
    assert manifest["created_ms"] == created and len(manifest["nodes"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alpha", "beta", "manifest.json"]  # no temp left

    rec = open_recording(tmp_path)
    assert rec.dhtscope_version == "0.1.0"
    assert [(n.name, n.role) for n in rec.nodes] == [("alpha", "bootstrap"), ("beta", "peer")]
    names = {Path(t.info.path).name: t for t in rec.traces}
    assert set(names) == {"node.sqlog", "node-0.sqlog", "ab-server-0.sqlog"}
    assert all(t.info.node == "alpha" for t in rec.traces)
    assert [e.name for e in names["node.sqlog"]] == ["dht:node_started", "dht:lookup_started"]
    assert names["node.sqlog"][1].data["target"] == "ff"
    assert names["ab-server-0.sqlog"][0].name == "quic:connection_closed"


# --------------------------------------------------------------------------- crash safety

_VICTIM = textwrap.dedent(
    """
    import sys, time
    from dhtscope.tracing.writer import LiveQuicLogger
    logger = LiveQuicLogger(sys.argv[1], "victim", flush_interval_s=float(sys.argv[2]))
    trace = logger.start_trace(True, bytes.fromhex("0badc0de"))
    seq = 0
    while True:
        trace.log("dht:rpc_sent", {"seq": seq, "peer_id": b"\\x01\\x02", "pad": "x" * 300})
        seq += 1
        if seq % 200 == 0:
            time.sleep(0.001)
    """
)


def test_sigkill_leaves_a_readable_file(tmp_path: Path) -> None:
    interval = 0.05
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen([sys.executable, "-c", _VICTIM, str(tmp_path), str(interval)], env=env)
    try:
        deadline = time.monotonic() + 20
        target = tmp_path / "0badc0de-client-0.sqlog"
        while time.monotonic() < deadline:
            if target.exists() and target.stat().st_size > 2_000_000:
                break
            assert proc.poll() is None, "writer process died"
            time.sleep(0.02)
        else:
            pytest.fail("writer produced too little in 20 s")
        killed_ms = time.time() * 1000
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    rec = open_recording(tmp_path)
    assert len(rec.traces) == 1
    trace = rec.traces[0]
    assert trace.info.odcid == "0badc0de" and trace.info.node == "victim"
    assert len(trace) > 1000
    # Every event that reached the file is whole and in order; only a tail can be missing.
    seqs = [e.data["seq"] for e in trace]
    assert seqs == list(range(len(seqs)))
    assert trace[0].data["peer_id"] == "0102"
    # What was lost is at most what the last flush interval held (plus scheduling slack).
    assert killed_ms - trace[-1].time_ms < interval * 1000 + 1000
    assert all("truncated" in w for w in trace.info.warnings)


# --------------------------------------------------------------------------- the writer process

_PROCESS_VICTIM = textwrap.dedent(
    """
    import sys, time
    from dhtscope.tracing.seqfiles import ProcessSink, Spool, TraceFiles
    from dhtscope.tracing.writer import LiveQuicLogger

    directory, interval, mode = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    files = TraceFiles()
    spool = Spool(files, ProcessSink(files), interval)
    trace = LiveQuicLogger(directory, "victim", files=files).start_trace(True, bytes.fromhex("0badc0de"))
    print(spool.sink.pid, flush=True)
    seq = 0
    if mode == "handed":
        for seq in range(int(sys.argv[4])):
            trace.log("dht:rpc_sent", {"seq": seq, "peer_id": b"\\x01\\x02", "pad": "x" * 100})
        spool.handover()  # every byte is in the pipe, or already taken by the writer
        print("handed", flush=True)
        time.sleep(120)
    while True:
        trace.log("dht:rpc_sent", {"seq": seq, "peer_id": b"\\x01\\x02", "pad": "x" * 300})
        seq += 1
        if seq % 200 == 0:
            time.sleep(0.001)
    """
)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie no one reaped has exited
    except OSError:
        return True


def _start_victim(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", _PROCESS_VICTIM, str(tmp_path), *args], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def _wait_gone(pid: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not _gone(pid):
        assert time.monotonic() < deadline, "the writer process did not finish"
        time.sleep(0.02)


def test_a_killed_node_s_writer_still_writes_everything_it_was_handed(tmp_path: Path) -> None:
    events = 100_000  # about 15 MB of JSON: far more than the pipe holds when the node dies
    proc, writer_pid = _start_victim(tmp_path, "3600", "handed", str(events))
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "handed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        _wait_gone(writer_pid)  # it writes what it holds, then ends at the end of its input
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    [trace] = open_recording(tmp_path).traces
    assert [e.data["seq"] for e in trace] == list(range(events))
    assert not trace.info.warnings


def test_killing_node_and_writer_together_loses_at_most_the_last_handover_interval(tmp_path: Path) -> None:
    interval = 0.05
    proc, writer_pid = _start_victim(tmp_path, str(interval), "stream")
    try:
        target = tmp_path / "0badc0de-client-0.sqlog"
        deadline = time.monotonic() + 20
        while not (target.exists() and target.stat().st_size > 2_000_000):
            assert proc.poll() is None and time.monotonic() < deadline, "the node wrote too little"
            time.sleep(0.02)
        killed_ms = time.time() * 1000
        os.kill(writer_pid, signal.SIGKILL)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        _wait_gone(writer_pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    [trace] = open_recording(tmp_path).traces
    seqs = [e.data["seq"] for e in trace]
    assert len(seqs) > 1000 and seqs == list(range(len(seqs)))  # whole events, in order: only a tail is missing
    # Lost: what the node held since its last handover, plus the batch in flight (and scheduling slack).
    assert killed_ms - trace[-1].time_ms < interval * 1000 + 1000
    assert all("truncated" in w for w in trace.info.warnings)


def test_values_marshal_cannot_carry_still_reach_the_file(tmp_path: Path) -> None:
    import enum

    class Code(enum.IntEnum):
        NO_ERROR = 0

    files = TraceFiles()
    spool = Spool(files, ProcessSink(files), 3600)
    trace = LiveQuicLogger(tmp_path, "odd", files=files).start_trace(False, b"\x07")
    assert trace is not None
    trace.log("quic:connection_closed", {"connection_code": Code.NO_ERROR, "reason": "bye", "id": object()})
    trace.log("dht:rpc_sent", {"peer_id": b"\xab"})
    assert spool.sync()
    spool.close()
    [closed, sent] = open_recording(tmp_path).traces[0]
    assert closed.data["connection_code"] == 0 and closed.data["reason"] == "bye"
    assert sent.data["peer_id"] == "ab"
