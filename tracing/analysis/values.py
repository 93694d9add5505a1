"""The values an analysis produces: steps, streams, connections, findings, and the Analysis itself."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .facts import TraceFacts

STEPS = ("sent", "acked", "received", "delivered", "answered")
DONE = "done"
MISSING = "missing"
UNKNOWN = "unknown"
NOT_VISIBLE = "not visible"

ERROR = "error"
WARNING = "warning"
INFO = "info"
SEVERITY_RANK = {ERROR: 0, WARNING: 1, INFO: 2}

ALPN_MISMATCH_CODE = 0x178  # CRYPTO_ERROR + TLS alert 120 no_application_protocol


@dataclass(frozen=True, slots=True)
class Evidence:
    """Where to look: an event by file, trace number in that file, and record number.

    From a packet capture, `frame` is the capture's frame number (as Wireshark counts) of the
    packet the event stands for: the address people can look up.
    """

    path: str
    record: int
    name: str
    time_ms: float | None
    trace: int = 0
    frame: int | None = None

    @property
    def address(self) -> str:
        """`file#record` (`file[trace]#record` for later traces of a file), `capture#frame N` from a capture."""
        return evidence_address(self.path, self.record, self.trace, self.frame)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "file": self.path,
            "trace": self.trace,
            "record": self.record,
            "name": self.name,
            "time_ms": self.time_ms,
        }
        if self.frame is not None:
            out["frame"] = self.frame
        return out


def evidence_address(path: str, record: int, trace: int = 0, frame: int | None = None) -> str:
    """How an evidence event is named to people: `file#record`, `file[trace]#record`, `capture#frame N`."""
    if frame is not None:
        return f"{path}#frame {frame}"
    return f"{path}[{trace}]#{record}" if trace else f"{path}#{record}"


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a stream: its status, when, on which node, and the event that shows it."""

    name: str
    status: str  # DONE | MISSING | UNKNOWN | NOT_VISIBLE
    time_ms: float | None = None
    evidence: Evidence | None = None
    node: str | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "time_ms": self.time_ms,
            "node": self.node,
            "evidence": self.evidence.to_json() if self.evidence else None,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class ConnectionEnd:
    """One endpoint's trace of a connection."""

    node: str
    path: str
    trace_index: int
    vantage: str
    events: int
    first_ms: float | None
    last_ms: float | None
    packets_sent: int
    packets_received: int
    packets_lost: int
    app_visible: bool
    alpn: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "file": self.path,
            "trace": self.trace_index,
            "vantage": self.vantage,
            "events": self.events,
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "packets_sent": self.packets_sent,
            "packets_received": self.packets_received,
            "packets_lost": self.packets_lost,
            "app_visible": self.app_visible,
            "alpn": list(self.alpn),
        }


@dataclass(frozen=True, slots=True)
class StreamCredit:
    """The bidirectional streams one end allowed its peer to open (MAX_STREAMS), over time.

    `grants` are (time ms, limit) with rising limits: the handshake's transport parameter
    first (time None when the trace does not say when), then each MAX_STREAMS that raised it.
    `peer_opened` is how many the peer opened; `blocked` the peer's STREAMS_BLOCKED (time, limit).
    """

    grantor: str  # the node granting the credit
    role: str  # its end: "client" | "server"
    grants: tuple[tuple[float | None, int], ...]
    peer_opened: int
    blocked: tuple[tuple[float, int], ...] = ()

    @property
    def limit(self) -> int | None:
        """The last limit granted, or None if the traces never say."""
        return self.grants[-1][1] if self.grants else None

    @property
    def text(self) -> str:
        """`12/128`, `130/128 blocked` or `4/512 ↑2`: opened by the peer of the limit, raised how often."""
        limit = self.limit
        out = f"{self.peer_opened}/{limit if limit is not None else '?'}"
        raised = len(self.grants) - 1
        if raised > 0:
            out += f" ↑{raised}"
        if self.blocked and (limit is None or self.blocked[-1][1] >= limit):
            out += " blocked"
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "grantor": self.grantor,
            "role": self.role,
            "grants": [{"time_ms": t, "limit": n} for t, n in self.grants],
            "limit": self.limit,
            "peer_opened": self.peer_opened,
            "blocked": [{"time_ms": t, "limit": n} for t, n in self.blocked],
        }


