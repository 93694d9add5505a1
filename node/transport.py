"""QUIC transport: one UDP socket per node carrying its client and server connections.

This layer only moves bytes and timers (like aioquic's asyncio layer), but it
handles every aioquic event itself: a peer-opened stream reaches the owner as
soon as its first bytes arrive, resets and STOP_SENDING are reported, and a
closed connection says why. It also owns the fault switches that reproduce
transport failures on purpose.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol, cast

from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.logger import QuicLogger
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from cryptography import x509

from dhtscope.tracing.seqfiles import event_schema, schema_event

from .admission import (
    INVALID_TOKEN_ERROR,
    REFUSED_ERROR,
    Admission,
    AdmissionLimits,
    Decision,
    InvalidToken,
    Verdict,
    close_datagram,
    retry_datagram,
)
from .certificates import PrivateKey, check_peer_certificate, make_certificate, peer_id_from_certificate
from .constants import (
    ALPN,
    CONNECT_TIMEOUT_S,
    IDLE_TIMEOUT_S,
    MAX_DATAGRAM_BYTES,
    MAX_STREAMS_PER_CONNECTION,
    UDP_RECEIVE_BUFFER_BYTES,
)
from .ids import NodeId
from .keys import Identity
from .quic_internals import NodeQuicConnection, ReadWindow
from .scenarios import (
    FLOW_CONTROL_CONNECTION_WINDOW_BYTES,
    FLOW_CONTROL_READ_DELAY_S,
    FLOW_CONTROL_STREAM_WINDOW_BYTES,
    Faults,
)

if TYPE_CHECKING:
    from .capture import PacketCapture

log = logging.getLogger("dhtscope.transport")

Address = tuple[str, int]
# An event for a write or delivery to fold into: its schema (`rpc_event`) and its values
# between the stream id and the write's offset, length and fin.
Event = tuple[int, tuple[Any, ...]]


def rpc_event(name: str, fields: tuple[str, ...]) -> int:
    """The schema of an event that records a write or delivery: stream_id, `fields`, offset, length, fin."""
    return event_schema(name, ("stream_id", *fields, "offset", "length", "fin"))


# Recorded as tuples of values (tracing/seqfiles.py spells them out): no dict on the request path.
STREAM_DATA_MOVED = event_schema("quic:stream_data_moved", ("stream_id", "offset", "length", "fin", "from", "to"))
RPC_SENT = rpc_event("dht:rpc_sent", ("type", "request_id", "peer_id"))
RPC_RECEIVED = rpc_event("dht:rpc_received", ("type", "request_id", "peer_id"))
RPC_RESPONSE_SENT = rpc_event("dht:rpc_response", ("type", "request_id", "peer_id", "direction", "status"))
RPC_RESPONSE_RECEIVED = rpc_event(
    "dht:rpc_response", ("type", "request_id", "peer_id", "direction", "rtt_ms", "status")
)

# QUIC CRYPTO_ERROR for TLS alert 120 (no_application_protocol), RFC 9001 section 4.8
ALPN_MISMATCH_ERROR = 0x100 + 120
HANDSHAKE_TIMEOUT_REASON = "handshake timeout"
HOST_CID_BYTES = 8  # the connection ids this node issues (aioquic's default length)
EVICTED_REASON = "idle connection closed: every connection slot is taken"


class TransportError(Exception):
    """A connection that could not be made or was lost."""


class ConnectionOwner(Protocol):
    def connection_ready(self, conn: Conn) -> None: ...
    # Bytes handed to the application; the owner records taking them with conn.log_delivery.
    def stream_data(self, conn: Conn, stream_id: int, data: bytes, fin: bool) -> None: ...
    def stream_reset(self, conn: Conn, stream_id: int, error_code: int) -> None: ...
    def stop_sending(self, conn: Conn, stream_id: int, error_code: int) -> None: ...
    def connection_lost(self, conn: Conn) -> None: ...


class Conn:
    """One QUIC connection of this node, as client or server."""

    def __init__(self, endpoint: Endpoint, quic: NodeQuicConnection, role: str, addr: Address) -> None:
        self.endpoint = endpoint
        self.quic = quic
        # The connection's qlog trace (None when nothing records it): aioquic starts it with the
        # connection and keeps it to the end, and events are logged often enough to keep it at hand.
        self.trace: Any = quic.trace
        self.role = role
        self.addr = addr
        self.peer_id: NodeId | None = None
        self._peer_hex: str | None = None
        self.peer_port: int | None = None  # the port the peer says it listens on
        self.alpn: str | None = None
        self.ready: asyncio.Future[None] = endpoint.loop.create_future()
        self.closed = False
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.close_trigger: str | None = None
        self.created_at = endpoint.loop.time()
        self.last_active = self.created_at  # the last stream data in or out: idle eviction goes by it
        self.evicted = False
        self._handshake_timer: asyncio.TimerHandle | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.streams_opened = 0
        self.state: Any = None  # the owner's per-connection state (RPC streams)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._received_offsets: dict[int, int] = {}
        self._sent_offsets: dict[int, int] = {}
        self._credit_waiters: list[asyncio.Future[None]] = []  # rarely more than a few: a deque's block costs more
        self._blocked_probe_sent = False
        # The flow-control fault's slow application: (due, stream, data, fin) of peer-opened
        # streams, taken FLOW_CONTROL_READ_DELAY_S after they arrived.
        self._unread: deque[tuple[float, int, bytes, bool]] | None = deque() if quic.credit_follows_reads else None
        self._reader: asyncio.TimerHandle | None = None

    # -- facts --------------------------------------------------------------

    @property
    def odcid(self) -> str:
        return self.quic.original_destination_connection_id.hex()

    @property
    def rtt_s(self) -> float | None:
        return self.quic.smoothed_rtt_s()

    @property
    def is_open(self) -> bool:
        return not self.closed and self.quic.is_usable()

    def is_peer_stream(self, stream_id: int) -> bool:
        client_initiated = stream_id & 1 == 0
        return client_initiated != (self.role == "client")

    @property
    def peer_hex(self) -> str | None:
        """The peer's node id in hex (as events carry it), once the handshake proved it."""
        hexed = self._peer_hex
        if hexed is None and self.peer_id is not None:
            hexed = self._peer_hex = self.peer_id.hex()
        return hexed

    @property
    def traced(self) -> bool:
        """Whether anything reads this connection's events (a trace file or a live listener).

        Callers on the request path check it before building an event, so a node that
        neither records nor has listeners pays nothing for events.
        """
        return self.trace is not None or bool(self.endpoint.listeners)

    def log(self, name: str, data: dict[str, Any]) -> None:
        self.endpoint.emit(self, name, data)

    # -- streams ------------------------------------------------------------

    def has_stream_credit(self) -> bool:
        next_id = self.quic.get_next_available_stream_id()
        return next_id // 4 < self.quic.peer_stream_credit()

    def needs_credit(self) -> bool:
        """True when a new stream must wait for the peer's MAX_STREAMS first."""
        return not self.has_stream_credit() and self._blocked_probe_sent

    async def wait_for_credit(self) -> None:
        """Wait until the peer gives stream credit (or the connection closes)."""
        while self.needs_credit() and not self.closed:
            waiter = self.endpoint.loop.create_future()
            self._credit_waiters.append(waiter)
            await waiter

    def start_stream(self, data: bytes, fin: bool, event: Event | None = None) -> int:
        """Open a bidirectional stream with its first bytes, in one step.

        The id and the write must not be separated by an await: aioquic hands out the
        same id until data is sent on it. The first stream beyond the peer's credit
        still goes to aioquic, so the peer gets a STREAMS_BLOCKED frame saying we are
        stuck; callers wait in `wait_for_credit` for the rest.
        """
        if self.closed:
            raise TransportError(f"connection to {self.addr_text} closed")
        if not self.has_stream_credit():
            self._blocked_probe_sent = True
        stream_id = self.quic.get_next_available_stream_id()
        self.streams_opened += 1
        self.send(stream_id, data, fin, event)
        return stream_id

    def _wake_credit_waiters(self) -> None:
        """Wake as many waiters as the peer's MAX_STREAMS now allows (all of them once closed)."""
        if self.has_stream_credit():
            self._blocked_probe_sent = False
        if self.closed:
            free = len(self._credit_waiters)
        else:
            free = self.quic.peer_stream_credit() - self.quic.get_next_available_stream_id() // 4
        while self._credit_waiters and free > 0:
            waiter = self._credit_waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def send(self, stream_id: int, data: bytes, fin: bool, event: Event | None = None) -> None:
        """Write to a stream; `never_fin` keeps our side of every stream open.

        The write is recorded as `quic:stream_data_moved` (application → transport), or, when
        the caller names an `event` for what it wrote (`dht:rpc_sent`), as that event with the
        write's offset, length and fin folded in: one event instead of two.
        """
        fin = fin and not self.endpoint.faults.never_fin
        offset = self._sent_offsets.get(stream_id, 0)
        self.quic.ack_with_next_packet()
        try:
            self.quic.send_stream_data(stream_id, data, end_stream=fin)
        except (RuntimeError, ValueError) as exc:
            # The peer sent STOP_SENDING (aioquic reset our side), we finished it already, or
            # aioquic discarded the finished stream (ValueError): nobody will read these bytes.
            log.debug("not sending on stream %d of %s: %s", stream_id, self.addr_text, exc)
            return
        if fin:
            self._sent_offsets.pop(stream_id, None)  # our side is done: an idle connection keeps no entry per stream
        else:
            self._sent_offsets[stream_id] = offset + len(data)
        self.bytes_sent += len(data)
        self.last_active = self.endpoint.loop.time()
        if self.traced:
            self._log_move(stream_id, offset, len(data), fin, event, "application", "transport")
        self.endpoint.schedule(self)

    def log_delivery(self, stream_id: int, length: int, fin: bool, event: Event | None = None) -> None:
        """Record that the application took `length` bytes just handed to it (the owner calls this).

        As `quic:stream_data_moved` (transport → application), or folded into `event` when the
        bytes completed a message the owner records anyway (`dht:rpc_received`).
        """
        if self.traced:
            offset = self._received_offsets.get(stream_id, 0) - length
            self._log_move(stream_id, offset, length, fin, event, "transport", "application")

    def _log_move(
        self, stream_id: int, offset: int, length: int, fin: bool, event: Event | None, src: str, dst: str
    ) -> None:
        if event is None:
            schema, values = STREAM_DATA_MOVED, (stream_id, offset, length, fin, src, dst)
        else:
            schema, middle = event
            values = (stream_id, *middle, offset, length, fin)
        trace = self.trace
        if trace is not None:
            trace.log_values(schema, values)
        endpoint = self.endpoint
        if endpoint.listeners and endpoint.event_sink is not None:
            name, data = schema_event(schema, values)
            endpoint.event_sink(self, name, data)

    def reset(self, stream_id: int, error_code: int) -> None:
        """Abandon our side of a stream and ask the peer to stop sending on theirs."""
        if self.quic.stream_waits_for_credit(stream_id):
            # A stream still waiting for the peer's credit does not exist for the peer:
            # aioquic would send RESET_STREAM for it anyway and the peer would close the
            # connection with STREAM_LIMIT_ERROR. Leave it; its late answer is ignored.
            self.log(
                "quic:stream_state_updated",
                {"stream_id": stream_id, "new": "abandoned_blocked", "error_code": error_code},
            )
            return
        try:
            self.quic.reset_stream(stream_id, error_code)
        except Exception:  # already finished or reset: nothing left to abandon
            pass
        try:
            self.quic.stop_stream(stream_id, error_code)
        except Exception:
            pass
        self.log("quic:stream_state_updated", {"stream_id": stream_id, "new": "reset_sent", "error_code": error_code})
        self.endpoint.schedule(self)

    def close(self, error_code: int = 0, reason: str = "") -> None:
        if not self.closed:
            if error_code == 0 and not self.ready.done():
                # Before the handshake completes an application's close goes out as the transport's
                # APPLICATION_ERROR (RFC 9000 §10.2.3), which reads as a failure: a clean close is NO_ERROR.
                self.quic.close(error_code=0, frame_type=QuicFrameType.PADDING, reason_phrase=reason)
            else:
                self.quic.close(error_code=error_code, reason_phrase=reason)
            self.endpoint.schedule(self)

    def abandon(self, reason: str) -> None:
        """Tell the peer, then forget the connection at once, without waiting out the closing period.

        For a handshake that never finished: its peer may never answer, and its slot and state
        are what a flood would hold on to.
        """
        if self.closed:
            return
        self.quic.close(error_code=QuicErrorCode.CONNECTION_REFUSED, reason_phrase=reason)
        self.endpoint._transmit(self, self.endpoint.loop.time())
        self._terminated(
            events.ConnectionTerminated(
                error_code=QuicErrorCode.CONNECTION_REFUSED, frame_type=None, reason_phrase=reason
            )
        )

    @property
    def addr_text(self) -> str:
        return f"{self.addr[0]}:{self.addr[1]}"

    # -- events -------------------------------------------------------------

    def process_events(self) -> None:
        ep = self.endpoint
        owner = ep.owner
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, events.StreamDataReceived):
                sid = event.stream_id
                if ep.faults.no_accept and self.is_peer_stream(sid):
                    # The seed's bug: the transport has acknowledged these bytes, and the
                    # application never learns the stream exists.
                    continue
                if self._unread is not None and self.is_peer_stream(sid):
                    self._hold(sid, event.data, event.end_stream)
                    continue
                self._received_offsets[sid] = self._received_offsets.get(sid, 0) + len(event.data)
                self.bytes_received += len(event.data)
                self.last_active = ep.loop.time()
                # The owner records taking the bytes (log_delivery): it knows whether they
                # completed a message, and so which event says it best.
                owner.stream_data(self, sid, event.data, event.end_stream)
                if event.end_stream:
                    self._received_offsets.pop(sid, None)  # the peer's side is done
                if self._unread is not None:
                    self.quic.application_read(sid, len(event.data), event.end_stream)
            elif (
                isinstance(event, (events.StreamReset, events.StopSendingReceived))
                and ep.faults.no_accept
                and self.is_peer_stream(event.stream_id)
            ):
                continue  # a stream the application never learned of: nothing of it reaches it
            elif isinstance(event, events.StreamReset):
                self._drop_unread(event.stream_id)
                self.log(
                    "quic:stream_state_updated",
                    {
                        "stream_id": event.stream_id,
                        "new": "reset_received",
                        "error_code": event.error_code,
                    },
                )
                owner.stream_reset(self, event.stream_id, event.error_code)
            elif isinstance(event, events.StopSendingReceived):
                self._drop_unread(event.stream_id)  # the requester gave up: the slow reader need not take it
                owner.stop_sending(self, event.stream_id, event.error_code)
            elif isinstance(event, events.HandshakeCompleted):
                self.alpn = event.alpn_protocol
                self.peer_id = peer_id_from_certificate(self.quic.peer_certificate())
                self.quic.handshake_done()
                ep.established(self)
                if not self.ready.done():
                    self.ready.set_result(None)
                owner.connection_ready(self)
            elif isinstance(event, events.ConnectionIdIssued):
                ep.connections[event.connection_id] = self
            elif isinstance(event, events.ConnectionIdRetired):
                ep.connections.pop(event.connection_id, None)
            elif isinstance(event, events.ConnectionTerminated):
                self._terminated(event)
            # PingAcknowledged, ProtocolNegotiated, DatagramFrameReceived: nothing to do here.
        if self._credit_waiters:
            self._wake_credit_waiters()

    def _terminated(self, event: events.ConnectionTerminated) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_code = event.error_code
        self.close_reason = event.reason_phrase
        # A trigger set when we chose to close (connect's handshake timeout) says more than the code.
        self.close_trigger = self.close_trigger or classify_close(event.error_code, event.reason_phrase)
        owner_side = "local" if self.close_trigger == "idle_timeout" else (self.quic.close_owner or "remote")
        # aioquic ended its trace already; write our close event to the same file. An
        # abandoned connection's trace was never ended: it is still pending.
        trace = self.endpoint.ended_traces.pop(self.quic, None) or self.endpoint.pending_traces.pop(self.quic, None)
        if trace is not None:
            trace.log(
                "quic:connection_closed",
                {
                    "owner": owner_side,
                    "trigger": self.close_trigger,
                    "connection_code": event.error_code,
                    "reason": event.reason_phrase,
                },
            )
            self.endpoint.end_trace(trace)
        if not self.ready.done():
            self.ready.set_exception(TransportError(close_text(self)))
            self.ready.exception()  # consumed here; connect() reports it
        for waiter in self._credit_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._credit_waiters.clear()
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.endpoint.forget(self)
        self.endpoint.owner.connection_lost(self)

    def _hold(self, stream_id: int, data: bytes, fin: bool) -> None:
        """Keep bytes from the transport until the slow application takes them (flow-control fault)."""
        assert self._unread is not None
        loop = self.endpoint.loop
        self._unread.append((loop.time() + FLOW_CONTROL_READ_DELAY_S, stream_id, data, fin))
        if self._reader is None:
            self._reader = loop.call_at(self._unread[0][0], self._read_due)

    def _drop_unread(self, stream_id: int) -> None:
        if self._unread:
            self._unread = deque(u for u in self._unread if u[1] != stream_id)

    def _read_due(self) -> None:
        """The slow application takes what has waited long enough; its credit grows by as much."""
        self._reader = None
        unread = self._unread
        if unread is None or self.closed:
            return
        now = self.endpoint.loop.time()
        while unread and unread[0][0] <= now and not self.closed:
            _, sid, data, fin = unread.popleft()
            self._received_offsets[sid] = self._received_offsets.get(sid, 0) + len(data)
            self.bytes_received += len(data)
            self.endpoint.owner.stream_data(self, sid, data, fin)
            if fin:
                self._received_offsets.pop(sid, None)
            self.quic.application_read(sid, len(data), fin)
        if unread and not self.closed:
            self._reader = self.endpoint.loop.call_at(unread[0][0], self._read_due)
        self.endpoint.schedule(self)


