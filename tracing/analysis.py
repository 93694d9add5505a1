"""Join the two ends of each QUIC connection, follow every stream step by step, name what broke.

`analyse(recording)` reads each trace exactly once. That pass keeps only facts (per stream:
the events that realise each step; per trace: packet numbers, ACK coverage, closes, limits,
DHT events), so everything afterwards costs time in streams and packets, never a re-read.

Steps of a bidirectional stream, in order:

    sent -> acked -> received -> delivered -> answered

`sent` and `acked` are seen in the opener's trace, `received`, `delivered` and `answered`
in the peer's. A step is "done", "missing", "unknown" (that end's trace is absent) or
"not visible" (the trace exists but its stack does not log delivery to the application).
This module knows nothing of dhtscope.node: it must work on any stack's qlog.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .model import Recording, Trace

# ----------------------------------------------------------------------------- vocabulary

STEPS = ("sent", "acked", "received", "delivered", "answered")
DONE = "done"
MISSING = "missing"
UNKNOWN = "unknown"
NOT_VISIBLE = "not visible"

ERROR = "error"
WARNING = "warning"
INFO = "info"
_SEVERITY_RANK = {ERROR: 0, WARNING: 1, INFO: 2}

ALPN_MISMATCH_CODE = 0x178  # CRYPTO_ERROR + TLS alert 120 no_application_protocol
K = 20  # Kademlia replication factor; tracing may not import dhtscope.node's constant

# How long a peer must keep running after taking a request before "no answer" is a fact
# rather than a recording that stopped too soon.
NO_RESPONSE_GRACE_MS = 1000.0
# A routing table that held <= 1 contact only means something if the node ran this long.
BOOTSTRAP_ONLY_MIN_MS = 5000.0
# Failures this close to a node's last event may simply not have been acted on yet.
STALE_GRACE_MS = 500.0
# Packets sent this close to the receiver's last event may be in flight, not lost.
LOSS_TAIL_MARGIN_MS = 50.0
# A loss rate above this is an error, but only over enough packets to mean something.
LOSS_ERROR_RATE = 0.10
LOSS_ERROR_MIN_PACKETS = 20
MAX_EVIDENCE = 12

_DHT_STREAM_EVENTS = frozenset(
    {"dht:rpc_sent", "dht:rpc_received", "dht:rpc_response", "dht:rpc_timeout", "dht:rpc_error"}
)
_DHT_NODE_EVENTS = frozenset(
    {
        "dht:node_started",
        "dht:lookup_started",
        "dht:lookup_round",
        "dht:lookup_finished",
        "dht:routing_updated",
        "dht:record_stored",
        "dht:record_refused",
        "dht:record_expired",
        "dht:store_result",
    }
)

# ----------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Evidence:
    """Where to look: an event by file, trace number in that file, and record number."""

    path: str
    record: int
    name: str
    time_ms: float | None
    trace: int = 0

    @property
    def address(self) -> str:
        """`file#record` (or `file[trace]#record` for the second and later traces of a file)."""
        where = self.path if self.trace == 0 else f"{self.path}[{self.trace}]"
        return f"{where}#{self.record}"

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "trace": self.trace,
            "record": self.record,
            "name": self.name,
            "time_ms": self.time_ms,
        }


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
            "closed_by": self.closed_by,
            "rtt_ms": self.rtt_ms,
            "latest_rtt_ms": self.latest_rtt_ms,
            "bytes_client_to_server": self.bytes_client_to_server,
            "bytes_server_to_client": self.bytes_server_to_client,
            "streams": self.streams,
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "one_ended": self.one_ended,
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
        for s in self.steps:
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
    with its connection (stream ids repeat across connections).
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

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "node": self.node,
            "peer": self.peer,
            "connection": self.connection,
            "connections": list(self.connections),
            "streams": list(self.streams),
            "stream_refs": [{"connection": c, "stream_id": s} for c, s in self.stream_refs],
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "evidence": [e.to_json() for e in self.evidence],
            "summary": self.summary,
            "cause": self.cause,
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


# ----------------------------------------------------------------------------- helpers


def _int(value: Any) -> int | None:
    """Numbers as any qlog draft writes them (int, float, decimal or 0x string)."""
    cls = value.__class__
    if cls is int:
        return value
    if cls is str:
        try:
            return int(value, 16) if value[:2] in ("0x", "0X") else int(value)
        except ValueError:
            return None
    if cls is float:
        return int(value) if value.is_integer() else None
    if cls is bool:
        return int(value)
    return None


def _num(value: Any) -> float | None:
    cls = value.__class__
    if cls is int or cls is float:
        return float(value)
    if cls is str:
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _space(packet_type: Any) -> str:
    """Packet number space of a packet type: 0-RTT and 1-RTT share the application space."""
    if not packet_type:
        return "app"
    p = str(packet_type).lower()
    if p in ("1rtt", "0rtt", "one_rtt", "zero_rtt", "application", "1-rtt", "0-rtt"):
        return "app"
    return p


def _ranges(raw: Any) -> list[tuple[int, int]]:
    """ACK ranges: [[lo, hi], [n], ...] with numbers or strings, in any order."""
    out: list[tuple[int, int]] = []
    if not isinstance(raw, list):
        return out
    for r in raw:
        if isinstance(r, list) and r:
            lo = _int(r[0])
            hi = _int(r[-1])
            if lo is None or hi is None:
                continue
            if lo > hi:
                lo, hi = hi, lo
            out.append((lo, hi))
        else:
            n = _int(r)
            if n is not None:
                out.append((n, n))
    return out


def _alpn_values(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    out = []
    if isinstance(raw, list):
        for v in raw:
            if isinstance(v, str):
                out.append(v)
            elif isinstance(v, dict):
                s = v.get("string_value") or v.get("value")
                if isinstance(s, str):
                    out.append(s)
    return out


def _short(hex_id: str | None) -> str:
    return (hex_id or "?")[:12]


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f} ms"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def _counts(items: Iterable[str]) -> str:
    """'STORE×3, FIND_NODE×2' for a multiset of names."""
    c = Counter(i for i in items if i)
    return ", ".join(f"{k}×{v}" if v > 1 else k for k, v in c.most_common())


# A reference to one event of one trace: (record, time_ms, name, detail). Tuples: the
# collecting pass creates many of these.
Ref = tuple  # (int, float, str, str)


class _Side:
    """What one trace saw of one stream."""

    __slots__ = (
        "first_sent",
        "sent_end",
        "fin_sent",
        "app_write",
        "app_fin",
        "app_bytes",
        "first_recv",
        "recv_end",
        "fin_recv",
        "delivered",
        "delivered_http",
        "ack_received",
        "ack_sent",
        "resets_sent",
        "resets_recv",
        "rpc_sent",
        "rpc_received",
        "resp_sent",
        "resp_recv",
        "timeout",
        "rpc_error",
        "refs",
    )

    def __init__(self) -> None:
        self.first_sent: Ref | None = None
        self.sent_end = 0
        self.fin_sent: Ref | None = None
        self.app_write: Ref | None = None
        self.app_fin: Ref | None = None
        self.app_bytes = 0
        self.first_recv: Ref | None = None
        self.recv_end = 0
        self.fin_recv: Ref | None = None
        self.delivered: Ref | None = None
        self.delivered_http: Ref | None = None
        self.ack_received: Ref | None = None
        self.ack_sent: Ref | None = None
        self.resets_sent: list[Ref] = []
        self.resets_recv: list[Ref] = []
        self.rpc_sent: tuple[Ref, dict[str, Any]] | None = None
        self.rpc_received: tuple[Ref, dict[str, Any]] | None = None
        self.resp_sent: Ref | None = None
        self.resp_recv: Ref | None = None
        self.timeout: Ref | None = None
        self.rpc_error: Ref | None = None
        self.refs: list[Ref] = []

    @property
    def has_data(self) -> bool:
        return bool(self.first_sent or self.first_recv or self.app_write or self.delivered)


_EMPTY_SIDE = _Side()


class _Facts:
    """Everything the single pass keeps about one trace."""

    def __init__(self, trace: Trace, ordinal: int) -> None:
        info = trace.info
        self.ordinal = ordinal
        self.info = info
        self.path = info.path
        self.index = info.index
        self.node = info.node or Path(info.path).stem
        self.vantage = info.vantage if info.vantage in ("client", "server") else None
        self.odcid = info.odcid
        title = info.title or ""
        protocols = info.extra.get("protocol_type") or ()
        self.dhtscope = title.startswith("dhtscope") or (isinstance(protocols, list) and "DHT" in protocols)
        self.events = 0
        self.first_ms: float | None = None
        self.last_ms: float | None = None
        self.packets_sent = 0
        self.packets_received = 0
        self.dropped = 0
        self.malformed = 0
        self.first_packet_dir: str | None = None  # "sent" or "received": guesses a missing vantage
        self.sent_pkts: dict[tuple[str, int], tuple[float, int]] = {}
        self.recv_pkts: set[tuple[str, int]] = set()
        self.lost: list[Ref] = []
        self.streams: dict[int, _Side] = {}
        self._unacked_sent: dict[str, list[int]] = {}
        self._sent_sids: dict[tuple[str, int], list[int]] = {}
        self._unacked_recv: dict[str, list[int]] = {}
        self._recv_sids: dict[tuple[str, int], list[int]] = {}
        self.app_events = False
        self.dht_events = False
        self.alpns: list[str] = []
        self.role_hint: str | None = None
        self.local_node_id: str | None = None
        self.closed: tuple[Ref, dict[str, Any]] | None = None
        self.close_sent: tuple[Ref, dict[str, Any]] | None = None
        self.close_recv: tuple[Ref, dict[str, Any]] | None = None
        self.smoothed_rtt: float | None = None
        self.latest_rtt: float | None = None
        self.blocked: list[tuple[Ref, int]] = []
        self.max_streams_recv: list[tuple[float, int]] = []
        self.node_events: list[tuple[float, str, dict[str, Any], Ref]] = []
        self.rpc_timeouts: list[tuple[Ref, dict[str, Any]]] = []
        self.rpc_ok: list[tuple[float, str]] = []
        self.peer_ids: list[str] = []

    # -- derived

    @property
    def has_packets(self) -> bool:
        return self.packets_sent > 0 or self.packets_received > 0

    @property
    def app_visible(self) -> bool:
        """Does this trace show when the application takes stream data? dhtscope's always do."""
        return self.app_events or self.dht_events or self.dhtscope

    @property
    def is_connection(self) -> bool:
        return self.odcid is not None or self.has_packets or bool(self.streams)

    @property
    def role(self) -> str | None:
        if self.vantage:
            return self.vantage
        if self.role_hint in ("client", "server"):
            return self.role_hint
        if self.first_packet_dir == "sent":
            return "client"  # clients speak first
        if self.first_packet_dir == "received":
            return "server"
        return None

    def evidence(self, ref: Ref) -> Evidence:
        return Evidence(self.path, ref[0], ref[2], ref[1], self.index)

    def stream(self, sid: int) -> _Side:
        s = self.streams.get(sid)
        if s is None:
            s = self.streams[sid] = _Side()
        return s

    def drop_working_state(self) -> None:
        """After analysis only the per-stream facts are needed (for timelines)."""
        self.sent_pkts = {}
        self.recv_pkts = set()
        self._unacked_sent = {}
        self._sent_sids = {}
        self._unacked_recv = {}
        self._recv_sids = {}

    # -- the pass

    def collect(self, trace: Trace) -> None:
        """The one pass over the trace's events."""
        n = 0
        first = last = None
        for ev in trace:
            n += 1
            t = ev.time_ms
            if first is None or t < first:
                first = t
            if last is None or t > last:
                last = t
            name = ev.name
            try:
                if name == "quic:packet_received":
                    self._packet(ev, received=True)
                elif name == "quic:packet_sent":
                    self._packet(ev, received=False)
                elif name == "quic:stream_data_moved":
                    self._moved(ev)
                elif name == "quic:recovery_metrics_updated":
                    self._metrics(ev.data)
                elif name.startswith("dht:"):
                    self._dht(ev)
                elif name == "quic:packet_lost":
                    self._lost(ev)
                elif name == "quic:packet_dropped":
                    self.dropped += 1
                elif name == "quic:stream_state_updated":
                    self._stream_state(ev)
                elif name == "quic:connection_closed":
                    if self.closed is None:
                        self.closed = ((ev.record, t, name, ""), ev.data)
                elif name == "quic:connection_started":
                    self._started(ev.data)
                elif name == "quic:alpn_information":
                    d = ev.data
                    for key in ("client_alpns", "server_alpns", "chosen_alpn", "alpn"):
                        for a in _alpn_values(d.get(key)):
                            if a not in self.alpns:
                                self.alpns.append(a)
                elif name == "http:frame_parsed":
                    sid = _int(ev.data.get("stream_id"))
                    if sid is not None:
                        s = self.stream(sid)
                        if s.delivered_http is None:
                            s.delivered_http = (ev.record, t, name, "HTTP/3 frame parsed")
            except (TypeError, ValueError, AttributeError, KeyError, IndexError):
                self.malformed += 1
        self.events = n
        self.first_ms = first
        self.last_ms = last

    def _packet(self, ev: Any, received: bool) -> None:
        data = ev.data
        header = data.get("header") or {}
        space = _space(header.get("packet_type") or data.get("packet_type"))
        pn = _int(header.get("packet_number", data.get("packet_number")))
        t = ev.time_ms
        rec = ev.record
        name = ev.name
        if self.first_packet_dir is None:
            self.first_packet_dir = "received" if received else "sent"
        if received:
            self.packets_received += 1
            if pn is not None:
                self.recv_pkts.add((space, pn))
        else:
            self.packets_sent += 1
            if pn is not None:
                self.sent_pkts[(space, pn)] = (t, rec)
        frames = data.get("frames") or ()
        for fr in frames:
            if fr.__class__ is not dict:
                continue
            ft = fr.get("frame_type")
            if ft == "stream":
                sid = _int(fr.get("stream_id", fr.get("id")))
                if sid is None:
                    continue
                s = self.stream(sid)
                off = _int(fr.get("offset")) or 0
                length = _int(fr.get("length")) or 0
                fin = bool(fr.get("fin"))
                ref = (rec, t, name, f"pn {pn} STREAM {sid} off {off} len {length}{' FIN' if fin else ''}")
                s.refs.append(ref)
                end = off + length
                if received:
                    if s.first_recv is None:
                        s.first_recv = ref
                    if end > s.recv_end:
                        s.recv_end = end
                    if fin and s.fin_recv is None:
                        s.fin_recv = ref
                    if pn is not None:
                        self._pend(self._unacked_recv, self._recv_sids, space, pn, sid)
                else:
                    if s.first_sent is None:
                        s.first_sent = ref
                    if end > s.sent_end:
                        s.sent_end = end
                    if fin and s.fin_sent is None:
                        s.fin_sent = ref
                    if pn is not None:
                        self._pend(self._unacked_sent, self._sent_sids, space, pn, sid)
            elif ft == "ack":
                if received:
                    self._ack(self._unacked_sent, self._sent_sids, space, fr, rec, t, name, "received")
                else:
                    self._ack(self._unacked_recv, self._recv_sids, space, fr, rec, t, name, "sent")
            elif ft == "reset_stream" or ft == "stop_sending" or ft == "reset_stream_at":
                sid = _int(fr.get("stream_id", fr.get("id")))
                if sid is None:
                    continue
                s = self.stream(sid)
                code = fr.get("error_code")
                ref = (rec, t, name, f"pn {pn} {ft.upper()} {sid} code {code}")
                s.refs.append(ref)
                if ft != "stop_sending":
                    (s.resets_recv if received else s.resets_sent).append(ref)
            elif ft == "streams_blocked":
                if not received and fr.get("stream_type") != "unidirectional":
                    limit = _int(fr.get("limit"))
                    self.blocked.append(
                        ((rec, t, name, f"pn {pn} STREAMS_BLOCKED limit {limit}"), limit if limit is not None else -1)
                    )
            elif ft == "max_streams":
                if received and fr.get("stream_type") != "unidirectional":
                    maximum = _int(fr.get("maximum"))
                    if maximum is not None:
                        self.max_streams_recv.append((t, maximum))
            elif ft == "connection_close":
                ref = (rec, t, name, f"pn {pn} CONNECTION_CLOSE")
                if received:
                    if self.close_recv is None:
                        self.close_recv = (ref, fr)
                elif self.close_sent is None:
                    self.close_sent = (ref, fr)

    @staticmethod
    def _pend(
        unacked: dict[str, list[int]], sids: dict[tuple[str, int], list[int]], space: str, pn: int, sid: int
    ) -> None:
        key = (space, pn)
        lst = sids.get(key)
        if lst is not None:
            if sid not in lst:
                lst.append(sid)
            return
        sids[key] = [sid]
        pending = unacked.setdefault(space, [])
        # Packet numbers only grow in a space, so this is an append except for reordering.
        if not pending or pn > pending[-1]:
            pending.append(pn)
        else:
            bisect.insort(pending, pn)

    def _ack(
        self,
        unacked: dict[str, list[int]],
        sids: dict[tuple[str, int], list[int]],
        space: str,
        frame: dict[str, Any],
        rec: int,
        t: float,
        name: str,
        direction: str,
    ) -> None:
        pending = unacked.get(space)
        if not pending:
            return
        for lo, hi in _ranges(frame.get("acked_ranges")):
            i = bisect.bisect_left(pending, lo)
            j = bisect.bisect_right(pending, hi)
            if i >= j:
                continue
            for pn in pending[i:j]:
                for sid in sids.pop((space, pn), ()):
                    s = self.streams[sid]
                    if direction == "received":
                        ref = (rec, t, name, f"ACK of pn {pn} (STREAM {sid} data)")
                        if s.ack_received is None:
                            s.ack_received = ref
                    else:
                        ref = (rec, t, name, f"ACK sent for pn {pn} (STREAM {sid} data)")
                        if s.ack_sent is None:
                            s.ack_sent = ref
                    s.refs.append(ref)
            # Each packet is acknowledged once as far as steps go: later ACKs repeat ranges.
            del pending[i:j]

    def _moved(self, ev: Any) -> None:
        d = ev.data
        sid = _int(d.get("stream_id"))
        if sid is None:
            return
        self.app_events = True
        s = self.stream(sid)
        src, dst = d.get("from"), d.get("to")
        length = _int(d.get("length")) or 0
        fin = bool(d.get("fin"))
        if src == "application" and dst == "transport":
            ref = (ev.record, ev.time_ms, ev.name, _move_text(True, length, fin))
            _app_moved(s, ref, True, length, fin)
        elif src == "transport" and dst == "application":
            ref = (ev.record, ev.time_ms, ev.name, _move_text(False, length, fin))
            _app_moved(s, ref, False, length, fin)
        else:
            ref = (ev.record, ev.time_ms, ev.name, f"{length} bytes {src} → {dst}")
        s.refs.append(ref)

    def _stream_state(self, ev: Any) -> None:
        d = ev.data
        sid = _int(d.get("stream_id"))
        if sid is None:
            return
        s = self.stream(sid)
        new = str(d.get("new") or d.get("state") or "")
        ref = (ev.record, ev.time_ms, ev.name, f"{new} code {d.get('error_code')}")
        s.refs.append(ref)
        if new == "reset_sent":
            s.resets_sent.append(ref)
        elif new == "reset_received":
            s.resets_recv.append(ref)

    def _metrics(self, d: dict[str, Any]) -> None:
        v = _num(d.get("smoothed_rtt"))
        if v:
            self.smoothed_rtt = v
        v = _num(d.get("latest_rtt"))
        if v:
            self.latest_rtt = v

    def _lost(self, ev: Any) -> None:
        d = ev.data
        header = d.get("header") or {}
        pn = _int(header.get("packet_number", d.get("packet_number")))
        ptype = header.get("packet_type") or d.get("packet_type") or d.get("type")
        self.lost.append((ev.record, ev.time_ms, ev.name, f"{ptype} pn {pn} declared lost"))

    def _started(self, d: dict[str, Any]) -> None:
        role = d.get("role")
        if role in ("client", "server"):
            self.role_hint = role
        if isinstance(d.get("local_node"), str):
            self.local_node_id = d["local_node"].lower()
        for a in _alpn_values(d.get("alpn_offered")):
            if a not in self.alpns:
                self.alpns.append(a)

    def _dht(self, ev: Any) -> None:
        self.dht_events = True
        name = ev.name
        d = ev.data
        ref = (ev.record, ev.time_ms, name, "")
        if name in _DHT_NODE_EVENTS:
            self.node_events.append((ev.time_ms, name, d, ref))
            return
        if name == "dht:peer_identified":
            pid = d.get("peer_id")
            if isinstance(pid, str):
                self.peer_ids.append(pid.lower())
            return
        if name not in _DHT_STREAM_EVENTS:
            return
        if name == "dht:rpc_timeout":
            self.rpc_timeouts.append((ref, d))
        sid = _int(d.get("stream_id"))
        if sid is None:
            return
        s = self.stream(sid)
        kind = d.get("type")
        rid = d.get("request_id")
        # dhtscope folds the bytes a whole message moved into its dht event (offset, length,
        # fin): an rpc_sent / sent response is the application's write, an rpc_received /
        # received response is the application taking the bytes.
        length = _int(d.get("length"))
        direction = d.get("direction")
        moved: bool | None = None  # True: the app wrote; False: the app took
        if length is not None:
            if name == "dht:rpc_sent" or (name == "dht:rpc_response" and direction == "sent"):
                moved = True
            elif name == "dht:rpc_received" or (name == "dht:rpc_response" and direction == "received"):
                moved = False
        fin = bool(d.get("fin"))
        also = f"; {_move_text(moved, length or 0, fin)}" if moved is not None else ""
        if name == "dht:rpc_sent":
            ref = (ev.record, ev.time_ms, name, f"request {kind} #{rid}{also}")
            if s.rpc_sent is None:
                s.rpc_sent = (ref, d)
        elif name == "dht:rpc_received":
            ref = (ev.record, ev.time_ms, name, f"request {kind} #{rid}{also}")
            if s.rpc_received is None:
                s.rpc_received = (ref, d)
        elif name == "dht:rpc_response":
            ref = (ev.record, ev.time_ms, name, f"response {kind} {direction} ({d.get('status')}){also}")
            if direction == "sent":
                if s.resp_sent is None:
                    s.resp_sent = ref
            elif direction == "received":
                if s.resp_recv is None:
                    s.resp_recv = ref
                pid = d.get("peer_id")
                if isinstance(pid, str):
                    self.rpc_ok.append((ev.time_ms, pid.lower()))
        elif name == "dht:rpc_timeout":
            ref = (ev.record, ev.time_ms, name, f"{kind} timed out after {d.get('timeout_ms')} ms")
            if s.timeout is None:
                s.timeout = ref
        else:  # dht:rpc_error
            ref = (ev.record, ev.time_ms, name, f"refused: {d.get('code_name', d.get('code'))} {d.get('reason', '')}")
            if s.rpc_error is None:
                s.rpc_error = ref
        if moved is not None:
            self.app_events = True
            _app_moved(s, ref, moved, length or 0, fin)
        s.refs.append(ref)


