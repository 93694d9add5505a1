"""Measure the prototypes in bench/patches.py against dhtscope as it is (not part of `make bench`).

    python bench/experiments.py [--duration 3] [--repeats 2] [--sets "none;credit;ack;credit,ack"]

Each set runs the RPC benchmark of run.py, one process pair per concurrency level, with
the patches applied in both processes and counters on (datagrams, transmit passes,
timer fires, stream-credit waits). Sets alternate within each repeat so drift on a
shared machine hits them alike; throughput on a machine other sessions also use is
noisy, the counts per RPC much less so. Results: bench/results/experiments.json,
shown in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import machine_facts
from run import LEVELS, RESULTS, _fmt_level, log, rpc_run

DEFAULT_SETS = "none;asyncio;dgram1350"  # asyncio: DHTSCOPE_LOOP=asyncio instead of uvloop


def _per_rpc(run: dict[str, Any]) -> dict[str, float]:
    n = run.get("server_requests") or 0
    if not n:
        return {}
    c, s = run.get("client_counters", {}), run.get("server_counters", {})
    return {
        "datagrams_per_rpc": (c.get("datagrams_sent", 0) + s.get("datagrams_sent", 0)) / n,
        "transmit_passes_per_rpc": (c.get("transmit_passes", 0) + s.get("transmit_passes", 0)) / n,
        "timer_fires_per_rpc": (c.get("timer_fires", 0) + s.get("timer_fires", 0)) / n,
        "credit_waits_per_rpc": c.get("credit_waits", 0) / n,
        "credit_wait_ms_per_rpc": c.get("credit_wait_s", 0.0) * 1000 / n,
    }


@contextlib.contextmanager
def loop_env(loop: str | None) -> Iterator[None]:
    """DHTSCOPE_LOOP for the driver processes started inside (they inherit the environment)."""
    from dhtscope.node.runtime import LOOP_ENV

    saved = os.environ.get(LOOP_ENV)
    if loop is not None:
        os.environ[LOOP_ENV] = loop
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(LOOP_ENV, None)
        else:
            os.environ[LOOP_ENV] = saved


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument("--record", action="store_true", help="record both nodes (recording-cost experiments)")
    parser.add_argument("--out", default="experiments.json", help="file name under bench/results/")
    parser.add_argument("--sets", default=DEFAULT_SETS, help="';'-separated patch sets; 'none' is dhtscope as is")
    args = parser.parse_args()
    sets = [s.strip() for s in args.sets.split(";") if s.strip()]
    levels = [int(x) for x in args.levels.split(",")]
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {s: {c: [] for c in levels} for s in sets}
    t0 = time.monotonic()
    for rep in range(args.repeats):
        for c in levels:
            for name in sets:
                parts = name.split(",")
                patches = [p for p in parts if p not in ("none", "asyncio")]
                extra: tuple[str, ...] = ("--count",)
                if args.record:
                    import shutil

                    from run import TMP

                    rec = os.path.join(TMP, "experiment-recording")
                    shutil.rmtree(rec, ignore_errors=True)
                    extra += ("--record", rec)
                if patches:
                    extra += ("--patch", ",".join(patches))
                with loop_env("asyncio" if "asyncio" in parts else None):
                    result = rpc_run(
                        "dhtscope", args.duration, args.warmup, levels=(c,), serve_args=extra, load_args=extra
                    )
                level = result["levels"][0]
                level.update({k: round(v, 3) for k, v in _per_rpc(result).items()})
                level["server_cpu_s"] = result.get("server_cpu_s")
                log(
                    f"{name:28s} (repeat {rep + 1}) "
                    + _fmt_level(level)
                    + f"  datagrams/RPC {level.get('datagrams_per_rpc')}"
                    + f"  credit waits/RPC {level.get('credit_waits_per_rpc')}"
                )
                runs[name][c].append(level)
    summary = []
    for name in sets:
        row: dict[str, Any] = {"set": name}
        for c in levels:
            lv = runs[name][c]
            row[f"c{c}"] = {
                key: round(statistics.fmean(x[key] for x in lv if x.get(key) is not None), 3)
                for key in (
                    "rps",
                    "p50_ms",
                    "p99_ms",
                    "datagrams_per_rpc",
                    "transmit_passes_per_rpc",
                    "timer_fires_per_rpc",
                    "credit_waits_per_rpc",
                    "credit_wait_ms_per_rpc",
                )
                if any(x.get(key) is not None for x in lv)
            }
            row[f"c{c}"]["client_cpu_ms_per_rpc"] = round(
                statistics.fmean(x["client_cpu_s"] * 1000 / x["ok"] for x in lv if x["ok"]), 3
            )
            row[f"c{c}"]["failures"] = sum(x["failures"] for x in lv)
        summary.append(row)
    doc = {
        "section": "experiments",
        "machine": machine_facts(),
        "elapsed_s": round(time.monotonic() - t0, 1),
        "duration_s": args.duration,
        "repeats": args.repeats,
        "levels": levels,
        "record": args.record,
        "summary": summary,
    }
    with open(os.path.join(RESULTS, args.out), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    for row in summary:
        print(row["set"])
        for c in levels:
            print(f"   c={c:<4}", "  ".join(f"{k} {v}" for k, v in row[f"c{c}"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