def classify_close(code: int, reason: str) -> str:
    if code == ALPN_MISMATCH_ERROR or "ALPN" in reason:
        return "alpn_mismatch"
    if reason == "Idle timeout":
        return "idle_timeout"
    if reason == HANDSHAKE_TIMEOUT_REASON:
        return "handshake_timeout"
    if reason == EVICTED_REASON:
        return "evicted"
    if code == 0:
        return "clean"
    return "error"


def close_text(conn: Conn) -> str:
    what = {"alpn_mismatch": "ALPN mismatch", "idle_timeout": "idle timeout"}.get(conn.close_trigger or "", "closed")
    reason = f": {conn.close_reason}" if conn.close_reason else ""
    return f"connection to {conn.addr_text} {what} (code 0x{conn.close_code or 0:x}){reason}"


class _EndingLogger:
    """Wraps the node's qlog logger so a trace ended by aioquic can still take our close event."""

    def __init__(self, inner: Any, endpoint: Endpoint) -> None:
        self.inner = inner
        self.endpoint = endpoint
        self._by_trace: dict[int, Any] = {}

    def start_trace(self, is_client: bool, odcid: bytes) -> Any:
        return self.inner.start_trace(is_client=is_client, odcid=odcid)

    def end_trace(self, trace: Any) -> None:
        # Deferred: Conn._terminated writes quic:connection_closed, then closes the file.
        for quic, t in list(self.endpoint.pending_traces.items()):
            if t is trace:
                self.endpoint.ended_traces[quic] = trace
                del self.endpoint.pending_traces[quic]
                return
        self.inner.end_trace(trace)


