"""dhtscope RPC throughput: one node serves a stored record, another sends single FIND_VALUE RPCs to it.

    python bench/rpc_dhtscope.py serve [--record DIR]
        prints {"ready": ..., "host", "port", "id", "key"}; runs until stdin closes.
    python bench/rpc_dhtscope.py load --port P --id HEX --key HEX --levels 1,16,128 --duration S
        prints one JSON line per concurrency level, then {"done": true}.

Each RPC is Node._call(contact, FindValue): the request a lookup sends to one contact,
with the sender field, routing-table update and response check a real lookup pays for,
over the pooled QUIC connection, one bidirectional stream per request.
"""

from __future__ import annotations

import argparse
import cProfile
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

from dhtscope.node import runtime
from dhtscope.node.ids import Contact, NodeId
from dhtscope.node.node import Node
from dhtscope.node.wire import FindValue, Value

SERVICE = "bench-service"
COUNTERS: list = []  # filled by --count (bench/patches.py)
TIMERS: list = []  # filled by --timers (bench/patches.py)


def _counts() -> dict:
    out = {"counters": COUNTERS[0].as_dict()} if COUNTERS else {}
    if TIMERS:
        out["parts_s"] = TIMERS[0].as_dict()
    return out


def _writer_cpu(node: Node) -> float | None:
    """CPU seconds of the node's recording writer process so far (None when not recording)."""
    pid = getattr(node.recorder, "writer_pid", None)  # None: not recording, or a tree without a writer process
    return cpu_seconds(pid) if pid is not None else None


async def _started_node(record_dir: str | None, name: str, role: str) -> Node:
    """A started node on 127.0.0.1, recording into `record_dir` when given."""
    from dhtscope.node.keys import Identity

    identity = Identity.generate()
    recorder = None
    if record_dir:
        from dhtscope.node.recording import NodeRecorder

        recorder = NodeRecorder(record_dir, name, identity.node_id.hex(), role)
    node = Node(identity, HOST, 0, name=name, role=role, recorder=recorder)
    await node.start()
    if recorder is not None:
        recorder.set_address(node.address)
    return node


async def serve(args: argparse.Namespace) -> None:
    node = await _started_node(args.record, "server", "registry")
    key = NodeId.for_name(SERVICE)
    now = time.time()
    record = node.advertisements.add(key, b"127.0.0.1:9001", SERVICE, now)
    outcome = node.store_.put(record, now, from_peer=node.id)
    assert outcome.accepted, outcome.reason
    emit({"ready": True, "host": HOST, "port": node.port, "id": node.id.hex(), "key": key.hex(), "pid": os.getpid()})
    await stdin_closed()
    rss = rss_bytes()
    writer_cpu = _writer_cpu(node)
    await node.stop()
    emit(
        {
            "server_done": True,
            "rss_bytes": rss,
            "cpu_s": cpu_seconds(),
            "writer_cpu_s": writer_cpu,
            "requests_handled": node.stats.requests_handled,
            **_counts(),
        }
    )


async def load(args: argparse.Namespace) -> None:
    node = await _started_node(args.record, "client", "client")
    target = Contact(NodeId.from_hex(args.id), HOST, args.port)
    key = NodeId.from_hex(args.key)
    assert node.rpc is not None
    rpc = node.rpc

    async def one(log: LatencyLog) -> None:
        t0 = time.perf_counter()
        try:
            response, _, _ = await node._call(target, FindValue(rpc.next_request_id(), key=key))
        except Exception as exc:  # every failure is counted, whatever it is
            log.fail(f"{type(exc).__name__}: {exc}")
            return
        if isinstance(response, Value) and response.records:
            log.ok(time.perf_counter() - t0)
        else:
            log.fail(f"answer without the record: {response.TYPE.name}")

    async def run_level(concurrency: int, duration_s: float, max_requests: int) -> tuple[LatencyLog, float]:
        return await run_asyncio_level(one, concurrency, duration_s, max_requests)

    profiler = cProfile.Profile() if args.profile else None
    for concurrency in args.levels:
        await run_level(concurrency, args.warmup, args.max_requests)
        cpu0 = time.process_time()
        meter = CpuMeter(args.server_pid)
        meter.start()
        writer0 = _writer_cpu(node)
        if profiler is not None:
            profiler.enable()
        parts0 = TIMERS[0].as_dict() if TIMERS else {}
        log, elapsed = await run_level(concurrency, args.duration, args.max_requests)
        if profiler is not None:
            profiler.disable()
        meter.stop()
        summary = log.summary(elapsed, concurrency, time.process_time() - cpu0, meter)
        if TIMERS and summary["ok"]:
            summary["client_parts_us_per_rpc"] = {
                k: round((v - parts0[k]) * 1e6 / summary["ok"], 1) for k, v in TIMERS[0].as_dict().items()
            }
        writer1 = _writer_cpu(node)
        if writer0 is not None and writer1 is not None:
            summary["client_writer_cpu_s"] = round(writer1 - writer0, 3)
        emit({"level": summary})
    if profiler is not None:
        profiler.dump_stats(args.profile)
    rss = rss_bytes()
    await node.stop()
    emit({"done": True, "rss_bytes": rss, **_counts()})


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--record", default=None)
    s.add_argument("--profile", default=None, help="write a cProfile of the whole server run here")
    s.add_argument("--patch", default=None, help="comma list of bench/patches.py prototypes to apply")
    s.add_argument("--count", action="store_true", help="count datagrams, timer fires and credit waits")
    ld = sub.add_parser("load")
    ld.add_argument("--port", type=int, required=True)
    ld.add_argument("--id", required=True)
    ld.add_argument("--key", required=True)
    add_load_options(ld)
    ld.add_argument("--record", default=None)
    ld.add_argument("--profile", default=None, help="write a cProfile of the measured levels here")
    ld.add_argument("--patch", default=None, help="comma list of bench/patches.py prototypes to apply")
    ld.add_argument("--count", action="store_true", help="count datagrams, timer fires and credit waits")
    for p in (s, ld):
        p.add_argument("--timers", action="store_true", help="time the parts of the request path (diagnostics)")
    args = parser.parse_args()
    quiet_logging()
    if args.patch:
        from patches import apply

        apply(args.patch)
    if args.count:
        from patches import install_counters

        COUNTERS.append(install_counters())
    if args.timers:
        from patches import install_timers

        TIMERS.append(install_timers())
    if args.mode == "serve" and args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            runtime.run(serve(args))
        finally:
            profiler.disable()
            profiler.dump_stats(args.profile)
        return
    # The loop `dhtscope node` runs on (uvloop where installed; DHTSCOPE_LOOP=asyncio for asyncio's).
    runtime.run(serve(args) if args.mode == "serve" else load(args))


if __name__ == "__main__":
    main()
