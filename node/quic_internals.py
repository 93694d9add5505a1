"""Every place dhtscope reaches into aioquic's private names, in one module, with its contract.

aioquic has no public API for a few things a DHT node needs: granting more than 128
streams, letting ACKs wait for an answer to ride on, asking the client for its
certificate, reading the smoothed RTT, the peer's stream credit or how many bytes a stream
still holds for a peer that does not read. `NodeQuicConnection`
does all of them here and nowhere else. `CONTRACT` lists each private name and overridden
signature; `check_contract()` compares it with the installed aioquic, and a test runs it,
so an upgrade fails one clear test instead of slowing or breaking silently.
pyproject.toml pins aioquic to the series this contract was checked against.
Two more uses: every node judges its peer's certificate inside the handshake, so a refusal
is the TLS alert that says why; the flow-control scenario grants credit as its application
reads rather than as its transport receives.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import MethodType
from typing import TYPE_CHECKING, Any

from aioquic import tls
from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.logger import QuicLoggerTrace
from aioquic.quic.packet import QuicFrameType, QuicPacketType
from aioquic.quic.packet_builder import QuicDeliveryState, QuicPacketBuilder, QuicPacketBuilderStop
from aioquic.quic.stream import QuicStream

if TYPE_CHECKING:
    from aioquic.quic.connection import QuicNetworkPath, QuicReceiveContext

from .certificates import CertificateRefused
from .constants import ACK_DELAY_S, ACTIVE_CONNECTION_IDS, MAX_STREAMS_PER_CONNECTION

SMALLEST_STREAM_FRAME_BYTES = 4  # type, stream id, 2-byte length: a FIN with no data
RESET_STREAM_FRAME_BYTES = 1 + 3 * 8  # at most: type, then stream id, error code, final size (8-byte varints)
STOP_SENDING_FRAME_BYTES = 1 + 2 * 8  # at most: type, then stream id, error code
# After the handshake TLS writes nothing more (QUIC has no TLS KeyUpdate, a node issues no
# session tickets): every connection's three 16 KiB handshake output buffers become this
# one empty buffer, which nothing can write into.
_NO_CRYPTO_OUTPUT = Buffer(capacity=0)
# aioquic builds each connection's frame-handler table with a new frozenset of epochs per
# frame type (about 6 KiB a connection); connections share these instead.
_EPOCH_SETS: dict[frozenset[Any], frozenset[Any]] = {}
# ... and the table itself, a dict of 31 (bound method, epochs) tuples, is another 7 KiB a
# connection: connections of one class share one table of plain functions (FrameHandlers).
_HANDLER_TABLES: dict[type, dict[int, tuple[Callable[..., None], frozenset[Any]]]] = {}
CHECKED_SERIES = "1.7"  # the aioquic release series CONTRACT was checked against

# The peer's certificate (cryptography x509) in, nothing out; CertificateRefused refuses it.
CertificateCheck = Callable[[Any], object]
# A refusal's TLS alert as aioquic raises it; any other alert number is sent as bad_certificate.
_ALERTS: dict[int, type[tls.Alert]] = {
    42: tls.AlertBadCertificate,
    43: tls.AlertUnsupportedCertificate,
    45: tls.AlertCertificateExpired,
}


@dataclass(frozen=True)
class ReadWindow:
    """Flow-control credit granted beyond what the application has read, per stream and per connection."""

    stream_bytes: int
    connection_bytes: int


class _Enqueue:
    """Stands in for aioquic's stream service list: a stream aioquic creates joins the streams to visit."""

    __slots__ = ("_sendable",)

    def __init__(self, sendable: dict[QuicStream, None]) -> None:
        self._sendable = sendable

    def append(self, stream: QuicStream) -> None:
        self._sendable[stream] = None


class FrameHandlers:
    """A connection's view of its class's shared frame-handler table: what aioquic looks up per frame.

    aioquic keeps a dict of bound methods per connection; this holds one reference and binds
    the handler to the connection when a frame asks for it.
    """

    __slots__ = ("_conn", "_table")

    def __init__(self, conn: QuicConnection, table: dict[int, tuple[Callable[..., None], frozenset[Any]]]) -> None:
        self._conn = conn
        self._table = table

    def __getitem__(self, frame_type: int) -> tuple[Callable[..., None], frozenset[Any]]:
        function, epochs = self._table[frame_type]  # KeyError: aioquic's "Unknown frame type"
        return MethodType(function, self._conn), epochs

    def keys(self) -> Any:
        return self._table.keys()

    def __iter__(self) -> Any:
        return iter(self._table)