def _move_text(wrote: bool, length: int, fin: bool) -> str:
    return f"app {'wrote' if wrote else 'took'} {length} bytes{' FIN' if fin else ''}"


def _app_moved(s: _Side, ref: Ref, wrote: bool, length: int, fin: bool) -> None:
    """The application wrote bytes of the stream (wrote) or took bytes the transport handed it."""
    if wrote:
        if s.app_write is None:
            s.app_write = ref
        s.app_bytes += length
        if fin and s.app_fin is None:
            s.app_fin = ref
    elif s.delivered is None:
        s.delivered = ref


# ----------------------------------------------------------------------------- joining


class _Conn:
    """A connection while analysing: its id and the facts of each end."""

    __slots__ = ("id", "odcid", "client", "server", "view")

    def __init__(self, cid: str, odcid: str | None, client: _Facts | None, server: _Facts | None) -> None:
        self.id = cid
        self.odcid = odcid
        self.client = client
        self.server = server
        self.view: ConnectionView | None = None

    def end(self, role: str) -> _Facts | None:
        return self.client if role == "client" else self.server

    def other(self, facts: _Facts) -> _Facts | None:
        return self.server if facts is self.client else self.client


def _join(conn_facts: list[_Facts]) -> list[_Conn]:
    """Pair traces by ODCID with opposite roles; everything unpaired stands alone."""
    groups: dict[str, list[_Facts]] = defaultdict(list)
    for f in conn_facts:
        groups[f.odcid if f.odcid is not None else f"\0{f.ordinal}"].append(f)
    conns: list[_Conn] = []
    used: set[str] = set()
    for key, members in groups.items():
        odcid = None if key.startswith("\0") else key
        clients = [f for f in members if f.role == "client"]
        servers = [f for f in members if f.role == "server"]
        others = [f for f in members if f.role is None]
        # One end of unknown role beside one known end: it is the other end.
        if len(others) == 1 and len(clients) + len(servers) == 1:
            (clients if servers else servers).append(others.pop())
        pairs: list[tuple[_Facts | None, _Facts | None]] = []
        for i in range(max(len(clients), len(servers))):
            pairs.append((clients[i] if i < len(clients) else None, servers[i] if i < len(servers) else None))
        for f in others:
            pairs.append((f, None))  # unknown role, alone: shown as the client end
        for n, (c, s) in enumerate(pairs):
            if odcid is None:
                # No ODCID: the trace's file names the connection (short unless ambiguous).
                only = c or s
                assert only is not None
                suffix = f"#{only.index}" if only.index else ""
                cid = Path(only.path).name + suffix
                if cid in used:
                    cid = only.path + suffix
            else:
                cid = odcid if n == 0 else f"{odcid}#{n}"
            used.add(cid)
            conns.append(_Conn(cid, odcid, c, s))
    conns.sort(key=lambda c: min(f.first_ms or 0.0 for f in (c.client, c.server) if f is not None))
    return conns


