"""The one pass over a trace: what each trace saw, kept as facts so nothing is read twice."""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

from ..codes import DHTSCOPE_ALPN_PREFIX, stream_code_label
from ..model import Trace
from .values import Evidence

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


def as_int(value: Any) -> int | None:
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


def as_float(value: Any) -> float | None:
    cls = value.__class__
    if cls is int or cls is float:
        return float(value)
    if cls is str:
        try:
            return float(value)
        except ValueError:
            return None
    return None


def pn_space(packet_type: Any) -> str:
    """Packet number space of a packet type: 0-RTT and 1-RTT share the application space."""
    if not packet_type:
        return "app"
    p = str(packet_type).lower()
    if p in ("1rtt", "0rtt", "one_rtt", "zero_rtt", "application", "1-rtt", "0-rtt"):
        return "app"
    return p


def ack_ranges(raw: Any) -> list[tuple[int, int]]:
    """ACK ranges: [[lo, hi], [n], ...] with numbers or strings, in any order."""
    out: list[tuple[int, int]] = []
    if not isinstance(raw, list):
        return out
    for r in raw:
        if isinstance(r, list) and r:
            lo = as_int(r[0])
            hi = as_int(r[-1])
            if lo is None or hi is None:
                continue
            if lo > hi:
                lo, hi = hi, lo
            out.append((lo, hi))
        else:
            n = as_int(r)
            if n is not None:
                out.append((n, n))
    return out


def alpn_values(raw: Any) -> list[str]:
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


MAX_RTT_SAMPLES = 512  # enough to find the least; a long trace need not keep them all
_ONE_RTT = frozenset({"1rtt", "one_rtt", "1-rtt"})
_ZERO_RTT = frozenset({"0rtt", "zero_rtt", "0-rtt"})
# Packet type as written -> (lowercase, number space): a handful of spellings, met per packet.
_PACKET_TYPES: dict[str, tuple[str, str]] = {}
MAX_PACKET_TYPES = 64  # a malformed trace with a new spelling per packet must not grow it unbounded
# Frames that do not make a packet ack-eliciting (RFC 9002 §2).
_NOT_ELICITING = frozenset({"ack", "padding", "connection_close", "ack_ecn"})
# Drop triggers that are not a packet at all (aioquic logs a datagram's padding this way).
_NOT_A_PACKET_DROP = frozenset({"header_parse_error", "initial_packet_datagram_too_small"})


class IntervalSet:
    """Disjoint closed integer ranges, kept sorted: the packet numbers a peer acknowledged."""

    __slots__ = ("lo", "hi")

    def __init__(self) -> None:
        self.lo: list[int] = []
        self.hi: list[int] = []

    def add(self, lo: int, hi: int) -> None:
        i = bisect.bisect_left(self.hi, lo - 1)
        j = i
        while j < len(self.lo) and self.lo[j] <= hi + 1:
            lo = min(lo, self.lo[j])
            hi = max(hi, self.hi[j])
            j += 1
        self.lo[i:j] = [lo]
        self.hi[i:j] = [hi]

    def __contains__(self, n: object) -> bool:
        if not isinstance(n, int):
            return False
        i = bisect.bisect_left(self.hi, n)
        return i < len(self.lo) and self.lo[i] <= n


class CreditWait:
    """A sender at the peer's flow-control limit: from reaching it until the peer raised it."""

    __slots__ = ("scope", "limit", "start", "end", "start_ref", "end_ref", "blocked_frames", "more_after")

    def __init__(self, scope: int | None, limit: int, start_ref: Ref) -> None:
        self.scope = scope  # None for the connection (MAX_DATA), else the stream id (MAX_STREAM_DATA)
        self.limit = limit
        self.start: float = start_ref[1]
        self.end: float | None = None
        self.start_ref = start_ref
        self.end_ref: Ref | None = None
        self.blocked_frames = 0  # DATA_BLOCKED / STREAM_DATA_BLOCKED the sender sent meanwhile
        self.more_after = False  # the sender sent more once the limit was raised: it had been waiting


# A reference to one event of one trace: (record, time_ms, name, detail). Tuples: the
# collecting pass creates many of these.
Ref = tuple  # (int, float, str, str)


