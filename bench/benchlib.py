"""Helpers shared by the benchmark runner and the per-system driver scripts.

Everything here is stdlib-only so that every driver (asyncio or trio) can import it.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

HOST = "127.0.0.1"  # every benchmark stays on loopback

PACKAGES = (
    "dhtscope",
    "aioquic",
    "cryptography",
    "msgpack",
    "kademlia",
    "rpcudp",
    "libp2p",
    "trio",
    "plotext",
    "uvloop",
)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of unsorted values; None for an empty list."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def _proc_kib_field(path: str, field: str) -> int | None:
    """A `Field:  N kB` line of a /proc file, in bytes; None if the file or field is absent."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss_bytes(pid: int | str = "self") -> int | None:
    """Resident set size of a process from /proc (VmRSS), in bytes."""
    return _proc_kib_field(f"/proc/{pid}/status", "VmRSS:")


def pss_bytes(pid: int | str = "self") -> int | None:
    """Proportional set size: resident memory with pages shared between processes divided among them."""
    return _proc_kib_field(f"/proc/{pid}/smaps_rollup", "Pss:")


def uss_bytes(pid: int | str = "self") -> int | None:
    """Unique set size: the pages only this process maps (Private_Clean + Private_Dirty), what ending it frees."""
    clean = _proc_kib_field(f"/proc/{pid}/smaps_rollup", "Private_Clean:")
    dirty = _proc_kib_field(f"/proc/{pid}/smaps_rollup", "Private_Dirty:")
    return None if clean is None or dirty is None else clean + dirty


def memory_bytes(pid: int | str = "self") -> dict[str, int | None]:
    """RSS, PSS and USS of a process, by the keys every driver reports them under."""
    return {"rss_bytes": rss_bytes(pid), "pss_bytes": pss_bytes(pid), "uss_bytes": uss_bytes(pid)}


def cpu_seconds(pid: int | str = "self") -> float | None:
    """User + system CPU time of a process from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine_facts() -> dict[str, Any]:
    cpu_model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_total = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_total = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "mem_total_bytes": mem_total,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg": load_average(),
    }


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on the machine shows up in every figure."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def emit(obj: dict[str, Any]) -> None:
    """One JSON line on stdout for the supervising runner."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def quiet_logging() -> None:
    """The peers log every RPC at INFO or WARNING; that would cost more than the RPC."""
    import logging

    logging.basicConfig(level=logging.CRITICAL)
    logging.getLogger().setLevel(logging.CRITICAL)
    logging.disable(logging.ERROR)


class LatencyLog:
    """Successes with their latency, failures by reason: what one load level produced."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.failures = 0
        self.reasons: dict[str, int] = {}

    def ok(self, seconds: float) -> None:
        self.latencies.append(seconds)

    def fail(self, reason: str) -> None:
        self.failures += 1
        reason = reason[:120]
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def summary(
        self, elapsed_s: float, concurrency: int, cpu_s: float | None = None, cpu: CpuMeter | None = None
    ) -> dict[str, Any]:
        """The level's figures; with `cpu`, both processes' CPU from /proc and their sum per successful RPC."""
        lat = self.latencies
        n = len(lat)
        p50 = percentile(lat, 50)
        p99 = percentile(lat, 99)
        return {
            "concurrency": concurrency,
            "ok": n,
            "failures": self.failures,
            "failure_reasons": dict(sorted(self.reasons.items(), key=lambda kv: -kv[1])[:5]),
            "elapsed_s": round(elapsed_s, 3),
            "rps": round(n / elapsed_s, 1) if elapsed_s > 0 else 0.0,
            "p50_ms": round(p50 * 1000, 3) if p50 is not None else None,
            "p99_ms": round(p99 * 1000, 3) if p99 is not None else None,
            "client_cpu_s": round(cpu_s, 3) if cpu_s is not None else None,
            **(cpu.figures(n) if cpu is not None else {}),
        }


class CpuMeter:
    """User + system CPU of this (client) process and the server process over one level, from /proc.

    /proc counts in clock ticks (10 ms here); a level of a few seconds and thousands of RPCs
    makes that a fraction of a percent. The sum per successful RPC is the steady figure:
    throughput on a shared machine moves with the load, CPU per request much less.
    """

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self._start: tuple[float | None, float | None] = (None, None)
        self._stop: tuple[float | None, float | None] = (None, None)

    def _read(self) -> tuple[float | None, float | None]:
        return cpu_seconds(), cpu_seconds(self.server_pid) if self.server_pid else None

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> None:
        self._stop = self._read()

    def figures(self, ok: int) -> dict[str, Any]:
        (c0, s0), (c1, s1) = self._start, self._stop
        client = c1 - c0 if c0 is not None and c1 is not None else None
        server = s1 - s0 if s0 is not None and s1 is not None else None
        both = client + server if client is not None and server is not None else None
        return {
            "proc_client_cpu_s": round(client, 3) if client is not None else None,
            "proc_server_cpu_s": round(server, 3) if server is not None else None,
            "cpu_ms_per_rpc": round(both * 1000 / ok, 4) if both is not None and ok else None,
            "client_cpu_ms_per_rpc_proc": round(client * 1000 / ok, 4) if client is not None and ok else None,
            "server_cpu_ms_per_rpc": round(server * 1000 / ok, 4) if server is not None and ok else None,
        }


async def run_asyncio_level(
    one: Callable[[LatencyLog], Awaitable[None]],
    concurrency: int,
    duration_s: float,
    max_requests: int,
) -> tuple[LatencyLog, float]:
    """`concurrency` asyncio tasks calling `one` until the time or the request budget runs out."""
    loop = asyncio.get_running_loop()
    log = LatencyLog()
    deadline = loop.time() + duration_s
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while loop.time() < deadline and issued < max_requests:
            issued += 1
            await one(log)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return log, time.perf_counter() - t0


def parse_command(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line:
        return None
    return json.loads(line)


async def _answer(line: str, handle: Any) -> bool:
    """Answer one command line with one JSON line; False once the driver should stop."""
    if not line:
        return False  # EOF: the runner is gone
    cmd = parse_command(line)
    if cmd is None:
        return True
    if cmd.get("op") == "quit":
        return False
    try:
        reply = await handle(cmd)
    except Exception as exc:  # the runner shows it; the node keeps serving
        reply = {"error": f"{type(exc).__name__}: {exc}"}
    emit({"op": cmd.get("op"), **reply})
    return True


async def asyncio_command_loop(handle: Any) -> None:
    """Read JSON commands from stdin, one a line, and answer each with one JSON line (asyncio drivers).

    `handle(cmd)` is a coroutine returning a dict; {"op": "quit"} or EOF ends the loop.
    """
    loop = asyncio.get_running_loop()
    while await _answer(await loop.run_in_executor(None, sys.stdin.readline), handle):
        pass


async def trio_command_loop(handle: Any) -> None:
    """The same as asyncio_command_loop, for trio drivers."""
    import trio

    while await _answer(await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True), handle):
        pass


async def stdin_closed() -> None:
    """Wait until the runner closes stdin or sends "quit" (asyncio RPC servers)."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "quit":
            return


def add_load_options(parser: Any) -> None:
    """The options every RPC driver's `load` mode takes from the runner."""
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 128])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--server-pid", type=int, default=None, help="read the server's CPU from /proc per level")