def _end_view(f: _Facts) -> ConnectionEnd:
    return ConnectionEnd(
        node=f.node,
        path=f.path,
        trace_index=f.index,
        vantage=f.role or "unknown",
        events=f.events,
        first_ms=f.first_ms,
        last_ms=f.last_ms,
        packets_sent=f.packets_sent,
        packets_received=f.packets_received,
        packets_lost=len(f.lost),
        app_visible=f.app_visible,
        alpn=tuple(f.alpns),
    )


def _close_trigger(code: int | None, reason: str) -> str:
    if code == ALPN_MISMATCH_CODE or "alpn" in reason.lower():
        return "alpn_mismatch"
    if reason == "Idle timeout":
        return "idle_timeout"
    if not code:
        return "clean"
    return "error"


def _close_of(conn: _Conn) -> tuple[str | None, str | None, int | None, str | None, Ref | None, _Facts | None]:
    """(trigger, reason, code, closed_by, evidence ref, facts of that ref) for a connection."""
    ends = [f for f in (conn.client, conn.server) if f is not None]
    logged = sorted((f.closed[0][1], i, f) for i, f in enumerate(ends) if f.closed is not None)
    if logged:
        _, _, f = logged[0]
        assert f.closed is not None
        ref, d = f.closed
        code = _int(d.get("connection_code"))
        if code is None:
            code = _int(d.get("application_code"))
        reason = str(d.get("reason") or "")
        trigger = str(d.get("trigger") or "") or _close_trigger(code, reason)
        owner = d.get("owner")
        by = f.node if owner == "local" else (conn.other(f).node if owner == "remote" and conn.other(f) else None)
        if owner == "remote" and by is None:
            by = "peer"
        return trigger, reason, code, by, ref, f
    frames: list[tuple[float, int, _Facts, Ref, dict[str, Any], bool]] = []
    for i, f in enumerate(ends):
        if f.close_sent is not None:
            frames.append((f.close_sent[0][1], i, f, f.close_sent[0], f.close_sent[1], True))
        if f.close_recv is not None:
            frames.append((f.close_recv[0][1], i, f, f.close_recv[0], f.close_recv[1], False))
    if not frames:
        return None, None, None, None, None, None
    frames.sort(key=lambda x: (x[0], x[1]))
    _, _, f, ref, fr, sent = frames[0]
    code = _int(fr.get("error_code", fr.get("raw_error_code")))
    reason = str(fr.get("reason") or "")
    trigger = _close_trigger(code, reason)
    if trigger == "error" and fr.get("error_space") == "application":
        trigger = "application"
    other = conn.other(f)
    by = f.node if sent else (other.node if other else "peer")
    return trigger, reason, code, by, ref, f


