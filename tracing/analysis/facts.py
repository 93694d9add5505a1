"""The one pass over a trace: what each trace saw, kept as facts so nothing is read twice."""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

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

    def stream(self, sid: int) -> StreamSide:
        s = self.streams.get(sid)
        if s is None:
            s = self.streams[sid] = StreamSide()
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

    def _packet(self, ev: Any, received: bool) -> None:
        data = ev.data
        header = data.get("header") or {}
        space = pn_space(header.get("packet_type") or data.get("packet_type"))
        pn = as_int(header.get("packet_number", data.get("packet_number")))
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
                sid = as_int(fr.get("stream_id", fr.get("id")))
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
                    limit = as_int(fr.get("limit"))
                    self.blocked.append(
                        ((rec, t, name, f"pn {pn} STREAMS_BLOCKED limit {limit}"), limit if limit is not None else -1)
                    )
            elif ft == "max_streams":
                if received and fr.get("stream_type") != "unidirectional":
                    maximum = as_int(fr.get("maximum"))
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

    def _started(self, d: dict[str, Any]) -> None:
        role = d.get("role")
        if role in ("client", "server"):
            self.role_hint = role
        if isinstance(d.get("local_node"), str):
            self.local_node_id = d["local_node"].lower()
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
    elif s.delivered is None:
        s.delivered = ref
