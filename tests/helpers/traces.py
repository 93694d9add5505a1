"""Synthetic traces shaped like dhtscope/aioquic ones, for the analysis and report tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dhtscope.tracing.analysis import Analysis, Finding
from dhtscope.tracing.model import Event, NodeEntry, Recording, Trace, TraceInfo

# The shared samples sit beside the repository (../shared/qlog-samples); never copied in.
SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "qlog-samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"shared qlog samples not found at {SAMPLES}")
# Any one qlog file, for tests that need a file whatever wrote it: a client end of the committed recording.
ONE_QLOG_FILE = min(
    (Path(__file__).resolve().parents[2] / "recordings" / "healthy" / "client").glob("*-client-*.sqlog")
)


T0 = 1_700_000_000_000.0  # epoch ms, as the reader gives absolute times


RAW = {
    "quic:packet_sent": "transport:packet_sent",
    "quic:packet_received": "transport:packet_received",
    "quic:packet_lost": "recovery:packet_lost",
    "quic:recovery_metrics_updated": "recovery:metrics_updated",
}


class ListTrace(Trace):
    """An in-memory trace: what a reader would hand the analysis."""

    def __init__(self, info: TraceInfo, events: list[Event]) -> None:
        self.info = info
        self._events = events

    def __len__(self) -> int:
        return len(self._events)

    def __getitem__(self, record: int) -> Event:
        return self._events[record]


class End:
    """One endpoint's trace under construction; packet numbers count up like aioquic's."""

    def __init__(
        self, node: str | None, vantage: str, odcid: str | None, dhtscope: bool = True, path: str | None = None
    ) -> None:
        self.node = node
        self.vantage = vantage
        self.odcid = odcid
        self.dhtscope = dhtscope
        self.path = path or f"/rec/{node}/{odcid}-{vantage}-0.sqlog"
        self.events: list[Event] = []
        self.pn = 0

    def log(self, t: float, name: str, data: dict[str, Any]) -> int:
        record = len(self.events)
        self.events.append(Event(time_ms=T0 + t, name=name, data=data, raw_name=RAW.get(name, name), record=record))
        return record

    def send(self, t: float, *frames: dict[str, Any], ptype: str = "1RTT") -> int:
        pn = self.pn
        self.pn += 1
        self.log(t, "quic:packet_sent", {"header": {"packet_type": ptype, "packet_number": pn}, "frames": list(frames)})
        return pn

    def recv(self, t: float, pn: int, *frames: dict[str, Any], ptype: str = "1RTT") -> int:
        return self.log(
            t, "quic:packet_received", {"header": {"packet_type": ptype, "packet_number": pn}, "frames": list(frames)}
        )

    def trace(self) -> ListTrace:
        info = TraceInfo(
            path=self.path,
            index=0,
            vantage=self.vantage,
            odcid=self.odcid,
            node=self.node,
            format="json-seq",
            qlog_version="0.3",
            reference_time_ms=T0,
            title=f"dhtscope {self.node}" if self.dhtscope else None,
            extra={"protocol_type": ["QUIC", "DHT"]} if self.dhtscope else {},
        )
        return ListTrace(info, list(self.events))


class NodeLog(End):
    """A node.sqlog: node-level DHT events, no connection."""

    def __init__(self, node: str) -> None:
        super().__init__(node, "unknown", None, path=f"/rec/{node}/node.sqlog")


def stream(sid: int, length: int = 30, fin: bool = True, offset: int = 0) -> dict[str, Any]:
    return {"frame_type": "stream", "stream_id": sid, "offset": offset, "length": length, "fin": fin}


def ack(*ranges: list[int]) -> dict[str, Any]:
    return {"frame_type": "ack", "ack_delay": 0.1, "acked_ranges": [list(r) for r in ranges]}


def deliver(a: End, b: End, t: float, *frames: dict[str, Any]) -> int:
    """`a` sends a packet, `b` receives it half a millisecond later."""
    pn = a.send(t, *frames)
    b.recv(t + 0.5, pn, *frames)
    return pn


def start(c: End, s: End, t: float = 0.0, alpn: str = "dhtscope/1", alpn_server: str | None = None) -> None:
    c.log(t, "quic:connection_started", {"role": "client", "alpn_offered": alpn, "local_node": f"{c.node}-id"})
    s.log(
        t + 0.2,
        "quic:connection_started",
        {"role": "server", "alpn_offered": alpn_server or alpn, "local_node": f"{s.node}-id"},
    )
    s.log(t + 1, "dht:peer_identified", {"peer_id": f"{c.node}-id", "verified": True})
    c.log(t + 1, "dht:peer_identified", {"peer_id": f"{s.node}-id", "verified": True})


def rpc(
    o: End,
    p: End,
    t: float,
    sid: int,
    *,
    take: bool = True,
    answer: bool = True,
    fin_back: bool = True,
    kind: str = "STORE",
    rid: int = 1,
    folded: bool = False,
) -> None:
    """One request/response on stream `sid`, opened by `o`, shaped as dhtscope logs it.

    `folded`: as dhtscope writes whole messages now, the bytes each moved folded into its
    dht event; otherwise a quic:stream_data_moved beside each dht event (older recordings).
    """

    def moved(
        end: End, t_ms: float, length: int, fin: bool, src: str, dst: str, name: str, data: dict[str, Any]
    ) -> None:
        fields = {"offset": 0, "length": length, "fin": fin}
        if folded:
            end.log(t_ms, name, {"stream_id": sid, **data, **fields})
            return
        end.log(t_ms, "quic:stream_data_moved", {"stream_id": sid, **fields, "from": src, "to": dst})
        end.log(t_ms, name, {"stream_id": sid, **data})

    moved(
        o,
        t,
        30,
        True,
        "application",
        "transport",
        "dht:rpc_sent",
        {"type": kind, "request_id": rid, "peer_id": f"{p.node}-id"},
    )
    pn = deliver(o, p, t + 1, stream(sid))
    if take:
        moved(
            p,
            t + 2,
            30,
            True,
            "transport",
            "application",
            "dht:rpc_received",
            {"type": kind, "request_id": rid, "peer_id": f"{o.node}-id"},
        )
    if take and answer:
        moved(
            p,
            t + 3,
            40,
            fin_back,
            "application",
            "transport",
            "dht:rpc_response",
            {"type": "STORE_RESULT", "request_id": rid, "peer_id": f"{o.node}-id", "direction": "sent", "status": "ok"},
        )
        back = deliver(p, o, t + 4, ack([pn, pn]), stream(sid, 40, fin_back))
        moved(
            o,
            t + 5,
            40,
            fin_back,
            "transport",
            "application",
            "dht:rpc_response",
            {
                "type": "STORE_RESULT",
                "request_id": rid,
                "peer_id": f"{p.node}-id",
                "direction": "received",
                "rtt_ms": 5.0,
                "status": "ok",
            },
        )
        deliver(o, p, t + 6, ack([back, back]))
    else:
        deliver(p, o, t + 4, ack([pn, pn]))


def recording(*ends: End, nodes: list[NodeEntry] | None = None, warnings: list[str] | None = None) -> Recording:
    return Recording(path="/rec", traces=[e.trace() for e in ends], nodes=nodes or [], warnings=warnings or [])


def kinds(a: Analysis, severity: str | None = None) -> list[str]:
    return [f.kind for f in a.findings if severity is None or f.severity == severity]


def only(a: Analysis, kind: str) -> Finding:
    found = [f for f in a.findings if f.kind == kind]
    assert len(found) == 1, [(f.kind, f.node, f.summary) for f in a.findings]
    return found[0]


def steps(a: Analysis, conn: str, sid: int) -> dict[str, str]:
    view = a.stream(conn, sid)
    assert view is not None
    return {s.name: s.status for s in view.steps}


def healthy_cluster(folded: bool = False) -> list[End]:
    reg_p1, p1 = End("registry", "server", "aa01"), End("provider1", "client", "aa01")
    reg_cl, cl = End("registry", "server", "aa02"), End("client", "client", "aa02")
    start(p1, reg_p1)
    start(cl, reg_cl, t=2)
    for i, sid in enumerate((0, 4, 8)):
        rpc(p1, reg_p1, 10 + 20 * i, sid, rid=i, folded=folded)
    rpc(reg_p1, p1, 100, 1, kind="PING", rid=9, folded=folded)  # the registry opens a stream too
    rpc(cl, reg_cl, 120, 0, kind="FIND_VALUE", rid=7, folded=folded)
    for e in (p1, reg_p1):
        e.log(150, "quic:recovery_metrics_updated", {"smoothed_rtt": 1.5, "latest_rtt": 1.2})
    return [reg_p1, p1, reg_cl, cl]


def no_accept_cluster() -> tuple[list[End], str]:
    reg, p1 = End("registry", "server", "bb01"), End("provider1", "client", "bb01")
    start(p1, reg)
    rpc(p1, reg, 10, 0, take=False)
    rpc(p1, reg, 30, 4, take=False, rid=2)
    rpc(reg, p1, 50, 1, kind="PING", rid=3)  # the registry's own stream works: app events exist
    p1.log(
        5010,
        "dht:rpc_timeout",
        {"stream_id": 0, "type": "STORE", "request_id": 1, "peer_id": "registry-id", "timeout_ms": 5000},
    )
    p1.log(
        5030,
        "dht:rpc_timeout",
        {"stream_id": 4, "type": "STORE", "request_id": 2, "peer_id": "registry-id", "timeout_ms": 5000},
    )
    reg.log(5100, "quic:recovery_metrics_updated", {"smoothed_rtt": 1.0})
    return [reg, p1], "bb01"


def node_started(log: NodeLog, t: float, role: str = "provider") -> None:
    log.log(
        t, "dht:node_started", {"node_id": f"{log.node}-id", "address": "127.0.0.1:1", "role": role, "scenario": []}
    )


def routing(log: NodeLog, t: float, action: str, peer: str) -> None:
    log.log(t, "dht:routing_updated", {"action": action, "peer_id": f"{peer}-id", "address": "x", "bucket": 1})


def write_sqlog(path: Path, node: str, vantage: str, odcid: str | None, events: list[Event]) -> None:
    header = {
        "qlog_version": "0.3",
        "qlog_format": "JSON-SEQ",
        "file_schema": "urn:ietf:params:qlog:file:sequential",
        "serialization_format": "application/qlog+json-seq",
        "title": f"dhtscope {node}",
        "trace": {
            "vantage_point": {"type": vantage, "name": node},
            "common_fields": {
                **({"ODCID": odcid, "group_id": odcid} if odcid else {}),
                "reference_time": T0,
                "time_format": "relative",
                "protocol_type": ["QUIC", "DHT"],
            },
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(b"\x1e" + json.dumps(header).encode() + b"\n")
        for e in events:
            fh.write(
                b"\x1e" + json.dumps({"time": e.time_ms - T0, "name": e.raw_name, "data": e.data}).encode() + b"\n"
            )


MANIFEST = [NodeEntry(n, f"{n}-id", None, n) for n in ("registry", "provider1", "client")]


def seed_bug_with_node_logs() -> list[End]:
    """The seed's bug (no_accept_cluster) with node-level logs beside it."""
    ends, _ = no_accept_cluster()
    logs = [NodeLog(n) for n in ("registry", "provider1")]
    for log in logs:
        node_started(log, 0)
    logs[0].log(9000, "dht:record_expired", {"key": "00", "publisher": "11"})
    return [*ends, *logs]