def _connection_view(conn: _Conn, n_streams: int) -> ConnectionView:
    c, s = conn.client, conn.server
    trigger, reason, code, by, ref, _ = _close_of(conn)
    ends = [f for f in (c, s) if f is not None]
    rtt = next((f.smoothed_rtt for f in ends if f.smoothed_rtt), None)
    latest = next((f.latest_rtt for f in ends if f.latest_rtt), None)

    def flow(sender: _Facts | None, receiver: _Facts | None) -> int:
        a = sum(x.sent_end for x in sender.streams.values()) if sender else 0
        b = sum(x.recv_end for x in receiver.streams.values()) if receiver else 0
        return max(a, b)

    firsts = [f.first_ms for f in ends if f.first_ms is not None]
    lasts = [f.last_ms for f in ends if f.last_ms is not None]
    return ConnectionView(
        id=conn.id,
        odcid=conn.odcid,
        client=_end_view(c) if c else None,
        server=_end_view(s) if s else None,
        state="closed" if ref is not None else "open",
        close_trigger=trigger,
        close_reason=reason,
        close_code=code,
        closed_by=by,
        rtt_ms=rtt,
        latest_rtt_ms=latest,
        bytes_client_to_server=flow(c, s),
        bytes_server_to_client=flow(s, c),
        streams=n_streams,
        first_ms=min(firsts) if firsts else None,
        last_ms=max(lasts) if lasts else None,
    )


# ----------------------------------------------------------------------------- streams


def _earliest(*cands: tuple[Ref | None, _Facts | None, str]) -> tuple[Ref, _Facts, str] | None:
    best = None
    for ref, facts, note in cands:
        if ref is None or facts is None:
            continue
        if best is None or ref[1] < best[0][1]:
            best = (ref, facts, note)
    return best


def _step(
    name: str, status: str, ref: Ref | None = None, facts: _Facts | None = None, note: str = "", node: str | None = None
) -> Step:
    if ref is not None and facts is not None:
        return Step(name, status, ref[1], facts.evidence(ref), facts.node, note)
    return Step(name, status, None, None, node if node is not None else (facts.node if facts else None), note)


def _stream_view(conn: _Conn, sid: int) -> StreamView:
    opener_role = "server" if sid & 1 else "client"
    OF = conn.end(opener_role)
    PF = conn.end("client" if opener_role == "server" else "server")
    o = OF.streams.get(sid, _EMPTY_SIDE) if OF else _EMPTY_SIDE
    p = PF.streams.get(sid, _EMPTY_SIDE) if PF else _EMPTY_SIDE

    # sent: the opener's packets carry the stream's first bytes.
    if OF is None:
        sent = _step("sent", UNKNOWN, note="no trace of the opener")
    elif o.first_sent is not None:
        sent = _step("sent", DONE, o.first_sent, OF)
    elif o.app_write is not None and not OF.has_packets:
        sent = _step("sent", DONE, o.app_write, OF, "written by the application (trace logs no packets)")
    elif o.app_write is not None:
        sent = _step(
            "sent",
            MISSING,
            facts=OF,
            note=f"the application wrote {o.app_bytes} bytes but no packet carried them "
            "(stream credit or flow control?)",
        )
    else:
        sent = _step("sent", MISSING, facts=OF, note="no packet carried this stream's data")

    # acked: the peer's transport acknowledged a packet carrying the stream's data.
    if OF is not None and OF.has_packets:
        if o.ack_received is not None:
            acked = _step("acked", DONE, o.ack_received, OF)
        else:
            acked = _step("acked", MISSING, facts=OF, note="no ACK covered the packets carrying this stream")
    elif PF is not None and p.ack_sent is not None:
        acked = _step("acked", DONE, p.ack_sent, PF, "ACK sent by the peer; the opener's trace does not show it")
    else:
        acked = _step("acked", UNKNOWN, facts=OF, note="the opener's trace is missing or logs no packets")

    # received: the peer's transport got the stream frame.
    if PF is None:
        received = _step("received", UNKNOWN, note="no trace of the peer")
    elif not PF.has_packets:
        received = _step("received", UNKNOWN, facts=PF, note="the peer's trace logs no packets")
    elif p.first_recv is not None:
        received = _step("received", DONE, p.first_recv, PF)
    else:
        received = _step("received", MISSING, facts=PF, note="no packet with this stream's data arrived")

    # delivered: the peer's application took the data.
    if PF is None:
        delivered = _step("delivered", UNKNOWN, note="no trace of the peer")
    elif p.delivered is not None:
        delivered = _step("delivered", DONE, p.delivered, PF)
    elif p.delivered_http is not None:
        delivered = _step("delivered", DONE, p.delivered_http, PF, "HTTP/3 layer parsed a frame")
    elif not PF.app_visible:
        delivered = _step(
            "delivered", NOT_VISIBLE, facts=PF, note="the peer's stack logs no delivery to the application"
        )
    else:
        delivered = _step(
            "delivered", MISSING, facts=PF, note="no stream_data_moved to the application for this stream"
        )

    # answered: the peer wrote back on the stream (or refused it with a reset before the
    # opener gave up), seen at the peer or, failing that, arriving at the opener.
    opener_gave_up = min((r[1] for r in (*o.resets_sent, o.timeout) if r is not None), default=None)
    peer_reset = min(p.resets_sent, key=lambda r: r[1]) if p.resets_sent else None
    if peer_reset is not None and opener_gave_up is not None and peer_reset[1] >= opener_gave_up:
        peer_reset = None  # the peer only reset because the opener abandoned the stream
    best = _earliest(
        (p.first_sent, PF, ""),
        (p.app_write, PF, ""),
        (p.resp_sent, PF, ""),
        (peer_reset, PF, "answered with a stream reset"),
    )
    if best is None:
        best = _earliest(
            (o.first_recv, OF, "seen arriving at the opener"), (o.resp_recv, OF, "seen arriving at the opener")
        )
    if best is not None:
        answered = _step("answered", DONE, best[0], best[1], best[2])
    elif PF is None:
        answered = _step("answered", UNKNOWN, note="no trace of the peer, and no answer arrived")
    else:
        answered = _step("answered", MISSING, facts=PF, note="the peer sent nothing back on this stream")

    steps = (sent, acked, received, delivered, answered)

    def fin(name: str, mine: _Side, mine_f: _Facts | None, theirs: _Side, theirs_f: _Facts | None) -> Step:
        if mine.fin_sent is not None and mine_f is not None:
            return _step(name, DONE, mine.fin_sent, mine_f)
        if theirs.fin_recv is not None and theirs_f is not None:
            return _step(name, DONE, theirs.fin_recv, theirs_f, "FIN seen arriving")
        if mine_f is not None and not mine_f.has_packets and mine.app_fin is not None:
            return _step(name, DONE, mine.app_fin, mine_f, "FIN written by the application")
        if mine_f is None:
            return _step(name, UNKNOWN, note="no trace of this end")
        return _step(name, MISSING, facts=mine_f, note="no FIN sent on this side")

    fin_opener = fin("fin_opener", o, OF, p, PF)
    fin_peer = fin("fin_peer", p, PF, o, OF)

    resets: list[Evidence] = []
    for side, f in ((o, OF), (p, PF)):
        if f is not None:
            resets.extend(f.evidence(r) for r in (*side.resets_sent, *side.resets_recv))
    resets.sort(key=lambda e: e.time_ms or 0.0)

    req = o.rpc_sent or p.rpc_received
    rtype = str(req[1].get("type")) if req and req[1].get("type") is not None else None
    rid = _int(req[1].get("request_id")) if req else None

    furthest = None
    for st in steps:
        if st.status == DONE:
            furthest = st.name
    missing = next((st.name for st in steps if st.status == MISSING), None)

    if OF is None:
        note = f"only {PF.node if PF else '?'}'s trace exists: the opener's steps are unknown"
    elif PF is None:
        note = f"only {OF.node}'s trace (the opener) exists: the peer's steps are unknown"
    elif not PF.app_visible:
        note = f"{PF.node}'s trace logs no application events: delivery is not visible"
    else:
        note = ""

    times = [r[1] for side in (o, p) for r in side.refs]
    return StreamView(
        connection=conn.id,
        stream_id=sid,
        opener=OF.node if OF else None,
        peer=PF.node if PF else None,
        opener_role=opener_role,
        steps=steps,
        fin_opener=fin_opener,
        fin_peer=fin_peer,
        resets=tuple(resets),
        request_type=rtype,
        request_id=rid,
        response_received=OF.evidence(o.resp_recv) if (OF and o.resp_recv) else None,
        timed_out=OF.evidence(o.timeout) if (OF and o.timeout) else None,
        furthest=furthest,
        missing=missing,
        one_ended=OF is None or PF is None,
        note=note,
        first_ms=min(times) if times else None,
        last_ms=max(times) if times else None,
        bytes_opener=max(o.sent_end, p.recv_end, o.app_bytes),
        bytes_peer=max(p.sent_end, o.recv_end, p.app_bytes),
    )


