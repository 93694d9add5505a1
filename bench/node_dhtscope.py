"""A dhtscope node process for the lookup cluster, driven by JSON commands on stdin (bench only).

It runs the same Node that `dhtscope node` runs (library defaults: k=20, alpha=3,
5 s request timeout) and answers each command with one JSON line on stdout:

    {"op": "bootstrap", "addrs": [[host, port]]}   join: PING, self-lookup, refresh every bucket
    {"op": "refresh"}                               look up a random id in every bucket again
    {"op": "store", "name": S}                      advertise S (signed record at the k closest)
    {"op": "has", "name": S} / {"op": "forget", "name": S}
    {"op": "lookup", "name": S}                     discover S; time, messages, rounds
    {"op": "stats"}                                 RSS, contacts
    {"op": "quit"}
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import HOST, asyncio_command_loop, emit, memory_bytes, quiet_logging

from dhtscope.node import runtime
from dhtscope.node.ids import NodeId
from dhtscope.node.node import Node


async def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "node"
    # Experiments only (bench/lookup_experiments.py): prototypes of proposed fixes, and counters.
    counters = None
    if os.environ.get("DHTSCOPE_BENCH_PATCH"):
        from patches import apply

        apply(os.environ["DHTSCOPE_BENCH_PATCH"])
    if os.environ.get("DHTSCOPE_BENCH_COUNT"):
        from patches import install_counters

        counters = install_counters()
    timers = None
    if os.environ.get("DHTSCOPE_BENCH_TIMERS"):
        from patches import install_timers

        timers = install_timers()
    node = Node(host=HOST, port=0, name=name)
    await node.start()
    rpc = node.rpc
    assert rpc is not None

    async def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["op"]
        if op == "bootstrap":
            contacts = await node.bootstrap([(h, p) for h, p in cmd["addrs"]])
            return {"contacts": contacts}
        if op == "refresh":
            await node.find_node(node.id)
            refreshed = await node.refresh(force=True)
            return {"contacts": len(node.routing), "buckets": refreshed}
        if op == "store":
            report = await node.advertise(cmd["name"], f"{HOST}:9001")
            return {"replicas": report.replicas}
        if op == "has":
            return {"has": bool(node.store_.get(NodeId.for_name(cmd["name"]), time.time()))}
        if op == "forget":
            records = node.store_.get(NodeId.for_name(cmd["name"]), time.time())
            for record in records:
                node.store_._remove(record)
            return {"dropped": len(records)}
        if op == "lookup":
            sent = rpc.requests_sent
            dialled = len(rpc.endpoint.all)
            before = counters.as_dict() if counters else {}
            timed = timers.as_dict() if timers else {}
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            if "quorum" in cmd:
                found = await node.discover(cmd["name"], quorum=cmd["quorum"])
            else:
                found = await node.discover(cmd["name"])  # the library default (FIND_VALUE_QUORUM)
            elapsed = time.perf_counter() - t0
            cpu_ms = (time.process_time() - cpu0) * 1000
            reply = {
                "found": bool(found.records),
                "ms": elapsed * 1000,
                "cpu_ms": cpu_ms,
                "messages": rpc.requests_sent - sent,
                "rounds": found.lookup.rounds,
                "new_connections": len(rpc.endpoint.all) - dialled,
                "hop_rtt_ms": [round(h.rtt_s * 1000, 2) for h in found.lookup.hops if h.rtt_s is not None],
            }
            if timers:
                reply["parts_ms"] = {k: round((v - timed[k]) * 1000, 4) for k, v in timers.as_dict().items()}
            if counters:
                after = counters.as_dict()
                reply["datagrams_sent"] = after["datagrams_sent"] - before["datagrams_sent"]
                reply["datagrams_received"] = after["datagrams_received"] - before["datagrams_received"]
            return reply
        if op == "ping":
            rtts = []
            for _ in range(cmd.get("count", 10)):
                rtts.append(await node.ping((cmd["addr"][0], cmd["addr"][1])) * 1000)
            return {"rtt_ms": sorted(rtts)[len(rtts) // 2]}
        if op == "find_value_once":
            # One FIND_VALUE RPC to one contact, as a lookup sends it (diagnostics).
            from dhtscope.node.wire import FindValue

            t0 = time.perf_counter()
            await node._call(
                (cmd["addr"][0], cmd["addr"][1]), FindValue(rpc.next_request_id(), key=NodeId.for_name(cmd["name"]))
            )
            return {"rtt_ms": (time.perf_counter() - t0) * 1000}
        if op == "profile_lookups":
            # Diagnostics only: cProfile around repeated lookups, stats written where asked.
            import cProfile

            # CPU time, not wall time, when asked: a process waiting for its peers costs nothing.
            profiler = cProfile.Profile(time.process_time) if cmd.get("cpu_timer") else cProfile.Profile()
            times = []
            profiler.enable()
            for _ in range(cmd.get("count", 20)):
                t0 = time.perf_counter()
                await node.discover(cmd["name"])
                times.append((time.perf_counter() - t0) * 1000)
            profiler.disable()
            profiler.dump_stats(cmd["path"])
            return {"ms": sorted(times)[len(times) // 2]}
        if op == "stats":
            return {
                **memory_bytes(),
                "contacts": len(node.routing),
                "connections": len(rpc.endpoint.all),
            }
        return {"error": f"unknown op {op}"}

    emit({"ready": True, "host": HOST, "port": node.port, "id": node.id.hex(), "pid": os.getpid()})
    await asyncio_command_loop(handle)
    await node.stop()


if __name__ == "__main__":
    quiet_logging()
    runtime.run(main())  # the loop `dhtscope node` runs on