@dataclass(frozen=True, slots=True)
class ConnectionView:
    """A connection, its ends joined by ODCID. `id` is unique in the analysis (the ODCID,
    suffixed when one ODCID names several connections, or the file for traces without one)."""

    id: str
    odcid: str | None
    client: ConnectionEnd | None
    server: ConnectionEnd | None
    state: str  # "open" | "closed"
    close_trigger: str | None
    close_reason: str | None
    close_code: int | None
    closed_by: str | None
    rtt_ms: float | None
    latest_rtt_ms: float | None
    bytes_client_to_server: int
    bytes_server_to_client: int
    streams: int
    first_ms: float | None
    last_ms: float | None
    close_name: str | None = None  # the close code named: "TLS alert 42 (bad certificate)", "H3_NO_ERROR (0x100)"
    stream_credit: tuple[StreamCredit, ...] = ()  # what each end allowed the other, client's first

    def credit_from(self, node: str) -> StreamCredit | None:
        """The stream credit `node` granted its peer on this connection."""
        return next((c for c in self.stream_credit if c.grantor == node), None)

    def credit_to(self, node: str) -> StreamCredit | None:
        """The stream credit `node`'s peer granted it on this connection."""
        return next((c for c in self.stream_credit if c.grantor != node), None)

    @property
    def ends(self) -> tuple[ConnectionEnd, ...]:
        return tuple(e for e in (self.client, self.server) if e is not None)

    @property
    def one_ended(self) -> bool:
        return self.client is None or self.server is None

    @property
    def label(self) -> str:
        """`client-node → server-node`, with `?` for a missing end."""
        c = self.client.node if self.client else "?"
        s = self.server.node if self.server else "?"
        return f"{c} → {s}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "odcid": self.odcid,
            "client": self.client.to_json() if self.client else None,
            "server": self.server.to_json() if self.server else None,
            "state": self.state,
            "close_trigger": self.close_trigger,
            "close_reason": self.close_reason,
            "close_code": self.close_code,
            "close_name": self.close_name,
            "closed_by": self.closed_by,
            "rtt_ms": self.rtt_ms,
            "latest_rtt_ms": self.latest_rtt_ms,
            "bytes_client_to_server": self.bytes_client_to_server,
            "bytes_server_to_client": self.bytes_server_to_client,
            "streams": self.streams,
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "one_ended": self.one_ended,
            "stream_credit": [c.to_json() for c in self.stream_credit],
        }


@dataclass(frozen=True, slots=True)
class StreamView:
    """One bidirectional stream of one connection, followed across both ends."""

    connection: str
    stream_id: int
    opener: str | None
    peer: str | None
    opener_role: str  # "client" | "server"
    steps: tuple[Step, ...]
    fin_opener: Step
    fin_peer: Step
    resets: tuple[Evidence, ...]
    request_type: str | None
    request_id: int | None
    response_received: Evidence | None
    timed_out: Evidence | None
    furthest: str | None
    missing: str | None
    one_ended: bool
    note: str
    first_ms: float | None
    last_ms: float | None
    bytes_opener: int
    bytes_peer: int

    def step(self, name: str) -> Step:
        """A step of the chain, or `fin_opener` / `fin_peer`."""
        for s in (*self.steps, self.fin_opener, self.fin_peer):
            if s.name == name:
                return s
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "connection": self.connection,
            "stream_id": self.stream_id,
            "opener": self.opener,
            "peer": self.peer,
            "opener_role": self.opener_role,
            "steps": [s.to_json() for s in self.steps],
            "fin_opener": self.fin_opener.to_json(),
            "fin_peer": self.fin_peer.to_json(),
            "resets": [e.to_json() for e in self.resets],
            "request_type": self.request_type,
            "request_id": self.request_id,
            "response_received": self.response_received.to_json() if self.response_received else None,
            "timed_out": self.timed_out.to_json() if self.timed_out else None,
            "furthest": self.furthest,
            "missing": self.missing,
            "one_ended": self.one_ended,
            "note": self.note,
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "bytes_opener": self.bytes_opener,
            "bytes_peer": self.bytes_peer,
        }