# ----------------------------------------------------------------------------- analysis value


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
    _ends: dict[tuple[str, int], tuple[_Facts | None, _Facts | None]] = field(
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
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "duration_ms": (self.last_ms - self.first_ms)
            if self.first_ms is not None and self.last_ms is not None
            else None,
        }

    def timeline(self, stream: StreamView) -> list[TimelineEntry]:
        """Every event on both ends concerning `stream`, in time order, steps labelled."""
        OF, PF = self._ends.get((stream.connection, stream.stream_id), (None, None))
        rows: list[tuple[float, int, int, Evidence, str, str, str]] = []
        for order, (facts, end) in enumerate(((OF, "opener"), (PF, "peer"))):
            if facts is None:
                continue
            side = facts.streams.get(stream.stream_id)
            if side is None:
                continue
            for ref in side.refs:
                rows.append((ref[1], order, ref[0], facts.evidence(ref), facts.node, end, ref[3]))
        rows.sort(key=lambda x: (x[0], x[1], x[2]))
        by_address: dict[tuple[str, int, int], list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            ev = row[3]
            by_address[(ev.path, ev.trace, ev.record)].append(i)
        # One packet can carry an ACK, stream data and a FIN: each label goes to the row
        # whose detail shows that step, and each step labels one row only.
        keyword = {"acked": "ACK", "fin_opener": "FIN", "fin_peer": "FIN", "reset": "RESET"}
        labelled: dict[int, str] = {}
        marks = [(st.name, st.evidence) for st in (*stream.steps, stream.fin_opener, stream.fin_peer)]
        marks += [("reset", e) for e in stream.resets]
        for name, ev in marks:
            if ev is None:
                continue
            free = [i for i in by_address.get((ev.path, ev.trace, ev.record), ()) if i not in labelled]
            if not free:
                continue
            word = keyword.get(name)
            pick = next((i for i in free if word and word in rows[i][6].upper()), free[0])
            labelled[pick] = name
        return [TimelineEntry(r[0], r[4], r[5], r[3].name, r[6], labelled.get(i), r[3]) for i, r in enumerate(rows)]

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


# ----------------------------------------------------------------------------- findings


class _Ctx:
    """Shared state while deriving findings."""

    def __init__(
        self, rec: Recording, facts: list[_Facts], conns: list[_Conn], streams: dict[tuple[str, int], StreamView]
    ) -> None:
        self.rec = rec
        self.facts = facts
        self.conns = conns
        self.streams = streams
        self.conn_by_id = {c.id: c for c in conns}
        self.findings: list[Finding] = []
        self.blind: list[str] = []
        self.names: dict[str, str] = {}  # node id hex -> node name
        for n in rec.nodes:
            if n.node_id:
                self.names[n.node_id.lower()] = n.name
        for conn in conns:
            # The peer a trace identified is whoever wrote the other end's trace.
            for f in (conn.client, conn.server):
                other = conn.other(f) if f is not None else None
                if f is not None and other is not None:
                    for pid in f.peer_ids:
                        self.names.setdefault(pid, other.node)
        for f in facts:
            if f.local_node_id:
                self.names.setdefault(f.local_node_id, f.node)
            for _, name, d, _ in f.node_events:
                if name == "dht:node_started" and isinstance(d.get("node_id"), str):
                    self.names.setdefault(d["node_id"].lower(), f.node)
        first = [f.first_ms for f in facts if f.first_ms is not None]
        last = [f.last_ms for f in facts if f.last_ms is not None]
        self.first_ms = min(first) if first else None
        self.last_ms = max(last) if last else None

    def peer_name(self, peer_id: Any) -> str:
        if isinstance(peer_id, str):
            return self.names.get(peer_id.lower(), _short(peer_id))
        return "?"

    def add(self, **kw: Any) -> None:
        ev = tuple(sorted(kw.pop("evidence"), key=lambda e: e.time_ms if e.time_ms is not None else 0.0))
        times = [e.time_ms for e in ev if e.time_ms is not None]
        kw.setdefault("first_ms", min(times) if times else None)
        kw.setdefault("last_ms", max(times) if times else None)
        self.findings.append(Finding(evidence=ev[:MAX_EVIDENCE], **kw))


def _group_streams(views: list[StreamView]) -> tuple[tuple[int, ...], tuple[str, ...], tuple[tuple[str, int], ...]]:
    refs = tuple((v.connection, v.stream_id) for v in views)
    conns = tuple(dict.fromkeys(v.connection for v in views))
    sids = tuple(sorted({v.stream_id for v in views}))
    return sids, conns, refs


def _per_opener(views: list[StreamView]) -> str:
    """'provider1: 0, 4; client: 0' — which streams came from whom."""
    by: dict[str, list[int]] = defaultdict(list)
    for v in views:
        by[v.opener or "?"].append(v.stream_id)
    parts = []
    for who, sids in by.items():
        shown = ", ".join(str(s) for s in sids[:8]) + (", …" if len(sids) > 8 else "")
        parts.append(f"{who}: {shown}")
    return "; ".join(parts)


def _find_not_delivered(ctx: _Ctx) -> None:
    by_node: dict[str, list[StreamView]] = defaultdict(list)
    for v in ctx.streams.values():
        if v.one_ended or v.peer is None:
            continue
        if v.step("received").status != DONE or v.step("acked").status != DONE:
            continue
        if v.step("delivered").status != MISSING:
            continue  # MISSING already implies the peer's trace shows application events
        _, PF = ctx_ends(ctx, v)
        rcv = v.step("received")
        if PF is None or PF.last_ms is None or rcv.time_ms is None or PF.last_ms <= rcv.time_ms:
            continue  # the peer's trace stops at the receipt: too soon to say
        by_node[v.peer].append(v)
    for node, views in by_node.items():
        sids, conns, refs = _group_streams(views)
        evidence: list[Evidence] = []
        for v in views[:4]:
            for name in ("sent", "acked", "received"):
                e = v.step(name).evidence
                if e is not None:
                    evidence.append(e)
        peers = sorted({v.opener for v in views if v.opener})
        ctx.add(
            kind="stream_not_delivered",
            severity=ERROR,
            node=node,
            connection=conns[0] if len(conns) == 1 else None,
            streams=sids,
            connections=conns,
            stream_refs=refs,
            peer=", ".join(peers) or None,
            summary=(
                f"{node}'s transport received and acknowledged {_plural(len(views), 'stream')} "
                f"on {_plural(len(conns), 'connection')} ({_per_opener(views)}) but its application "
                "never took their data (no stream_data_moved to the application)."
            ),
            cause=(
                "The application never took the streams the transport accepted: the stream acceptance "
                "path drops peer-opened streams (e.g. no stream handler / events not handled); "
                "handle every StreamDataReceived."
            ),
            evidence=evidence,
        )


def ctx_ends(ctx: _Ctx, v: StreamView) -> tuple[_Facts | None, _Facts | None]:
    conn = ctx.conn_by_id[v.connection]
    OF = conn.end(v.opener_role)
    return OF, conn.end("client" if v.opener_role == "server" else "server")


def _find_no_response(ctx: _Ctx) -> None:
    by_node: dict[str, list[StreamView]] = defaultdict(list)
    for v in ctx.streams.values():
        OF, PF = ctx_ends(ctx, v)
        if PF is None or v.peer is None:
            continue
        p = PF.streams.get(v.stream_id)
        if p is None:
            continue
        delivered = v.step("delivered")
        took = p.rpc_received[0] if p.rpc_received else None
        took_ms = took[1] if took else (delivered.time_ms if delivered.status == DONE else None)
        if took_ms is None or v.step("answered").status != MISSING:
            continue
        gave_up = v.timed_out is not None or (
            OF is not None and bool(OF.streams.get(v.stream_id, _EMPTY_SIDE).resets_sent)
        )
        ran_on = PF.last_ms is not None and PF.last_ms - took_ms >= NO_RESPONSE_GRACE_MS
        if gave_up or ran_on:
            by_node[v.peer].append(v)
    for node, views in by_node.items():
        sids, conns, refs = _group_streams(views)
        evidence: list[Evidence] = []
        for v in views[:6]:
            _, PF = ctx_ends(ctx, v)
            p = PF.streams[v.stream_id] if PF else None
            if PF is not None and p is not None and p.rpc_received:
                evidence.append(PF.evidence(p.rpc_received[0]))
            elif v.step("delivered").evidence:
                evidence.append(v.step("delivered").evidence)  # type: ignore[arg-type]
            if v.timed_out:
                evidence.append(v.timed_out)
        timeouts = sum(1 for v in views if v.timed_out)
        kinds = _counts(v.request_type or "" for v in views)
        ctx.add(
            kind="no_response",
            severity=ERROR,
            node=node,
            connection=conns[0] if len(conns) == 1 else None,
            streams=sids,
            connections=conns,
            stream_refs=refs,
            peer=", ".join(sorted({v.opener for v in views if v.opener})) or None,
            summary=(
                f"{node} took {_plural(len(views), 'request')}{f' ({kinds})' if kinds else ''} "
                f"from its peers ({_per_opener(views)}) and never answered"
                f"{f'; {timeouts} of them timed out at the requester' if timeouts else ''}."
            ),
            cause=(
                "The request handler read the request and never wrote a response (a stalled or blocking "
                "handler, or an exception swallowed): answer every request, or reset the stream with an "
                "error code, and never block the event loop."
            ),
            evidence=evidence,
        )


def _find_rpc_timeouts(ctx: _Ctx) -> None:
    groups: dict[tuple[str, str], list[tuple[_Facts, Ref, dict[str, Any], _Conn | None]]] = defaultdict(list)
    conn_of = {id(f): c for c in ctx.conns for f in (c.client, c.server) if f is not None}
    for f in ctx.facts:
        for ref, d in f.rpc_timeouts:
            conn = conn_of.get(id(f))
            other = conn.other(f) if conn else None
            peer = other.node if other is not None else ctx.peer_name(d.get("peer_id"))
            groups[(f.node, peer)].append((f, ref, d, conn))
    for (node, peer), items in groups.items():
        views = []
        for _f, _ref, d, conn in items:
            sid = _int(d.get("stream_id"))
            if conn is not None and sid is not None and (conn.id, sid) in ctx.streams:
                views.append(ctx.streams[(conn.id, sid)])
        sids, conns, refs = _group_streams(views)
        kinds = _counts(str(d.get("type") or "") for _, _, d, _ in items)
        waits = sorted({_num(d.get("timeout_ms")) for _, _, d, _ in items} - {None})
        wait = f" after {waits[0]:.0f} ms" if len(waits) == 1 else ""
        stuck = Counter(v.missing for v in views if v.missing)
        where = stuck.most_common(1)[0][0] if stuck else None
        cause = {
            "sent": (
                "The requests never left the requester (no stream credit or flow control); see stream_limit_exhausted"
            ),
            "acked": "The requests' packets were never acknowledged: packet loss or an unreachable peer",
            "received": "The requests never reached the peer's transport: packet loss or an unreachable peer",
            "delivered": (
                f"{peer}'s transport accepted the requests but its application never took them "
                "(see stream_not_delivered)"
            ),
            "answered": f"{peer} took the requests and never answered (see no_response)",
        }.get(
            where or "",
            f"{peer} did not answer in time: a slow or blocked peer, or loss on the path; "
            "the stream steps show where each request stopped",
        )
        ctx.add(
            kind="rpc_timeout",
            severity=WARNING,
            node=node,
            peer=peer,
            connection=conns[0] if len(conns) == 1 else None,
            streams=sids,
            connections=conns,
            stream_refs=refs,
            summary=f"{node}: {_plural(len(items), 'request')} to {peer} timed out{wait}"
            f"{f' ({kinds})' if kinds else ''}.",
            cause=cause + ".",  # may start with a node name: never re-case identifiers
            evidence=[f.evidence(ref) for f, ref, _, _ in items],
        )


def _find_stream_limit(ctx: _Ctx) -> None:
    for conn in ctx.conns:
        for f in (conn.client, conn.server):
            if f is None or not f.blocked:
                continue
            last_ref, limit = f.blocked[-1]
            if any(t >= last_ref[1] and m > limit for t, m in f.max_streams_recv):
                continue  # credit came back after the last block: a transient stall, not exhaustion
            role = f.role or "client"
            other = conn.other(f)
            peer = other.node if other is not None else "the peer"
            my_parity = 0 if role == "client" else 1
            unfinished: list[int] = []
            example: Evidence | None = None
            for sid, side in f.streams.items():
                if sid & 3 != my_parity or not side.has_data:
                    continue
                theirs = other.streams.get(sid, _EMPTY_SIDE) if other is not None else _EMPTY_SIDE
                if side.first_sent is None and theirs.first_recv is None:
                    continue  # never left this node (blocked itself): the peer cannot have finished it
                finned = side.fin_recv is not None or theirs.fin_sent is not None
                reset = bool(side.resets_recv or side.resets_sent or theirs.resets_sent)
                if not finned and not reset:
                    unfinished.append(sid)
                    if example is None and other is not None and theirs.first_sent is not None:
                        example = other.evidence(theirs.first_sent)
            unfinished.sort()
            evidence = [f.evidence(r) for r, _ in f.blocked[:5]]
            if len(f.blocked) > 5:
                evidence.append(f.evidence(f.blocked[-1][0]))
            if example is not None:
                evidence.append(example)
            head = (
                f"{f.node} used all {limit} bidirectional streams {peer} allowed and sent STREAMS_BLOCKED "
                f"({_plural(len(f.blocked), 'time')}); {peer} never raised the limit"
            )
            if unfinished:
                severity = ERROR
                summary = (
                    f"{head} and never finished (FIN) its side of {_plural(len(unfinished), 'stream')} {f.node} opened."
                )
                cause = (
                    f"Stream credit (MAX_STREAMS) only returns when a stream is finished both ways: {peer} "
                    "keeps its side of each stream open (no FIN after the response); end every stream with "
                    "FIN or reset it, and queue requests that find no credit."
                )
            else:
                # Blocked, but the trace shows no stream the peer left open: say so, don't blame.
                severity = WARNING
                summary = f"{head}; the trace shows no stream {peer} left unfinished."
                cause = (
                    f"{peer} returns no stream credit: either it holds streams open that this trace does not "
                    "show, or its stream limit is too low for this load; queue requests that find no credit."
                )
            ctx.add(
                kind="stream_limit_exhausted",
                severity=severity,
                node=f.node,
                peer=peer,
                connection=conn.id,
                connections=(conn.id,),
                streams=tuple(unfinished),
                stream_refs=tuple((conn.id, s) for s in unfinished if (conn.id, s) in ctx.streams),
                summary=summary,
                cause=cause,
                evidence=evidence,
            )


def _find_loss(ctx: _Ctx) -> None:
    # Per direction: (sender facts, receiver node, sent, lost, evidence refs).
    directions: list[tuple[_Facts, str | None, int, int, int, int, list[Evidence], str]] = []
    for conn in ctx.conns:
        for f in (conn.client, conn.server):
            if f is None or f.packets_sent == 0:
                continue
            other = conn.other(f)
            declared = len(f.lost)
            unseen_refs: list[tuple[float, int]] = []
            if other is not None and other.has_packets and other.last_ms is not None:
                margin = max(LOSS_TAIL_MARGIN_MS, 2 * (f.smoothed_rtt or other.smoothed_rtt or 0.0))
                horizon = other.last_ms - margin
                start = other.first_ms if other.first_ms is not None else float("-inf")
                recv = other.recv_pkts
                for key, (t, rec) in f.sent_pkts.items():
                    if start <= t <= horizon and key not in recv:
                        unseen_refs.append((t, rec))
            # Packets the receiver dropped (undecryptable yet, duplicates) did arrive.
            unseen = max(0, len(unseen_refs) - (other.dropped if other is not None else 0))
            lost = max(declared, unseen)
            if lost == 0:
                continue
            ev = [f.evidence(r) for r in f.lost[:8]]
            if not ev:
                unseen_refs.sort()
                ev = [Evidence(f.path, rec, "quic:packet_sent", t, f.index) for t, rec in unseen_refs[:8]]
            directions.append((f, other.node if other else None, f.packets_sent, lost, declared, unseen, ev, conn.id))
    # Attribute to the node common to most lost packets: in a lossy node's recording every
    # direction touching it loses packets, and its peers are not to blame.
    remaining = list(range(len(directions)))
    while remaining:
        weight: Counter[str] = Counter()
        for i in remaining:
            f, recv, _, lost, *_ = directions[i]
            weight[f.node] += lost
            if recv is not None:
                weight[recv] += lost
        node = weight.most_common(1)[0][0]
        mine = [i for i in remaining if directions[i][0].node == node or directions[i][1] == node]
        taken = set(mine)
        remaining = [i for i in remaining if i not in taken]
        sent = sum(directions[i][2] for i in mine)
        lost = sum(directions[i][3] for i in mine)
        declared = sum(directions[i][4] for i in mine)
        unseen = sum(directions[i][5] for i in mine)
        rate = lost / sent if sent else 0.0
        out_sent = sum(directions[i][2] for i in mine if directions[i][0].node == node)
        out_lost = sum(directions[i][3] for i in mine if directions[i][0].node == node)
        in_sent, in_lost = sent - out_sent, lost - out_lost
        conns = tuple(dict.fromkeys(directions[i][7] for i in mine))
        peers = sorted(
            {(directions[i][1] if directions[i][0].node == node else directions[i][0].node) or "?" for i in mine}
        )
        parts = []
        if out_sent:
            parts.append(f"sent by {node}: {out_lost}/{out_sent}")
        if in_sent:
            parts.append(f"sent to {node}: {in_lost}/{in_sent}")
        severity = ERROR if rate > LOSS_ERROR_RATE and sent >= LOSS_ERROR_MIN_PACKETS else WARNING
        evidence = [e for i in mine for e in directions[i][6]]
        ctx.add(
            kind="packet_loss",
            severity=severity,
            node=node,
            peer=", ".join(peers) or None,
            connection=conns[0] if len(conns) == 1 else None,
            connections=conns,
            streams=(),
            summary=(
                f"{lost} of {sent} packets lost ({rate:.1%}) on {_plural(len(conns), 'connection')} of {node} "
                f"({'; '.join(parts)}); {declared} declared lost by the sender, {unseen} never seen by the "
                "receiver."
            ),
            cause=(
                f"Packets are lost on the path to or from {node} (network loss, congestion, or a loss fault); "
                "QUIC retransmits, but requests slow down and may time out: check the link or the node's "
                "loss setting."
            ),
            evidence=evidence,
        )


def _find_alpn(ctx: _Ctx) -> None:
    votes: Counter[str] = Counter()
    per_node: dict[str, str] = {}
    for f in ctx.facts:
        if f.alpns and f.node not in per_node:
            per_node[f.node] = f.alpns[0]
    votes.update(per_node.values())
    top = votes.most_common(2)
    # The ALPN most nodes offer is the expected one; a tie names no culprit.
    majority = top[0][0] if top and (len(top) == 1 or top[0][1] > top[1][1]) else None
    groups: dict[str, list[tuple[_Conn, Evidence, str, str]]] = defaultdict(list)
    for conn in ctx.conns:
        trigger, reason, code, _, ref, f = _close_of(conn)
        if ref is None or f is None:
            continue
        if not (trigger == "alpn_mismatch" or code == ALPN_MISMATCH_CODE or "alpn" in (reason or "").lower()):
            continue
        ends = [e for e in (conn.client, conn.server) if e is not None]
        alpn = {e.node: (e.alpns[0] if e.alpns else None) for e in ends}
        culprits: list[str] = []
        if majority is not None:
            culprits = [e.node for e in ends if alpn[e.node] is not None and alpn[e.node] != majority]
        if not culprits:
            culprits = [e.node for e in ends]
            if len(ends) == 1:
                culprits.append("its peer")
        key = ", ".join(culprits)
        offered = "; ".join(f"{n} offers {a!r}" for n, a in alpn.items() if a) or "ALPNs not logged"
        groups[key].append((conn, f.evidence(ref), offered, f"0x{code:x}" if code is not None else "?"))
    for key, items in groups.items():
        conns = tuple(c.id for c, _, _, _ in items)
        codes = ", ".join(sorted({c for _, _, _, c in items}))
        offered = items[0][2]
        peers = sorted({e.node for c, _, _, _ in items for e in (c.client, c.server) if e is not None} - {key})
        blame = (
            f"{key} offers a different ALPN from the rest of the recording ({majority!r})"
            if majority is not None and "," not in key
            else "The two ends offer different ALPNs"
        )
        ctx.add(
            kind="alpn_mismatch",
            severity=ERROR,
            node=key,
            peer=", ".join(peers) or None,
            connection=conns[0] if len(conns) == 1 else None,
            connections=conns,
            streams=(),
            summary=(
                f"{_plural(len(items), 'connection')} closed during the handshake for lack of a common ALPN "
                f"(code {codes}): {offered}."
            ),
            cause=(f"{blame}, so TLS refuses the handshake; configure the same ALPN (protocol version) on every node."),
            evidence=[e for _, e, _, _ in items],
        )


def _find_not_visible(ctx: _Ctx) -> None:
    by_node: dict[str, list[_Facts]] = defaultdict(list)
    for conn in ctx.conns:
        for f in (conn.client, conn.server):
            if f is not None and not f.app_visible:
                by_node[f.node].append(f)
    for node, traces in by_node.items():
        files = ", ".join(sorted({Path(t.path).name for t in traces})[:4])
        fmt = ", ".join(sorted({t.info.format for t in traces}))
        mine = {id(t) for t in traces}
        ctx.add(
            kind="application_not_visible",
            severity=INFO,
            node=node,
            connection=None,
            streams=(),
            connections=tuple(c.id for c in ctx.conns if id(c.client) in mine or id(c.server) in mine),
            summary=(
                f"{_plural(len(traces), 'trace')} of {node} ({files}; {fmt}) "
                f"{'logs' if len(traces) == 1 else 'log'} transport events only: "
                "whether the application took each stream's data, and whether it answered, cannot be seen."
            ),
            cause=(
                "This stack does not log delivery to the application (quic:stream_data_moved transport → "
                "application); only transport-level problems can be diagnosed from it."
            ),
            evidence=[],
        )


# -- DHT level


class _NodeDht:
    __slots__ = ("name", "events", "started_ms", "node_id", "role", "last_ms", "failures", "successes")

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[tuple[float, str, dict[str, Any], Evidence]] = []
        self.started_ms: float | None = None
        self.node_id: str | None = None
        self.role: str | None = None
        self.last_ms: float | None = None
        self.failures: list[tuple[float, str, Evidence]] = []
        self.successes: list[tuple[float, str]] = []


def _dht_nodes(ctx: _Ctx) -> dict[str, _NodeDht]:
    nodes: dict[str, _NodeDht] = {}
    for f in ctx.facts:
        if f.node_events or f.rpc_timeouts or f.rpc_ok:
            nd = nodes.get(f.node) or nodes.setdefault(f.node, _NodeDht(f.node))
        else:
            continue
        for t, name, d, ref in f.node_events:
            nd.events.append((t, name, d, f.evidence(ref)))
        for ref, d in f.rpc_timeouts:
            if isinstance(d.get("peer_id"), str):
                nd.failures.append((ref[1], d["peer_id"].lower(), f.evidence(ref)))
        for t, pid in f.rpc_ok:
            nd.successes.append((t, pid))
        if f.last_ms is not None and (nd.last_ms is None or f.last_ms > nd.last_ms):
            nd.last_ms = f.last_ms
    for nd in nodes.values():
        nd.events.sort(key=lambda x: x[0])
        for t, name, d, ev in nd.events:
            if name == "dht:node_started" and nd.started_ms is None:
                nd.started_ms = t
                nd.node_id = d.get("node_id") if isinstance(d.get("node_id"), str) else None
                nd.role = d.get("role") if isinstance(d.get("role"), str) else None
            elif name == "dht:lookup_round":
                pid = d.get("peer_id")
                if not isinstance(pid, str):
                    continue
                if d.get("rtt_ms") is None and d.get("error"):
                    nd.failures.append((t, pid.lower(), ev))
                elif d.get("rtt_ms") is not None:
                    nd.successes.append((t, pid.lower()))
    return nodes


def _refusals(refused: list[Any]) -> str:
    """' (reason; reason)' for the first refusals of a STORE, or '' when there were none."""
    reasons = [str(r[1]) for r in refused[:3] if isinstance(r, list) and len(r) > 1]
    return f" ({'; '.join(reasons)})" if reasons else ""


def _find_dht(ctx: _Ctx) -> None:
    nodes = _dht_nodes(ctx)
    if not nodes:
        return
    dht_names = {n for n, nd in nodes.items() if nd.started_ms is not None}
    n_nodes = len({n.name for n in ctx.rec.nodes} | dht_names)
    joined: dict[str, float] = {}
    for name, nd in nodes.items():
        added = [t for t, ev, d, _ in nd.events if ev == "dht:routing_updated" and d.get("action") == "added"]
        if added:
            joined[name] = min(added)
        elif nd.started_ms is not None:
            joined[name] = nd.started_ms

    for name, nd in nodes.items():
        table: dict[str, float] = {}  # peer id -> when (last) added
        max_size = 0
        add_evidence: list[Evidence] = []
        for t, ev, d, e in nd.events:
            if ev != "dht:routing_updated":
                continue
            pid = d.get("peer_id")
            if not isinstance(pid, str):
                continue
            pid = pid.lower()
            action = d.get("action")
            if action == "added":
                table[pid] = t
                add_evidence.append(e)
            elif action in ("evicted", "removed"):
                table.pop(pid, None)
            max_size = max(max_size, len(table))

        # bootstrap_only
        span = (ctx.last_ms - nd.started_ms) if (ctx.last_ms is not None and nd.started_ms is not None) else 0.0
        if nd.started_ms is not None and n_nodes > 2 and span >= BOOTSTRAP_ONLY_MIN_MS and max_size == 0:
            start_ev = next(e for _, ev, _, e in nd.events if ev == "dht:node_started")
            ctx.add(
                kind="isolated",
                severity=WARNING,
                node=name,
                connection=None,
                streams=(),
                summary=(
                    f"{name}'s routing table stayed empty over {span / 1000:.1f} s while the recording "
                    f"has {n_nodes} nodes: it never joined."
                ),
                cause=(
                    "No peer ever answered it (or it never answered a peer): every STORE and FIND_VALUE "
                    "from it goes nowhere; look at its bootstrap node's findings."
                ),
                evidence=[start_ev],
            )
        elif nd.started_ms is not None and n_nodes > 2 and span >= BOOTSTRAP_ONLY_MIN_MS and max_size == 1:
            known = ", ".join(ctx.peer_name(p) for p in table) or "none"
            start_ev = next(e for _, ev, _, e in nd.events if ev == "dht:node_started")
            ctx.add(
                kind="bootstrap_only",
                severity=WARNING,
                node=name,
                connection=None,
                streams=(),
                summary=(
                    f"{name}'s routing table never held more than {max_size} "
                    f"{'contact' if max_size == 1 else 'contacts'} (now: {known}) over {span / 1000:.1f} s "
                    f"while the recording has {n_nodes} nodes."
                ),
                cause=(
                    "The node only knows its bootstrap contact: after joining it must look up its own id "
                    "(and refresh its buckets) so the closest nodes learn of it and it learns of them."
                ),
                evidence=[start_ev, *add_evidence[:5]],
            )

        # stale_contacts: failed to answer, still in the table at the end, never evicted
        if nd.last_ms is not None:
            last_fail: dict[str, tuple[float, Evidence]] = {}
            for t, pid, e in nd.failures:
                if t <= nd.last_ms - STALE_GRACE_MS and (pid not in last_fail or t > last_fail[pid][0]):
                    last_fail[pid] = (t, e)
            last_ok: dict[str, float] = {}
            for t, pid in nd.successes:
                last_ok[pid] = max(t, last_ok.get(pid, t))
            stale = [
                (pid, t, e)
                for pid, (t, e) in last_fail.items()
                if pid in table and t > table[pid] and t > last_ok.get(pid, float("-inf"))
            ]
            if stale:
                stale.sort(key=lambda x: x[1])
                names = ", ".join(ctx.peer_name(p) for p, _, _ in stale[:6])
                fails = sum(1 for _, pid, _ in nd.failures if pid in {p for p, _, _ in stale})
                ctx.add(
                    kind="stale_contacts",
                    severity=WARNING,
                    node=name,
                    connection=None,
                    streams=(),
                    peer=names,
                    summary=(
                        f"{name} kept {_plural(len(stale), 'contact')} ({names}) in its routing table after "
                        f"they failed to answer ({_plural(fails, 'failure')}); they were never evicted."
                    ),
                    cause=(
                        "Contacts that fail to answer must be evicted (or replaced from the replacement cache); "
                        "otherwise lookups keep asking dead peers and time out."
                    ),
                    evidence=[e for _, _, e in stale],
                )

    # store_under_replicated
    for name, nd in nodes.items():
        last_lookup: dict[str, float] = {}
        bad: list[tuple[dict[str, Any], Evidence, int]] = []
        for t, ev, d, e in nd.events:
            if ev == "dht:lookup_started" and d.get("kind") == "find_node" and isinstance(d.get("target"), str):
                last_lookup[d["target"].lower()] = t
            elif ev == "dht:store_result":
                key = str(d.get("key") or "").lower()
                began = last_lookup.get(key, t)
                if joined:
                    others = sum(1 for n, jt in joined.items() if n != name and jt <= began)
                else:
                    others = max(0, n_nodes - 1)
                expected = min(K, others)
                replicas = _int(d.get("replicas")) or 0
                if replicas < expected:
                    bad.append((d, e, expected))
        if not bad:
            continue
        d0, _, expected0 = bad[0]
        label = d0.get("name") or _short(str(d0.get("key")))
        targets = _int(d0.get("targets")) or 0
        replicas = _int(d0.get("replicas")) or 0
        refused = d0.get("refused") or []
        if targets < expected0:
            cause = (
                f"The STORE's lookup found only {targets} of the {expected0} other nodes: the routing table "
                "is too small (no self-lookup after joining?) or nodes did not answer the lookup."
            )
        else:
            cause = (
                f"{targets - replicas} of the closest nodes refused or did not answer the STORE"
                f"{_refusals(refused)}"
                ": check their records limits and the STORE streams' steps."
            )
        ctx.add(
            kind="store_under_replicated",
            severity=WARNING,
            node=name,
            connection=None,
            streams=(),
            summary=(
                f"{name} stored {label!s} on {replicas} of {expected0} reachable nodes (k={K}, "
                f"targets found: {targets})"
                + (f"; {len(bad) - 1} more STOREs were short too." if len(bad) > 1 else ".")
            ),
            cause=cause,
            evidence=[e for _, e, _ in bad],
        )

    # lookup_missed
    stored: dict[str, list[tuple[float, str, str, float | None, Evidence, str | None]]] = defaultdict(list)
    expired: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for name, nd in nodes.items():
        for t, ev, d, e in nd.events:
            if ev == "dht:record_stored" and isinstance(d.get("key"), str):
                stored[d["key"].lower()].append(
                    (t, name, str(d.get("publisher") or ""), _num(d.get("expires_at_ms")), e, d.get("name"))
                )
            elif ev == "dht:record_expired" and isinstance(d.get("key"), str):
                expired[(name, d["key"].lower(), str(d.get("publisher") or ""))].append(t)
    for name, nd in nodes.items():
        started: dict[Any, tuple[float, str, str]] = {}
        misses: dict[str, list[tuple[Evidence, list[tuple[str, Evidence]], str | None, str | None]]] = defaultdict(list)
        for t, ev, d, e in nd.events:
            if ev == "dht:lookup_started":
                started[d.get("lookup_id")] = (t, str(d.get("kind") or ""), str(d.get("target") or "").lower())
            elif ev == "dht:lookup_finished":
                t0, kind, target = started.get(d.get("lookup_id"), (t, str(d.get("kind") or ""), ""))
                if (d.get("kind") or kind) != "find_value" or (_int(d.get("values")) or 0) != 0 or not target:
                    continue
                holders = []
                svc = None
                for ts, holder, pub, exp, se, rname in stored.get(target, ()):
                    if holder == name or ts > t0 or (exp is not None and exp <= t):
                        continue
                    if any(ts < te <= t for te in expired.get((holder, target, pub), ())):
                        continue
                    holders.append((holder, se))
                    svc = svc or rname
                if holders:
                    misses[target].append((e, holders, svc, d.get("error")))
        for target, items in misses.items():
            holders = sorted({h for _, hs, _, _ in items for h, _ in hs})
            svc = next((s for _, _, s, _ in items if s), None)
            label = f"{svc!r} ({_short(target)})" if svc else _short(target)
            error = next((x for _, _, _, x in items if x), None)
            cause = (
                "The routing table was empty when the lookup ran: bootstrap first."
                if error and "empty" in str(error)
                else "The lookup never reached the nodes holding the record: they were not among the closest "
                "it found or did not answer (stale or bootstrap-only routing tables, too few replicas); "
                "check the lookup's rounds."
            )
            evidence = [e for e, _, _, _ in items[:4]] + [se for _, hs, _, _ in items[:1] for _, se in hs[:4]]
            ctx.add(
                kind="lookup_missed",
                severity=WARNING,
                node=name,
                connection=None,
                streams=(),
                peer=", ".join(holders),
                summary=(
                    f"{name}'s FIND_VALUE for {label} found no value ({_plural(len(items), 'lookup')}) while "
                    f"{', '.join(holders)} held an unexpired record for that key"
                    f"{f' ({error})' if error else ''}."
                ),
                cause=cause,
                evidence=evidence,
            )


# ----------------------------------------------------------------------------- blind spots


def _blind_spots(ctx: _Ctx, conns: list[_Conn]) -> list[str]:
    out: list[str] = []
    one: dict[str, int] = Counter()
    for c in conns:
        if c.client is None or c.server is None:
            only = c.client or c.server
            assert only is not None
            one[only.node] += 1
    for node, n in one.items():
        out.append(
            f"{_plural(n, 'connection')} of {node} {'has' if n == 1 else 'have'} no trace from the other end: "
            "on their streams the peer's steps (received, delivered, answered) are unknown."
        )
    for f in ctx.facts:
        if f.is_connection and not f.app_visible:
            out.append(
                f"{f.node} ({Path(f.path).name}, {f.info.format}) logs no application events: delivery to "
                "the application and answers are not visible."
            )
        if f.is_connection and f.odcid is None:
            out.append(f"{Path(f.path).name} names no ODCID: it cannot be joined with the other end's trace.")
        if f.malformed:
            out.append(
                f"{Path(f.path).name}: {_plural(f.malformed, 'event')} could not be interpreted and were skipped."
            )
    has_dht_conn = any(f.dht_events for f in ctx.facts if f.is_connection)
    has_node_trace = any(f.node_events for f in ctx.facts)
    if has_dht_conn and not has_node_trace:
        out.append("No node-level trace (node.sqlog): routing tables, lookups and stored records were not analysed.")
    for w in ctx.rec.warnings:
        out.append(f"reader: {w}")
    return out


# ----------------------------------------------------------------------------- entry point


def analyse(recording: Recording) -> Analysis:
    """Analyse a recording: one pass per trace, then joins and findings over the facts."""
    facts: list[_Facts] = []
    for i, trace in enumerate(recording.traces):
        f = _Facts(trace, i)
        f.collect(trace)
        facts.append(f)

    conns = _join([f for f in facts if f.is_connection])
    for conn in conns:
        # Two ends with one name (foreign stacks name the stack, not the host) must stay
        # distinguishable in every view and finding.
        if conn.client is not None and conn.server is not None and conn.client.node == conn.server.node:
            conn.client.node += " (client)"
            conn.server.node += " (server)"
    streams: dict[tuple[str, int], StreamView] = {}
    ends: dict[tuple[str, int], tuple[_Facts | None, _Facts | None]] = {}
    views: list[ConnectionView] = []
    for conn in conns:
        sids: set[int] = set()
        for f in (conn.client, conn.server):
            if f is not None:
                sids.update(sid for sid, side in f.streams.items() if sid & 2 == 0 and side.has_data)
        for sid in sorted(sids):
            v = _stream_view(conn, sid)
            streams[(conn.id, sid)] = v
            opener = conn.end(v.opener_role)
            ends[(conn.id, sid)] = (
                opener,
                conn.other(opener)
                if opener is not None
                else conn.end("client" if v.opener_role == "server" else "server"),
            )
        conn.view = _connection_view(conn, len(sids))
        views.append(conn.view)

    ctx = _Ctx(recording, facts, conns, streams)
    _find_not_delivered(ctx)
    _find_no_response(ctx)
    _find_stream_limit(ctx)
    _find_alpn(ctx)
    _find_loss(ctx)
    _find_rpc_timeouts(ctx)
    _find_dht(ctx)
    _find_not_visible(ctx)
    ctx.findings.sort(
        key=lambda f: (_SEVERITY_RANK.get(f.severity, 9), f.first_ms if f.first_ms is not None else float("inf"))
    )
    blind = _blind_spots(ctx, conns)

    for f in facts:
        f.drop_working_state()
    names = list(dict.fromkeys([n.name for n in recording.nodes] + [f.node for f in facts]))
    return Analysis(
        recording_path=recording.path,
        connections=views,
        streams=list(streams.values()),
        findings=ctx.findings,
        blind_spots=blind,
        nodes=names,
        trace_count=len(recording.traces),
        event_count=sum(f.events for f in facts),
        first_ms=ctx.first_ms,
        last_ms=ctx.last_ms,
        _ends=ends,
        _conns={c.id: c for c in views},
    )


__all__ = [
    "ALPN_MISMATCH_CODE",
    "DONE",
    "ERROR",
    "INFO",
    "MISSING",
    "NOT_VISIBLE",
    "STEPS",
    "UNKNOWN",
    "WARNING",
    "Analysis",
    "ConnectionEnd",
    "ConnectionView",
    "Evidence",
    "Finding",
    "Step",
    "StreamView",
    "TimelineEntry",
    "analyse",
]
