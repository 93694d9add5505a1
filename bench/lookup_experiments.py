"""The dhtscope lookup cluster with prototypes of proposed fixes (not part of `make bench`).

    python bench/lookup_experiments.py [--sets "none;asyncio;dgram1350"] [--lookups 50] [--timers]

Same cluster and lookups as lookup_bench.py, with bench/patches.py prototypes applied in
every node process and datagrams counted at the looking-up node (sent and received while
its lookup ran). With --timers the requester also splits each lookup's time into the parts
of bench/patches.py's Timers (wall time inside each part, nested parts excluded), and the
mean per lookup of each part is reported. Results: bench/results/lookup_experiments.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import machine_facts
from experiments import loop_env
from lookup_bench import run_cluster
from run import RESULTS, log


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--sets",
        default="none;asyncio;dgram1350",
        help="';'-separated patch sets; 'asyncio': DHTSCOPE_LOOP=asyncio; 'none' is dhtscope as is",
    )
    parser.add_argument("--lookups", type=int, default=50)
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--timers", action="store_true", help="split the requester's time per lookup into parts")
    args = parser.parse_args()
    if args.timers:
        os.environ["DHTSCOPE_BENCH_TIMERS"] = "1"
    out = []
    t0 = time.monotonic()
    for name in [s.strip() for s in args.sets.split(";") if s.strip()]:
        os.environ["DHTSCOPE_BENCH_COUNT"] = "1"
        parts = name.split(",")
        os.environ["DHTSCOPE_BENCH_PATCH"] = ",".join(p for p in parts if p not in ("none", "asyncio"))
        log(f"lookup experiment: {name}")
        with loop_env("asyncio" if "asyncio" in parts else None):
            result = run_cluster("dhtscope", args.nodes, args.lookups, log=log, keep_lookups=True)
        lookups = result.pop("lookup_replies")
        result["set"] = name if all(r["set"] != name for r in out) else f"{name} (again)"
        for key in ("datagrams_sent", "datagrams_received"):
            values = [r[key] for r in lookups if key in r]
            result[f"{key}_per_lookup"] = statistics.fmean(values) if values else None
        parts = [r["parts_ms"] for r in lookups if "parts_ms" in r]
        if parts:
            result["parts_ms_per_lookup"] = {k: round(statistics.fmean(p[k] for p in parts), 3) for k in parts[0]}
            inside = sum(result["parts_ms_per_lookup"].values())
            log(
                f"  time per lookup inside the timed parts: {inside:.2f} ms of {result['median_ms']} ms median: "
                + ", ".join(
                    f"{k} {v:.2f}" for k, v in sorted(result["parts_ms_per_lookup"].items(), key=lambda kv: -kv[1])
                )
            )
        log(
            f"  median {result['median_ms']} ms  p95 {result['p95_ms']} ms  messages {result['median_messages']}  "
            f"datagrams per lookup at the requester: sent {result['datagrams_sent_per_lookup']:.1f}, "
            f"received {result['datagrams_received_per_lookup']:.1f}; hop RTT median "
            f"{result['hop_rtt_median_ms']} ms; requester CPU per lookup {result['lookup_cpu_median_ms']} ms"
        )
        out.append(result)
    doc = {
        "section": "lookup_experiments",
        "machine": machine_facts(),
        "elapsed_s": round(time.monotonic() - t0, 1),
        "results": out,
    }
    with open(os.path.join(RESULTS, "lookup_experiments.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
