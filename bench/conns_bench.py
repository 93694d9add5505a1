"""Connections benchmark: what one dhtscope node pays per idle connection, and how it holds thousands.

One server process (a dhtscope node, its admission and memory limits raised through the
node's own settings: AdmissionLimits and MemoryLimits, never the constants) and a few client
processes, each a client-mode node holding its share of the connections, every one its own
QUIC connection with its own handshake. The runner:

1. reads the server's RSS, PSS and USS at rest;
2. ramps the connections up level by level (clients open theirs a few dozen at a time, so
   handshakes never pile up past what the machine does), reading the server's memory and each
   client's own after every level: per connection = growth over the rest figure / connections;
3. at the last level holds them for a while, every connection sending a PING once per period
   (each connection pings from the moment it opens, at a random phase, so none idles out),
   and reads the server's CPU from /proc once a second; the PINGs answered in that window
   give p50 and p99.

    python bench/conns_bench.py [--levels 500,2000] [--clients 4] [--hold 20] [--json]

Modes `serve` and `client` are the child processes (JSON commands on stdin, one line each).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (
    HOST,
    asyncio_command_loop,
    cpu_seconds,
    emit,
    load_average,
    memory_bytes,
    percentile,
    quiet_logging,
)

PING_PERIOD_S = 15.0  # each connection PINGs this often: well inside QUIC's 60 s idle timeout
PING_TIMEOUT_S = 10.0  # a PING not answered by then counts as failed
OPEN_CONCURRENCY = 24  # handshakes one client process keeps in flight while ramping
HANDSHAKE_WAIT_S = 30.0  # a client waits this long for one handshake during a ramp (the machine is busy)
SETTLE_S = 2.0  # after a ramp, before memory is read: handshakes' last packets and ACKs are done


def _set_receive_buffer(node: Any, size: int) -> int | None:
    """The node's UDP socket receive buffer as the kernel granted it: the node's own, or `size` (an experiment)."""
    import socket

    if not size:
        return node.rpc.endpoint.receive_buffer_bytes  # type: ignore[no-any-return]
    sock = node.rpc.endpoint._transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    granted: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return granted


def _limits(connections: int) -> tuple[Any, Any]:
    """The node's own settings raised for `connections`: every admission and memory limit that would refuse them."""
    from dhtscope.node.admission import AdmissionLimits
    from dhtscope.node.rpc import MemoryLimits

    room = connections + 1024
    admission = AdmissionLimits(
        max_connections=room,
        max_half_open=room,
        retry_above_half_open=room,  # no Retry round trip: every handshake here is a real client
        half_open_per_address=room,
        per_address=room,  # loopback is exempt already; raised anyway, so the figure never rests on that
        per_subnet=room,
        handshake_timeout_s=HANDSHAKE_WAIT_S,
        refusals_per_s=1000.0,
    )
    memory = MemoryLimits(node_budget_bytes=room * 128 * 1024)
    return admission, memory


# -- child processes ---------------------------------------------------------------------------


class GcPauses:
    """The collector's pauses in this process since the last `take()`: with thousands of
    connections a full collection walks millions of objects while no datagram is read."""

    def __init__(self) -> None:
        self._pauses: list[tuple[int, float]] = []
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._pauses.append((info["generation"], time.perf_counter() - self._started))

    def take(self) -> dict[str, Any]:
        seen, self._pauses = self._pauses, []
        return {
            "gc_pause_max_ms": round(max((p for _, p in seen), default=0.0) * 1000, 1),
            "gc_full_collections": sum(1 for g, _ in seen if g == 2),
        }


async def serve(connections: int, receive_buffer: int = 0) -> None:
    """The server: a full dhtscope node (not client mode) that answers what its clients send."""
    from dhtscope.node.node import Node

    admission, memory = _limits(connections)
    node = Node(host=HOST, port=0, name="conns-server", admission_limits=admission, memory_limits=memory)
    await node.start()
    granted = _set_receive_buffer(node, receive_buffer)
    rpc = node.rpc
    assert rpc is not None

    pauses = GcPauses()

    async def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        if cmd["op"] == "stats":
            seen = pauses.take()
            gc.collect()  # garbage from the handshakes is not what a connection holds
            pauses.take()
            return {
                **seen,
                **memory_bytes(),
                "connections": len(rpc.endpoint.all),
                "requests_received": rpc.requests_received,
                "counters": {k: v for k, v in rpc.endpoint.admission.counters.items() if v},
            }
        return {"error": f"unknown op {cmd['op']}"}

    emit({"ready": True, "port": node.port, "pid": os.getpid(), "receive_buffer_bytes": granted})
    await asyncio_command_loop(handle)
    await node.stop()


