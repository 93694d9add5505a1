"""RPC over QUIC: one request and its response per bidirectional stream, both sides ending with FIN.

Requests go out on pooled connections (one per peer, whichever side dialled);
requests from peers are decoded, handed to the node's handler, and answered
on the same stream. Bad input is answered with an ERROR message or a stream
reset carrying an ErrorCode, logged, and never disturbs other streams.

Memory is bounded per connection and per node (`MemoryLimits`): bytes of unfinished
requests, how long a request may take to arrive, answers the peer has not acknowledged,
and a node-wide budget past which new work is answered OVERLOADED.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .admission import LogLimiter
from .constants import (
    CONNECT_TIMEOUT_S,
    CONNECTION_COST_BYTES,
    MAX_INBOUND_BUFFERED_BYTES_PER_CONNECTION,
    MAX_MESSAGE_BYTES,
    MAX_REFUSALS_PER_CONNECTION,
    MAX_UNREAD_ANSWER_BYTES_PER_CONNECTION,
    NODE_MEMORY_BUDGET_BYTES,
    REQUEST_ARRIVAL_DEADLINE_S,
    REQUEST_TIMEOUT_S,
    SLOW_REQUEST_SWEEP_S,
    STREAM_CREDIT_WAIT_S,
)
from .ids import Contact, NodeId
from .scenarios import Faults
from .transport import (
    RPC_RECEIVED,
    RPC_RESPONSE_RECEIVED,
    RPC_RESPONSE_SENT,
    RPC_SENT,
    Address,
    Conn,
    Endpoint,
    TransportError,
    close_text,
)
from .wire import (
    RESPONSE_FOR,
    Error,
    ErrorCode,
    FrameReader,
    Message,
    MsgType,
    Sender,
    WireError,
    decode_whole,
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
    started_at: float = 0.0  # when the first bytes of a request that did not arrive at once came
    counted: int = 0  # of its bytes, how many are in the connection's and the node's totals


class _ConnState:
    __slots__ = ("outgoing", "incoming", "partial", "inbound_bytes", "answers", "answer_bytes", "refusals")

    def __init__(self) -> None:
        self.outgoing: dict[int, _Outgoing] = {}
        self.incoming: dict[int, _Incoming] = {}
        self.partial: set[int] = set()  # peer streams whose request is still arriving
        self.inbound_bytes = 0  # buffered in those
        self.answers: dict[int, int] = {}  # our answers the peer has not acknowledged yet: bytes held, oldest first
        self.answer_bytes = 0
        self.refusals = 0  # requests refused for a memory limit or the deadline


@dataclass(frozen=True)
class MemoryLimits:
    """What requests and answers may hold, per connection and in all; tests shrink them."""

    inbound_bytes_per_connection: int = MAX_INBOUND_BUFFERED_BYTES_PER_CONNECTION
    arrival_deadline_s: float = REQUEST_ARRIVAL_DEADLINE_S
    unread_answer_bytes_per_connection: int = MAX_UNREAD_ANSWER_BYTES_PER_CONNECTION
    refusals_per_connection: int = MAX_REFUSALS_PER_CONNECTION
    connection_cost_bytes: int = CONNECTION_COST_BYTES
    node_budget_bytes: int = NODE_MEMORY_BUDGET_BYTES
    sweep_s: float = SLOW_REQUEST_SWEEP_S

    def view(self) -> dict[str, Any]:
        return {
            "inbound_bytes_per_connection": self.inbound_bytes_per_connection,
            "arrival_deadline_s": self.arrival_deadline_s,
            "unread_answer_bytes_per_connection": self.unread_answer_bytes_per_connection,
            "refusals_per_connection": self.refusals_per_connection,
            "connection_cost_bytes": self.connection_cost_bytes,
            "node_budget_bytes": self.node_budget_bytes,
        }


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
        memory: MemoryLimits | None = None,
    ) -> None:
        self.endpoint = endpoint_factory(self)
        self.endpoint.overloaded = self._refuse_connections
        self.loop = asyncio.get_running_loop()
        self.memory = memory or MemoryLimits()
        self.counters: Counter[str] = Counter()
        self._logs = LogLimiter(log)
        self._inbound_total = 0
        self._answer_total = 0
        self._slow: set[Conn] = set()  # connections with requests still arriving
        self._answering: set[Conn] = set()  # connections holding answers not yet acknowledged
        self._sweep: asyncio.TimerHandle | None = None
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
            event = (RPC_SENT, (message_name(message), message.request_id, conn.peer_hex))
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
                    "peer_id": conn.peer_hex,
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
            state.partial.clear()
            self._inbound_total -= state.inbound_bytes
            self._answer_total -= state.answer_bytes
            state.inbound_bytes = state.answer_bytes = 0
            state.answers.clear()
        self._slow.discard(conn)
        self._answering.discard(conn)

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
            response = None
            if fin and not out.reader.buffered:
                response = decode_whole(data)  # the whole answer at once, as it usually comes
            if response is None:
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
                    RPC_RESPONSE_RECEIVED,
                    (
                        message_name(response),
                        out.request.request_id,
                        conn.peer_hex,
                        "received",
                        int(out.rtt_s * 1_000_000) / 1000,  # ms, 3 decimals: round() costs a string conversion
                        "error" if isinstance(response, Error) else "ok",
                    ),
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
            if fin:
                # A whole request in one piece, as it usually comes: no reader, nothing to track.
                try:
                    request = decode_whole(data)
                except WireError:
                    request = None  # the reader below finds it again and answers it
                if request is not None:
                    self._dispatch(conn, stream_id, request, len(data), fin)
                    return
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
            self._forget_partial(state, stream_id, inc)
            self._protocol_error(conn, stream_id, exc, reply=exc.code != ErrorCode.MESSAGE_TOO_LARGE)
            if fin:
                state.incoming.pop(stream_id, None)
            return
        if request is None:
            conn.log_delivery(stream_id, len(data), fin)
            self._still_arriving(conn, state, stream_id, inc)
            return
        inc.done = True
        if inc.counted:
            self._forget_partial(state, stream_id, inc)
        if fin:
            state.incoming.pop(stream_id, None)
        self._dispatch(conn, stream_id, request, len(data), fin)

    # -- memory: unfinished requests --------------------------------------------------

    def _still_arriving(self, conn: Conn, state: _ConnState, stream_id: int, inc: _Incoming) -> None:
        """A request not yet whole: count its bytes, and refuse it if it holds too much."""
        grew = inc.reader.buffered - inc.counted
        inc.counted += grew
        state.inbound_bytes += grew
        self._inbound_total += grew
        if not inc.started_at:
            inc.started_at = self.loop.time()
            state.partial.add(stream_id)
            self._slow.add(conn)
            self._arm_sweep()
        limits = self.memory
        if state.inbound_bytes > limits.inbound_bytes_per_connection:
            self._drop_partial(
                conn,
                state,
                stream_id,
                inc,
                "request_bytes_cap_resets",
                f"unfinished requests on this connection hold over {limits.inbound_bytes_per_connection} bytes",
                ErrorCode.OVERLOADED,
            )
        elif self.memory_used() > limits.node_budget_bytes:
            self._drop_partial(
                conn,
                state,
                stream_id,
                inc,
                "shed_request_bytes",
                "node is over its memory budget",
                ErrorCode.OVERLOADED,
            )

    def _forget_partial(self, state: _ConnState, stream_id: int, inc: _Incoming) -> None:
        state.inbound_bytes -= inc.counted
        self._inbound_total -= inc.counted
        inc.counted = 0
        state.partial.discard(stream_id)

    def _drop_partial(
        self, conn: Conn, state: _ConnState, stream_id: int, inc: _Incoming, counter: str, reason: str, code: ErrorCode
    ) -> None:
        self.counters[counter] += 1
        inc.done = True
        inc.reader = FrameReader()  # frees what it held
        self._forget_partial(state, stream_id, inc)
        if self._strike(conn, state):
            return
        self._logs.warning(counter, self.loop.time(), f"resetting a request stream of {conn.addr_text}: {reason}")
        self._protocol_error(conn, stream_id, WireError(reason, code), reply=False, quiet=True)

    def _strike(self, conn: Conn, state: _ConnState) -> bool:
        """One more request refused on this connection; True once it has had too many and is closed."""
        state.refusals += 1
        limit = self.memory.refusals_per_connection
        if state.refusals <= limit:
            return False
        if state.refusals == limit + 1:
            self.counters["connections_closed_for_refusals"] += 1
            self._logs.warning(
                "connections_closed_for_refusals",
                self.loop.time(),
                f"closing the connection of {conn.addr_text}: {limit} of its requests were refused for "
                "holding too much, arriving too slowly or leaving answers unread",
            )
            conn.close(error_code=ErrorCode.OVERLOADED, reason="too many requests refused")
        return True

    def _arm_sweep(self) -> None:
        if self._sweep is None:
            self._sweep = self.loop.call_later(self.memory.sweep_s, self._sweep_now)

    def _sweep_now(self) -> None:
        """Reset requests that did not arrive whole in time; bring unread-answer counts up to date."""
        self._sweep = None
        now = self.loop.time()
        deadline = self.memory.arrival_deadline_s
        for conn in list(self._slow):
            state: _ConnState | None = conn.state
            if state is not None and not conn.closed:
                for sid in list(state.partial):
                    inc = state.incoming.get(sid)
                    if inc is None:
                        state.partial.discard(sid)
                    elif now - inc.started_at > deadline:
                        self._drop_partial(
                            conn,
                            state,
                            sid,
                            inc,
                            "slow_request_resets",
                            f"request did not arrive whole within {deadline:g} s",
                            ErrorCode.REQUEST_TIMEOUT,
                        )
            if state is None or conn.closed or not state.partial:
                self._slow.discard(conn)
        for conn in list(self._answering):
            state = conn.state
            if state is not None and not conn.closed:
                self._prune_answers(conn, state)
            if state is None or conn.closed or not state.answers:
                self._answering.discard(conn)
        if self._slow or self._answering:
            self._arm_sweep()

    # -- memory: answers the peer does not read ---------------------------------------------

    def _track_answer(self, conn: Conn, state: _ConnState, stream_id: int, size: int) -> None:
        if state.answers:
            self._prune_answers(conn, state, oldest_only=True)
        state.answers[stream_id] = size
        state.answer_bytes += size
        self._answer_total += size
        if conn not in self._answering:
            self._answering.add(conn)
            self._arm_sweep()
        cap = self.memory.unread_answer_bytes_per_connection
        if state.answer_bytes <= cap:
            return
        self._prune_answers(conn, state)
        while state.answer_bytes > cap and state.answers:
            oldest = next(iter(state.answers))
            self._forget_answer(state, oldest)
            self.counters["unread_answer_resets"] += 1
            self._logs.warning(
                "unread_answer_resets",
                self.loop.time(),
                f"resetting an answer to {conn.addr_text}: its unread answers hold over {cap} bytes",
            )
            conn.reset(oldest, ErrorCode.OVERLOADED)
            conn.quic.release_send_buffer(oldest)

    def _answer_headroom(self) -> int:
        """Held answer bytes past which a new request is refused: room is kept for one largest answer."""
        cap = self.memory.unread_answer_bytes_per_connection
        return max(cap - MAX_MESSAGE_BYTES, cap // 2)

    def _still_unread(self, conn: Conn, state: _ConnState) -> bool:
        self._prune_answers(conn, state)
        return state.answer_bytes > self._answer_headroom()

    def _refuse_unread(self, conn: Conn, state: _ConnState, stream_id: int) -> None:
        cap = self.memory.unread_answer_bytes_per_connection
        self.counters["unread_answer_resets"] += 1
        if self._strike(conn, state):
            return
        self._logs.warning(
            "unread_answer_resets",
            self.loop.time(),
            f"resetting a request of {conn.addr_text}: its unread answers leave no room under {cap} bytes",
        )
        conn.reset(stream_id, ErrorCode.OVERLOADED)

    def _prune_answers(self, conn: Conn, state: _ConnState, oldest_only: bool = False) -> None:
        """Drop answers the peer has acknowledged; refresh what the others hold (the oldest only, on the hot path)."""
        for sid in list(state.answers):
            held = conn.quic.unacked_send_bytes(sid)
            if held == 0:
                self._forget_answer(state, sid)
                continue
            delta = held - state.answers[sid]
            state.answers[sid] = held
            state.answer_bytes += delta
            self._answer_total += delta
            if oldest_only:
                return

    def _forget_answer(self, state: _ConnState, stream_id: int) -> None:
        held = state.answers.pop(stream_id, 0)
        state.answer_bytes -= held
        self._answer_total -= held

    # -- memory: the node's budget ----------------------------------------------------------

    def memory_used(self) -> int:
        """What the node's connections and buffers hold, by its own accounting (bytes)."""
        return len(self.endpoint.all) * self.memory.connection_cost_bytes + self._inbound_total + self._answer_total

    def over_budget(self) -> bool:
        return self.memory_used() > self.memory.node_budget_bytes

    def _refuse_connections(self) -> str | None:
        """The transport asks before it admits a connection: a reason to refuse, or None."""
        if self.memory_used() + self.memory.connection_cost_bytes > self.memory.node_budget_bytes:
            self.counters["shed_connections"] += 1
            return f"node is over its memory budget ({self.memory.node_budget_bytes // 2**20} MiB)"
        return None

    def busy(self, conn: Conn) -> bool:
        """Requests in flight either way: the connection is not idle, whatever its last activity."""
        state: _ConnState | None = conn.state
        return state is not None and bool(state.outgoing or state.partial)

    def memory_view(self) -> dict[str, Any]:
        """Limits, what is held now, and the counters of what was reset or shed, for snapshots."""
        return {
            "limits": self.memory.view(),
            "used_bytes": self.memory_used(),
            "inbound_request_bytes": self._inbound_total,
            "unread_answer_bytes": self._answer_total,
            "counters": dict(sorted(self.counters.items())),
        }

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
                (RPC_RECEIVED, (message_name(request), request.request_id, conn.peer_hex)),
            )
        if self._faults.stall:
            return  # the stall fault: read the request, never answer
        state = self._state(conn)
        if state.answer_bytes > self._answer_headroom() and self._still_unread(conn, state):
            # The peer has not taken the answers it has: refuse more work now, before it is done.
            self._refuse_unread(conn, state, stream_id)
            return
        if request.TYPE is not MsgType.PING and self.over_budget():
            # A PING's answer is smaller than this error, so it is answered; anything else waits.
            self.counters["shed_requests"] += 1
            self._logs.warning(
                "shed_requests", self.loop.time(), "answering OVERLOADED: node is over its memory budget"
            )
            self._respond(
                conn,
                stream_id,
                request,
                Error(
                    request.request_id, code=ErrorCode.OVERLOADED, reason="node is over its memory budget; retry later"
                ),
            )
            return
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
                RPC_RESPONSE_SENT,
                (
                    message_name(response),
                    response.request_id,
                    conn.peer_hex,
                    "sent",
                    "error" if isinstance(response, Error) else "ok",
                ),
            )
        conn.send(stream_id, data, fin=True, event=event)
        self._track_answer(conn, self._state(conn), stream_id, len(data))

    def _protocol_error(self, conn: Conn, stream_id: int, exc: WireError, reply: bool, quiet: bool = False) -> None:
        """Bad bytes on one stream: log them, then answer with ERROR or reset that stream alone."""
        self.errors_sent += 1
        if not quiet:
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
        inc = state.incoming.pop(stream_id, None)
        if inc is not None and inc.counted:
            self._forget_partial(state, stream_id, inc)
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
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        await self.endpoint.close()


class _Expired(Exception):
    """A request's timer fired before its answer came (turned into RpcTimeout by `request`)."""


def _expire(future: asyncio.Future[Message]) -> None:
    if not future.done():
        future.set_exception(_Expired())


def contact_of(conn: Conn, sender: Sender | None) -> Contact | None:
    """The contact a request proves: only when the claimed id is the one the peer's TLS key hashes to."""
    if sender is None or conn.peer_id is None or sender.node_id != conn.peer_id:
        return None
    return Contact(sender.node_id, conn.addr[0], sender.port)
