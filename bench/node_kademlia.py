"""A `kademlia` (bmuller) node process for the lookup cluster, driven by JSON commands on stdin.

Same commands as node_dhtscope.py. Library defaults: ksize=20, alpha=3, rpcudp's 5 s
wait. `store` is Server.set, `lookup` is Server.get (a ValueSpiderCrawl, which also
stores the value at the nearest node that lacked it; the runner undoes such copies
with `forget` so every lookup starts from the same state). `refresh` looks up our own
id and a random id in every bucket: kademlia's own _refresh_table only crawls buckets
untouched for an hour, which a fresh cluster has none of. Messages are every RPC the
node sent during the lookup (FIND_VALUE, FIND_NODE, STORE, PING).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import HOST, asyncio_command_loop, emit, memory_bytes, quiet_logging
from kademlia.crawling import NodeSpiderCrawl
from kademlia.network import Server
from kademlia.node import Node
from kademlia.utils import digest


async def main() -> None:
    server = Server()
    await server.listen(0, interface=HOST)
    port = server.transport.get_extra_info("sockname")[1]
    protocol = server.protocol
    sent = [0]
    for method in ("call_find_value", "call_find_node", "call_store", "call_ping"):
        original = getattr(protocol, method)

        def counted(*a: Any, _original: Any = original) -> Any:
            sent[0] += 1
            return _original(*a)

        setattr(protocol, method, counted)

    async def crawl(node_id: bytes) -> None:
        target = Node(node_id)
        nearest = protocol.router.find_neighbors(target, server.alpha)
        if nearest:
            await NodeSpiderCrawl(protocol, target, nearest, server.ksize, server.alpha).find()

    async def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["op"]
        if op == "bootstrap":
            await server.bootstrap([(h, p) for h, p in cmd["addrs"]])
            return {"contacts": sum(len(b) for b in protocol.router.buckets)}
        if op == "refresh":
            await crawl(server.node.id)
            buckets = list(protocol.router.buckets)
            await asyncio.gather(*(crawl(random.randint(*b.range).to_bytes(20, "big")) for b in buckets))
            return {"contacts": sum(len(b) for b in protocol.router.buckets), "buckets": len(buckets)}
        if op == "store":
            ok = await server.set(cmd["name"], f"{HOST}:9001")
            return {"stored": bool(ok)}
        if op == "has":
            return {"has": server.storage.get(digest(cmd["name"])) is not None}
        if op == "forget":
            dropped = server.storage.data.pop(digest(cmd["name"]), None) is not None
            return {"dropped": int(dropped)}
        if op == "lookup":
            before = sent[0]
            t0 = time.perf_counter()
            value = await server.get(cmd["name"])
            elapsed = time.perf_counter() - t0
            return {"found": value is not None, "ms": elapsed * 1000, "messages": sent[0] - before}
        if op == "stats":
            return {
                **memory_bytes(),
                "contacts": sum(len(b) for b in protocol.router.buckets),
            }
        return {"error": f"unknown op {op}"}

    emit({"ready": True, "host": HOST, "port": port, "id": server.node.id.hex(), "pid": os.getpid()})
    await asyncio_command_loop(handle)
    server.stop()


if __name__ == "__main__":
    quiet_logging()
    asyncio.run(main())
