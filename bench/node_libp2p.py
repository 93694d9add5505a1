"""A py-libp2p kad-dht node over QUIC (trio) for the lookup cluster, driven by JSON commands on stdin.

Same commands as node_dhtscope.py; `bootstrap` takes multiaddrs ({"addrs": ["/ip4/.../p2p/..."]}).
Library defaults (DHTMode.SERVER, ALPHA=10, k=20, QUERY_TIMEOUT=10 s, the DHT service's
own maintenance loop running). `bootstrap` connects to the bootstrap peer, adds it to the
routing table and runs KadDHT.refresh_routing_table (self-lookup plus a random id in
every non-empty bucket); `refresh` runs that again. `store` is KadDHT.put_value, `lookup`
is KadDHT.get_value (which stores the value locally and at peers among the closest that
lacked it; the runner undoes such copies with `forget`). Messages are the streams the
node opened during the lookup (one RPC per stream).
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import trio
from benchlib import HOST, emit, memory_bytes, quiet_logging, trio_command_loop
from libp2p import new_host
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.records.validator import Validator
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr

NAMESPACE = "bench"


class AcceptAll(Validator):
    """The bench's values are plain endpoints; as in py-libp2p's own example validator."""

    def validate(self, key: str, value: bytes) -> None:
        if not value:
            raise ValueError("empty value")

    def select(self, key: str, values: list[bytes]) -> int:
        return 0


def _key(name: str) -> str:
    return f"/{NAMESPACE}/{name}"


async def main() -> None:
    listen = [Multiaddr(f"/ip4/{HOST}/udp/0/quic-v1")]
    host = new_host(key_pair=create_new_key_pair(secrets.token_bytes(32)), listen_addrs=listen)
    opened = [0]
    original_new_stream = host.new_stream

    async def counted_new_stream(*a: Any, **kw: Any) -> Any:
        opened[0] += 1
        return await original_new_stream(*a, **kw)

    host.new_stream = counted_new_stream  # type: ignore[method-assign]
    async with host.run(listen_addrs=listen):
        dht = KadDHT(host, DHTMode.SERVER)
        dht.register_validator(NAMESPACE, AcceptAll())
        async with background_trio_service(dht):
            addr = next((str(a) for a in host.get_addrs() if "/quic" in str(a)), str(host.get_addrs()[0]))

            async def handle(cmd: dict[str, Any]) -> dict[str, Any]:
                op = cmd["op"]
                if op == "bootstrap":
                    for text in cmd["addrs"]:
                        info = info_from_p2p_addr(Multiaddr(text))
                        host.get_peerstore().add_addrs(info.peer_id, info.addrs, 3600)
                        await host.connect(info)
                        await dht.routing_table.add_peer(info.peer_id)
                    await dht.refresh_routing_table()
                    return {"contacts": dht.get_routing_table_size()}
                if op == "refresh":
                    await dht.refresh_routing_table()
                    return {"contacts": dht.get_routing_table_size()}
                if op == "store":
                    await dht.put_value(_key(cmd["name"]), f"{HOST}:9001".encode())
                    return {"stored": True}
                if op == "has":
                    return {"has": dht.value_store.get(_key(cmd["name"]).encode()) is not None}
                if op == "forget":
                    return {"dropped": int(dht.value_store.remove(_key(cmd["name"]).encode()))}
                if op == "lookup":
                    before = opened[0]
                    t0 = time.perf_counter()
                    value = await dht.get_value(_key(cmd["name"]))
                    elapsed = time.perf_counter() - t0
                    return {"found": value is not None, "ms": elapsed * 1000, "messages": opened[0] - before}
                if op == "stats":
                    return {
                        **memory_bytes(),
                        "contacts": dht.get_routing_table_size(),
                    }
                return {"error": f"unknown op {op}"}

            emit({"ready": True, "host": HOST, "addr": addr, "id": host.get_id().to_string(), "pid": os.getpid()})
            await trio_command_loop(handle)
            # py-libp2p's shutdown can take seconds per node; the figures are out already.
            os._exit(0)


if __name__ == "__main__":
    quiet_logging()
    trio.run(main)
