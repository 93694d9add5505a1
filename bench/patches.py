"""Prototypes of proposed dhtscope fixes, applied at run time to measure them (bench only).

    python bench/rpc_dhtscope.py serve --patch credit,ack ...   (and the same on `load`)

Nothing here is used by a normal `make bench` run: the published figures are those of
dhtscope as it is. Each patch is the smallest faithful version of a change proposed in
bench/findings.md, so its effect can be measured before anyone edits node/.
"""

from __future__ import annotations

from typing import Any, Callable

PATCHES: dict[str, Callable[[], None]] = {}


def patch(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def register(fn: Callable[[], None]) -> Callable[[], None]:
        PATCHES[name] = fn
        return fn
    return register


@patch("credit")
def wake_all_credit_waiters() -> None:
    """Conn._wake_credit_waiters: wake as many waiters as there are new stream slots, not one.

    Today it wakes one waiter per process_events() call, so when MAX_STREAMS grants 64 slots
    at once, the other 63 waiters sleep until more datagrams arrive: at 128 concurrent
    requests on one connection most time is spent waiting for credit that is already there.
    """
    from dhtscope.node import transport

    def _wake_credit_waiters(self: Any) -> None:
        if self.has_stream_credit():
            self._blocked_probe_sent = False
        if self.closed:
            while self._credit_waiters:
                waiter = self._credit_waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
            return
        available = self.quic._remote_max_streams_bidi - self.quic.get_next_available_stream_id() // 4
        while self._credit_waiters and available > 0:
            waiter = self._credit_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                available -= 1

    transport.Conn._wake_credit_waiters = _wake_credit_waiters


@patch("streams")
def more_stream_credit() -> None:
    """_NodeQuicConnection: grant the peer 1,024 concurrent bidirectional streams instead of aioquic's 128.

    A request's stream slot comes back only once both FINs are acknowledged and the
    peer's MAX_STREAMS update (batched by aioquic until half the window is used) arrives,
    so at 128 requests in flight on one connection most of them queue for credit.
    aioquic hard-codes 128 in a private Limit; setting it before the handshake makes
    the transport parameters carry the larger value.
    """
    from dhtscope.node import transport

    original_init = transport._NodeQuicConnection.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        limit = self._local_max_streams_bidi
        limit.value = limit.sent = 1024

    transport._NodeQuicConnection.__init__ = __init__


@patch("mtu")
def larger_datagrams() -> None:
    """Endpoint: QuicConfiguration(max_datagram_size=1350) instead of aioquic's 1200-byte default.

    A FIND_VALUE answer with one record and k=20 contacts is 1,259 bytes of msgpack: two
    QUIC packets at 1200, and aioquic's pacer holds the second one back (1-2 ms on
    loopback). 1350 bytes (what Chrome's QUIC uses) carries it in one packet.
    """
    from dhtscope.node import transport

    original_init = transport.Endpoint.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._config_args["max_datagram_size"] = 1350

    transport.Endpoint.__init__ = __init__


@patch("gc")
def fewer_gc_passes() -> None:
    """Process start: gc.freeze() the start-up heap and raise the generation-0 threshold.

    Every RPC allocates a few hundred short-lived objects (aioquic's frames and packets,
    futures, the message dataclasses, event dicts when recording), so CPython's cyclic
    collector runs a generation-0 pass every ~700 allocations and now and then walks the
    whole heap. None of these objects form cycles that need it promptly.
    """
    import gc

    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


@patch("nopace")
def no_pacing() -> None:
    """Diagnostics: switch off aioquic's packet pacer, to see what pacing costs a multi-packet answer."""
    from aioquic.quic import recovery

    recovery.QuicPacketPacer.next_send_time = lambda self, now: None


@patch("ackdelay")
def longer_ack_delay() -> None:
    """_NodeQuicConnection: delay our ACKs up to 20 ms (aioquic: 1 ms), within QUIC's default max_ack_delay of 25 ms.

    With 1 ms, every answer a lookup receives is acknowledged by its own ACK-only datagram
    while the lookup still runs, each a sendto that wakes an idle peer process. With 20 ms
    most ACKs ride on the next packet we send anyway, or go out once the lookup is over.
    """
    from dhtscope.node import transport

    original_init = transport._NodeQuicConnection.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._ack_delay = 0.020

    transport._NodeQuicConnection.__init__ = __init__


@patch("ack")
def piggyback_acks() -> None:
    """Conn.send: when we send stream data anyway, carry any pending ACK in the same packet.

    aioquic delays an ACK by 1 ms (K_GRANULARITY) after an ack-eliciting packet and only
    writes it into a packet once due, so a response sent right after its request goes out
    without the ACK, and 1 ms later a timer sends an ACK-only datagram: four datagrams per
    request/response instead of two, each a receive_datagram + datagrams_to_send pass.
    """
    from aioquic import tls
    from dhtscope.node import transport

    original = transport.Conn.send

    def send(self: Any, stream_id: int, data: bytes, fin: bool) -> None:
        space = self.quic._spaces.get(tls.Epoch.ONE_RTT)
        if space is not None and space.ack_at is not None:
            space.ack_at = 0.0  # due now: written into the packet that carries this data
        original(self, stream_id, data, fin)

    transport.Conn.send = send


@patch("timeout")
def cheaper_request_wait() -> None:
    """RpcEndpoint.request waits with asyncio.wait_for(asyncio.shield(future)): two extra futures,
    a timer and callbacks per RPC. A call_later that fails the one future does the same job."""
    import asyncio

    from dhtscope.node import rpc as rpc_mod

    original_wait_for = asyncio.wait_for

    async def wait_for(aw: Any, timeout: float | None) -> Any:
        # Only the request path passes a shielded future; everything else keeps asyncio's.
        inner = getattr(aw, "_dhtscope_inner", None)
        if inner is None:
            return await original_wait_for(aw, timeout)
        loop = asyncio.get_running_loop()
        handle = loop.call_later(timeout, lambda: inner.done() or inner.set_exception(asyncio.TimeoutError()))
        try:
            return await inner
        finally:
            handle.cancel()

    original_shield = asyncio.shield

    def shield(aw: Any) -> Any:
        if isinstance(aw, asyncio.Future) and not isinstance(aw, asyncio.Task):
            # A marker object the patched wait_for recognises: await the future itself.
            class _Marked:
                _dhtscope_inner = aw

                def __await__(self) -> Any:
                    return aw.__await__()
            return _Marked()
        return original_shield(aw)

    rpc_mod.asyncio = _AsyncioProxy(asyncio, wait_for=wait_for, shield=shield)  # type: ignore[attr-defined]


class _AsyncioProxy:
    """The asyncio module as rpc.py sees it, with two functions replaced."""

    def __init__(self, module: Any, **overrides: Any) -> None:
        self._module = module
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        return self._overrides.get(name) or getattr(self._module, name)


@patch("quiet")
def skip_events_nobody_reads() -> None:
    """Conn.log / Node.emit: return at once when the node is not recording and nobody listens.

    The prototype only skips the call; the real fix also skips building the event dicts
    (four per RPC on each side) behind one `if conn.traced:` check at each call site.
    """
    from dhtscope.node import node as node_mod
    from dhtscope.node import transport

    original_log = transport.Conn.log

    def log(self: Any, name: str, data: dict[str, Any]) -> None:
        if self.quic._quic_logger is None and not getattr(self.endpoint, "_has_listeners", True):
            return
        original_log(self, name, data)

    transport.Conn.log = log
    original_start = node_mod.Node.start

    async def start(self: Any) -> None:
        await original_start(self)
        self.rpc.endpoint._has_listeners = bool(self.listeners)

    node_mod.Node.start = start


def apply(names: str | None) -> list[str]:
    """Apply the comma-separated patches; returns their names."""
    applied = []
    for name in filter(None, (n.strip() for n in (names or "").split(","))):
        if name not in PATCHES:
            raise SystemExit(f"unknown patch {name!r}; known: {', '.join(PATCHES)}")
        PATCHES[name]()
        applied.append(name)
    return applied


class Counters:
    """Structural counts that contention on a shared machine does not change much (bench only)."""

    def __init__(self) -> None:
        self.datagrams_sent = 0
        self.datagrams_received = 0
        self.transmit_passes = 0
        self.credit_waits = 0
        self.credit_wait_s = 0.0
        self.timer_fires = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in vars(self).items()}