class NodeQuicConnection(QuicConnection):
    """aioquic's connection with dhtscope's changes to its behaviour, and read access to its state.

    Changes: the peer may open `max_streams` request streams at once instead of 128; once
    the handshake is done ACKs wait up to ACK_DELAY_S for a packet to ride on instead of
    1 ms; building a packet visits only the streams that have something to send (aioquic
    visits every open stream twice per packet) and a full packet stops asking them; a
    finished stream leaves the stream table as soon as it finishes (aioquic waits for the
    next packet built); a server asks the client for its certificate (mutual TLS);
    `check_certificate` judges the peer's certificate as the handshake receives it, and a
    refusal closes with its TLS alert; with a `read_window`, flow-control credit grows only
    as the application reads (`application_read`); who began the close is remembered; the peer may issue us
    ACTIVE_CONNECTION_IDS connection ids, not 8; after the handshake its 48 KiB of handshake
    output buffers and the handshake's ephemeral key shares are let go; connections of one class
    share one frame-handler table (aioquic builds a dict of bound methods per connection).
    """

    close_owner: str | None = None

    def __init__(
        self,
        *args: Any,
        max_streams: int = MAX_STREAMS_PER_CONNECTION,
        check_certificate: CertificateCheck | None = None,
        read_window: ReadWindow | None = None,
        **kwargs: Any,
    ) -> None:
        self._check_certificate = check_certificate
        self._read_window = read_window
        self._read_total = 0
        self._read_by_stream: dict[int, int] = {}
        # Streams that may have a frame to send (data, FIN, RESET_STREAM, STOP_SENDING), in
        # service order, and streams that received data and may need a MAX_STREAM_DATA.
        self._sendable: dict[QuicStream, None] = {}
        self._limits_due: dict[QuicStream, None] = {}
        super().__init__(*args, **kwargs)
        self._streams_queue = _Enqueue(self._sendable)  # type: ignore[assignment]
        # Before the handshake, so our transport parameters carry it.
        limit = self._local_max_streams_bidi
        limit.value = limit.sent = max_streams
        self._local_active_connection_id_limit = ACTIVE_CONNECTION_IDS
        table = _HANDLER_TABLES.get(type(self))
        if table is None:
            handlers: dict[int, Any] = getattr(self, "_QuicConnection__frame_handlers")  # noqa: B009 (name-mangled)
            table = {t: (h.__func__, _EPOCH_SETS.setdefault(e, e)) for t, (h, e) in handlers.items()}
            _HANDLER_TABLES[type(self)] = table
        setattr(self, "_QuicConnection__frame_handlers", FrameHandlers(self, table))  # noqa: B010 (name-mangled)

    # -- behaviour changes ---------------------------------------------------------------

    # Which streams to visit: every event that can give a stream a frame to send, or finish it.

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        super().send_stream_data(stream_id, data, end_stream)
        self._sendable[self._streams[stream_id]] = None

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        super().reset_stream(stream_id, error_code)
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._sendable[stream] = None

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        super().stop_stream(stream_id, error_code)
        self._sendable[self._streams[stream_id]] = None

    def _handle_stream_frame(self, context: QuicReceiveContext, frame_type: int, buf: Buffer) -> None:
        stream_id = _peek_stream_id(buf)
        super()._handle_stream_frame(context, frame_type, buf)
        stream = self._streams.get(stream_id)
        if stream is not None:
            if stream.is_finished:
                self._discard_stream(stream)
            else:
                self._limits_due[stream] = None

    def _handle_reset_stream_frame(self, context: QuicReceiveContext, frame_type: int, buf: Buffer) -> None:
        stream_id = _peek_stream_id(buf)
        super()._handle_reset_stream_frame(context, frame_type, buf)
        stream = self._streams.get(stream_id)
        if stream is not None and stream.is_finished:
            self._discard_stream(stream)

    def _handle_stop_sending_frame(self, context: QuicReceiveContext, frame_type: int, buf: Buffer) -> None:
        # aioquic answers with RESET_STREAM: the stream has a frame to send.
        stream_id = _peek_stream_id(buf)
        super()._handle_stop_sending_frame(context, frame_type, buf)
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._sendable[stream] = None

    def _handle_max_stream_data_frame(self, context: QuicReceiveContext, frame_type: int, buf: Buffer) -> None:
        # More credit: data the stream held back may go now.
        stream_id = _peek_stream_id(buf)
        super()._handle_max_stream_data_frame(context, frame_type, buf)
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._sendable[stream] = None

    def _on_max_stream_data_delivery(self, delivery: QuicDeliveryState, stream: QuicStream) -> None:
        super()._on_max_stream_data_delivery(delivery, stream)
        if delivery != QuicDeliveryState.ACKED:
            self._limits_due[stream] = None

    def _on_stream_data_delivery(
        self, delivery: QuicDeliveryState, stream: QuicStream, start: int, stop: int, fin: bool
    ) -> None:
        stream.sender.on_data_delivery(delivery, start, stop, fin)
        if delivery != QuicDeliveryState.ACKED:
            self._sendable[stream] = None  # lost: sent again
        elif stream.is_finished:
            self._discard_stream(stream)

    def _on_reset_delivery(self, delivery: QuicDeliveryState, stream: QuicStream) -> None:
        stream.sender.on_reset_delivery(delivery)
        if delivery != QuicDeliveryState.ACKED:
            self._sendable[stream] = None
        elif stream.is_finished:
            self._discard_stream(stream)

    def _on_stop_sending_delivery(self, delivery: QuicDeliveryState, stream: QuicStream) -> None:
        stream.receiver.on_stop_sending_delivery(delivery)
        if delivery != QuicDeliveryState.ACKED:
            self._sendable[stream] = None

    def _discard_stream(self, stream: QuicStream) -> None:
        """A finished stream leaves at once: its state, and its place among the streams to visit."""
        stream_id: int = stream.stream_id  # type: ignore[assignment]  # None only for crypto streams
        if self._streams.pop(stream_id, None) is None:
            return
        self._sendable.pop(stream, None)
        self._limits_due.pop(stream, None)
        if (stream_id & 1 == 0) != self._is_client:
            # Let the peer open a new stream for each one that closes (RFC 9000 section 4.6).
            self._stream_limit(stream_id).value += 1

    def _has_frame_to_send(self, stream: QuicStream) -> bool:
        sender = stream.sender
        return bool(
            sender.reset_pending
            or stream.receiver.stop_pending
            or (sender._reset_error_code is None and (len(sender._pending) > 0 or sender._pending_eof))
        )

    # Building packets: aioquic's `_write_application` with the two stream loops changed.

    def _write_application(self, builder: QuicPacketBuilder, network_path: QuicNetworkPath, now: float) -> None:
        crypto_stream: QuicStream | None = None
        if self._cryptos[tls.Epoch.ONE_RTT].send.is_valid():
            crypto = self._cryptos[tls.Epoch.ONE_RTT]
            crypto_stream = self._crypto_streams[tls.Epoch.ONE_RTT]
            packet_type = QuicPacketType.ONE_RTT
        elif self._cryptos[tls.Epoch.ZERO_RTT].send.is_valid():
            crypto = self._cryptos[tls.Epoch.ZERO_RTT]
            packet_type = QuicPacketType.ZERO_RTT
        else:
            return
        space = self._spaces[tls.Epoch.ONE_RTT]
        sendable = self._sendable
        limits_due = self._limits_due

        while True:
            # apply pacing, except if we have ACKs to send
            if space.ack_at is None or space.ack_at >= now:
                self._pacing_at = self._loss._pacer.next_send_time(now=now)
                if self._pacing_at is not None:
                    break
            builder.start_packet(packet_type, crypto)

            # ACK, which a server sends for 0-RTT packets before the handshake
            # completes (RFC 9000 section 13.2.1), but not in 0-RTT packets.
            if packet_type == QuicPacketType.ONE_RTT and space.ack_at is not None and space.ack_at <= now:
                self._write_ack_frame(builder=builder, space=space, now=now)

            if self._handshake_complete:
                # PATH_CHALLENGE, while the active path is not validated, which only
                # happens on a server whose client migrated (RFC 9000 section 9.3).
                if not (network_path.is_validated or network_path.local_challenge_sent):
                    self._write_path_challenge_frame(builder=builder, network_path=network_path)
                    if network_path.validation_deadline is None:
                        network_path.validation_deadline = now + 3 * max(
                            self._loss.get_probe_timeout(),
                            2 * self._configuration.initial_rtt,
                        )

                # HANDSHAKE_DONE
                if self._handshake_done_pending:
                    self._write_handshake_done_frame(builder=builder)
                    self._handshake_done_pending = False

                # PATH RESPONSE
                while len(network_path.remote_challenges) > 0:
                    self._write_path_response_frame(builder=builder, challenge=network_path.remote_challenges[0])
                    network_path.remote_challenges.popleft()

                # NEW_CONNECTION_ID
                for connection_id in self._host_cids:
                    if not connection_id.was_sent:
                        self._write_new_connection_id_frame(builder=builder, connection_id=connection_id)

                # RETIRE_CONNECTION_ID
                for sequence_number in self._retire_connection_ids[:]:
                    self._write_retire_connection_id_frame(builder=builder, sequence_number=sequence_number)
                    self._retire_connection_ids.pop(0)

                # STREAMS_BLOCKED
                if self._streams_blocked_pending:
                    if self._streams_blocked_bidi:
                        self._write_streams_blocked_frame(
                            builder=builder,
                            frame_type=QuicFrameType.STREAMS_BLOCKED_BIDI,
                            limit=self._remote_max_streams_bidi,
                        )
                    if self._streams_blocked_uni:
                        self._write_streams_blocked_frame(
                            builder=builder,
                            frame_type=QuicFrameType.STREAMS_BLOCKED_UNI,
                            limit=self._remote_max_streams_uni,
                        )
                    self._streams_blocked_pending = False

                # MAX_DATA and MAX_STREAMS
                self._write_connection_limits(builder=builder, space=space)

            # stream-level limits: only the streams that received data since the last packet
            # (aioquic asks every open stream, in every packet)
            for stream in list(limits_due):
                self._write_stream_limits(builder=builder, space=space, stream=stream)
                del limits_due[stream]

            # PING (user-request)
            if self._ping_pending:
                self._write_ping_frame(builder, self._ping_pending)
                self._ping_pending.clear()

            # PING (probe)
            if self._probe_pending:
                self._write_ping_frame(builder, comment="probe")
                self._probe_pending = False

            # CRYPTO
            if crypto_stream is not None and not crypto_stream.sender.buffer_is_empty:
                self._write_crypto_frame(builder=builder, space=space, stream=crypto_stream)

            # DATAGRAM
            while self._datagrams_pending:
                try:
                    self._write_datagram_frame(
                        builder=builder,
                        data=self._datagrams_pending[0],
                        frame_type=QuicFrameType.DATAGRAM_WITH_LENGTH,
                    )
                    self._datagrams_pending.popleft()
                except QuicPacketBuilderStop:
                    break

            # STREAM, RESET_STREAM, STOP_SENDING: only the streams with one to send (aioquic
            # visits every open stream, in every packet); served ones move to the back.
            for stream in list(sendable):
                if stream.is_finished:
                    self._discard_stream(stream)
                    continue
                if stream.receiver.stop_pending:
                    self._write_stop_sending_frame(builder=builder, stream=stream)
                if stream.sender.reset_pending:
                    self._write_reset_stream_frame(builder=builder, stream=stream)
                    used = 1
                elif not stream.is_blocked and not stream.sender.buffer_is_empty:
                    used = self._write_stream_frame(
                        builder=builder,
                        space=space,
                        stream=stream,
                        max_offset=min(
                            stream.sender.highest_offset + self._remote_max_data - self._remote_max_data_used,
                            stream.max_stream_data_remote,
                        ),
                    )
                    self._remote_max_data_used += used
                else:
                    used = 0
                if not self._has_frame_to_send(stream):
                    sendable.pop(stream, None)
                elif used:
                    del sendable[stream]
                    sendable[stream] = None

            if builder.packet_is_empty:
                break
            self._loss._pacer.update_after_send(now=now)
            # aioquic starts one more packet to find out it stays empty; every frame source was
            # drained into this one (a frame that did not fit stops the whole build), so when no
            # stream and no crypto or datagram data waits, there is nothing for another.
            if (
                not sendable
                and not limits_due
                and not self._datagrams_pending
                and (crypto_stream is None or crypto_stream.sender.buffer_is_empty)
            ):
                break

    def _write_stream_frame(self, builder: QuicPacketBuilder, space: Any, stream: QuicStream, max_offset: int) -> int:
        # A full packet has no room for a frame header: nothing can be written, skip the work.
        if builder.remaining_flight_space < SMALLEST_STREAM_FRAME_BYTES:
            return 0
        stream_id: int = stream.stream_id  # type: ignore[assignment]  # None only for crypto streams
        frame_overhead = (
            3
            + _size_uint_var(stream_id)
            + (_size_uint_var(stream.sender.next_offset) if stream.sender.next_offset else 0)
        )
        previous_send_highest = stream.sender.highest_offset
        frame = stream.sender.get_frame(builder.remaining_flight_space - frame_overhead, max_offset)
        if frame is None:
            return 0
        frame_type = QuicFrameType.STREAM_BASE | 2  # length
        if frame.offset:
            frame_type |= 4
        if frame.fin:
            frame_type |= 1
        # The delivery handler is the connection's, so a lost frame puts its stream back
        # among those to visit, and an acknowledged FIN that finishes it discards it at once.
        buf = builder.start_frame(
            frame_type,
            capacity=frame_overhead,
            handler=self._on_stream_data_delivery,
            handler_args=(stream, frame.offset, frame.offset + len(frame.data), frame.fin),
        )
        buf.push_uint_var(stream_id)
        if frame.offset:
            buf.push_uint_var(frame.offset)
        buf.push_uint16(len(frame.data) | 0x4000)
        buf.push_bytes(frame.data)
        if self._quic_logger is not None and builder.quic_logger_frames is not None:
            builder.quic_logger_frames.append(self._quic_logger.encode_stream_frame(frame, stream_id=stream_id))
        return int(stream.sender.highest_offset - previous_send_highest)

    def _write_reset_stream_frame(self, builder: QuicPacketBuilder, stream: QuicStream) -> None:
        buf = builder.start_frame(
            frame_type=QuicFrameType.RESET_STREAM,
            capacity=RESET_STREAM_FRAME_BYTES,
            handler=self._on_reset_delivery,
            handler_args=(stream,),
        )
        frame = stream.sender.get_reset_frame()
        buf.push_uint_var(frame.stream_id)
        buf.push_uint_var(frame.error_code)
        buf.push_uint_var(frame.final_size)
        if self._quic_logger is not None and builder.quic_logger_frames is not None:
            builder.quic_logger_frames.append(
                self._quic_logger.encode_reset_stream_frame(
                    error_code=frame.error_code, final_size=frame.final_size, stream_id=frame.stream_id
                )
            )

    def _write_stop_sending_frame(self, builder: QuicPacketBuilder, stream: QuicStream) -> None:
        buf = builder.start_frame(
            frame_type=QuicFrameType.STOP_SENDING,
            capacity=STOP_SENDING_FRAME_BYTES,
            handler=self._on_stop_sending_delivery,
            handler_args=(stream,),
        )
        frame = stream.receiver.get_stop_frame()
        buf.push_uint_var(frame.stream_id)
        buf.push_uint_var(frame.error_code)
        if self._quic_logger is not None and builder.quic_logger_frames is not None:
            builder.quic_logger_frames.append(
                self._quic_logger.encode_stop_sending_frame(error_code=frame.error_code, stream_id=frame.stream_id)
            )

    def handshake_done(self) -> None:
        """Called once the handshake completed: ACKs may wait for our next packet; handshake buffers go."""
        self._ack_delay = ACK_DELAY_S
        # TLS has written its last handshake message, and aioquic has moved it to the crypto
        # streams: the buffers it wrote into are empty and are not written again.
        buffers = self._crypto_buffers
        for epoch in buffers:
            buffers[epoch] = _NO_CRYPTO_OUTPUT
        # The handshake's ephemeral key shares made its shared secret and are never used again
        # (after the handshake TLS only takes a NewSessionTicket, which needs the key schedule):
        # a client holds one per group it offers (P-256, P-384, X25519, X448: about 5 KiB in OpenSSL,
        # which tracemalloc does not see), a server the one it answered with.
        context = self.tls
        context._ec_private_keys = []
        context._x25519_private_key = None
        context._x448_private_key = None

    def ack_with_next_packet(self) -> None:
        """Make a pending 1-RTT ACK due now, so it rides in the packet we are about to build.

        Without this, an answer sent right after its request leaves without the request's
        ACK, and a timer later sends that ACK alone: two more datagrams per request.
        """
        space = self._spaces.get(tls.Epoch.ONE_RTT)
        if space is not None and space.ack_at is not None:
            space.ack_at = 0.0

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        if not self._is_client:
            # Mutual TLS: the client's certificate key is what its node id must hash from.
            self.tls._request_client_certificate = True
        if self._check_certificate is not None:
            self._check_in_handshake(self.tls, self._check_certificate)

    @staticmethod
    def _check_in_handshake(context: tls.Context, check: CertificateCheck) -> None:
        # aioquic parses the peer's certificate in _set_peer_certificate, on both sides, before
        # the CertificateVerify that proves the key: the place to refuse it, so the refusal is
        # a TLS alert aioquic turns into CRYPTO_ERROR + alert, with the reason as its phrase.
        parse = context._set_peer_certificate

        def parse_and_check(certificate: Any) -> None:
            parse(certificate)
            try:
                check(context._peer_certificate)
            except CertificateRefused as exc:
                raise _ALERTS.get(exc.alert, tls.AlertBadCertificate)(exc.reason) from None

        context._set_peer_certificate = parse_and_check  # type: ignore[method-assign]

    def application_read(self, stream_id: int, nbytes: int, fin: bool) -> None:
        """The application took `nbytes` of a stream; with a read window, credit grows by as much."""
        if self._read_window is None:
            return
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._limits_due[stream] = None
        self._read_total += nbytes
        if fin:
            self._read_by_stream.pop(stream_id, None)
        else:
            self._read_by_stream[stream_id] = self._read_by_stream.get(stream_id, 0) + nbytes

    @property
    def credit_follows_reads(self) -> bool:
        return self._read_window is not None

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        window = self._read_window
        if window is None:
            super()._write_connection_limits(builder, space)
            return
        limit = self._local_max_data
        limit.value = max(limit.value, self._read_total + window.connection_bytes)
        # aioquic doubles MAX_DATA once half of it was received; hiding what was received
        # leaves the value set above, which follows what the application read.
        used, limit.used = limit.used, 0
        try:
            super()._write_connection_limits(builder, space)
        finally:
            limit.used = used

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        window = self._read_window
        if window is None or not stream.max_stream_data_local:
            super()._write_stream_limits(builder, space, stream)
            return
        read = self._read_by_stream.get(stream.stream_id, 0)
        stream.max_stream_data_local = max(stream.max_stream_data_local, read + window.stream_bytes)
        # As for MAX_DATA: aioquic doubles MAX_STREAM_DATA by what its transport received.
        receiver = stream.receiver
        highest, receiver.highest_offset = receiver.highest_offset, 0
        try:
            super()._write_stream_limits(builder, space, stream)
        finally:
            receiver.highest_offset = highest

    def _set_state(self, state: QuicConnectionState) -> None:
        if self.close_owner is None:
            if state == QuicConnectionState.CLOSING:
                self.close_owner = "local"
            elif state == QuicConnectionState.DRAINING:
                self.close_owner = "remote"
        super()._set_state(state)

    # -- read access ------------------------------------------------------------------------

    @property
    def trace(self) -> QuicLoggerTrace | None:
        """This connection's qlog trace, or None when nothing records it."""
        return self._quic_logger

    def smoothed_rtt_s(self) -> float | None:
        """The smoothed RTT in seconds, once a sample exists."""
        return self._loss._rtt_smoothed if self._loss._rtt_initialized else None

    def is_usable(self) -> bool:
        """Still handshaking or connected: not closing, draining or terminated."""
        return self._state in (QuicConnectionState.FIRSTFLIGHT, QuicConnectionState.CONNECTED)

    def peer_stream_credit(self) -> int:
        """How many bidirectional streams the peer lets us open in all (its MAX_STREAMS)."""
        return int(self._remote_max_streams_bidi)

    def local_stream_credit(self) -> int:
        """How many bidirectional streams we let the peer open in all."""
        return int(self._local_max_streams_bidi.value)

    def stream_waits_for_credit(self, stream_id: int) -> bool:
        """A stream we opened beyond the peer's credit: the peer has never heard of it."""
        stream = self._streams.get(stream_id)
        return stream is not None and bool(stream.is_blocked)

    def unacked_send_bytes(self, stream_id: int) -> int:
        """Bytes written on a stream and not yet acknowledged by the peer (sent or not): what it holds for the peer.

        aioquic keeps them in the stream's send buffer until the peer acknowledges them, with
        no limit: a peer that never reads (or never acknowledges) makes it grow.
        """
        stream = self._streams.get(stream_id)
        return len(stream.sender._buffer) if stream is not None else 0

    def release_send_buffer(self, stream_id: int) -> None:
        """Free a reset stream's send buffer now, rather than when the peer acknowledges the reset.

        After `reset_stream` aioquic never reads the buffer again (no frames, no retransmission:
        `get_frame` is not called and `on_data_delivery` returns early), yet keeps it until the
        stream is discarded, which a peer that acknowledges nothing postpones forever.
        """
        stream = self._streams.get(stream_id)
        if stream is not None and stream.sender._reset_error_code is not None:
            stream.sender._buffer = bytearray()

    def peer_certificate(self) -> Any:
        """The certificate the peer proved in the handshake (cryptography x509), or None."""
        return getattr(self.tls, "_peer_certificate", None) if hasattr(self, "tls") else None


