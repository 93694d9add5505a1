"""Traces kept in memory from live events, so attach can analyse what the events show."""

from __future__ import annotations

from typing import Any

from dhtscope.tracing.model import Event, NodeEntry, Recording, Trace, TraceInfo

from ..source import EventRow

MEMORY_TRACE_EVENTS = 50_000  # per connection end; a long-lived connection keeps its latest


class MemoryTrace(Trace):
    """One node's view of one connection (or its node-level events), built from live events."""

    def __init__(self, node: str, conn: str | None) -> None:
        self.node = node
        self.conn = conn
        self.vantage = "unknown"
        self.rows: list[tuple[float, str, dict[str, Any]]] = []
        self.info = self._info()

    def _info(self) -> TraceInfo:
        return TraceInfo(
            path=f"live:{self.node}/{self.conn or 'node'}",
            index=0,
            vantage=self.vantage,
            odcid=self.conn,
            node=self.node,
            format="live-events",
            qlog_version=None,
            reference_time_ms=None,
        )

    def add(self, row: EventRow) -> None:
        if row.name == "quic:connection_started" and row.data.get("role") in ("client", "server"):
            self.vantage = row.data["role"]
            self.info = self._info()
        self.rows.append((row.time_ms, row.name, row.data))
        if len(self.rows) > MEMORY_TRACE_EVENTS:
            del self.rows[: len(self.rows) - MEMORY_TRACE_EVENTS]

    def frozen(self) -> _FrozenTrace:
        return _FrozenTrace(self.info, list(self.rows))


class _FrozenTrace(Trace):
    """A copy taken for one analysis run, so the UI thread can keep appending."""

    def __init__(self, info: TraceInfo, rows: list[tuple[float, str, dict[str, Any]]]) -> None:
        self.info = info
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, record: int) -> Event:
        t, name, data = self._rows[record]
        return Event(time_ms=t, name=name, data=data, raw_name=name, record=record)


class MemoryRecording:
    """Every (node, connection) trace seen in live events."""

    def __init__(self) -> None:
        self.traces: dict[tuple[str, str | None], MemoryTrace] = {}
        self.nodes: dict[str, NodeEntry] = {}

    def add(self, rows: list[EventRow]) -> None:
        traces = self.traces
        for row in rows:
            if row.name.startswith("control:"):
                continue
            key = (row.node, row.conn)
            trace = traces.get(key)
            if trace is None:
                trace = traces[key] = MemoryTrace(row.node, row.conn)
            trace.add(row)

    def name_node(self, name: str, node_id: str | None, address: str | None, role: str | None) -> None:
        self.nodes[name] = NodeEntry(name=name, node_id=node_id, address=address, role=role)

    def recording(self) -> Recording:
        return Recording(
            path="live events", traces=[t.frozen() for t in list(self.traces.values())], nodes=list(self.nodes.values())
        )
