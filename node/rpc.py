"""RPC over QUIC: one request and its response per bidirectional stream, both sides ending with FIN.

Requests go out on pooled connections (one per peer, whichever side dialled);
requests from peers are decoded, handed to the node's handler, and answered
on the same stream. Bad input is answered with an ERROR message or a stream
reset carrying an ErrorCode, logged, and never disturbs other streams.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .constants import CONNECT_TIMEOUT_S, REQUEST_TIMEOUT_S, STREAM_CREDIT_WAIT_S
from .ids import Contact, NodeId
from .scenarios import Faults
from .transport import Address, Conn, Endpoint, TransportError, close_text
from .wire import (
    RESPONSE_FOR,
    Error,
    ErrorCode,
    FrameReader,
    Message,
    MsgType,
    Sender,
    WireError,
    encode,
)

log = logging.getLogger("dhtscope.rpc")

Handler = Callable[["Conn", Message], "Message | None"]


class RpcError(Exception):
    """A request that got no valid answer."""


class RpcTimeout(RpcError):
    pass


class RemoteError(RpcError):
    """The peer answered with an ERROR message."""

    def __init__(self, code: int, reason: str) -> None:
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = f"0x{code:x}"
        super().__init__(f"peer refused: {name}: {reason}")
        self.code = code
        self.reason = reason


class PeerMismatch(RpcError):
    """The node at an address is not the node we expected there."""


@dataclass
class _Outgoing:
    future: asyncio.Future[Message]
    request: Message
    reader: FrameReader = field(default_factory=FrameReader)
    sent_at: float = 0.0
    rtt_s: float = 0.0  # from the write to the moment the whole answer was read


@dataclass
class _Incoming:
    reader: FrameReader = field(default_factory=FrameReader)
    done: bool = False


class _ConnState:
    __slots__ = ("outgoing", "incoming")

    def __init__(self) -> None:
        self.outgoing: dict[int, _Outgoing] = {}
        self.incoming: dict[int, _Incoming] = {}


_TYPE_NAMES = {t: t.name for t in MsgType}  # Enum.name is a descriptor call: slow on every event


def message_name(message: Message) -> str:
    return _TYPE_NAMES[message.TYPE]


class RpcEndpoint:
    """Connection pool, request/response streams and inbound dispatch for one node."""

    def __init__(
        self,
        endpoint_factory: Callable[[RpcEndpoint], Endpoint],
        sender: Callable[[], Sender | None],
        handler: Handler,
        faults: Faults,
    ) -> None:
        self.endpoint = endpoint_factory(self)
        self.loop = asyncio.get_running_loop()
        self._sender = sender
        self._handler = handler
        self._faults = faults
        self._by_peer: dict[NodeId, Conn] = {}
        self._by_addr: dict[Address, Conn] = {}
        self._dialing: dict[Address, asyncio.Future[Conn]] = {}
        self._ids = itertools.count(random.getrandbits(32))
        self.requests_sent = 0
        self.requests_received = 0
        self.errors_sent = 0

    # -- pool -------------------------------------------------------------------

    def connections(self) -> list[Conn]:
        return list(self.endpoint.all)

    def pooled(self, node_id: NodeId) -> Conn | None:
        conn = self._by_peer.get(node_id)
        return conn if conn is not None and conn.is_open else None

    async def connection_to(
        self, addr: Address, expected: NodeId | None = None, timeout_s: float = CONNECT_TIMEOUT_S
    ) -> Conn:
        """A ready connection to the node at `addr` (reused if one exists); PeerMismatch if it is not `expected`."""
        if expected is not None:
            conn = self.pooled(expected)
            if conn is not None:
                return conn
        conn = self._by_addr.get(addr)
        if conn is None or not conn.is_open:
            pending = self._dialing.get(addr)
            if pending is None:
                pending = self.loop.create_future()
                self._dialing[addr] = pending
                try:
                    conn = await self.endpoint.connect(addr, timeout_s, expected)
                except BaseException as exc:
                    pending.set_exception(exc if isinstance(exc, Exception) else TransportError("cancelled"))
                    pending.exception()
                    raise
                finally:
                    self._dialing.pop(addr, None)
                pending.set_result(conn)
                self._by_addr[addr] = conn
            else:
                conn = await asyncio.shield(pending)
        if expected is not None and conn.peer_id != expected:
            seen = conn.peer_id.short() if conn.peer_id else "an unidentified node"
            raise PeerMismatch(f"{addr[0]}:{addr[1]} is {seen}, not {expected.short()}")
        return conn

    # -- requests -----------------------------------------------------------------

    def next_request_id(self) -> int:
        return next(self._ids) & 0xFFFFFFFFFFFFFFFF

    async def request(
        self,
        conn: Conn,
        message: Message,
        timeout_s: float = REQUEST_TIMEOUT_S,
        credit_wait_s: float = STREAM_CREDIT_WAIT_S,
        sender: Sender | None = None,
    ) -> tuple[Message, float]:
        """Send `message` (signed off by `sender` unless it names one) on a new stream of `conn`.

        Returns the response and its round-trip time in seconds.
        """
        data = encode(message, sender)
        if conn.needs_credit():
            try:
                await asyncio.wait_for(conn.wait_for_credit(), credit_wait_s)
            except TimeoutError:
                raise RpcTimeout(
                    f"{conn.addr_text} gave no stream credit for {credit_wait_s:g} s "
                    "(its side of earlier streams never finished)"
                ) from None
        event = None
        if conn.traced:  # the write is recorded as this event (with its offset, length, fin)
            event = (
                "dht:rpc_sent",
                {"type": message_name(message), "request_id": message.request_id, "peer_id": _peer_hex(conn)},
            )
        loop = self.loop
        sent_at = loop.time()
        try:
            stream_id = conn.start_stream(data, fin=True, event=event)
        except TransportError as exc:
            raise RpcError(str(exc)) from None
        state = self._state(conn)
        future: asyncio.Future[Message] = loop.create_future()
        out = _Outgoing(future, message, sent_at=sent_at)
        state.outgoing[stream_id] = out
        self.requests_sent += 1
        # One timer that fails the future, instead of wait_for(shield(...)): the future is
        # ours alone, and every path that completes it checks it is not done yet.
        timer = loop.call_later(timeout_s, _expire, future)
        try:
            response = await future
        except _Expired:
            state.outgoing.pop(stream_id, None)
            conn.log(
                "dht:rpc_timeout",
                {
                    "stream_id": stream_id,
                    "type": message_name(message),
                    "request_id": message.request_id,
                    "peer_id": _peer_hex(conn),
                    "timeout_ms": timeout_s * 1000,
                },
            )
            if not conn.closed:
                conn.reset(stream_id, ErrorCode.CANCELLED)
            raise RpcTimeout(f"{message_name(message)} to {conn.addr_text} timed out after {timeout_s:g} s") from None
        except asyncio.CancelledError:
            state.outgoing.pop(stream_id, None)
            if not conn.closed:
                conn.reset(stream_id, ErrorCode.CANCELLED)
            raise
        finally:
            timer.cancel()
        if isinstance(response, Error):
            raise RemoteError(response.code, response.reason)
        return response, out.rtt_s

    # -- ConnectionOwner -------------------------------------------------------------

    def _state(self, conn: Conn) -> _ConnState:
        if conn.state is None:
            conn.state = _ConnState()
        return conn.state

    def connection_ready(self, conn: Conn) -> None:
        if conn.peer_id is not None:
            self._by_peer[conn.peer_id] = conn
            conn.log(
                "dht:peer_identified",
                {
                    "peer_id": conn.peer_id.hex(),
                    "verified": True,
                    "peer_address": conn.addr_text,
                },
            )

    def connection_lost(self, conn: Conn) -> None:
        if conn.peer_id is not None and self._by_peer.get(conn.peer_id) is conn:
            del self._by_peer[conn.peer_id]
        if self._by_addr.get(conn.addr) is conn:
            del self._by_addr[conn.addr]
        state: _ConnState | None = conn.state
        if state is not None:
            error = RpcError(close_text(conn))
            for out in state.outgoing.values():
                if not out.future.done():
                    out.future.set_exception(error)
                    out.future.exception()
            state.outgoing.clear()
            state.incoming.clear()

    def stream_data(self, conn: Conn, stream_id: int, data: bytes, fin: bool) -> None:
        state = self._state(conn)
        if conn.is_peer_stream(stream_id):
            self._incoming_data(conn, state, stream_id, data, fin)
            return
        out = state.outgoing.get(stream_id)
        if out is None or out.future.done():
            conn.log_delivery(stream_id, len(data), fin)
            return  # a late answer to a request we gave up on (timed out or cancelled)
        try:
            response = out.reader.feed(data) if data else None
            if response is None and fin:
                out.reader.finish()
        except WireError as exc:
            conn.log_delivery(stream_id, len(data), fin)
            state.outgoing.pop(stream_id, None)
            self._protocol_error(conn, stream_id, exc, reply=False)
            out.future.set_exception(RpcError(f"bad response from {conn.addr_text}: {exc}"))
            out.future.exception()
            return
        if response is None:
            conn.log_delivery(stream_id, len(data), fin)
            return
        state.outgoing.pop(stream_id, None)
        if response.TYPE not in RESPONSE_FOR[out.request.TYPE] or response.request_id != out.request.request_id:
            conn.log_delivery(stream_id, len(data), fin)
            wrong = WireError(f"{response.TYPE.name} does not answer {out.request.TYPE.name} #{out.request.request_id}")
            self._protocol_error(conn, stream_id, wrong, reply=False)
            out.future.set_exception(RpcError(f"bad response from {conn.addr_text}: {wrong}"))
            out.future.exception()
            return
        out.rtt_s = self.loop.time() - out.sent_at
        if conn.traced:  # taking the answer's last bytes is recorded as the response event
            conn.log_delivery(
                stream_id,
                len(data),
                fin,
                (
                    "dht:rpc_response",
                    {
                        "type": message_name(response),
                        "request_id": out.request.request_id,
                        "peer_id": _peer_hex(conn),
                        "direction": "received",
                        "rtt_ms": round(out.rtt_s * 1000, 3),
                        "status": "error" if isinstance(response, Error) else "ok",
                    },
                ),
            )
        out.future.set_result(response)

    def _incoming_data(self, conn: Conn, state: _ConnState, stream_id: int, data: bytes, fin: bool) -> None:
        if stream_id & 2:
            # Unidirectional streams carry nothing in this protocol.
            conn.log_delivery(stream_id, len(data), fin)
            if stream_id not in state.incoming:
                state.incoming[stream_id] = _Incoming(done=True)
                self._protocol_error(
                    conn,
                    stream_id,
                    WireError("unidirectional streams are not used", ErrorCode.UNKNOWN_TYPE),
                    reply=False,
                )
            return
        inc = state.incoming.get(stream_id)
        if inc is None:
            inc = state.incoming[stream_id] = _Incoming()
        if inc.done:
            conn.log_delivery(stream_id, len(data), fin)
            if fin:
                state.incoming.pop(stream_id, None)
            return
        try:
            request = inc.reader.feed(data) if data else None
            if request is None and fin:
                inc.reader.finish()
        except WireError as exc:
            conn.log_delivery(stream_id, len(data), fin)
            inc.done = True
            self._protocol_error(conn, stream_id, exc, reply=exc.code != ErrorCode.MESSAGE_TOO_LARGE)
            if fin:
                state.incoming.pop(stream_id, None)
            return
        if request is None:
            conn.log_delivery(stream_id, len(data), fin)
            return
        inc.done = True
        if fin:
            state.incoming.pop(stream_id, None)
        self._dispatch(conn, stream_id, request, len(data), fin)

    def _dispatch(self, conn: Conn, stream_id: int, request: Message, length: int, fin: bool) -> None:
        """A whole request, whose last `length` bytes (and `fin`) the application just took."""
        if not request.is_request():
            conn.log_delivery(stream_id, length, fin)
            self._protocol_error(
                conn,
                stream_id,
                WireError(f"{request.TYPE.name} is a response, not a request", ErrorCode.NOT_A_REQUEST),
                reply=True,
            )
            return
        self.requests_received += 1
        if conn.traced:  # taking the request's last bytes is recorded as this event
            conn.log_delivery(
                stream_id,
                length,
                fin,
                (
                    "dht:rpc_received",
                    {
                        "type": message_name(request),
                        "request_id": request.request_id,
                        "peer_id": _peer_hex(conn),
                    },
                ),
            )
        if self._faults.stall:
            return  # the stall fault: read the request, never answer
        try:
            response = self._handler(conn, request)
        except Exception as exc:  # a handler bug must cost one request, not the node
            log.exception("handler failed for %s", message_name(request))
            response = Error(request.request_id, code=ErrorCode.INTERNAL, reason=f"handler failed: {exc}")
        if response is None:
            return
        self._respond(conn, stream_id, request, response)

    def _respond(self, conn: Conn, stream_id: int, request: Message | None, response: Message) -> None:
        sender = self._sender()
        try:
            data = encode(response, sender)
        except WireError as exc:
            response = Error(response.request_id, code=exc.code, reason=str(exc))
            data = encode(response, sender)
        if conn.closed:
            return
        event = None
        if conn.traced:  # the write is recorded as this event (with its offset, length, fin)
            event = (
                "dht:rpc_response",
                {
                    "type": message_name(response),
                    "request_id": response.request_id,
                    "peer_id": _peer_hex(conn),
                    "direction": "sent",
                    "status": "error" if isinstance(response, Error) else "ok",
                },
            )
        conn.send(stream_id, data, fin=True, event=event)

    def _protocol_error(self, conn: Conn, stream_id: int, exc: WireError, reply: bool) -> None:
        """Bad bytes on one stream: log them, then answer with ERROR or reset that stream alone."""
        self.errors_sent += 1
        log.info("bad input from %s on stream %d: %s", conn.addr_text, stream_id, exc)
        conn.log(
            "dht:rpc_error",
            {
                "stream_id": stream_id,
                "code": int(exc.code),
                "code_name": exc.code.name,
                "reason": str(exc),
                "peer_id": conn.peer_id.hex() if conn.peer_id else None,
            },
        )
        if conn.closed:
            return
        if reply:
            self._respond(conn, stream_id, None, Error(0, code=exc.code, reason=str(exc)))
        else:
            conn.reset(stream_id, exc.code)

    def stream_reset(self, conn: Conn, stream_id: int, error_code: int) -> None:
        state = self._state(conn)
        state.incoming.pop(stream_id, None)
        out = state.outgoing.pop(stream_id, None)
        if out is not None and not out.future.done():
            out.future.set_exception(RpcError(f"{conn.addr_text} reset the stream (code 0x{error_code:x})"))
            out.future.exception()

    def stop_sending(self, conn: Conn, stream_id: int, error_code: int) -> None:
        # The peer will not read our side. aioquic has already reset our sending side, and
        # answering with STOP_SENDING of our own would make the peer answer in turn: a
        # storm of them on every request a finished lookup cancels. Only forget the stream.
        state = self._state(conn)
        inc = state.incoming.get(stream_id)
        if inc is not None:
            inc.done = True

    async def close(self) -> None:
        await self.endpoint.close()


class _Expired(Exception):
    """A request's timer fired before its answer came (turned into RpcTimeout by `request`)."""


def _expire(future: asyncio.Future[Message]) -> None:
    if not future.done():
        future.set_exception(_Expired())


def _peer_hex(conn: Conn) -> str | None:
    return conn.peer_hex


def contact_of(conn: Conn, sender: Sender | None) -> Contact | None:
    """The contact a request proves: only when the claimed id is the one the peer's TLS key hashes to."""
    if sender is None or conn.peer_id is None or sender.node_id != conn.peer_id:
        return None
    return Contact(sender.node_id, conn.addr[0], sender.port)