def _peek_stream_id(buf: Buffer) -> int:
    """The stream id a stream frame starts with, leaving the buffer where it was."""
    start = buf.tell()
    stream_id = buf.pull_uint_var()
    buf.seek(start)
    return stream_id


def _size_uint_var(value: int) -> int:
    """Bytes of a QUIC variable-length integer (RFC 9000 section 16)."""
    if value <= 0x3F:
        return 1
    if value <= 0x3FFF:
        return 2
    if value <= 0x3FFFFFFF:
        return 4
    return 8


# -- the contract -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Clause:
    """One private name dhtscope relies on: where it lives and, for methods, its parameters."""

    owner: str  # "QuicConnection" (class), "connection" (a connected client instance), ...
    name: str
    parameters: tuple[str, ...] | None = None  # for methods: the parameter names after self
    # For a method NodeQuicConnection replaces with its own copy: the first 16 hex digits of
    # SHA-256 of the source it was copied from, so any change to it upstream fails the check.
    source_sha256: str | None = None


CONTRACT: tuple[Clause, ...] = (
    # Replaced by copies that visit only the streams with a frame to send and hand their
    # frames' deliveries to the connection.
    Clause("QuicConnection", "_write_application", ("builder", "network_path", "now"), "c37bf64378f72b2f"),
    Clause("QuicConnection", "_write_stream_frame", ("builder", "space", "stream", "max_offset"), "9bc0be962394a322"),
    Clause("QuicConnection", "_write_reset_stream_frame", ("builder", "stream"), "72c28abb1c9bb5e0"),
    Clause("QuicConnection", "_write_stop_sending_frame", ("builder", "stream"), "057f50750f9f51ba"),
    # Extended: what marks a stream as having a frame to send, or finished.
    Clause("QuicConnection", "send_stream_data", ("stream_id", "data", "end_stream")),
    Clause("QuicConnection", "reset_stream", ("stream_id", "error_code")),
    Clause("QuicConnection", "stop_stream", ("stream_id", "error_code")),
    Clause("QuicConnection", "_handle_stream_frame", ("context", "frame_type", "buf")),
    Clause("QuicConnection", "_handle_reset_stream_frame", ("context", "frame_type", "buf")),
    Clause("QuicConnection", "_handle_stop_sending_frame", ("context", "frame_type", "buf")),
    Clause("QuicConnection", "_handle_max_stream_data_frame", ("context", "frame_type", "buf")),
    Clause("QuicConnection", "_on_max_stream_data_delivery", ("delivery", "stream")),
    Clause("QuicConnection", "_stream_limit", ("stream_id",)),
    Clause("connection", "_streams_queue"),
    # Read by the copied _write_application.
    Clause("connection", "_cryptos"),
    Clause("connection", "_crypto_streams"),
    Clause("connection", "_pacing_at"),
    Clause("connection._loss", "_pacer"),
    Clause("connection._loss", "get_probe_timeout"),
    Clause("connection", "_configuration"),
    Clause("connection", "_handshake_complete"),
    Clause("connection", "_handshake_done_pending"),
    Clause("connection", "_host_cids"),
    Clause("connection", "_retire_connection_ids"),
    Clause("connection", "_streams_blocked_pending"),
    Clause("connection", "_streams_blocked_bidi"),
    Clause("connection", "_streams_blocked_uni"),
    Clause("connection", "_remote_max_streams_uni"),
    Clause("connection", "_ping_pending"),
    Clause("connection", "_probe_pending"),
    Clause("connection", "_datagrams_pending"),
    Clause("connection", "_remote_max_data"),
    Clause("connection", "_remote_max_data_used"),
    Clause("QuicConnection", "_write_ack_frame", ("builder", "space", "now")),
    Clause("QuicConnection", "_write_path_challenge_frame", ("builder", "network_path")),
    Clause("QuicConnection", "_write_handshake_done_frame", ("builder",)),
    Clause("QuicConnection", "_write_path_response_frame", ("builder", "challenge")),
    Clause("QuicConnection", "_write_new_connection_id_frame", ("builder", "connection_id")),
    Clause("QuicConnection", "_write_retire_connection_id_frame", ("builder", "sequence_number")),
    Clause("QuicConnection", "_write_streams_blocked_frame", ("builder", "frame_type", "limit")),
    Clause("QuicConnection", "_write_ping_frame", ("builder", "uids", "comment")),
    Clause("QuicConnection", "_write_crypto_frame", ("builder", "space", "stream")),
    Clause("QuicConnection", "_write_datagram_frame", ("builder", "data", "frame_type")),
    Clause("QuicStreamSender", "_pending"),
    Clause("QuicStreamSender", "_pending_eof"),
    Clause("QuicStreamSender", "get_reset_frame", ()),
    Clause("QuicStreamSender", "on_data_delivery", ("delivery", "start", "stop", "fin")),
    Clause("QuicStreamSender", "on_reset_delivery", ("delivery",)),
    Clause("QuicStream.receiver", "stop_pending"),
    Clause("QuicStream.receiver", "get_stop_frame", ()),
    Clause("QuicStream.receiver", "on_stop_sending_delivery", ("delivery",)),
    Clause("QuicConnection", "_initialize", ("peer_cid",)),
    Clause("QuicConnection", "_set_state", ("state",)),
    Clause("QuicConnection", "_write_connection_limits", ("builder", "space")),
    Clause("QuicConnection", "_write_stream_limits", ("builder", "space", "stream")),
    Clause("tls.Context", "_set_peer_certificate", ("certificate",)),
    Clause("QuicPacketBuilder", "remaining_flight_space"),
    Clause("QuicStream", "max_stream_data_local"),
    Clause("QuicStream.receiver", "highest_offset"),
    Clause("connection", "_local_max_streams_bidi"),
    Clause("connection._local_max_streams_bidi", "value"),
    Clause("connection._local_max_streams_bidi", "sent"),
    Clause("connection", "_remote_max_streams_bidi"),
    Clause("connection", "_local_max_data"),
    Clause("connection._local_max_data", "value"),
    Clause("connection._local_max_data", "used"),
    Clause("connection", "_ack_delay"),
    Clause("connection", "_crypto_buffers"),
    Clause("connection", "_local_active_connection_id_limit"),
    Clause("connection", "_QuicConnection__frame_handlers"),
    Clause("connection", "_spaces"),
    Clause("connection", "_streams"),
    Clause("connection", "_quic_logger"),
    Clause("connection", "_state"),
    Clause("connection", "_is_client"),
    Clause("connection._loss", "_rtt_smoothed"),
    Clause("connection._loss", "_rtt_initialized"),
    Clause("connection.tls", "_request_client_certificate"),
    Clause("connection.tls", "_peer_certificate"),
    Clause("connection.tls", "_ec_private_keys"),
    Clause("connection.tls", "_x25519_private_key"),
    Clause("connection.tls", "_x448_private_key"),
    Clause("one_rtt_space", "ack_at"),
    Clause("QuicStream", "is_blocked"),
    Clause("QuicStream", "sender"),
    Clause("QuicStreamSender", "_buffer"),
    Clause("QuicStreamSender", "_reset_error_code"),
)


