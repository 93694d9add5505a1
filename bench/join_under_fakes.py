"""Issue 13 item 4, measured: an honest join + advertise while fake identities claim dead ports.

N fake identities (real QUIC clients on 127.0.0.1) each PING the registry claiming a port
nothing listens on, then go away. An honest provider then joins through the registry and
advertises; a short-lived client looks the service up asking every holder. Prints one JSON
object: how many fakes the registry's table kept, and the times in seconds.

    python bench/join_under_fakes.py --fakes 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from typing import Any

from dhtscope.node.ids import NodeId
from dhtscope.node.node import Node, NodeError
from dhtscope.node.wire import Sender

SETTLE_S = 3.0  # time the registry gets to check the claimed addresses before the honest join


def dead_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


async def run(fakes: int, timeout_s: float) -> dict[str, Any]:
    registry = Node(name="registry")
    await registry.start()
    addr = ("127.0.0.1", registry.port)
    impostors = []
    for port in dead_ports(fakes):
        fake = Node()
        await fake.start()
        claim = Sender(fake.id, port)
        fake._sender = lambda claim=claim: claim  # type: ignore[method-assign]
        impostors.append(fake)
        try:
            await fake.ping(addr)
        except NodeError:  # a registry busy with dead contacts may not answer every impostor
            pass
    await asyncio.gather(*(f.stop() for f in impostors))
    await asyncio.sleep(SETTLE_S)
    fake_ids = {f.id for f in impostors}
    in_table = sum(1 for c in registry.routing.contacts() if c.node_id in fake_ids)

    out: dict[str, Any] = {"fakes": fakes, "fakes_in_registry_table": in_table, "table": len(registry.routing)}
    provider = Node(name="provider")
    await provider.start()
    started = time.monotonic()
    try:
        await asyncio.wait_for(provider.bootstrap([addr]), timeout_s)
        out["join_s"] = round(time.monotonic() - started, 2)
        await asyncio.wait_for(provider.advertise("calculator", "127.0.0.1:9001"), timeout_s)
        out["join_and_advertise_s"] = round(time.monotonic() - started, 2)
    except TimeoutError:
        out["join_and_advertise_s"] = f"> {timeout_s:g}"

    client = Node(name="probe", client_mode=True)
    await client.start()
    started = time.monotonic()
    try:
        await asyncio.wait_for(client.bootstrap([addr]), timeout_s)
        found = await asyncio.wait_for(client.find_value(NodeId.for_name("calculator"), quorum=None), timeout_s)
        out["probe_find_value_s"] = round(time.monotonic() - started, 2)
        out["providers_found"] = len(found.values)
    except TimeoutError:
        out["probe_find_value_s"] = f"> {timeout_s:g}"
    for node in (client, provider, registry):
        await node.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fakes", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on a step after this many seconds")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.fakes, args.timeout))))


if __name__ == "__main__":
    main()