async def client(port: int, connections: int, receive_buffer: int = 0) -> None:
    """A client-mode node holding many connections to the server, each PINGing once per period."""
    from dhtscope.node.node import Node
    from dhtscope.node.wire import Ping

    admission, memory = _limits(connections)
    node = Node(
        host=HOST, port=0, name="conns-client", client_mode=True, admission_limits=admission, memory_limits=memory
    )
    await node.start()
    _set_receive_buffer(node, receive_buffer)
    rpc = node.rpc
    assert rpc is not None
    addr = (HOST, port)
    held: list[Any] = []
    tasks: list[asyncio.Task[None]] = []
    recording = False
    latencies: list[float] = []
    counts = {"ok": 0, "failed": 0, "failed_while_holding": 0, "open_failed": 0}
    reasons: dict[str, int] = {}
    pauses = GcPauses()  # a client's own pauses delay its PINGs' answers too

    async def pinger(conn: Any) -> None:
        await asyncio.sleep(random.uniform(0, PING_PERIOD_S))
        while True:
            t0 = time.perf_counter()
            held_from_start = recording  # the hold's figures count the PINGs sent while holding
            try:
                await rpc.request(conn, Ping(rpc.next_request_id()), PING_TIMEOUT_S)
                counts["ok"] += 1
                if held_from_start and recording:
                    latencies.append((time.perf_counter() - t0) * 1000)
            except Exception as exc:  # counted, the connection keeps trying
                counts["failed"] += 1
                counts["failed_while_holding"] += held_from_start
                reason = f"{type(exc).__name__}: {exc}"[:100]
                reasons[reason] = reasons.get(reason, 0) + 1
            await asyncio.sleep(max(0.0, PING_PERIOD_S - (time.perf_counter() - t0)))

    async def open_one() -> None:
        try:
            conn = await rpc.endpoint.connect(addr, HANDSHAKE_WAIT_S)
        except Exception as exc:
            counts["open_failed"] += 1
            reason = f"open: {type(exc).__name__}: {exc}"[:100]
            reasons[reason] = reasons.get(reason, 0) + 1
            return
        held.append(conn)
        tasks.append(asyncio.create_task(pinger(conn)))

    async def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        nonlocal recording
        op = cmd["op"]
        if op == "open":
            t0 = time.perf_counter()
            want = cmd["count"]
            gate = asyncio.Semaphore(OPEN_CONCURRENCY)

            async def gated() -> None:
                async with gate:
                    await open_one()

            await asyncio.gather(*(gated() for _ in range(want)))
            return {"held": len(held), "open_s": round(time.perf_counter() - t0, 2), **counts}
        if op == "stats":
            gc.collect()
            open_now = sum(1 for c in held if c.is_open)
            return {**memory_bytes(), "held": len(held), "open": open_now, **counts}
        if op == "hold_start":
            latencies.clear()
            pauses.take()
            recording = True
            return {"recording": True}
        if op == "hold_stop":
            recording = False
            top = dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:5])
            # Diagnostics: each connection's probe timeout now (aioquic's, without backoff): a
            # request or answer that needs a probe to be delivered waits about this long.
            ptos = sorted(c.quic._loss.get_probe_timeout() * 1000 for c in held if c.quic is not None)
            return {
                "latencies_ms": [round(x, 3) for x in latencies],
                **counts,
                "reasons": top,
                **pauses.take(),
                "pto_ms": [round(ptos[len(ptos) // 2], 1), round(ptos[-1], 1)] if ptos else None,
            }
        return {"error": f"unknown op {op}"}

    emit({"ready": True, "pid": os.getpid(), **memory_bytes()})
    await asyncio_command_loop(handle)
    for task in tasks:
        task.cancel()
    await node.stop()


# -- the runner ----------------------------------------------------------------------------------


def udp_receive_errors() -> int | None:
    """Datagrams this machine dropped because a UDP socket's receive buffer was full (all sockets)."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, IndexError, ValueError):
        return None


def _delta(after: int | None, before: int | None) -> int | None:
    return after - before if after is not None and before is not None else None


def _mib(b: int | None) -> float | None:
    return round(b / 2**20, 1) if b is not None else None


def _per_conn_kib(after: int | None, before: int | None, n: int) -> float | None:
    if after is None or before is None or n <= 0:
        return None
    return round((after - before) / n / 1024, 1)


def run(levels: list[int], clients: int, hold_s: float, log: Any = print, receive_buffer: int = 0) -> dict[str, Any]:
    """Ramp one server to each level of connections (split over `clients` processes), hold the last one."""
    from procs import BenchError, Proc, call_all

    top = max(levels)
    extra = ("--receive-buffer", str(receive_buffer)) if receive_buffer else ()
    server = Proc("conns_bench.py", "serve", "--connections", str(top), *extra, name="conns server")
    procs: list[Proc] = []
    try:
        ready = server.next(60.0)
        pid = ready["pid"]
        share = -(-top // clients)
        procs = [
            Proc(
                "conns_bench.py",
                "client",
                "--port",
                str(ready["port"]),
                "--connections",
                str(share),
                *extra,
                name=f"client {i}",
            )
            for i in range(clients)
        ]
        client_rest = [p.next(60.0) for p in procs]
        # Read at rest once the clients run: they map the same libraries, which turns the server's
        # file pages from private to shared; read before they start, USS would fall as connections open.
        time.sleep(SETTLE_S)
        rest = server.call({"op": "stats"}, 30.0)
        log(
            f"  server at rest: RSS {_mib(rest['rss_bytes'])} MiB, PSS {_mib(rest['pss_bytes'])} MiB, "
            f"USS {_mib(rest['uss_bytes'])} MiB"
        )
        out: dict[str, Any] = {
            "clients": clients,
            "ping_period_s": PING_PERIOD_S,
            "receive_buffer_bytes": ready.get("receive_buffer_bytes"),
            "server_rest": {k: rest[k] for k in ("rss_bytes", "pss_bytes", "uss_bytes")},
            "levels": [],
        }
        held = 0
        for n in sorted(levels):
            t0 = time.monotonic()
            cpu0 = cpu_seconds(pid)
            drops0 = udp_receive_errors()
            shares = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]
            before = [s["held"] for s in call_all(procs, lambda i: {"op": "stats"}, 60.0)] if held else [0] * clients
            counts = [want - had for want, had in zip(shares, before, strict=True)]
            opened = call_all(procs, lambda i, counts=counts: {"op": "open", "count": counts[i]}, 600.0)
            ramp_s = time.monotonic() - t0
            ramp_cpu = (cpu_seconds(pid) or 0) - (cpu0 or 0)
            time.sleep(SETTLE_S)
            stats = server.call({"op": "stats"}, 60.0)
            cstats = call_all(procs, lambda i: {"op": "stats"}, 60.0)
            held = stats["connections"]
            per_client = [
                _per_conn_kib(c.get("uss_bytes"), r.get("uss_bytes"), c["held"])
                for c, r in zip(cstats, client_rest, strict=True)
            ]
            new = n - (out["levels"][-1]["connections_asked"] if out["levels"] else 0)
            level = {
                "connections_asked": n,
                "connections": held,
                "open_failed": sum(o.get("open_failed", 0) for o in opened),
                "udp_receive_buffer_drops": _delta(udp_receive_errors(), drops0),
                "ramp_s": round(ramp_s, 1),
                "server_cpu_ms_per_handshake": round(ramp_cpu * 1000 / new, 2) if new > 0 else None,
                "loadavg": load_average(),
                **{k: stats[k] for k in ("rss_bytes", "pss_bytes", "uss_bytes")},
                "rss_kib_per_conn": _per_conn_kib(stats["rss_bytes"], rest["rss_bytes"], held),
                "pss_kib_per_conn": _per_conn_kib(stats["pss_bytes"], rest["pss_bytes"], held),
                "uss_kib_per_conn": _per_conn_kib(stats["uss_bytes"], rest["uss_bytes"], held),
                "client_uss_kib_per_conn": round(statistics.fmean(x for x in per_client if x is not None), 1)
                if any(x is not None for x in per_client)
                else None,
                "server_counters": stats.get("counters", {}),
            }
            if out["levels"]:
                prev = out["levels"][-1]
                grown = held - prev["connections"]
                level["uss_kib_per_conn_marginal"] = _per_conn_kib(stats["uss_bytes"], prev["uss_bytes"], grown)
            out["levels"].append(level)
            log(
                f"  {held:,} connections ({level['open_failed']} failed to open) in {ramp_s:.0f} s: "
                f"RSS {_mib(stats['rss_bytes'])} MiB, USS {_mib(stats['uss_bytes'])} MiB; per connection "
                f"RSS {level['rss_kib_per_conn']} KiB, PSS {level['pss_kib_per_conn']} KiB, "
                f"USS {level['uss_kib_per_conn']} KiB (client end USS {level['client_uss_kib_per_conn']} KiB); "
                f"UDP receive-buffer drops {level['udp_receive_buffer_drops']}; load {level['loadavg']}"
            )
        # Hold the last level: CPU once a second, every PING's round trip.
        server.call({"op": "stats"}, 60.0)  # the collector's pauses count from here
        call_all(procs, lambda i: {"op": "hold_start"}, 30.0)
        drops0 = udp_receive_errors()
        samples: list[float] = []
        last = cpu_seconds(pid)
        t_last = time.monotonic()
        end = t_last + hold_s
        while time.monotonic() < end:
            time.sleep(1.0)
            now_cpu, now = cpu_seconds(pid), time.monotonic()
            if now_cpu is not None and last is not None:
                samples.append((now_cpu - last) / (now - t_last) * 100)
            last, t_last = now_cpu, now
        stopped = call_all(procs, lambda i: {"op": "hold_stop"}, 60.0)
        stats = server.call({"op": "stats"}, 60.0)
        lat = [x for s in stopped for x in s["latencies_ms"]]
        failed = sum(s["failed_while_holding"] for s in stopped)
        reasons: dict[str, int] = {}
        for s in stopped:
            for k, v in s.get("reasons", {}).items():
                reasons[k] = reasons.get(k, 0) + v
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        out["hold"] = {
            "connections": stats["connections"],
            "seconds": hold_s,
            "pings_ok": len(lat),
            "pings_failed": failed,
            "failures_all_phases": sum(s["failed"] for s in stopped),
            "failure_reasons": reasons,
            "udp_receive_buffer_drops": _delta(udp_receive_errors(), drops0),
            "gc_pause_max_ms": stats.get("gc_pause_max_ms"),
            "gc_full_collections": stats.get("gc_full_collections"),
            "client_gc_pause_max_ms": max((s.get("gc_pause_max_ms") or 0.0 for s in stopped), default=None),
            "client_gc_full_collections": sum(s.get("gc_full_collections") or 0 for s in stopped),
            "client_pto_ms": [s.get("pto_ms") for s in stopped],  # per client: median and largest
            "ping_p50_ms": p50,
            "ping_p99_ms": p99,
            "ping_max_ms": max(lat) if lat else None,
            "cpu_percent_mean": round(statistics.fmean(samples), 1) if samples else None,
            "cpu_percent_max": round(max(samples), 1) if samples else None,
            "cpu_percent_samples": [round(x, 1) for x in samples],
            **{k: stats[k] for k in ("rss_bytes", "pss_bytes", "uss_bytes")},
            "loadavg": load_average(),
        }
        h = out["hold"]
        log(
            f"  held {h['connections']:,} for {hold_s:g} s: {h['pings_ok']} PINGs answered, {failed} failed, "
            f"p50 {p50} ms, p99 {p99} ms; server CPU {h['cpu_percent_mean']}% (max {h['cpu_percent_max']}%), "
            f"RSS {_mib(h['rss_bytes'])} MiB, USS {_mib(h['uss_bytes'])} MiB; UDP receive-buffer drops "
            f"{h['udp_receive_buffer_drops']}; longest GC pause {h['gc_pause_max_ms']} ms "
            f"({h['gc_full_collections']} full collections), clients' {h['client_gc_pause_max_ms']} ms "
            f"({h['client_gc_full_collections']} full); load {h['loadavg']}"
        )
        if reasons:
            log("  failures: " + "; ".join(f"{k} x{v}" for k, v in reasons.items()))
        return out
    except BenchError:
        raise
    finally:
        for p in procs:
            p.send({"op": "quit"})
        for p in procs:
            p.stop(grace_s=10.0)
        server.send({"op": "quit"})
        server.stop(grace_s=10.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    s = sub.add_parser("serve")
    s.add_argument("--connections", type=int, required=True)
    s.add_argument("--receive-buffer", type=int, default=0)
    c = sub.add_parser("client")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--connections", type=int, required=True)
    c.add_argument("--receive-buffer", type=int, default=0)
    parser.add_argument("--levels", type=lambda v: [int(x) for x in v.split(",")], default=[500, 2000])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--hold", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--receive-buffer", type=int, default=0, help="experiment: SO_RCVBUF bytes for every process's UDP socket"
    )
    args = parser.parse_args()
    from dhtscope.node import runtime

    if args.mode == "serve":
        quiet_logging()
        runtime.run(serve(args.connections, args.receive_buffer))
        return 0
    if args.mode == "client":
        quiet_logging()
        runtime.run(client(args.port, args.connections, args.receive_buffer))
        return 0
    result = run(
        args.levels,
        args.clients,
        args.hold,
        log=(lambda _: None) if args.json else print,
        receive_buffer=args.receive_buffer,
    )
    if args.json:
        import json

        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
