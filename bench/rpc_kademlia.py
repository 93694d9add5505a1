"""`kademlia` (bmuller, asyncio + UDP datagrams) RPC throughput, mirroring rpc_dhtscope.py.

    python bench/rpc_kademlia.py serve          prints {"ready", "host", "port", "id", "key"}
    python bench/rpc_kademlia.py load --port P --id HEX --key HEX --levels 1,16,128 --duration S

Each RPC is KademliaProtocol.call_find_value(server_node, key_node): the FIND_VALUE a
ValueSpiderCrawl sends to one peer, one UDP datagram each way, library defaults
(rpcudp's 5 s wait timeout; a timeout comes back as (False, None) and is a failure).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (
    HOST,
    CpuMeter,
    LatencyLog,
    add_load_options,
    cpu_seconds,
    emit,
    quiet_logging,
    rss_bytes,
    run_asyncio_level,
    stdin_closed,
)
from kademlia.network import Server
from kademlia.node import Node
from kademlia.utils import digest

KEY = "bench-service"


async def serve(args: argparse.Namespace) -> None:
    server = Server()
    await server.listen(0, interface=HOST)
    port = server.transport.get_extra_info("sockname")[1]
    dkey = digest(KEY)
    server.storage[dkey] = "127.0.0.1:9001"
    emit({"ready": True, "host": HOST, "port": port, "id": server.node.id.hex(), "key": dkey.hex(), "pid": os.getpid()})
    await stdin_closed()
    rss = rss_bytes()
    server.stop()
    emit({"server_done": True, "rss_bytes": rss, "cpu_s": cpu_seconds()})


async def load(args: argparse.Namespace) -> None:
    client = Server()
    await client.listen(0, interface=HOST)
    target = Node(bytes.fromhex(args.id), HOST, args.port)
    key_node = Node(bytes.fromhex(args.key))
    protocol = client.protocol

    async def one(log: LatencyLog) -> None:
        t0 = time.perf_counter()
        try:
            answered, data = await protocol.call_find_value(target, key_node)
        except Exception as exc:
            log.fail(f"{type(exc).__name__}: {exc}")
            return
        if not answered:
            log.fail("no response within rpcudp's wait timeout")
        elif isinstance(data, dict) and data.get("value"):
            log.ok(time.perf_counter() - t0)
        else:
            log.fail("answer without the value")

    async def run_level(concurrency: int, duration_s: float, max_requests: int) -> tuple[LatencyLog, float]:
        return await run_asyncio_level(one, concurrency, duration_s, max_requests)

    for concurrency in args.levels:
        await run_level(concurrency, args.warmup, args.max_requests)
        cpu0 = time.process_time()
        meter = CpuMeter(args.server_pid)
        meter.start()
        log, elapsed = await run_level(concurrency, args.duration, args.max_requests)
        meter.stop()
        emit({"level": log.summary(elapsed, concurrency, time.process_time() - cpu0, meter)})
    rss = rss_bytes()
    client.stop()
    emit({"done": True, "rss_bytes": rss})


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("serve")
    ld = sub.add_parser("load")
    ld.add_argument("--port", type=int, required=True)
    ld.add_argument("--id", required=True)
    ld.add_argument("--key", required=True)
    add_load_options(ld)
    args = parser.parse_args()
    quiet_logging()
    asyncio.run(serve(args) if args.mode == "serve" else load(args))


if __name__ == "__main__":
    main()
