"""py-libp2p kad-dht over QUIC (trio) RPC throughput, mirroring rpc_dhtscope.py. Runs in its own process.

    python bench/rpc_libp2p.py serve [--inbound-cap N]   prints {"ready", "host", "port", "id", "addr", "key"}
    python bench/rpc_libp2p.py load --addr MULTIADDR --key HEX --levels 1,16,128 --duration S

Each RPC is ValueStore._get_from_peer(server, key): the GET_VALUE that KadDHT.get_value
sends to one peer (a new QUIC stream, multistream-select, varint-prefixed protobuf,
the sender's signed peer record). It returns None on any failure (reset stream,
timeout, bad answer), which counts as a failure; each call also runs under
trio.move_on_after(QUERY_TIMEOUT), as get_value runs it. Library defaults, unless
--inbound-cap raises KadDHT's inbound stream limiter (12 by default).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import trio
from benchlib import HOST, CpuMeter, LatencyLog, add_load_options, cpu_seconds, emit, quiet_logging, rss_bytes
from libp2p import new_host
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.kad_dht.common import QUERY_TIMEOUT
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr

KEY = b"/bench/bench-service"
LISTEN = f"/ip4/{HOST}/udp/0/quic-v1"


def _host():  # type: ignore[no-untyped-def]
    listen = [Multiaddr(LISTEN)]
    return new_host(key_pair=create_new_key_pair(secrets.token_bytes(32)), listen_addrs=listen), listen


def _quic_addr(host) -> str:  # type: ignore[no-untyped-def]
    for addr in host.get_addrs():
        text = str(addr)
        if "/quic" in text and text.startswith(f"/ip4/{HOST}/"):
            return text
    return str(host.get_addrs()[0])


async def _stdin_closed() -> None:
    while True:
        line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        if not line or line.strip() == "quit":
            return


async def serve(args: argparse.Namespace) -> None:
    host, listen = _host()
    async with host.run(listen_addrs=listen):
        dht = KadDHT(host, DHTMode.SERVER)
        if args.inbound_cap:
            dht._inbound_limiter.total_tokens = args.inbound_cap
        dht.value_store.put(KEY, b"127.0.0.1:9001")
        async with background_trio_service(dht):
            addr = _quic_addr(host)
            port = int(addr.split("/udp/")[1].split("/")[0])
            emit(
                {
                    "ready": True,
                    "host": HOST,
                    "port": port,
                    "id": host.get_id().to_string(),
                    "addr": addr,
                    "key": KEY.hex(),
                    "pid": os.getpid(),
                    "inbound_cap": dht._inbound_limiter.total_tokens,
                }
            )
            await _stdin_closed()
            emit({"server_done": True, "rss_bytes": rss_bytes(), "cpu_s": cpu_seconds()})
            # The peer's shutdown paths can take long; the figures are out, so leave now.
            os._exit(0)


async def load(args: argparse.Namespace) -> None:
    host, listen = _host()
    key = bytes.fromhex(args.key)
    async with host.run(listen_addrs=listen):
        info = info_from_p2p_addr(Multiaddr(args.addr))
        host.get_peerstore().add_addrs(info.peer_id, info.addrs, 3600)
        await host.connect(info)
        dht = KadDHT(host, DHTMode.CLIENT)
        store = dht.value_store
        peer = info.peer_id

        async def one(log: LatencyLog) -> None:
            t0 = time.perf_counter()
            value = None
            try:
                with trio.move_on_after(QUERY_TIMEOUT):
                    value = await store._get_from_peer(peer, key)
            except Exception as exc:
                log.fail(f"{type(exc).__name__}: {exc}")
                return
            if value:
                log.ok(time.perf_counter() - t0)
            elif time.perf_counter() - t0 >= QUERY_TIMEOUT:
                log.fail(f"no answer within QUERY_TIMEOUT ({QUERY_TIMEOUT} s)")
            else:
                log.fail("no value (stream reset or refused; _get_from_peer returned None)")

        async def run_level(concurrency: int, duration_s: float, max_requests: int) -> tuple[LatencyLog, float]:
            log = LatencyLog()
            deadline = trio.current_time() + duration_s
            issued = 0

            async def worker() -> None:
                nonlocal issued
                while trio.current_time() < deadline and issued < max_requests:
                    issued += 1
                    await one(log)

            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(worker)
            return log, time.perf_counter() - t0

        for concurrency in args.levels:
            await run_level(concurrency, args.warmup, args.max_requests)
            cpu0 = time.process_time()
            meter = CpuMeter(args.server_pid)
            meter.start()
            log, elapsed = await run_level(concurrency, args.duration, args.max_requests)
            meter.stop()
            emit({"level": log.summary(elapsed, concurrency, time.process_time() - cpu0, meter)})
        emit({"done": True, "rss_bytes": rss_bytes()})
        os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--inbound-cap", type=int, default=0, help="raise KadDHT's inbound stream limit (default: 12)")
    ld = sub.add_parser("load")
    ld.add_argument("--addr", required=True)
    ld.add_argument("--key", required=True)
    ld.add_argument("--port", type=int, default=0)
    ld.add_argument("--id", default="")
    add_load_options(ld)
    args = parser.parse_args()
    quiet_logging()
    trio.run(serve if args.mode == "serve" else load, args)


if __name__ == "__main__":
    main()