def install_counters() -> Counters:
    """Count datagrams, transmit passes, timer fires and stream-credit waits of this process."""
    import time

    from dhtscope.node import transport

    c = Counters()
    original_received = transport.Endpoint.datagram_received

    def datagram_received(self: Any, data: bytes, addr: Any) -> None:
        c.datagrams_received += 1
        original_received(self, data, addr)

    original_transmit = transport.Endpoint._transmit

    def _transmit(self: Any, conn: Any, now: float) -> None:
        c.transmit_passes += 1
        real = self._transport
        if real is None:
            return original_transmit(self, conn, now)

        class Counting:
            def sendto(self, data: bytes, addr: Any) -> None:
                c.datagrams_sent += 1
                real.sendto(data, addr)

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        self._transport = Counting()
        try:
            original_transmit(self, conn, now)
        finally:
            self._transport = real

    original_timer = transport.Endpoint._on_timer

    def _on_timer(self: Any, conn: Any) -> None:
        c.timer_fires += 1
        original_timer(self, conn)

    original_wait = transport.Conn.wait_for_credit

    async def wait_for_credit(self: Any) -> None:
        c.credit_waits += 1
        t0 = time.perf_counter()
        try:
            await original_wait(self)
        finally:
            c.credit_wait_s += time.perf_counter() - t0

    transport.Endpoint.datagram_received = datagram_received
    transport.Endpoint._transmit = _transmit
    transport.Endpoint._on_timer = _on_timer
    transport.Conn.wait_for_credit = wait_for_credit
    return c