class Endpoint(asyncio.DatagramProtocol):
    """The node's UDP socket: dispatches datagrams to connections by connection id."""

    def __init__(
        self,
        identity: Identity,
        owner: ConnectionOwner,
        faults: Faults | None = None,
        quic_logger: Any = None,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        secrets_log: str | None = None,
        max_datagram_bytes: int = MAX_DATAGRAM_BYTES,
        limits: AdmissionLimits | None = None,
        capture: PacketCapture | None = None,
    ) -> None:
        self.identity = identity
        self.capture = capture  # the datagrams that cross the socket, written as a sniffer sees them
        self.owner = owner
        self.faults = faults or Faults()
        self.loop = asyncio.get_running_loop()
        self.connections: dict[bytes, Conn] = {}  # by any of our connection ids
        self.all: set[Conn] = set()
        self.pending_traces: dict[QuicConnection, Any] = {}
        self.ended_traces: dict[QuicConnection, Any] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._dirty: set[Conn] = set()
        self._flush_handle: asyncio.Handle | None = None
        self._rng = random.Random(self.faults.seed)
        self._quic_logger = _EndingLogger(quic_logger, self) if quic_logger is not None else None
        # Line-buffered: each secret is on disk before the packets it opens are worth reading.
        self._secrets = open(secrets_log, "a", buffering=1) if secrets_log else None  # noqa: SIM115
        # Ours, and those the bad-certificate fault presents, made once each.
        self._certificates: dict[str | None, tuple[x509.Certificate, PrivateKey]] = {}
        self._blackhole_at: float | None = None  # when the blackhole fault starts dropping
        self._config_args: dict[str, Any] = dict(
            idle_timeout=idle_timeout_s,
            max_datagram_size=max_datagram_bytes,
            # ssl.CERT_NONE: aioquic's check wants a CA; NodeQuicConnection checks the
            # self-signed certificate itself, in the handshake (certificates.py).
            verify_mode=0,
            secrets_log_file=self._secrets,
        )
        self.local_addr: Address = ("0.0.0.0", 0)
        self.receive_buffer_bytes: int | None = None  # the UDP socket's, as the kernel granted it
        self.event_sink: Any = None  # callable(conn, name, data), for live subscribers
        self.admission = Admission(limits or AdmissionLimits())
        # Set by the owner: a reason to refuse new connections (its memory budget), or None.
        self.overloaded: Any = None
        self.listeners: list[Any] = []  # the owner's live listeners: events are built only if any

    async def listen(self, host: str, port: int) -> Address:
        transport, _ = await self.loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self.receive_buffer_bytes = _enlarge_receive_buffer(transport.get_extra_info("socket"))
        sock = transport.get_extra_info("sockname")
        self.local_addr = (sock[0], sock[1])
        return self.local_addr

    def _configuration(self, is_client: bool) -> QuicConfiguration:
        # Read the ALPN fault on each new connection, so it can be switched live.
        cert, key = self._certificate(self.faults.certificate)
        config = QuicConfiguration(
            is_client=is_client, alpn_protocols=[self.alpn], certificate=cert, private_key=key, **self._config_args
        )
        if self.faults.flow_control:
            config.max_data = FLOW_CONTROL_CONNECTION_WINDOW_BYTES
            config.max_stream_data = FLOW_CONTROL_STREAM_WINDOW_BYTES
        # _EndingLogger has every method aioquic calls on a QuicLogger (start_trace, end_trace).
        config.quic_logger = cast(QuicLogger | None, self._quic_logger)
        return config

    def _certificate(self, fault: str | None) -> tuple[x509.Certificate, PrivateKey]:
        made = self._certificates.get(fault)
        if made is None:
            made = self._certificates[fault] = make_certificate(self.identity, time.time(), fault)
        return made

    def _connection(
        self, config: QuicConfiguration, expected: NodeId | None = None, **kwargs: Any
    ) -> NodeQuicConnection:
        """A new connection with this node's checks and the faults that apply per connection."""

        def check(cert: x509.Certificate) -> NodeId:
            # Wall time: certificate dates are calendar dates, whatever clock the node runs on.
            return check_peer_certificate(cert, time.time(), expected)

        window = (
            ReadWindow(FLOW_CONTROL_STREAM_WINDOW_BYTES, FLOW_CONTROL_CONNECTION_WINDOW_BYTES)
            if self.faults.flow_control
            else None
        )
        return NodeQuicConnection(
            configuration=config,
            max_streams=self._stream_credit(),
            check_certificate=check,
            read_window=window,
            **kwargs,
        )

    def _fault_drops(self, sending: bool) -> bool:
        """Whether the node's faults drop this datagram: a blackhole, or loss."""
        faults = self.faults
        if faults.blackhole:
            now = self.loop.time()
            if self._blackhole_at is None:
                self._blackhole_at = now + faults.blackhole_after_s
            if now >= self._blackhole_at:
                return True
        elif self._blackhole_at is not None:
            self._blackhole_at = None
        loss = max(faults.loss, faults.send_loss) if sending else faults.loss
        return bool(loss) and self._rng.random() < loss

    # -- asyncio.DatagramProtocol ---------------------------------------------

    @property
    def alpn(self) -> str:
        return self.faults.alpn or ALPN

    def end_trace(self, trace: Any) -> None:
        if self._quic_logger is not None:
            self._quic_logger.inner.end_trace(trace)

    def emit(self, conn: Conn, name: str, data: dict[str, Any]) -> None:
        """One event of a connection: into its qlog trace, and to whoever listens live."""
        trace = conn.trace
        if trace is not None:
            trace.log(name, data)
        if self.listeners and self.event_sink is not None:
            self.event_sink(conn, name, data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's transport (uvloop's does not subclass asyncio's class).
        self._transport = cast(asyncio.DatagramTransport, transport)
        if self.capture is not None:
            self._transport = self.capture.wrap(self._transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.capture is not None:
            self.capture.received(data, addr)  # it arrived, whatever the loss fault makes of it
        faults = self.faults
        if (faults.loss or faults.blackhole or self._blackhole_at is not None) and self._fault_drops(sending=False):
            return
        addr = (addr[0], addr[1])
        if data and not data[0] & 0x80:
            # A short header (RFC 9000 section 17.3): our 8-byte connection id follows the first
            # byte. aioquic parses the header again anyway; only a long header needs it here.
            conn = self.connections.get(data[1 : 1 + HOST_CID_BYTES])
            if conn is None:
                return  # not for a connection of ours, and only an Initial may start one
        else:
            try:
                header = pull_quic_header(Buffer(data=data), host_cid_length=HOST_CID_BYTES)
            except ValueError:
                return  # not QUIC: nothing to answer
            conn = self.connections.get(header.destination_cid)
            if conn is None:
                conn = self._accept(data, header, addr)
                if conn is None:
                    return
        now = self.loop.time()
        conn.quic.receive_datagram(data, addr, now=now)
        conn.process_events()
        self.schedule(conn)

    def error_received(self, exc: Exception) -> None:
        log.debug("socket error: %s", exc)

    def _accept(self, data: bytes, header: Any, addr: Address) -> Conn | None:
        if header.packet_type != QuicPacketType.INITIAL or len(data) < SMALLEST_MAX_DATAGRAM_SIZE:
            return None
        config = self._configuration(is_client=False)
        if header.version is not None and header.version not in config.supported_versions:
            assert self._transport is not None
            self._transport.sendto(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=config.supported_versions,
                ),
                addr,
            )
            return None
        admission = self.admission
        now = self.loop.time()
        odcid, retry_cid = header.destination_cid, None
        if header.token:
            try:
                odcid = admission.tokens.validate(addr, header.destination_cid, header.token, now)
            except InvalidToken as exc:
                admission.counters["invalid_tokens"] += 1
                self._refuse(header, addr, now, INVALID_TOKEN_ERROR, f"invalid token: {exc}", "invalid_token")
                return None
            retry_cid = header.destination_cid
            admission.counters["retries_validated"] += 1
        decision = admission.check(addr[0], validated=retry_cid is not None)
        if decision.verdict is Verdict.FULL and self.evict_idle(now):
            decision = admission.check(addr[0], validated=retry_cid is not None)
        if decision.verdict is Verdict.ADMIT and self.overloaded is not None:
            reason = self.overloaded()
            if reason:
                decision = Decision(Verdict.REFUSE, reason)
        if decision.verdict is Verdict.RETRY:
            if admission.may_send_retry(now):
                assert self._transport is not None
                self._transport.sendto(
                    retry_datagram(admission.tokens, header.version, addr, header.source_cid, odcid, now), addr
                )
            return None
        if decision.verdict is not Verdict.ADMIT:
            self._refuse(header, addr, now, REFUSED_ERROR, decision.reason, decision.verdict.value)
            return None
        quic = self._connection(config, original_destination_connection_id=odcid, retry_source_connection_id=retry_cid)
        conn = self._register(quic, "server", addr)
        self.connections[header.destination_cid] = conn
        admission.opened(conn, addr[0])
        admission.counters["admitted"] += 1
        conn._handshake_timer = self.loop.call_later(
            admission.limits.handshake_timeout_s, self._handshake_expired, conn
        )
        self._started(conn, addr)
        return conn

    def _refuse(self, header: Any, addr: Address, now: float, code: int, reason: str, kind: str) -> None:
        """Tell a refused peer so (rate-limited), count it, and log it once per interval."""
        admission = self.admission
        admission.counters[f"refused_{kind}"] += 1
        admission.logs.warning(kind, now, f"refusing a connection from {addr[0]}:{addr[1]}: {reason}")
        if self._transport is not None and admission.may_send_refusal(now):
            self._transport.sendto(
                close_datagram(header.version, header.destination_cid, header.source_cid, code, reason), addr
            )

    def _handshake_expired(self, conn: Conn) -> None:
        conn._handshake_timer = None
        if conn.ready.done() or conn.closed:
            return
        self.admission.counters["handshake_timeouts"] += 1
        self.admission.logs.warning(
            "handshake_timeout",
            self.loop.time(),
            f"dropping a connection from {conn.addr_text}: no handshake within "
            f"{self.admission.limits.handshake_timeout_s:g} s",
        )
        conn.abandon(HANDSHAKE_TIMEOUT_REASON)

    def established(self, conn: Conn) -> None:
        """A handshake completed: the connection moves from the half-open count to the established one."""
        self.admission.established(conn)
        if conn._handshake_timer is not None:
            conn._handshake_timer.cancel()
            conn._handshake_timer = None

    def evict_idle(self, now: float) -> bool:
        """Close the least recently used idle connection to free its slot; False if none is idle."""
        busy = getattr(self.owner, "busy", None)
        oldest: Conn | None = None
        threshold = now - self.admission.limits.idle_eviction_min_s
        for conn in self.all:
            if (
                conn.evicted
                or conn.closed
                or not conn.ready.done()
                or conn.last_active > threshold
                or not conn.quic.is_usable()
                or (busy is not None and busy(conn))
            ):
                continue
            if oldest is None or conn.last_active < oldest.last_active:
                oldest = conn
        if oldest is None:
            return False
        oldest.evicted = True
        self.admission.gone(oldest)
        self.admission.counters["evicted_idle"] += 1
        self.admission.logs.warning(
            "evicted", now, f"closing the idle connection with {oldest.addr_text} to make room for a newcomer"
        )
        oldest.close(reason=EVICTED_REASON)
        return True

    def _stream_credit(self) -> int:
        # Read on each new connection, like the ALPN fault, so it can be switched live.
        return self.faults.stream_credit or MAX_STREAMS_PER_CONNECTION

    def _register(self, quic: NodeQuicConnection, role: str, addr: Address) -> Conn:
        conn = Conn(self, quic, role, addr)
        self.connections[quic.host_cid] = conn
        self.all.add(conn)
        if quic.trace is not None:
            self.pending_traces[quic] = quic.trace
        return conn

    def _started(self, conn: Conn, addr: Address) -> None:
        conn.log(
            "quic:connection_started",
            {
                "src_ip": self.local_addr[0],
                "src_port": self.local_addr[1],
                "dst_ip": addr[0],
                "dst_port": addr[1],
                "role": conn.role,
                "local_node": self.identity.node_id.hex(),
                "alpn_offered": self.alpn,
            },
        )

    # -- connections ----------------------------------------------------------

    async def connect(
        self, addr: Address, timeout_s: float = CONNECT_TIMEOUT_S, expected: NodeId | None = None
    ) -> Conn:
        """A new client connection to `addr`, handshake complete; TransportError if it fails.

        With `expected`, the handshake refuses a certificate whose key is not that node's.
        """
        host = _resolve(addr[0])
        addr = (host, addr[1])
        if not self.admission.has_room() and not self.evict_idle(self.loop.time()):
            limit = self.admission.limits.max_connections
            raise TransportError(f"cannot connect to {host}:{addr[1]}: all {limit} connection slots are in use")
        quic = self._connection(self._configuration(is_client=True), expected)
        conn = self._register(quic, "client", addr)
        self.admission.opened(conn, host, inbound=False)
        self._started(conn, addr)
        quic.connect(addr, now=self.loop.time())
        conn.process_events()
        self.schedule(conn)
        try:
            await asyncio.wait_for(asyncio.shield(conn.ready), timeout_s)
        except TimeoutError:
            conn.close_trigger = "handshake_timeout"
            conn.close(reason="handshake timeout")
            raise TransportError(f"no QUIC handshake with {conn.addr_text} within {timeout_s:g} s") from None
        except TransportError:
            raise
        return conn

    def forget(self, conn: Conn) -> None:
        for cid in [c for c, v in self.connections.items() if v is conn]:
            del self.connections[cid]
        self.all.discard(conn)
        self._dirty.discard(conn)
        self.admission.gone(conn)

    # -- sending and timers --------------------------------------------------------

    def schedule(self, conn: Conn) -> None:
        """Send this connection's datagrams once this loop iteration is done (coalescing writes)."""
        self._dirty.add(conn)
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        dirty, self._dirty = self._dirty, set()
        now = self.loop.time()
        for conn in dirty:
            self._transmit(conn, now)

    def _transmit(self, conn: Conn, now: float) -> None:
        if self._transport is None:
            return
        faults = self.faults
        faulty = faults.loss or faults.send_loss or faults.blackhole or self._blackhole_at is not None
        for data, addr in conn.quic.datagrams_to_send(now=now):
            if faulty and self._fault_drops(sending=True):
                continue
            self._transport.sendto(data, addr)
        timer_at = conn.quic.get_timer()
        if conn._timer is not None and conn._timer_at != timer_at:
            conn._timer.cancel()
            conn._timer = None
        if conn._timer is None and timer_at is not None and not conn.closed:
            conn._timer = self.loop.call_at(timer_at, self._on_timer, conn)
        conn._timer_at = timer_at

    def _on_timer(self, conn: Conn) -> None:
        conn._timer = None
        now = max(conn._timer_at or 0.0, self.loop.time())
        conn._timer_at = None
        conn.quic.handle_timer(now=now)
        conn.process_events()
        self._transmit(conn, self.loop.time())

    async def close(self, grace_s: float = 0.5) -> None:
        """Close every connection, give the peers a moment to hear it, then the socket."""
        conns = list(self.all)
        for conn in conns:
            conn.close(reason="node shutting down")
        if conns:
            deadline = self.loop.time() + grace_s
            while any(not c.closed for c in conns) and self.loop.time() < deadline:
                await asyncio.sleep(0.02)
        for conn in list(self.all):
            if conn._timer is not None:
                conn._timer.cancel()
        for trace in list(self.pending_traces.values()) + list(self.ended_traces.values()):
            try:
                self.end_trace(trace)
            except Exception:  # a trace file that cannot be closed must not stop shutdown
                log.exception("closing a trace")
        self.pending_traces.clear()
        self.ended_traces.clear()
        if self._transport is not None:
            self._transport.close()
        if self._secrets is not None:
            self._secrets.close()
        if self.capture is not None:
            self.capture.close()


def _resolve(host: str) -> str:
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if host == "localhost":
        return "127.0.0.1"
    return socket.gethostbyname(host)


def _enlarge_receive_buffer(sock: Any) -> int | None:
    """Ask for UDP_RECEIVE_BUFFER_BYTES of socket receive buffer; the bytes the kernel granted (None: unknown)."""
    if sock is None:
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER_BYTES)
        granted = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    except OSError as exc:
        log.info("could not enlarge the UDP receive buffer: %s", exc)
        return None
    if sys.platform.startswith("linux"):
        granted //= 2  # Linux reports twice what it grants (the rest is its bookkeeping)
    if granted < UDP_RECEIVE_BUFFER_BYTES:
        log.info(
            "UDP receive buffer %d KiB, not the %d KiB asked for (capped by net.core.rmem_max): "
            "a node holding thousands of connections may drop datagrams",
            granted // 1024,
            UDP_RECEIVE_BUFFER_BYTES // 1024,
        )
    return granted
