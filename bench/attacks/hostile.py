"""The attacks of issue 13, one per invocation, against a node at 127.0.0.1:PORT.

    python hostile.py ATTACK --port P [--size N] [--seconds S] [--control ...]

Protocol with the runner (JSON lines): the attack sets up (records to fill, identities to
mint) and prints {"phase": "ready"}; on "go" it attacks, printing {"phase": "attacking"}
once the hostile load is in place; it ends with {"phase": "done", ...figures}. The restart
attack also prints {"phase": "kill"} and waits for "restarted" while the runner kills the
node with SIGKILL and starts it again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from dhtscope.node.constants import ALPN, MAX_VALUE_BYTES
from dhtscope.node.ids import NodeId
from dhtscope.node.keys import Identity
from dhtscope.node.node import Node
from dhtscope.node.records import Record
from dhtscope.node.transport import Conn, Endpoint
from dhtscope.node.wire import FRAME_HEADER_BYTES, FindValue, Ping, Sender, Store, StoreResult, Value, encode

HOST = "127.0.0.1"


def say(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


async def wait_for_line(expected: str) -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == expected:
            return


class Quiet:
    """A connection owner that reads nothing it is sent: a silent or stubborn peer."""

    def __init__(self) -> None:
        self.answers: dict[int, bytearray] = {}

    def connection_ready(self, conn: Conn) -> None:
        pass

    def stream_data(self, conn: Conn, stream_id: int, data: bytes, fin: bool) -> None:
        self.answers.setdefault(stream_id, bytearray()).extend(data)

    def stream_reset(self, conn: Conn, stream_id: int, error_code: int) -> None:
        pass

    def stop_sending(self, conn: Conn, stream_id: int, error_code: int) -> None:
        pass

    def connection_lost(self, conn: Conn) -> None:
        pass


async def endpoints(count: int, identity: Callable[[], Identity] = Identity.generate) -> list[Endpoint]:
    out = []
    for _ in range(count):
        ep = Endpoint(identity(), Quiet(), idle_timeout_s=120.0)
        await ep.listen(HOST, 0)
        out.append(ep)
    return out


async def connect_many(eps: list[Endpoint], port: int, count: int, parallel: int = 32) -> list[Conn]:
    sem = asyncio.Semaphore(parallel)
    conns: list[Conn] = []

    async def one(i: int) -> None:
        async with sem:
            try:
                conns.append(await eps[i % len(eps)].connect((HOST, port), timeout_s=10.0))
            except Exception:
                pass

    await asyncio.gather(*(one(i) for i in range(count)))
    return conns


async def client(port: int, timeout_s: float = 5.0) -> Node:
    node = Node(client_mode=True, request_timeout_s=timeout_s)
    await node.start()
    return node


def record(identity: Identity, name: str, value: bytes, ttl_s: float = 300.0, key: NodeId | None = None) -> Record:
    key = key or NodeId.for_name(name)
    return Record.create(identity, key, value, time.time_ns() // 1000, ttl_s, time.time(), name or None)


async def store(node: Node, port: int, records: list[Record]) -> list[tuple[bool, str]]:
    assert node.rpc is not None
    response, _, _ = await node._call((HOST, port), Store(node.rpc.next_request_id(), records=tuple(records)))
    assert isinstance(response, StoreResult)
    return list(response.results)


async def records_at(node: Node, port: int, name: str) -> list[Record]:
    """What the node at `port` itself holds under `name` (one FIND_VALUE to it, no lookup)."""
    assert node.rpc is not None
    response, _, _ = await node._call((HOST, port), FindValue(node.rpc.next_request_id(), key=NodeId.for_name(name)))
    assert isinstance(response, Value)
    return list(response.records)


# -- 1. handshake flood ----------------------------------------------------------------------------


def initials(count: int, port: int) -> list[bytes]:
    out = []
    for _ in range(count):
        conn = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=[ALPN]))
        conn.connect((HOST, port), now=0.0)
        out.append(conn.datagrams_to_send(now=0.0)[0][0])
    return out


FLOOD_INITIALS_PER_S = 200  # a burst's pace: any faster and the old node's socket buffer dropped part of it unread


async def handshake_flood(args: argparse.Namespace) -> dict[str, Any]:
    """`size` Initials (1,200 bytes each, never answered) in about 5 s, again every `period` s, `bursts` times."""
    bursts = [initials(args.size, args.port) for _ in range(args.bursts)]
    say({"phase": "ready"})
    await wait_for_line("go")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sent_bytes = 0
    started = time.monotonic()
    for i, burst in enumerate(bursts):
        for n, data in enumerate(burst):
            try:
                sock.sendto(data, (HOST, args.port))
            except BlockingIOError:
                await asyncio.sleep(0.001)
                sock.sendto(data, (HOST, args.port))
            sent_bytes += len(data)
            if n % 10 == 9:
                await asyncio.sleep(10 / FLOOD_INITIALS_PER_S)
        if i == 0:
            say({"phase": "attacking"})
        next_at = started + (i + 1) * args.period
        await asyncio.sleep(max(0.0, next_at - time.monotonic()) if i + 1 < len(bursts) else args.tail)
    replies = 0
    while True:
        try:
            sock.recv(65536)
            replies += 1
        except BlockingIOError:
            break
    sock.close()
    return {"sent_bytes": sent_bytes, "replies": replies, "detail": f"{args.bursts} burst(s) {args.period:g} s apart"}


# -- 2. completed, silent connections --------------------------------------------------------------


async def silent_connections(args: argparse.Namespace) -> dict[str, Any]:
    eps = await endpoints(max(1, args.size // 100))
    say({"phase": "ready"})
    await wait_for_line("go")
    say({"phase": "attacking"})
    conns = await connect_many(eps, args.port, args.size)
    say({"phase": "holding"})
    await asyncio.sleep(args.seconds)
    open_now = sum(1 for c in conns if c.is_open)
    for ep in eps:
        await ep.close(grace_s=0.1)
    return {
        "connected": len(conns),
        "open_at_end": open_now,
        "detail": f"{len(conns)} completed, {open_now} open at end",
    }


# -- 3. slowloris ----------------------------------------------------------------------------------


async def slowloris(args: argparse.Namespace) -> dict[str, Any]:
    """`size` connections x 512 streams, each a request declaring 256 KiB that arrives 4 KiB, then 64 B a second."""
    streams = 512
    eps = await endpoints(max(1, args.size // 8))
    say({"phase": "ready"})
    await wait_for_line("go")
    conns = await connect_many(eps, args.port, args.size)
    opened: list[tuple[Conn, int]] = []
    declared = (256 * 1024).to_bytes(FRAME_HEADER_BYTES, "big")
    for conn in conns:
        for _ in range(streams):
            if not conn.has_stream_credit():
                break
            opened.append((conn, conn.start_stream(declared + b"\x00" * 4096, fin=False)))
        await asyncio.sleep(0)
    say({"phase": "attacking"})
    deadline = time.monotonic() + args.seconds
    holding_at = time.monotonic() + 2.0  # once the first trickle went out
    while time.monotonic() < deadline:
        for conn, sid in opened:
            if conn.is_open:
                conn.send(sid, b"\x00" * 64, fin=False)
        if holding_at and time.monotonic() >= holding_at:
            say({"phase": "holding"})
            holding_at = 0.0
        await asyncio.sleep(1.0)
    for ep in eps:
        await ep.close(grace_s=0.1)
    return {"streams": len(opened), "detail": f"{len(conns)} connections, {len(opened)} unfinished requests"}


# -- 4. answers never read -------------------------------------------------------------------------


async def fill_key(port: int, name: str, count: int = 64) -> int:
    """`count` providers with ~1 KB endpoints under `name`: a FIND_VALUE answer of about 80 KB."""
    node = await client(port)
    try:
        records = [
            record(
                Identity.generate(),
                name,
                f"https://10.0.{i // 250}.{i % 250}:9000/".encode().ljust(MAX_VALUE_BYTES, b"x"),
            )
            for i in range(count)
        ]
        results = await store(node, port, records)
        return sum(ok for ok, _ in results)
    finally:
        await node.stop()


async def unread_answers(args: argparse.Namespace) -> dict[str, Any]:
    """`size` connections, each asking 512 FIND_VALUEs of an 80 KB answer and never reading or acknowledging one."""
    stored = await fill_key(args.port, "bulk")
    eps = await endpoints(args.size)
    conns = await connect_many(eps, args.port, args.size)
    say({"phase": "ready", "stored": stored})
    await wait_for_line("go")
    key = NodeId.for_name("bulk")
    sent = 0
    for ep, conn in zip(eps, conns, strict=False):
        ep.datagram_received = lambda data, addr: None  # type: ignore[method-assign]  # reads nothing from now on
        for i in range(512):
            if not conn.has_stream_credit():
                break
            conn.start_stream(encode(FindValue(i, key=key)), fin=True)
            sent += 1
    say({"phase": "attacking"})
    await asyncio.sleep(3.0)
    say({"phase": "holding"})  # the node has answered (or refused) every request by now
    await asyncio.sleep(args.seconds)
    for ep in eps:
        await ep.close(grace_s=0.1)
    return {"requests": sent, "detail": f"{len(conns)} connections x 512 FIND_VALUE of {stored} records, never read"}


# -- 5. routing-table poisoning from one address ---------------------------------------------------


async def poison(port: int, count: int) -> tuple[int, list[socket.socket]]:
    """`count` fresh identities from 127.0.0.1, each PINGing with a claimed port that swallows every packet.

    The claimed ports are UDP sockets nobody reads: a dial there gets no answer and no ICMP
    error, so it waits out its whole connect timeout, as a dead host on a network would.
    """
    holes = []
    for _ in range(count):
        hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        hole.bind((HOST, 0))
        holes.append(hole)
    eps = await endpoints(count)
    conns = await connect_many(eps, port, count)
    for ep, conn, hole in zip(eps, conns, holes, strict=False):
        conn.start_stream(encode(Ping(1), Sender(ep.identity.node_id, hole.getsockname()[1])), fin=True)
    await asyncio.sleep(1.0)
    for ep in eps:
        await ep.close(grace_s=0.1)
    return len(conns), holes


async def routing_poisoning(args: argparse.Namespace) -> dict[str, Any]:
    say({"phase": "ready"})
    await wait_for_line("go")
    fakes, holes = await poison(args.port, args.size)
    say({"phase": "attacking"})
    started = time.monotonic()
    provider = Node(request_timeout_s=5.0)
    await provider.start()
    found_honest = False
    try:
        await asyncio.wait_for(provider.bootstrap([(HOST, args.port)]), 120)
        report = await asyncio.wait_for(provider.advertise("calculator", "127.0.0.1:9001"), 120)
        join_s = time.monotonic() - started
        probe = await client(args.port)
        t0 = time.monotonic()
        try:
            await probe.bootstrap([(HOST, args.port)])
            found = await asyncio.wait_for(probe.discover("calculator", quorum=None), 60)
            found_honest = any(r.publisher == provider.id for r in found.records)
            lookup = f"find-value in {(time.monotonic() - t0) * 1000:.0f} ms, {len(found.records)} record(s)"
        except Exception as exc:
            lookup = f"find-value failed after {time.monotonic() - t0:.1f} s: {str(exc)[:60]}"
        finally:
            await probe.stop()
    except Exception as exc:
        return {"fakes": fakes, "records_lost": 1, "detail": f"honest join + advertise failed: {str(exc)[:80]}"}
    finally:
        await provider.stop()
        for hole in holes:
            hole.close()
    return {
        "fakes": fakes,
        "join_s": round(join_s, 2),
        "records_lost": 0 if found_honest else 1,  # the honest provider's record, not found
        "detail": f"honest join + advertise {join_s * 1000:.0f} ms (stored on {report.replicas}); {lookup}",
    }


# -- 6. service squatting --------------------------------------------------------------------------


async def service_squatting(args: argparse.Namespace) -> dict[str, Any]:
    squatters = [
        record(Identity.generate(), "calculator", f"10.66.0.{i}:6666".encode(), ttl_s=3600.0) for i in range(args.size)
    ]
    say({"phase": "ready"})
    await wait_for_line("go")
    accepted = 0
    for squat in squatters:  # each identity on its own connection, as fresh peers would come
        one = await client(args.port)
        try:
            accepted += sum(ok for ok, _ in await store(one, args.port, [squat]))
        finally:
            await one.stop()
    node = await client(args.port)
    try:
        say({"phase": "attacking"})
        honest = Identity.generate()
        outcome = await store(node, args.port, [record(honest, "calculator", b"127.0.0.1:9001")])
        held = await records_at(node, args.port, "calculator")
    finally:
        await node.stop()
    found = any(r.publisher == honest.node_id for r in held)
    verdict = "stored" if outcome[0][0] else "refused: " + outcome[0][1][:50]
    detail = (
        f"{accepted}/{args.size} squatting records accepted; honest provider {verdict}, "
        f"{'in' if found else 'NOT in'} the answer ({len(held)} records)"
    )
    # The honest provider's record, refused or crowded out of the answer, counts as lost.
    return {"squatters_accepted": accepted, "records_lost": 0 if found else 1, "detail": detail}


# -- 7. store filling ------------------------------------------------------------------------------


async def store_filling(args: argparse.Namespace) -> dict[str, Any]:
    """`size` valid records from one connection, 64 per STORE, 8 STOREs in flight, for at most `seconds`."""
    honest = [(Identity.generate(), f"service-{i}") for i in range(3)]
    publishers = [Identity.generate() for _ in range(args.size // 250 + 1)]
    batches: list[list[Record]] = []
    batch: list[Record] = []
    for i in range(args.size):
        batch.append(record(publishers[i // 250], "", b"10.9.9.9:9999", key=NodeId.random()))
        if len(batch) == 64:
            batches.append(batch)
            batch = []
    if batch:
        batches.append(batch)
    node = await client(args.port, timeout_s=10.0)
    for identity, name in honest:
        await store(node, args.port, [record(identity, name, b"127.0.0.1:9001")])
    say({"phase": "ready"})
    await wait_for_line("go")
    say({"phase": "attacking"})
    accepted = refused = 0
    deadline = time.monotonic() + args.seconds
    queue = list(batches)

    async def worker() -> None:
        nonlocal accepted, refused
        while queue and time.monotonic() < deadline:
            mine = queue.pop()
            try:
                results = await store(node, args.port, mine)
            except Exception:
                refused += len(mine)
                continue
            accepted += sum(ok for ok, _ in results)
            refused += sum(not ok for ok, _ in results)

    await asyncio.gather(*(worker() for _ in range(8)))
    elapsed = time.monotonic() - deadline + args.seconds
    lost = 0
    for identity, name in honest:
        if not any(r.publisher == identity.node_id for r in await records_at(node, args.port, name)):
            lost += 1
    late = Identity.generate()
    newcomer = await store(node, args.port, [record(late, "service-late", b"127.0.0.1:9002")])
    await node.stop()
    detail = (
        f"{accepted:,} accepted, {refused:,} refused in {elapsed:.0f} s; "
        f"a new honest record afterwards {'stored' if newcomer[0][0] else 'refused: ' + newcomer[0][1][:50]}"
    )
    # Honest records stored before the attack and gone after it, and a new one the full store refused.
    return {"accepted": accepted, "records_lost": lost + (0 if newcomer[0][0] else 1), "detail": detail}


# -- 8. control slots and 9. deep JSON -------------------------------------------------------------


async def control_exhaustion(args: argparse.Namespace) -> dict[str, Any]:
    """`size` idle TCP sockets on the control port, reopened as they are closed; the rightful client every second."""
    from dhtscope.node.control import ControlClient

    host, port = args.control.rsplit(":", 1)
    idle: list[asyncio.StreamWriter] = []
    say({"phase": "ready"})
    await wait_for_line("go")

    async def hold() -> None:
        while True:
            for writer in list(idle):
                if writer.is_closing() or writer.transport.is_closing():
                    idle.remove(writer)
            while len(idle) < args.size:
                try:
                    _, writer = await asyncio.open_connection(host, int(port))
                    idle.append(writer)
                except OSError:
                    break
            await asyncio.sleep(0.05)

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0.5)
    say({"phase": "attacking"})
    ok, latencies, errors = 0, [], []
    rounds = int(args.seconds)
    for _ in range(rounds):
        t0 = time.perf_counter()
        try:
            spec = f"tcp:{args.control}" if args.fingerprint else f"tcp+plain:{args.control}"
            pins = [args.fingerprint] if args.fingerprint else None
            c = await ControlClient.connect(spec, args.token, timeout_s=5.0, fingerprints=pins)
            await c.request("snapshot")
            await c.close()
            ok += 1
            latencies.append((time.perf_counter() - t0) * 1000)
        except Exception as exc:
            errors.append(str(exc)[:80])
        await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - t0)))
    holder.cancel()
    for writer in idle:
        writer.close()
    worst = f", slowest {max(latencies):.0f} ms" if latencies else ""
    return {
        "defended": ok == rounds,
        "rightful_ok": ok,
        "rounds": rounds,
        "detail": f"rightful client in {ok}/{rounds}{worst}; {args.size} idle sockets held"
        + (f"; {errors[0]}" if errors else ""),
    }


async def deep_json(args: argparse.Namespace) -> dict[str, Any]:
    say({"phase": "ready"})
    await wait_for_line("go")
    reader, writer = await asyncio.open_unix_connection(args.control)
    say({"phase": "attacking"})
    writer.write(b"[" * 30_000 + b"]" * 30_000 + b"\n")
    line = await asyncio.wait_for(reader.readline(), 10)
    if not line:
        await asyncio.sleep(args.seconds)
        return {"defended": False, "detail": "no answer: the node closed the control connection"}
    reply = json.loads(line)
    writer.write(b'{"id": 2, "op": "snapshot"}\n')
    after = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    await asyncio.sleep(args.seconds)
    served = "served" if after and json.loads(after).get("ok") else "not served"
    return {
        "defended": served == "served",
        "detail": f"answered {reply.get('error', reply)!s:.60}; next request {served}",
    }


# -- 10. records across a SIGKILL restart ----------------------------------------------------------


async def restart(args: argparse.Namespace) -> dict[str, Any]:
    providers = []
    for i in range(3):
        node = Node(request_timeout_s=5.0)
        await node.start()
        await node.bootstrap([(HOST, args.port)])
        await node.advertise("calculator", f"127.0.0.1:{9001 + i}")
        providers.append(node)
    probe = await client(args.port)
    before = len(await records_at(probe, args.port, "calculator"))
    await probe.stop()
    say({"phase": "ready", "before": before})
    await wait_for_line("go")
    say({"phase": "attacking"})
    await asyncio.sleep(1.5)  # what was just stored has had time to reach the disk
    say({"phase": "kill"})
    await wait_for_line("restarted")
    say({"phase": "holding"})  # the PINGs from here on reach the restarted node
    probe = await client(args.port)
    try:
        after = len(await records_at(probe, args.port, "calculator"))
    except Exception:
        after = 0
    await probe.stop()
    for node in providers:
        await node.stop()
    return {
        "records_lost": max(0, before - after),
        "detail": f"{before} provider records before SIGKILL, {after} right after restart",
    }


async def baseline(args: argparse.Namespace) -> dict[str, Any]:
    """No attack: what the honest peer measures on this machine, now, for comparison."""
    say({"phase": "ready"})
    await wait_for_line("go")
    say({"phase": "attacking"})
    await asyncio.sleep(args.seconds)
    return {"detail": "no attack: the honest PINGs on an idle node, with whatever else the machine runs"}


ATTACKS = {
    "baseline": baseline,
    "handshake_flood": handshake_flood,
    "silent_connections": silent_connections,
    "slowloris": slowloris,
    "unread_answers": unread_answers,
    "routing_poisoning": routing_poisoning,
    "service_squatting": service_squatting,
    "store_filling": store_filling,
    "control_exhaustion": control_exhaustion,
    "deep_json": deep_json,
    "restart": restart,
}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("attack", choices=sorted(ATTACKS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--bursts", type=int, default=1)
    parser.add_argument("--period", type=float, default=60.0)
    parser.add_argument("--tail", type=float, default=5.0)
    parser.add_argument("--control", default=None)
    parser.add_argument("--token", default=None)
    parser.add_argument("--fingerprint", default=None)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    try:
        result = await ATTACKS[args.attack](args)
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    say({"phase": "done", **result})
    os._exit(0)  # leftover sockets and timers of hundreds of clients: nothing to wait for


if __name__ == "__main__":
    asyncio.run(main())
