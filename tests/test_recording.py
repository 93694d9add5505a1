"""Recording a node: every file is qlog 0.3 JSON-SEQ, and a SIGKILLed node leaves a readable recording."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dhtscope.node.node import Node
from dhtscope.node.recording import NodeRecorder
from dhtscope.tracing.reader import open_recording


async def recorded_pair(tmp_path: Path) -> tuple[Node, Node]:
    a = Node(name="a", recorder=NodeRecorder(tmp_path, "a", "", "registry"))
    b = Node(name="b", recorder=NodeRecorder(tmp_path, "b", "", "provider"))
    for n in (a, b):
        await n.start()
    await b.bootstrap([("127.0.0.1", a.port)])
    await b.advertise("calculator", "127.0.0.1:9001")
    return a, b


def raw_records(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.startswith(b"\x1e"), f"{path} is not JSON-SEQ"
    return [json.loads(chunk) for chunk in data.split(b"\x1e")[1:]]


async def test_every_sqlog_is_qlog_03_json_seq_with_time_name_data(tmp_path):
    a, b = await recorded_pair(tmp_path)
    await asyncio.gather(a.stop(), b.stop())
    files = sorted(tmp_path.rglob("*.sqlog"))
    assert len(files) >= 4  # node.sqlog of each, and both ends of their connection
    for path in files:
        header, *events = raw_records(path)
        assert header["qlog_version"] == "0.3" and header["qlog_format"] == "JSON-SEQ"
        assert header["file_schema"] == "urn:ietf:params:qlog:file:sequential"
        assert header["trace"]["vantage_point"]["type"] in ("client", "server", "unknown")
        if path.name != "node.sqlog":
            assert header["trace"]["common_fields"]["ODCID"]
        assert events and all({"time", "name", "data"} <= set(e) for e in events)


async def test_both_ends_of_a_connection_are_recorded_and_joinable(tmp_path):
    a, b = await recorded_pair(tmp_path)
    await asyncio.gather(a.stop(), b.stop())
    rec = open_recording(tmp_path)
    by_odcid: dict[str, set[str]] = {}
    for t in rec.traces:
        if t.info.odcid:
            by_odcid.setdefault(t.info.odcid, set()).add(f"{t.info.node}:{t.info.vantage}")
    assert {"b:client", "a:server"} in by_odcid.values()
    events = [e for t in rec.traces for e in t]
    names = {e.name for e in events}
    for expected in (
        "quic:packet_received",
        "dht:rpc_sent",
        "dht:rpc_received",
        "dht:rpc_response",
        "quic:connection_closed",
        "dht:lookup_round",
        "dht:record_stored",
    ):
        assert expected in names, expected
    # Whole messages: the bytes each moved are folded into its dht event, not a separate
    # quic:stream_data_moved (which stays for bytes that complete no message).
    rpc = [e for e in events if e.name in ("dht:rpc_sent", "dht:rpc_received", "dht:rpc_response")]
    assert rpc and all({"stream_id", "offset", "length", "fin"} <= set(e.data) and e.data["length"] > 0 for e in rpc)
    assert "quic:stream_data_moved" not in names


async def test_received_packets_are_written_with_their_frames(tmp_path):
    a, b = await recorded_pair(tmp_path)
    await asyncio.gather(a.stop(), b.stop())
    rec = open_recording(tmp_path)
    received = [
        e
        for t in rec.traces
        for e in t
        if e.name == "quic:packet_received" and e.data.get("header", {}).get("packet_type") == "1RTT"
    ]
    assert received and all(e.data.get("frames") for e in received)


def test_node_killed_with_sigkill_leaves_a_readable_recording(tmp_path):
    rec_dir = tmp_path / "rec"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dhtscope.node",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "victim",
            "--record",
            str(rec_dir),
            "--json-lines",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        started = json.loads(proc.stdout.readline())
        port = int(started["address"].rsplit(":", 1)[1])

        async def traffic() -> None:
            n = Node(name="peer")
            await n.start()
            for _ in range(20):
                await n.ping(("127.0.0.1", port))
            await n.stop()

        asyncio.run(traffic())
        time.sleep(0.3)  # past the 100 ms flush interval
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    rec = open_recording(rec_dir)
    victim = [t for t in rec.traces if t.info.node == "victim"]
    names = [e.name for t in victim for e in t]
    assert "dht:node_started" in names
    assert names.count("dht:rpc_received") >= 20
    assert all(e.time_ms > 0 for t in victim for e in t)


async def test_rpc_events_recorded_as_tuples_read_back_with_their_fields_as_listeners_see_them(tmp_path):
    a, b = await recorded_pair(tmp_path)
    heard: list[tuple[str, dict]] = []
    b.listeners.append(lambda name, data, conn: conn is not None and heard.append((name, data)))
    assert await b.ping(("127.0.0.1", a.port)) > 0
    await asyncio.gather(a.stop(), b.stop())
    live = [(n, d) for n, d in heard if n in ("dht:rpc_sent", "dht:rpc_response")]
    assert [n for n, _ in live] == ["dht:rpc_sent", "dht:rpc_response"]
    sent, answered = live[0][1], live[1][1]
    assert list(sent) == ["stream_id", "type", "request_id", "peer_id", "offset", "length", "fin"]
    assert sent["type"] == "PING" and sent["peer_id"] == a.id.hex() and sent["fin"] is True
    assert answered["direction"] == "received" and answered["status"] == "ok" and answered["rtt_ms"] > 0
    recorded = [
        e.data
        for t in open_recording(tmp_path).traces
        if t.info.node == "b"
        for e in t
        if e.name in ("dht:rpc_sent", "dht:rpc_response") and e.data.get("stream_id") == sent["stream_id"]
    ]
    assert recorded == [sent, answered]  # the file says what the listener heard, field for field