@dataclass(frozen=True, slots=True)
class Finding:
    """A named problem, where it is, the events that show it, and what to do about it.

    `connection` is a ConnectionView.id when the finding concerns one connection; findings
    that group several list them in `connections`, and `stream_refs` pairs each stream id
    with its connection (stream ids repeat across connections). `id` is stable for the same
    traces; `caused_by` is the id of the root finding this one is a consequence of.
    """

    kind: str
    severity: str
    node: str | None
    connection: str | None
    streams: tuple[int, ...]
    first_ms: float | None
    last_ms: float | None
    evidence: tuple[Evidence, ...]
    summary: str
    cause: str
    peer: str | None = None
    connections: tuple[str, ...] = ()
    stream_refs: tuple[tuple[str, int], ...] = ()
    fix: str = ""  # the one thing to do, in a line
    id: str = ""
    caused_by: str | None = None
    # For a finding about packets of one direction only: "sent" (what `node` sent) or "received".
    direction: str | None = None

    @property
    def stream_count(self) -> int:
        """Streams as (connection, stream id): ids repeat across connections."""
        return len(self.stream_refs) or len(self.streams)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "caused_by": self.caused_by,
            "kind": self.kind,
            "severity": self.severity,
            "node": self.node,
            "peer": self.peer,
            "connection": self.connection,
            "connections": list(self.connections),
            "streams": list(self.streams),
            "stream_count": self.stream_count,
            "stream_refs": [{"connection": c, "stream_id": s} for c, s in self.stream_refs],
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "evidence": [e.to_json() for e in self.evidence],
            "summary": self.summary,
            "cause": self.cause,
            "fix": self.fix,
            "direction": self.direction,
        }


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One event concerning a stream, on either end, for the stream timeline."""

    time_ms: float
    node: str
    end: str  # "opener" | "peer"
    name: str
    detail: str
    step: str | None
    evidence: Evidence


@dataclass(frozen=True)
class Analysis:
    """The result of `analyse`: connections, streams, findings and what could not be seen."""

    recording_path: str
    connections: list[ConnectionView]
    streams: list[StreamView]
    findings: list[Finding]
    blind_spots: list[str]
    nodes: list[str]
    trace_count: int
    event_count: int
    first_ms: float | None
    last_ms: float | None
    _ends: dict[tuple[str, int], tuple[TraceFacts | None, TraceFacts | None]] = field(
        default_factory=dict, repr=False, compare=False
    )
    _conns: dict[str, ConnectionView] = field(default_factory=dict, repr=False, compare=False)

    def connection(self, cid: str | None) -> ConnectionView | None:
        return self._conns.get(cid) if cid is not None else None

    def stream(self, connection: str, stream_id: int) -> StreamView | None:
        for s in self.streams:
            if s.connection == connection and s.stream_id == stream_id:
                return s
        return None

    def finding(self, fid: str | None) -> Finding | None:
        return next((f for f in self.findings if f.id == fid), None) if fid else None

    def roots(self) -> list[Finding]:
        """Findings that are no other finding's consequence, most severe first."""
        return [f for f in self.findings if f.caused_by is None]

    def consequences(self, root: Finding) -> list[Finding]:
        """The findings caused by `root`, in report order."""
        return [f for f in self.findings if f.caused_by is not None and f.caused_by == root.id]

    def affected_streams(self, severity: str = ERROR) -> list[StreamView]:
        """Streams named by findings of `severity`, in finding order, each once."""
        index = {(s.connection, s.stream_id): s for s in self.streams}
        out: list[StreamView] = []
        seen: set[tuple[str, int]] = set()
        for f in self.findings:
            if f.severity != severity:
                continue
            for ref in f.stream_refs:
                if ref not in seen and ref in index:
                    seen.add(ref)
                    out.append(index[ref])
        return out

    def summary(self) -> dict[str, Any]:
        sev = Counter(f.severity for f in self.findings)
        return {
            "recording": self.recording_path,
            "nodes": len(self.nodes),
            "node_names": list(self.nodes),
            "traces": self.trace_count,
            "connections": len(self.connections),
            "one_ended_connections": sum(1 for c in self.connections if c.one_ended),
            "streams": len(self.streams),
            "streams_with_missing_step": sum(1 for s in self.streams if s.missing),
            "events": self.event_count,
            "findings": {ERROR: sev.get(ERROR, 0), WARNING: sev.get(WARNING, 0), INFO: sev.get(INFO, 0)},
            "root_causes": [f.id for f in self.findings if f.caused_by is None and f.severity != INFO],
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "duration_ms": (self.last_ms - self.first_ms)
            if self.first_ms is not None and self.last_ms is not None
            else None,
        }

    def timeline(self, stream: StreamView) -> list[TimelineEntry]:
        """Every event on both ends concerning `stream`, in time order, steps labelled."""
        from .streams import stream_timeline

        return stream_timeline(self._ends.get((stream.connection, stream.stream_id), (None, None)), stream)

    def to_json(self) -> dict[str, Any]:
        affected: dict[tuple[str, int], StreamView] = {}
        index = {(s.connection, s.stream_id): s for s in self.streams}
        for f in self.findings:
            for ref in f.stream_refs:
                if ref in index:
                    affected.setdefault(ref, index[ref])
        by_missing = Counter(s.missing or "none" for s in self.streams)
        by_furthest = Counter(s.furthest or "none" for s in self.streams)
        return {
            "summary": self.summary(),
            "findings": [f.to_json() for f in self.findings],
            "connections": [c.to_json() for c in self.connections],
            "streams": {
                "total": len(self.streams),
                "complete": sum(1 for s in self.streams if s.missing is None and s.furthest == "answered"),
                "with_missing_step": sum(1 for s in self.streams if s.missing),
                "one_ended": sum(1 for s in self.streams if s.one_ended),
                "by_missing_step": dict(by_missing),
                "by_furthest_step": dict(by_furthest),
                "affected": [s.to_json() for s in affected.values()],
            },
            "blind_spots": list(self.blind_spots),
        }
