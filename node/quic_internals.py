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

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aioquic import tls
from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.logger import QuicLoggerTrace

from .certificates import CertificateRefused
from .constants import ACK_DELAY_S, ACTIVE_CONNECTION_IDS, MAX_STREAMS_PER_CONNECTION

SMALLEST_STREAM_FRAME_BYTES = 4  # type, stream id, 2-byte length: a FIN with no data
# After the handshake TLS writes nothing more (QUIC has no TLS KeyUpdate, a node issues no
# session tickets): every connection's three 16 KiB handshake output buffers become this
# one empty buffer, which nothing can write into.
_NO_CRYPTO_OUTPUT = Buffer(capacity=0)
# aioquic builds each connection's frame-handler table with a new frozenset of epochs per
# frame type (about 6 KiB a connection); connections share these instead.
_EPOCH_SETS: dict[frozenset[Any], frozenset[Any]] = {}
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


class NodeQuicConnection(QuicConnection):
    """aioquic's connection with dhtscope's changes to its behaviour, and read access to its state.

    Changes: the peer may open `max_streams` request streams at once instead of 128; once
    the handshake is done ACKs wait up to ACK_DELAY_S for a packet to ride on instead of
    1 ms; a full packet stops asking streams for frames; a server asks the client for its
    certificate (mutual TLS); `check_certificate` judges the peer's certificate as the
    handshake receives it, and a refusal closes with its TLS alert; with a `read_window`,
    flow-control credit grows only as the application reads (`application_read`); who
    began the close is remembered; the peer may issue us ACTIVE_CONNECTION_IDS connection
    ids, not 8; after the handshake its 48 KiB of handshake output buffers are let go.
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
        super().__init__(*args, **kwargs)
        # Before the handshake, so our transport parameters carry it.
        limit = self._local_max_streams_bidi
        limit.value = limit.sent = max_streams
        self._local_active_connection_id_limit = ACTIVE_CONNECTION_IDS
        handlers: dict[int, Any] = getattr(self, "_QuicConnection__frame_handlers")  # noqa: B009 (name-mangled)
        for frame_type, (handler, epochs) in handlers.items():
            handlers[frame_type] = (handler, _EPOCH_SETS.setdefault(epochs, epochs))

    # -- behaviour changes ---------------------------------------------------------------

    def _write_stream_frame(self, builder: Any, space: Any, stream: Any, max_offset: int) -> int:
        # aioquic offers every stream with data waiting to every packet it builds, even once
        # the packet is full, so 128 answers written at once cost 128 visits per packet.
        # Without room for a frame header nothing can be written: skip the work.
        if builder.remaining_flight_space < SMALLEST_STREAM_FRAME_BYTES:
            return 0
        result: int = super()._write_stream_frame(builder, space, stream, max_offset)
        return result

    def handshake_done(self) -> None:
        """Called once the handshake completed: ACKs may wait for our next packet; handshake buffers go."""
        self._ack_delay = ACK_DELAY_S
        # TLS has written its last handshake message, and aioquic has moved it to the crypto
        # streams: the buffers it wrote into are empty and are not written again.
        buffers = self._crypto_buffers
        for epoch in buffers:
            buffers[epoch] = _NO_CRYPTO_OUTPUT

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


# -- the contract -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Clause:
    """One private name dhtscope relies on: where it lives and, for methods, its parameters."""

    owner: str  # "QuicConnection" (class), "connection" (a connected client instance), ...
    name: str
    parameters: tuple[str, ...] | None = None  # for methods: the parameter names after self


CONTRACT: tuple[Clause, ...] = (
    Clause("QuicConnection", "_write_stream_frame", ("builder", "space", "stream", "max_offset")),
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
    return problems