def _owners() -> dict[str, Any]:
    """A connected-enough client connection and the classes, to look the contract's names up on."""
    from aioquic.quic.packet_builder import QuicPacketBuilder
    from aioquic.quic.stream import QuicStream, QuicStreamSender

    conn = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=["contract"]))
    conn.connect(("127.0.0.1", 9), now=0.0)  # creates the TLS context and packet spaces; sends nothing
    owners: dict[str, Any] = {
        "QuicConnection": QuicConnection,
        "QuicPacketBuilder": QuicPacketBuilder,
        "QuicStream": QuicStream(stream_id=0, max_stream_data_local=0, max_stream_data_remote=0),
        "QuicStreamSender": QuicStreamSender(stream_id=0, writable=True),
        "connection": conn,
        "connection._loss": getattr(conn, "_loss", None),
        "connection.tls": getattr(conn, "tls", None),
        "connection._local_max_streams_bidi": getattr(conn, "_local_max_streams_bidi", None),
        "one_rtt_space": getattr(conn, "_spaces", {}).get(tls.Epoch.ONE_RTT),
    }
    owners["QuicStream.receiver"] = getattr(owners["QuicStream"], "receiver", None)
    owners["tls.Context"] = tls.Context
    owners["connection._local_max_data"] = getattr(conn, "_local_max_data", None)
    return owners


