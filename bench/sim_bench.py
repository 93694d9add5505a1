"""One simulation run in a fresh process, so its peak memory and CPU time are its own.

    python bench/sim_bench.py NODES LOOKUPS SEED
prints one JSON line: run_simulation's figures plus cpu_s, peak RSS and the RSS before the run.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import rss_bytes

from dhtscope.node.sim import run_simulation


def main() -> None:
    nodes, lookups, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    base_rss = rss_bytes() or 0
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    result = run_simulation(nodes, lookups, seed=seed)
    cpu_s = time.process_time() - cpu0
    wall_s = time.perf_counter() - wall0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    result.update(
        {
            "cpu_s": round(cpu_s, 3),
            "wall_s": round(wall_s, 3),
            "peak_rss_bytes": peak,
            "base_rss_bytes": base_rss,
            "cpu_ms_per_node": round(cpu_s * 1000 / nodes, 4),
            "peak_bytes_per_node": round((peak - base_rss) / nodes, 1),
        }
    )
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
