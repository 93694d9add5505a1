"""Prototypes of proposed dhtscope changes, applied at run time to measure them (bench only).

    python bench/rpc_dhtscope.py serve --patch dgram1350 ...   (and the same on `load`)

Nothing here is used by a normal `make bench` run: the published figures are those of
dhtscope as it is. Each patch is the smallest faithful version of a change considered in
bench/findings.md, so its effect can be measured before anyone edits node/. (The credit,
stream-limit, ACK, request-wait and quiet-event prototypes measured earlier are now part
of node/ itself.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PATCHES: dict[str, Callable[[], None]] = {}


def patch(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def register(fn: Callable[[], None]) -> Callable[[], None]:
        PATCHES[name] = fn
        return fn

    return register


@patch("dgram1350")
def larger_datagrams() -> None:
    """Endpoint: 1,350-byte datagrams (what Chrome's QUIC sends) instead of QUIC's 1,200.

    What `--max-datagram-bytes 1350` gives a node whose paths carry it: more answers per
    datagram when many are written at once.
    """
    from dhtscope.node import transport

    original_init = transport.Endpoint.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["max_datagram_bytes"] = 1350
        original_init(self, *args, **kwargs)

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


class Timers:
    """Wall time spent in each part of a node's request path, accumulated (bench only)."""

    PARTS = (
        "quic_receive",  # aioquic: header, decryption, frames, ACKs and loss recovery of received datagrams
        "quic_build",  # aioquic: building, encrypting and protecting the datagrams to send
        "sendto",  # the socket write
        "wire_decode",  # msgpack and message checks (records parsed, contacts checked)
        "wire_encode",
        "signatures",  # Ed25519 checks of records
        "routing",  # routing table updates and closest-contact queries
        "lookup",  # the lookup's own bookkeeping (shortlist, next queries, result)
        "transport",  # dhtscope's transport around aioquic: events, flushes, timers, datagram dispatch
        "rpc",  # request/answer matching, memory accounting, futures set (synchronous parts)
        "node",  # the node's lookup driver and handler (synchronous parts)
    )

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.PARTS, 0.0)

    def as_dict(self) -> dict[str, float]:
        return dict(self.seconds)


def install_timers() -> Timers:
    """Time the parts of the request path in this process by wrapping them (perf_counter, nested parts excluded)."""
    import time

    from dhtscope.node import lookup, node, quic_internals, records, routing, rpc, transport, wire

    t = Timers()
    clock = time.perf_counter
    stack: list[list[float]] = []  # per active part: [start, time spent in nested parts]

    def timed(part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            frame = [clock(), 0.0]
            stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                stack.pop()
                spent = clock() - frame[0]
                t.seconds[part] += spent - frame[1]
                if stack:
                    stack[-1][1] += spent

        return wrapper

    conn_cls = quic_internals.NodeQuicConnection
    conn_cls.receive_datagram = timed("quic_receive", conn_cls.receive_datagram)
    conn_cls.datagrams_to_send = timed("quic_build", conn_cls.datagrams_to_send)
    wire.decode = timed("wire_decode", wire.decode)
    rpc.encode = timed("wire_encode", rpc.encode)
    records.verify_signature = timed("signatures", records.verify_signature)
    for name in ("seen", "closest", "failed"):
        setattr(routing.RoutingTable, name, timed("routing", getattr(routing.RoutingTable, name)))
    for name in ("__init__", "next_queries", "on_response", "on_failure", "result"):
        setattr(lookup.Lookup, name, timed("lookup", getattr(lookup.Lookup, name)))
    for cls, names in (
        (transport.Conn, ("process_events", "send", "start_stream", "log_delivery")),
        (transport.Endpoint, ("datagram_received", "_flush", "schedule", "_on_timer")),
    ):
        for name in names:
            setattr(cls, name, timed("transport", getattr(cls, name)))
    for name in ("stream_data", "_dispatch", "_respond", "_track_answer"):
        setattr(rpc.RpcEndpoint, name, timed("rpc", getattr(rpc.RpcEndpoint, name)))
    for name in ("_lookup_answer", "_launch_queries", "_learn", "_handle", "_valid"):
        setattr(node.Node, name, timed("node", getattr(node.Node, name)))
    original_transmit = timed("transport", transport.Endpoint._transmit)

    def _transmit(self: Any, conn: Any, now: float) -> None:
        real = self._transport
        if real is None:
            return original_transmit(self, conn, now)

        class Timing:
            sendto = staticmethod(timed("sendto", real.sendto))

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        self._transport = Timing()
        try:
            original_transmit(self, conn, now)
        finally:
            self._transport = real

    transport.Endpoint._transmit = _transmit
    return t