def check_contract() -> list[str]:
    """Every clause the installed aioquic breaks, as one line each; empty when all hold."""
    try:
        owners = _owners()
    except Exception as exc:  # the contract cannot even be checked: that is the finding
        return [f"cannot build an aioquic connection to check against: {type(exc).__name__}: {exc}"]
    problems = []
    for clause in CONTRACT:
        owner = owners.get(clause.owner)
        where = f"{clause.owner}.{clause.name}"
        if owner is None:
            problems.append(f"{clause.owner} is missing, so {where} cannot be checked")
            continue
        if not hasattr(owner, clause.name):
            problems.append(f"{where} no longer exists")
            continue
        if clause.parameters is not None:
            member = getattr(owner, clause.name)
            try:
                names = tuple(p for p in inspect.signature(member).parameters if p != "self")
            except (TypeError, ValueError):
                problems.append(f"{where} has no readable signature")
                continue
            if names != clause.parameters:
                problems.append(f"{where} takes ({', '.join(names)}), not ({', '.join(clause.parameters)})")
                continue
        if clause.source_sha256 is not None:
            try:
                source = inspect.getsource(getattr(owner, clause.name))
            except (OSError, TypeError):
                problems.append(f"{where} has no readable source to compare with the copy that replaces it")
                continue
            digest = hashlib.sha256(source.encode()).hexdigest()[:16]
            if digest != clause.source_sha256:
                problems.append(
                    f"{where} changed upstream (source {digest}, copied from {clause.source_sha256}): "
                    "NodeQuicConnection's copy must be brought up to date"
                )
    return problems
