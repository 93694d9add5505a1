"""A fault scenario played in-process over real QUIC: registry (with the fault), two providers, a client.

Each node records qlog into `<root>/rec` and, with `capture=True`, writes its own capture and
key log into `<root>/cap/<name>.pcapng` and `.keys`, as `dhtscope cluster --pcap` does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from dhtscope.node.node import Node, NodeError
from dhtscope.node.recording import NodeRecorder
from dhtscope.node.scenarios import STREAM_LIMIT_SCENARIO_STREAMS, Faults

NAMES = ("registry", "provider1", "provider2", "client")
TIMEOUT_S = 0.5
STREAM_LIMIT_PINGS = STREAM_LIMIT_SCENARIO_STREAMS + 12  # more requests than the registry grants streams


@dataclass
class Played:
    """Where a played scenario left its recording and captures, and who was at which address."""

    recording: Path
    captures: Path
    addresses: dict[str, str]  # "127.0.0.1:port" -> node name

    def capture(self, name: str) -> Path:
        return self.captures / f"{name}.pcapng"

    def keys(self, name: str) -> Path:
        return self.captures / f"{name}.keys"


async def play(root: Path, scenario: str, *, timeout_s: float = TIMEOUT_S, capture: bool = True) -> Played:
    """Run `scenario` to its end: bootstrap, advertise, (PING bursts for stream-limit), discover."""
    rec_dir, cap_dir = root / "rec", root / "cap"
    cap_dir.mkdir(parents=True, exist_ok=True)
    nodes = [
        Node(
            name=n,
            role=n.rstrip("12"),
            request_timeout_s=timeout_s,
            faults=Faults.for_scenario(scenario) if n == "registry" else None,
            recorder=NodeRecorder(rec_dir, n, "", n.rstrip("12")),
            pcap=str(cap_dir / f"{n}.pcapng") if capture else None,
            keylog=str(cap_dir / f"{n}.keys") if capture else None,
        )
        for n in NAMES
    ]
    for node in nodes:
        await node.start()
        node.recorder.set_address(node.address)
    registry, *others = nodes
    try:
        for node in others:
            try:
                await node.bootstrap([("127.0.0.1", registry.port)])
            except NodeError:
                pass  # the fault may make joining impossible: that is what is recorded
        for i, provider in enumerate(others[:2], start=1):
            try:
                await provider.advertise("calculator", f"127.0.0.1:{9000 + i}")
            except NodeError:
                pass
        client = others[-1]
        for _ in range(STREAM_LIMIT_PINGS if scenario == "stream-limit" else 0):
            try:
                await client.ping(("127.0.0.1", registry.port))
            except NodeError:
                break
        try:
            await client.discover("calculator")
        except NodeError:
            pass
        await asyncio.sleep(1.2)  # let the traces show what did not happen
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))
    return Played(rec_dir, cap_dir, {n.address: n.name for n in nodes})