class StreamSide:
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
        "taken_bytes",
        "taken_fin",
        "last_taken",
        "ack_received",
        "ack_sent",
        "resets_sent",
        "resets_recv",
        "stop_sent",
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
        self.taken_bytes = 0  # bytes the application took, in all
        self.taken_fin: Ref | None = None  # the application took the FIN
        self.last_taken: Ref | None = None
        self.ack_received: Ref | None = None
        self.ack_sent: Ref | None = None
        self.resets_sent: list[Ref] = []
        self.resets_recv: list[Ref] = []
        self.stop_sent: Ref | None = None  # STOP_SENDING this end sent: it wants no more of the stream
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

    def taken_whole(self) -> Ref | None:
        """When the application had taken all the peer sent on the stream, through its FIN; None if not (yet)."""
        if self.rpc_received is not None:
            return self.rpc_received[0]
        if self.taken_fin is not None:
            return self.taken_fin
        if self.fin_recv is not None and self.last_taken is not None and self.taken_bytes >= self.recv_end:
            return self.last_taken
        return None


EMPTY_SIDE = StreamSide()


class TraceFacts:
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
        # An end split from a network observer's trace: what it "received" is what the wire
        # carried towards it, not what reached it.
        self.on_wire = bool(info.extra.get("seen_on_wire"))
        frames = info.extra.get("frames")
        self._frames: list[int | None] | None = frames if isinstance(frames, list) else None
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
        # (space, pn) -> (time, record, bytes, stream ids, ack-eliciting, carries CONNECTION_CLOSE)
        self.sent_pkts: dict[tuple[str, int], tuple[float, int, int, tuple[int, ...], bool, bool]] = {}
        self.recv_pkts: dict[tuple[str, int], tuple[float, int]] = {}  # (space, pn) -> (time, record)
        self.recv_times: list[float] = []
        self.sent_times: list[float] = []
        # (time, record, (space, pn) or None) of each ack-eliciting packet sent
        self.eliciting_sent: list[tuple[float, int, tuple[str, int] | None]] = []
        self.peer_acked: dict[str, IntervalSet] = {}
        self.lost: list[Ref] = []
        self.lost_keys: list[tuple[str, int] | None] = []  # parallel to `lost`
        self.dropped_packets = 0  # drops of what were packets (not padding), whose number is unknown
        self.dropped_keys: set[tuple[str, int]] = set()
        self.streams: dict[int, StreamSide] = {}
        self._unacked_sent: dict[str, list[int]] = {}
        self._sent_sids: dict[tuple[str, int], list[int]] = {}
        self._unacked_recv: dict[str, list[int]] = {}
        self._recv_sids: dict[tuple[str, int], list[int]] = {}
        self.app_events = False
        self.dht_events = False
        self.alpns: list[str] = []
        self.role_hint: str | None = None
        self.local_node_id: str | None = None
        self.remote_addr: str | None = None  # "ip:port" of the other end, as connection_started gives it
        self.closed: tuple[Ref, dict[str, Any]] | None = None
        self.close_ms: float | None = None
        self.handshake_ms: float | None = None
        self.params_local: dict[str, Any] = {}
        self.params_remote: dict[str, Any] = {}
        self.version_negotiation: Ref | None = None
        self.version_failed: Ref | None = None
        self.stateless_reset: Ref | None = None
        self.zero_rtt_sent: list[tuple[int, float, int]] = []  # (pn, time, record)
        self.zero_rtt_dropped = 0
        self.zero_rtt_received = 0
        self.own_streams: list[tuple[float, int, Ref]] = []  # (time, streams opened so far, first frame)
        self.credit_waits: list[CreditWait] = []
        self.blocked_recv: list[tuple[Ref, int | None, int | None]] = []  # peer's *_BLOCKED: (ref, stream, limit)
        self._conn_sent = 0
        self._max_data: int | None = None
        self._max_stream_data: dict[int, int] = {}
        self._open_waits: dict[int | None, CreditWait] = {}
        self._last_wait: dict[int | None, CreditWait] = {}
        self._coded_refs: list[tuple[StreamSide, int, Any]] = []  # refs whose code gets its name after the pass
        self.close_sent: tuple[Ref, dict[str, Any]] | None = None
        self.close_recv: tuple[Ref, dict[str, Any]] | None = None
        self.smoothed_rtt: float | None = None  # as the trace logs it: some stacks log microseconds
        self._rtt_samples: list[float] = []  # ms, from ACKs of this end's packets
        self._rtt_largest: dict[str, int] = {}
        self.latest_rtt: float | None = None
        self.blocked: list[tuple[Ref, int]] = []
        self.max_streams_recv: list[tuple[float, int]] = []
        self.max_streams_sent: list[tuple[float, int]] = []  # the bidi stream credit this end granted
        self.params_ms: float | None = None  # when this end's own transport parameters were set
        # Seen on the wire only: the data each sent packet carried, (stream id or "crypto <space>",
        # offset, end), to find data sent twice; and what the peer's ACKs told this end.
        self.sent_data: dict[tuple[str, int], list[tuple[int | str, int, int]]] = {}
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

    @property
    def rtt_ms(self) -> float | None:
        """The path's round trip: the least time from sending a packet to an ACK for it.

        Measured from the trace's own event times, so it is right whatever unit the stack logs
        its RTT in; the least sample, as QUIC's min_rtt, ignores ACKs that came late.
        """
        return min(self._rtt_samples) if self._rtt_samples else None

    def evidence(self, ref: Ref) -> Evidence:
        frames = self._frames
        frame = frames[ref[0]] if frames is not None and 0 <= ref[0] < len(frames) else None
        return Evidence(self.path, ref[0], ref[2], ref[1], self.index, frame)

    def stream(self, sid: int) -> StreamSide:
        s = self.streams.get(sid)
        if s is None:
            s = self.streams[sid] = StreamSide()
        return s

    def drop_working_state(self) -> None:
        """After analysis only the per-stream facts are needed (for timelines)."""
        self.sent_pkts = {}
        self.recv_pkts = {}
        self.recv_times = []
        self.sent_times = []
        self.eliciting_sent = []
        self.peer_acked = {}
        self.sent_data = {}
        self.dropped_keys = set()
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
                    self._dropped(ev.data)
                elif name == "quic:stream_state_updated":
                    self._stream_state(ev)
                elif name == "quic:connection_closed":
                    if self.closed is None:
                        self.closed = ((ev.record, t, name, ""), ev.data)
                        self._closing(t)
                        if ev.data.get("trigger") == "stateless_reset" and self.stateless_reset is None:
                            self.stateless_reset = (ev.record, t, name, "closed by a stateless reset")
                elif name == "quic:parameters_set":
                    self._parameters(ev.data)
                    if ev.data.get("owner") != "remote" and self.params_ms is None:
                        self.params_ms = t
                elif name == "quic:version_information":
                    d = ev.data
                    if d.get("server_versions") and d.get("chosen_version") is None and self.version_failed is None:
                        self.version_failed = (ev.record, t, name, "no common QUIC version")
                elif name == "quic:connection_started":
                    self._started(ev.data)
                elif name == "quic:alpn_information":
                    d = ev.data
                    keys: tuple[str, ...] = ("client_alpns", "server_alpns", "chosen_alpn", "alpn")
                    if self.on_wire:
                        # The wire shows what the client offered and what the server chose: each
                        # end's own, never the other's (a server that refused says nothing).
                        keys = ("client_alpns",) if self.role == "client" else ("server_alpns", "chosen_alpn")
                    for key in keys:
                        for a in alpn_values(d.get(key)):
                            if a not in self.alpns:
                                self.alpns.append(a)
                elif name == "http:frame_parsed":
                    sid = as_int(ev.data.get("stream_id"))
                    if sid is not None:
                        s = self.stream(sid)
                        if s.delivered_http is None:
                            s.delivered_http = (ev.record, t, name, "HTTP/3 frame parsed")
            except (TypeError, ValueError, AttributeError, KeyError, IndexError):
                self.malformed += 1
        self.events = n
        self.first_ms = first
        self.last_ms = last
        self.recv_times.sort()
        self.sent_times.sort()
        self.eliciting_sent.sort(key=lambda s: (s[0], s[1]))
        self._name_codes()

    def _name_codes(self) -> None:
        """Reset and STOP_SENDING codes take their names once the trace's ALPN is known."""
        # A dhtscope trace that logs no ALPN still speaks dhtscope's protocol.
        alpns = self.alpns or ([DHTSCOPE_ALPN_PREFIX] if self.dhtscope else [])
        for side, i, code in self._coded_refs:
            c = as_int(code)
            label = stream_code_label(c, alpns) if c is not None else None
            if label is None or label.startswith("0x"):
                continue  # no registry names it: the number stands alone
            rec, t, name, detail = side.refs[i]
            named = (rec, t, name, f"{detail} ({label})")
            side.refs[i] = named
            for lst in (side.resets_sent, side.resets_recv):
                for k, r in enumerate(lst):
                    if r is not None and r[0] == rec and r[3] == detail:
                        lst[k] = named
        self._coded_refs = []

    def _rtt_sample(self, space: str, largest: int, t: float) -> None:
        if largest <= self._rtt_largest.get(space, -1) or len(self._rtt_samples) >= MAX_RTT_SAMPLES:
            return
        self._rtt_largest[space] = largest
        sent = self.sent_pkts.get((space, largest))
        if sent is not None and t >= sent[0]:
            self._rtt_samples.append(t - sent[0])

    def _closing(self, t: float) -> None:
        if self.close_ms is None or t < self.close_ms:
            self.close_ms = t

    def _handshake(self, t: float) -> None:
        if self.handshake_ms is None or t < self.handshake_ms:
            self.handshake_ms = t

    def _dropped(self, d: dict[str, Any]) -> None:
        self.dropped += 1
        header = d.get("header") or {}
        ptype = header.get("packet_type") or d.get("packet_type")
        pn = as_int(header.get("packet_number", d.get("packet_number")))
        if ptype and str(ptype).lower() in ("0rtt", "zero_rtt", "0-rtt"):
            self.zero_rtt_dropped += 1
        if pn is not None:
            self.dropped_keys.add((pn_space(ptype), pn))
        elif str(d.get("trigger") or "") not in _NOT_A_PACKET_DROP:
            self.dropped_packets += 1

    def _parameters(self, d: dict[str, Any]) -> None:
        target = self.params_remote if d.get("owner") == "remote" else self.params_local
        for k, v in d.items():
            if k != "owner":
                target.setdefault(k, v)
        if d.get("owner") == "remote":
            m = as_int(d.get("initial_max_data"))
            if m is not None and self._max_data is None:
                self._max_data = m

    def stream_credit(self, sid: int) -> int | None:
        """The flow-control limit the peer set for our sending side of stream `sid`."""
        raised = self._max_stream_data.get(sid)
        if raised is not None:
            return raised
        p = self.params_remote
        mine = (sid & 1) == (0 if self.role != "server" else 1)
        if sid & 2:
            key = "initial_max_stream_data_uni"
        else:
            # The peer's "bidi_remote" limit covers streams we opened, "bidi_local" those it opened.
            key = "initial_max_stream_data_bidi_remote" if mine else "initial_max_stream_data_bidi_local"
        return as_int(p.get(key))

    def _credit_reached(self, scope: int | None, limit: int | None, used: int, ref: Ref, blocked: bool) -> None:
        if limit is None or (used < limit and not blocked):
            return
        w = self._open_waits.get(scope)
        if w is None:
            w = CreditWait(scope, limit, ref)
            self._open_waits[scope] = w
            self.credit_waits.append(w)
        if blocked:
            w.blocked_frames += 1

    def _credit_raised(self, scope: int | None, maximum: int, ref: Ref) -> None:
        w = self._open_waits.get(scope)
        if w is not None and maximum > w.limit:
            w.end = ref[1]
            w.end_ref = ref
            del self._open_waits[scope]
            self._last_wait[scope] = w

    def _sent_more(self, scope: int | None) -> None:
        w = self._last_wait.pop(scope, None)
        if w is not None:
            w.more_after = True

    def _packet(self, ev: Any, received: bool) -> None:
        data = ev.data
        header = data.get("header") or {}
        raw_type = header.get("packet_type") or data.get("packet_type")
        known = _PACKET_TYPES.get(raw_type) if raw_type.__class__ is str else None
        if known is None:
            ptype = str(raw_type or "").lower()
            known = (ptype, pn_space(ptype))
            if raw_type.__class__ is str and len(_PACKET_TYPES) < MAX_PACKET_TYPES:
                _PACKET_TYPES[raw_type] = known
        ptype, space = known
        pn = as_int(header.get("packet_number", data.get("packet_number")))
        t = ev.time_ms
        rec = ev.record
        name = ev.name
        if self.first_packet_dir is None:
            self.first_packet_dir = "received" if received else "sent"
        if received:
            self.packets_received += 1
            self.recv_times.append(t)
            if pn is not None:
                self.recv_pkts[(space, pn)] = (t, rec)
            if ptype in _ONE_RTT:
                if self.handshake_ms is None:
                    self._handshake(t)
            elif ptype in _ZERO_RTT:
                self.zero_rtt_received += 1
            elif ptype == "version_negotiation" and self.version_negotiation is None:
                self.version_negotiation = (rec, t, name, "Version Negotiation packet received")
            elif ptype == "stateless_reset" and self.stateless_reset is None:
                self.stateless_reset = (rec, t, name, "stateless reset received")
        else:
            self.packets_sent += 1
            self.sent_times.append(t)
            if ptype in _ZERO_RTT and pn is not None:
                self.zero_rtt_sent.append((pn, t, rec))
            elif ptype in _ONE_RTT and self.handshake_ms is None and self.role == "client":
                self._handshake(t)
        frames = data.get("frames") or ()
        sids: list[int] = []
        eliciting = False
        closes = False
        on_wire = self.on_wire
        carried: list[tuple[int | str, int, int]] = []
        for fr in frames:
            if fr.__class__ is not dict:
                continue
            ft = fr.get("frame_type")
            if ft not in _NOT_ELICITING:
                eliciting = True
            if ft == "handshake_done":
                self._handshake(t)
            if ft == "stream":
                sid = as_int(fr.get("stream_id", fr.get("id")))
                if sid is None:
                    continue
                s = self.stream(sid)
                off = as_int(fr.get("offset")) or 0
                length = as_int(fr.get("length")) or 0
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
                    sids.append(sid)
                    if s.first_sent is None:
                        s.first_sent = ref
                        if sid & 2 == 0 and (sid & 1) == (1 if self.role == "server" else 0):
                            self.own_streams.append((t, sid // 4 + 1, ref))
                    if end > s.sent_end:
                        self._sent_more(sid)
                        self._sent_more(None)
                        self._conn_sent += end - s.sent_end
                        s.sent_end = end
                        self._credit_reached(sid, self.stream_credit(sid), end, ref, False)
                        self._credit_reached(None, self._max_data, self._conn_sent, ref, False)
                    if fin and s.fin_sent is None:
                        s.fin_sent = ref
                    if pn is not None:
                        self._pend(self._unacked_sent, self._sent_sids, space, pn, sid)
                        if on_wire:
                            carried.append((sid, off, end))
            elif ft == "ack":
                if received:
                    acked = self.peer_acked.get(space)
                    if acked is None:
                        acked = self.peer_acked[space] = IntervalSet()
                    ranges = ack_ranges(fr.get("acked_ranges"))
                    for lo, hi in ranges:
                        acked.add(lo, hi)
                    if ranges:
                        self._rtt_sample(space, max(hi for _, hi in ranges), t)
                    self._ack(self._unacked_sent, self._sent_sids, space, fr, rec, t, name, "received")
                else:
                    self._ack(self._unacked_recv, self._recv_sids, space, fr, rec, t, name, "sent")
            elif ft == "reset_stream" or ft == "stop_sending" or ft == "reset_stream_at":
                sid = as_int(fr.get("stream_id", fr.get("id")))
                if sid is None:
                    continue
                s = self.stream(sid)
                code = fr.get("error_code")
                ref = (rec, t, name, f"pn {pn} {ft.upper()} {sid} code {code}")
                self._coded_refs.append((s, len(s.refs), code))
                s.refs.append(ref)
                if ft != "stop_sending":
                    (s.resets_recv if received else s.resets_sent).append(ref)
                elif not received and s.stop_sent is None:
                    s.stop_sent = ref
            elif ft == "streams_blocked":
                if not received and fr.get("stream_type") != "unidirectional":
                    limit = as_int(fr.get("limit"))
                    self.blocked.append(
                        ((rec, t, name, f"pn {pn} STREAMS_BLOCKED limit {limit}"), limit if limit is not None else -1)
                    )
            elif ft == "max_streams":
                if fr.get("stream_type") != "unidirectional":
                    maximum = as_int(fr.get("maximum"))
                    if maximum is not None:
                        (self.max_streams_recv if received else self.max_streams_sent).append((t, maximum))
            elif ft == "crypto":
                if on_wire and not received and pn is not None:
                    off = as_int(fr.get("offset")) or 0
                    carried.append((f"crypto {space}", off, off + (as_int(fr.get("length")) or 0)))
            elif ft == "max_data":
                maximum = as_int(fr.get("maximum"))
                if received and maximum is not None:
                    if self._max_data is None or maximum > self._max_data:
                        self._max_data = maximum
                    self._credit_raised(None, maximum, (rec, t, name, f"pn {pn} MAX_DATA {maximum}"))
            elif ft == "max_stream_data":
                sid = as_int(fr.get("stream_id", fr.get("id")))
                maximum = as_int(fr.get("maximum"))
                if received and sid is not None and maximum is not None:
                    if maximum > self._max_stream_data.get(sid, -1):
                        self._max_stream_data[sid] = maximum
                    ref = (rec, t, name, f"pn {pn} MAX_STREAM_DATA {sid} {maximum}")
                    self.stream(sid).refs.append(ref)
                    self._credit_raised(sid, maximum, ref)
            elif ft == "data_blocked" or ft == "stream_data_blocked":
                sid = as_int(fr.get("stream_id", fr.get("id"))) if ft == "stream_data_blocked" else None
                limit = as_int(fr.get("limit"))
                ref = (rec, t, name, f"pn {pn} {ft.upper()}{f' {sid}' if sid is not None else ''} limit {limit}")
                if sid is not None:
                    self.stream(sid).refs.append(ref)
                if received:
                    self.blocked_recv.append((ref, sid, limit))
                else:
                    self._credit_reached(sid, limit if limit is not None else 0, 0, ref, True)
            elif ft == "connection_close":
                closes = True
                ref = (rec, t, name, f"pn {pn} CONNECTION_CLOSE")
                self._closing(t)
                if received:
                    if _first_close(self.close_recv, fr, t):
                        self.close_recv = (ref, fr)
                elif _first_close(self.close_sent, fr, t):
                    self.close_sent = (ref, fr)
        if not received:
            if pn is not None:
                raw = data.get("raw") or {}
                size = as_int(raw.get("length") if raw.__class__ is dict else None)
                if size is None:
                    size = as_int(header.get("packet_size", data.get("packet_size"))) or 0
                self.sent_pkts[(space, pn)] = (t, rec, size, tuple(sids), eliciting, closes)
                if carried:
                    self.sent_data[(space, pn)] = carried
            if eliciting:
                self.eliciting_sent.append((t, rec, (space, pn) if pn is not None else None))

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
        for lo, hi in ack_ranges(frame.get("acked_ranges")):
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
        sid = as_int(d.get("stream_id"))
        if sid is None:
            return
        self.app_events = True
        s = self.stream(sid)
        src, dst = d.get("from"), d.get("to")
        length = as_int(d.get("length")) or 0
        fin = bool(d.get("fin"))
        if src == "application" and dst == "transport":
            ref = (ev.record, ev.time_ms, ev.name, move_text(True, length, fin))
            app_moved(s, ref, True, length, fin)
        elif src == "transport" and dst == "application":
            ref = (ev.record, ev.time_ms, ev.name, move_text(False, length, fin))
            app_moved(s, ref, False, length, fin)
        else:
            ref = (ev.record, ev.time_ms, ev.name, f"{length} bytes {src} → {dst}")
        s.refs.append(ref)

    def _stream_state(self, ev: Any) -> None:
        d = ev.data
        sid = as_int(d.get("stream_id"))
        if sid is None:
            return
        s = self.stream(sid)
        new = str(d.get("new") or d.get("state") or "")
        ref = (ev.record, ev.time_ms, ev.name, f"{new} code {d.get('error_code')}")
        if d.get("error_code") is not None:
            self._coded_refs.append((s, len(s.refs), d.get("error_code")))
        s.refs.append(ref)
        if new == "reset_sent":
            s.resets_sent.append(ref)
        elif new == "reset_received":
            s.resets_recv.append(ref)

    def _metrics(self, d: dict[str, Any]) -> None:
        v = as_float(d.get("smoothed_rtt"))
        if v:
            self.smoothed_rtt = v
        v = as_float(d.get("latest_rtt"))
        if v:
            self.latest_rtt = v

    def _lost(self, ev: Any) -> None:
        d = ev.data
        header = d.get("header") or {}
        pn = as_int(header.get("packet_number", d.get("packet_number")))
        ptype = header.get("packet_type") or d.get("packet_type") or d.get("type")
        self.lost.append((ev.record, ev.time_ms, ev.name, f"{ptype} pn {pn} declared lost"))
        self.lost_keys.append((pn_space(ptype), pn) if pn is not None else None)

    def _started(self, d: dict[str, Any]) -> None:
        role = d.get("role")
        if role in ("client", "server"):
            self.role_hint = role
        if isinstance(d.get("local_node"), str):
            self.local_node_id = d["local_node"].lower()
        if d.get("dst_ip") is not None and d.get("dst_port") is not None:
            self.remote_addr = f"{d['dst_ip']}:{d['dst_port']}"
        for a in alpn_values(d.get("alpn_offered")):
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
        sid = as_int(d.get("stream_id"))
        if sid is None:
            return
        s = self.stream(sid)
        kind = d.get("type")
        rid = d.get("request_id")
        # dhtscope folds the bytes a whole message moved into its dht event (offset, length,
        # fin): an rpc_sent / sent response is the application's write, an rpc_received /
        # received response is the application taking the bytes.
        length = as_int(d.get("length"))
        direction = d.get("direction")
        moved: bool | None = None  # True: the app wrote; False: the app took
        if length is not None:
            if name == "dht:rpc_sent" or (name == "dht:rpc_response" and direction == "sent"):
                moved = True
            elif name == "dht:rpc_received" or (name == "dht:rpc_response" and direction == "received"):
                moved = False
        fin = bool(d.get("fin"))
        also = f"; {move_text(moved, length or 0, fin)}" if moved is not None else ""
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
            app_moved(s, ref, moved, length or 0, fin)
        s.refs.append(ref)


# RFC 9000 §10.2.3: an application's close sent in Initial or Handshake packets is masked as the
# transport's APPLICATION_ERROR; the 1-RTT copy sent with it carries the real code.
APPLICATION_ERROR = 0x0C
MASKED_CLOSE_WINDOW_MS = 10.0  # the copies go out in one flight


def _masked(frame: dict[str, Any]) -> bool:
    code = frame.get("error_code", frame.get("raw_error_code"))
    named = isinstance(code, str) and code.lower() == "application_error"
    return frame.get("error_space") != "application" and (named or as_int(code) == APPLICATION_ERROR)


def _first_close(current: tuple[Ref, dict[str, Any]] | None, frame: dict[str, Any], t: float) -> bool:
    """Does `frame` name the close better than the one kept: the first, or the real code beside its masked copy?"""
    if current is None:
        return True
    return _masked(current[1]) and not _masked(frame) and t - current[0][1] <= MASKED_CLOSE_WINDOW_MS


def move_text(wrote: bool, length: int, fin: bool) -> str:
    return f"app {'wrote' if wrote else 'took'} {length} bytes{' FIN' if fin else ''}"


def app_moved(s: StreamSide, ref: Ref, wrote: bool, length: int, fin: bool) -> None:
    """The application wrote bytes of the stream (wrote) or took bytes the transport handed it."""
    if wrote:
        if s.app_write is None:
            s.app_write = ref
        s.app_bytes += length
        if fin and s.app_fin is None:
            s.app_fin = ref
    else:
        if s.delivered is None:
            s.delivered = ref
        s.taken_bytes += length
        s.last_taken = ref
        if fin and s.taken_fin is None:
            s.taken_fin = ref
