"""The honest peer: a PING from a fresh client every interval, until stdin says stop; then its figures.

Each PING opens its own connection (as `dhtscope probe ping` does), so what it measures is
whether a newcomer gets in: the handshake (with a Retry round trip when the node asks for
one) and the PING, from the first packet to the PONG.

    python honest.py --port P [--interval 0.1] [--timeout 5]
    stdin "mark" starts a new phase; "stop" ends ->
    {"pings", "ok", "failed", "p50_ms", "p99_ms", "max_ms", "errors", "phases": [the same, per phase]}
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import math
import sys
import time

from dhtscope.node.node import Node

MAX_IN_FLIGHT = 64  # PINGs waiting at once; past this one is counted failed rather than queued


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


class Phase:
    def __init__(self) -> None:
        self.sent = 0
        self.latencies: list[float] = []
        self.errors: collections.Counter[str] = collections.Counter()

    def summary(self) -> dict[str, object]:
        lat = self.latencies
        return {
            "pings": self.sent,
            "ok": len(lat),
            "failed": self.sent - len(lat),
            "p50_ms": round(percentile(lat, 50) or 0, 2) if lat else None,
            "p99_ms": round(percentile(lat, 99) or 0, 2) if lat else None,
            "max_ms": round(max(lat), 2) if lat else None,
            "errors": dict(self.errors.most_common(3)),
        }


async def one_ping(port: int, timeout_s: float, phase: Phase) -> None:
    node = Node(client_mode=True, request_timeout_s=timeout_s)
    await node.start()
    started = time.perf_counter()
    try:
        await node.ping(("127.0.0.1", port))
        phase.latencies.append((time.perf_counter() - started) * 1000)
    except Exception as exc:
        phase.errors[str(exc)[:120]] += 1
    finally:
        await node.stop()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    loop = asyncio.get_running_loop()
    phases = [Phase()]
    command = loop.run_in_executor(None, sys.stdin.readline)
    tasks: set[asyncio.Task[None]] = set()
    print(json.dumps({"ready": True}), flush=True)
    next_at = loop.time()
    while True:
        if command.done():
            if command.result().strip() != "mark":
                break
            phases.append(Phase())
            command = loop.run_in_executor(None, sys.stdin.readline)
        phase = phases[-1]
        if len(tasks) < MAX_IN_FLIGHT:
            task = asyncio.create_task(one_ping(args.port, args.timeout, phase))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        else:
            phase.errors["too many PINGs unanswered at once"] += 1
        phase.sent += 1
        next_at += args.interval
        await asyncio.wait([command], timeout=max(0.0, next_at - loop.time()))
    if tasks:
        await asyncio.wait(tasks, timeout=args.timeout + 2)
    whole = Phase()
    for phase in phases:
        whole.sent += phase.sent
        whole.latencies += phase.latencies
        whole.errors.update(phase.errors)
    print(json.dumps({**whole.summary(), "phases": [p.summary() for p in phases]}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
