"""Shared pieces of the TUI tests: a fixed recording, waiting on the app, reading tables."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REF_MS = 1_700_000_000_000.0
REG_ID = "aa" * 32
P1_ID = "bb" * 32
CLIENT_ID = "cc" * 32
KEY = "dd" * 32
ODCID = "c0ffee0000000001"


def _seq(
    path: Path, node: str, vantage: str, odcid: str | None, events: list[tuple[float, str, dict[str, Any]]]
) -> None:
    common: dict[str, Any] = {"reference_time": REF_MS, "time_format": "relative", "protocol_type": ["QUIC", "DHT"]}
    if odcid:
        common.update(ODCID=odcid, group_id=odcid)
    header = {
        "qlog_version": "0.3",
        "qlog_format": "JSON-SEQ",
        "title": f"dhtscope {node}",
        "file_schema": "urn:ietf:params:qlog:file:sequential",
        "trace": {"vantage_point": {"type": vantage, "name": node}, "common_fields": common},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for record in [header, *({"time": t, "name": n, "data": d} for t, n, d in events)]:
            fh.write(b"\x1e" + json.dumps(record).encode() + b"\n")


def _stream(sid: int, off: int, length: int, fin: bool = True) -> dict[str, Any]:
    return {"frame_type": "stream", "stream_id": sid, "offset": off, "length": length, "fin": fin}


def _pkt(pn: int, *frames: dict[str, Any]) -> dict[str, Any]:
    return {"header": {"packet_number": pn, "packet_type": "1RTT"}, "frames": list(frames), "raw": {"length": 100}}


def _ack(*ranges: list[int]) -> dict[str, Any]:
    return {"frame_type": "ack", "acked_ranges": [list(r) for r in ranges]}


Events = list[tuple[float, str, dict[str, Any]]]
MOVED = "quic:stream_data_moved"


def _moved(sid: int, length: int, origin: str, to: str) -> dict[str, Any]:
    return {"stream_id": sid, "offset": 0, "length": length, "fin": True, "from": origin, "to": to}


def _provider_store_timed_out() -> Events:
    return [
        (
            1020.0,
            "dht:rpc_timeout",
            {"stream_id": 4, "type": "STORE", "request_id": 2, "peer_id": REG_ID, "timeout_ms": 1000},
        ),
        (1021.0, "quic:stream_state_updated", {"stream_id": 4, "new": "reset_sent", "error_code": 9}),
    ]


def _provider_store_answered() -> Events:
    store_result = {"stream_id": 4, "type": "STORE_RESULT", "request_id": 2, "peer_id": REG_ID}
    return [
        (25.0, "transport:packet_received", _pkt(4, _ack([2, 4]), _stream(4, 0, 20))),
        (25.1, MOVED, _moved(4, 20, "transport", "application")),
        (25.2, "dht:rpc_response", {**store_result, "direction": "received", "rtt_ms": 5.1, "status": "ok"}),
        (26.0, "transport:packet_sent", _pkt(5, _ack([4, 4]))),
    ]


def _registry_store_not_taken() -> Events:
    return [
        (22.5, "transport:packet_sent", _pkt(3, _ack([2, 4]))),
        (1022.0, "transport:packet_received", _pkt(5, {"frame_type": "stop_sending", "stream_id": 4, "error_code": 9})),
    ]


def _registry_store_answered() -> Events:
    return [
        (22.1, MOVED, _moved(4, 300, "transport", "application")),
        (22.2, "dht:rpc_received", {"stream_id": 4, "type": "STORE", "request_id": 2, "peer_id": P1_ID}),
        (22.3, MOVED, _moved(4, 20, "application", "transport")),
        (
            22.4,
            "dht:rpc_response",
            {
                "stream_id": 4,
                "type": "STORE_RESULT",
                "request_id": 2,
                "peer_id": P1_ID,
                "direction": "sent",
                "status": "ok",
            },
        ),
        (22.5, "transport:packet_sent", _pkt(3, _ack([2, 4]), _stream(4, 0, 20))),
        (26.5, "transport:packet_received", _pkt(5, _ack([4, 4]))),
    ]


def write_fixed_recording(root: Path, scenario: str = "no-accept") -> Path:
    """A small recording that never changes: provider1 PINGs the registry (answered), then STOREs.

    `no-accept`: the STORE is acknowledged by the registry's transport and never delivered to
    its application. `healthy`: the registry takes it, answers, and the provider reads the answer.
    """
    if scenario not in ("no-accept", "healthy"):
        raise ValueError(f"no fixed recording for scenario {scenario!r}")
    healthy = scenario == "healthy"
    nodes = [
        ("registry", REG_ID, "127.0.0.1:4500", "registry"),
        ("provider1", P1_ID, "127.0.0.1:4501", "provider"),
        ("client", CLIENT_ID, "127.0.0.1:4502", "client"),
    ]
    manifest = {
        "dhtscope_version": "test",
        "created_ms": REF_MS,
        "nodes": [{"name": n, "id": i, "address": a, "role": r, "dir": n} for n, i, a, r in nodes],
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps(manifest))
    moved = "quic:stream_data_moved"
    _seq(
        root / "provider1" / f"{ODCID}-client-0.sqlog",
        "provider1",
        "client",
        ODCID,
        [
            (
                0.0,
                "quic:connection_started",
                {
                    "src_ip": "127.0.0.1",
                    "src_port": 4501,
                    "dst_ip": "127.0.0.1",
                    "dst_port": 4500,
                    "role": "client",
                    "local_node": P1_ID,
                },
            ),
            (1.0, "dht:peer_identified", {"peer_id": REG_ID, "verified": True, "peer_address": "127.0.0.1:4500"}),
            (
                10.0,
                moved,
                {"stream_id": 0, "offset": 0, "length": 40, "fin": True, "from": "application", "to": "transport"},
            ),
            (10.1, "dht:rpc_sent", {"stream_id": 0, "type": "PING", "request_id": 1, "peer_id": REG_ID}),
            (11.0, "transport:packet_sent", _pkt(2, _stream(0, 0, 40))),
            (13.0, "transport:packet_received", _pkt(2, _ack([2, 2]), _stream(0, 0, 12))),
            (13.1, "recovery:metrics_updated", {"smoothed_rtt": 2.0, "latest_rtt": 2.0, "min_rtt": 2.0}),
            (
                13.2,
                moved,
                {"stream_id": 0, "offset": 0, "length": 12, "fin": True, "from": "transport", "to": "application"},
            ),
            (
                13.3,
                "dht:rpc_response",
                {
                    "stream_id": 0,
                    "type": "PONG",
                    "request_id": 1,
                    "peer_id": REG_ID,
                    "direction": "received",
                    "rtt_ms": 3.2,
                    "status": "ok",
                },
            ),
            (14.0, "transport:packet_sent", _pkt(3, _ack([2, 2]))),
            (
                20.0,
                moved,
                {"stream_id": 4, "offset": 0, "length": 300, "fin": True, "from": "application", "to": "transport"},
            ),
            (20.1, "dht:rpc_sent", {"stream_id": 4, "type": "STORE", "request_id": 2, "peer_id": REG_ID}),
            (21.0, "transport:packet_sent", _pkt(4, _stream(4, 0, 300))),
            (23.0, "transport:packet_received", _pkt(3, _ack([2, 4]))),
            (23.1, "recovery:metrics_updated", {"smoothed_rtt": 2.1, "latest_rtt": 2.2, "min_rtt": 2.0}),
            *(_provider_store_answered() if healthy else _provider_store_timed_out()),
            (1500.0, "quic:connection_closed", {"owner": "local", "trigger": "clean", "reason": "node shutting down"}),
        ],
    )
    _seq(
        root / "registry" / f"{ODCID}-server-0.sqlog",
        "registry",
        "server",
        ODCID,
        [
            (
                0.5,
                "quic:connection_started",
                {
                    "src_ip": "127.0.0.1",
                    "src_port": 4500,
                    "dst_ip": "127.0.0.1",
                    "dst_port": 4501,
                    "role": "server",
                    "local_node": REG_ID,
                },
            ),
            (12.0, "transport:packet_received", _pkt(2, _stream(0, 0, 40))),
            (
                12.1,
                moved,
                {"stream_id": 0, "offset": 0, "length": 40, "fin": True, "from": "transport", "to": "application"},
            ),
            (12.2, "dht:rpc_received", {"stream_id": 0, "type": "PING", "request_id": 1, "peer_id": P1_ID}),
            (
                12.3,
                moved,
                {"stream_id": 0, "offset": 0, "length": 12, "fin": True, "from": "application", "to": "transport"},
            ),
            (
                12.4,
                "dht:rpc_response",
                {
                    "stream_id": 0,
                    "type": "PONG",
                    "request_id": 1,
                    "peer_id": P1_ID,
                    "direction": "sent",
                    "status": "ok",
                },
            ),
            (12.5, "transport:packet_sent", _pkt(2, _ack([2, 2]), _stream(0, 0, 12))),
            *([(14.5, "transport:packet_received", _pkt(3, _ack([2, 2])))] if healthy else []),
            (22.0, "transport:packet_received", _pkt(4, _stream(4, 0, 300))),
            *(_registry_store_answered() if healthy else _registry_store_not_taken()),
            (1500.5, "quic:connection_closed", {"owner": "remote", "trigger": "clean", "reason": "node shutting down"}),
        ],
    )
    for name, node_id, address, role in nodes:
        (root / name).mkdir(exist_ok=True)
        (root / name / "node.json").write_text(
            json.dumps({"name": name, "id": node_id, "address": address, "role": role, "dir": name})
        )
    started = {"dht:node_started"}
    assert started
    _seq(
        root / "registry" / "node.sqlog",
        "registry",
        "unknown",
        None,
        [
            (
                0.0,
                "dht:node_started",
                {
                    "node_id": REG_ID,
                    "address": "127.0.0.1:4500",
                    "role": "registry",
                    "name": "registry",
                    "scenario": [],
                },
            ),
            (
                12.2,
                "dht:routing_updated",
                {"action": "added", "peer_id": P1_ID, "address": "127.0.0.1:4501", "bucket": 252},
            ),
            (
                12.3,
                "dht:routing_updated",
                {"action": "added", "peer_id": CLIENT_ID, "address": "127.0.0.1:4502", "bucket": 253},
            ),
            (
                15.0,
                "dht:record_stored",
                {
                    "key": KEY,
                    "publisher": P1_ID,
                    "seq": 5,
                    "expires_at_ms": REF_MS + 300_000,
                    "from_peer": P1_ID,
                    "name": "calculator",
                },
            ),
            *(
                []
                if healthy
                else [
                    (18.0, "dht:scenario_changed", {"scenario": "no-accept", "faults": ["no-accept"], "previous": []})
                ]
            ),
        ],
    )
    _seq(
        root / "provider1" / "node.sqlog",
        "provider1",
        "unknown",
        None,
        [
            (
                0.0,
                "dht:node_started",
                {
                    "node_id": P1_ID,
                    "address": "127.0.0.1:4501",
                    "role": "provider",
                    "name": "provider1",
                    "scenario": [],
                },
            ),
            (
                13.3,
                "dht:routing_updated",
                {"action": "added", "peer_id": REG_ID, "address": "127.0.0.1:4500", "bucket": 252},
            ),
        ],
    )
    _seq(
        root / "client" / "node.sqlog",
        "client",
        "unknown",
        None,
        [
            (
                0.0,
                "dht:node_started",
                {"node_id": CLIENT_ID, "address": "127.0.0.1:4502", "role": "client", "name": "client", "scenario": []},
            ),
        ],
    )
    return root


async def wait_until(
    predicate: Callable[[], Any], pilot: Any = None, timeout_s: float = 15.0, what: str = "condition"
) -> None:
    """Poll (letting the app run) until `predicate()` is true; fail with `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        if pilot is not None:
            await pilot.pause(0.05)
        else:
            await asyncio.sleep(0.05)


def table_text(table: Any) -> list[str]:
    """Every row of a VirtualTable as one string of its cells."""
    rows = []
    for i in range(table.row_count()):
        cells = table.get_row(i).cells
        rows.append(
            " | ".join(
                c[0] if isinstance(c, tuple) else "".join(p for p, _ in c) if isinstance(c, list) else str(c)
                for c in cells
            )
        )
    return rows


def cell(table: Any, row: int, column: int) -> str:
    """One cell's text, or "" while the row does not exist yet."""
    rows = table_text(table)
    return rows[row].split(" | ")[column] if row < len(rows) else ""


def in_process_replay(*paths: str) -> Any:
    """A ReplaySource that opens, indexes and analyses in the test's own process: no child
    processes to start, so a Pilot or snapshot test over a small recording stays quick."""
    from dhtscope.tui.sources.replay import ReplaySource

    class InProcessReplay(ReplaySource):
        async def start(self) -> None:
            self.open_now()

    return InProcessReplay(*paths)


async def replay_ready(app: Any, pilot: Any, nodes: int = 3) -> None:
    """Until the replay is indexed, analysed and lists its nodes."""
    await wait_until(
        lambda: (
            app.main.analysis is not None
            and not app.source.replay.indexing
            and app.main.query_one("#nodes-table").row_count() == nodes
        ),
        pilot,
        what="analysis, index and nodes",
    )


def fake_live_source(results: dict[str, dict[str, Any]] | None = None) -> Any:
    """A live source without nodes behind it: fixed nodes and snapshots, probes answered from
    `results` (kind -> the `probe --json` shape), every probe and scenario switch kept in `asked`."""
    from dhtscope.tui.source import DataSource, NodeInfo

    class Fake(DataSource):
        kind = "fake"
        live = True

        def __init__(self) -> None:
            super().__init__()
            self.title = "attach"
            self.results = dict(results or {})
            self.asked: list[tuple[str, str, list[str]]] = []
            self.faults: dict[str, tuple[str, ...]] = {"registry": (), "provider1": (), "client": ()}
            self.states: dict[str, tuple[str, str]] = {}  # name -> (state, detail); default connected

        def nodes(self) -> list[Any]:
            rows = [("registry", REG_ID, "127.0.0.1:4500"), ("provider1", P1_ID, "127.0.0.1:4501")]
            rows.append(("client", CLIENT_ID, "127.0.0.1:4502"))
            return [
                NodeInfo(
                    name,
                    name if name != "provider1" else "provider",
                    node_id,
                    address,
                    self.states.get(name, ("connected", ""))[0],
                    connections=1,
                    contacts=2,
                    records=1,
                    events=12345,
                    faults=self.faults[name],
                    detail=self.states.get(name, ("connected", ""))[1],
                )
                for name, node_id, address in rows
            ]

        def snapshot(self, node: str) -> dict[str, Any] | None:
            info = next(n for n in self.nodes() if n.name == node)
            others = [n for n in self.nodes() if n.name != node]
            return {
                "node": {"name": node, "id": info.node_id, "address": info.address, "faults": list(info.faults)},
                "connections": [
                    {
                        "odcid": "c0ffee00000000" + str(i).zfill(2),
                        "role": "client",
                        "peer_address": n.address,
                        "peer_id": n.node_id,
                        "open": i == 0,
                        "rtt_ms": 2.2,
                        "rtt_series": [2.1, 2.2, 2.15, 2.1, 2.2] * 4,
                        "bytes_sent": 123_456,
                        "bytes_received": 7_890,
                        "streams_open": 0,
                        "streams_opened": 17,
                        "close_reason": None if i == 0 else "idle timeout after 60 s",
                    }
                    for i, n in enumerate(others)
                ],
                "routing": [
                    {
                        "index": 250 + i,
                        "contacts": [{"id": n.node_id, "address": n.address, "last_seen": 0.0, "failures": 0}],
                        "replacements": [],
                    }
                    for i, n in enumerate(others)
                ],
                "records": [],
                "advertisements": [],
            }

        def now(self) -> float:
            return 0.0

        async def probe(self, node: str, kind: str, args: list[str]) -> dict[str, Any]:
            self.asked.append((node, kind, args))
            return dict(self.results.get(kind, {"op": kind, "kind": kind, "ok": True}))

        async def set_scenario(self, node: str, name: str) -> dict[str, Any]:
            self.asked.append((node, "scenario", [name]))
            self.faults[node] = () if name == "healthy" else (name,)
            return {"scenario": name, "faults": list(self.faults[node])}

    return Fake()
