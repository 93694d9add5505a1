"""Lookup benchmark: a cluster of node processes per system on 127.0.0.1, built and measured the same way.

1. Start N node processes (node_<system>.py), each a real node on its own UDP port.
2. Build: every node but the first bootstraps through the first (8 at a time), then every
   node refreshes its table again (8 at a time), so early joiners learn late ones.
3. A random node stores one value (dhtscope: advertise; kademlia: set; py-libp2p: put_value).
4. The nodes holding a copy are noted. L lookups follow, each from a random other node that
   holds no copy; copies that a lookup leaves behind (kademlia and py-libp2p cache the value
   on the way) are dropped after each lookup, so every lookup starts from the same state.
5. Resident memory of every node process (VmRSS), then all processes are stopped.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from benchlib import percentile
from procs import BenchError, Proc, call_all

SYSTEMS = {
    "dhtscope": "node_dhtscope.py",
    "kademlia": "node_kademlia.py",
    "libp2p": "node_libp2p.py",
}

BATCH = 8


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in results if r.get("found")]
    times = [r["ms"] for r in ok if "ms" in r]
    messages = [r["messages"] for r in results if "messages" in r]
    return {
        "lookups": len(results),
        "success_rate": len(ok) / len(results) if results else 0.0,
        "median_ms": round(statistics.median(times), 3) if times else None,
        "p95_ms": round(percentile(times, 95), 3) if times else None,
        "median_messages": statistics.median(messages) if messages else None,
    }


NAME = "bench-service"


def _bootstrap_address(system: str, ready: dict[str, Any]) -> Any:
    if system == "libp2p":
        return ready["addr"]
    return [ready["host"], ready["port"]]


def run_cluster(
    system: str,
    nodes: int = 32,
    lookups: int = 50,
    seed: int = 1,
    step_timeout_s: float = 180.0,
    log: Any = print,
    keep_lookups: bool = False,
    measure_budget_s: float | None = None,
) -> dict[str, Any]:
    """Build the cluster, run the lookups, return the figures; `measure_budget_s` bounds the lookups' time."""
    rng = random.Random(f"{seed}:{system}")
    procs: list[Proc] = []
    t_start = time.monotonic()
    try:
        for i in range(nodes):
            procs.append(Proc(SYSTEMS[system], f"{system}-{i}", name=f"{system}-{i}"))
        readies = [p.next(step_timeout_s) for p in procs]
        t_ready = time.monotonic()
        log(f"  {system}: {nodes} processes up in {t_ready - t_start:.1f} s")
        boot = _bootstrap_address(system, readies[0])
        rest = procs[1:]
        joined = call_all(rest, lambda i: {"op": "bootstrap", "addrs": [boot]}, step_timeout_s, BATCH)
        errors = [r["error"] for r in joined if "error" in r]
        refreshed = call_all(procs, lambda i: {"op": "refresh"}, step_timeout_s, BATCH)
        errors += [r["error"] for r in refreshed if "error" in r]
        t_built = time.monotonic()
        contacts = [r.get("contacts", 0) for r in refreshed]
        log(
            f"  {system}: built in {t_built - t_ready:.1f} s; contacts per node median "
            f"{statistics.median(contacts)} min {min(contacts)}"
        )

        storer = rng.randrange(nodes)
        stored = procs[storer].call({"op": "store", "name": NAME}, step_timeout_s)
        if "error" in stored:
            raise BenchError(f"store failed: {stored['error']}")
        has = call_all(procs, lambda i: {"op": "has", "name": NAME}, 30.0)
        holders = {i for i, r in enumerate(has) if r.get("has")}
        candidates = [i for i in range(nodes) if i not in holders and i != storer]
        log(
            f"  {system}: node {storer} stored; {len(holders)} nodes hold a copy, "
            f"{len(candidates)} other nodes hold none"
        )
        if not candidates:
            raise BenchError("every node holds a copy after the store; no lookup can start without one")
        non_holders = [procs[i] for i in range(nodes) if i not in holders]

        budget_hit = False

        def measure(extra: dict[str, Any]) -> list[dict[str, Any]]:
            nonlocal budget_hit
            replies = []
            deadline = time.monotonic() + measure_budget_s if measure_budget_s else None
            for _ in range(lookups):
                if deadline is not None and time.monotonic() > deadline and replies:
                    budget_hit = True
                    log(f"  {system}: stopped after {len(replies)} lookups ({measure_budget_s:g} s budget)")
                    break
                origin = rng.choice(candidates)
                reply = procs[origin].call({"op": "lookup", "name": NAME, **extra}, step_timeout_s)
                reply["origin"] = origin
                replies.append(reply)
                call_all(non_holders, lambda i: {"op": "forget", "name": NAME}, 30.0)
            return replies

        results = measure({})
        t_measured = time.monotonic()
        # dhtscope waits for 3 record holders by default; kademlia returns at the first value.
        # A second, labelled set with quorum 1 shows what that default costs (not used for targets).
        quorum1 = _summary(measure({"quorum": 1})) if system == "dhtscope" else None

        stats = call_all(procs, lambda i: {"op": "stats"}, 30.0)
        rss = [r["rss_bytes"] for r in stats if r.get("rss_bytes")]
        pss = [r["pss_bytes"] for r in stats if r.get("pss_bytes")]
        uss = [r["uss_bytes"] for r in stats if r.get("uss_bytes")]
        done = len(results)
        ok = [r for r in results if r.get("found")]
        times = [r["ms"] for r in results if "ms" in r and r.get("found")]
        messages = [r["messages"] for r in results if "messages" in r]
        out = {
            "system": system,
            "nodes": nodes,
            "lookups": done,
            "lookups_planned": lookups,
            "budget_hit": budget_hit,
            "holders": len(holders),
            "origins_without_copy": len(candidates),
            "success_rate": len(ok) / done if done else 0.0,
            "failures": done - len(ok),
            "errors": sorted({r["error"] for r in results if "error" in r} | set(errors))[:5],
            "median_ms": round(statistics.median(times), 3) if times else None,
            "p95_ms": round(percentile(times, 95), 3) if times else None,
            "median_messages": statistics.median(messages) if messages else None,
            "mean_messages": round(statistics.fmean(messages), 2) if messages else None,
            "median_rounds": statistics.median([r["rounds"] for r in results if "rounds" in r])
            if any("rounds" in r for r in results)
            else None,
            "rss_median_mib": round(statistics.median(rss) / 2**20, 1) if rss else None,
            "pss_median_mib": round(statistics.median(pss) / 2**20, 1) if pss else None,
            "uss_median_mib": round(statistics.median(uss) / 2**20, 1) if uss else None,
            "rss_max_mib": round(max(rss) / 2**20, 1) if rss else None,
            "contacts_median": statistics.median(contacts),
            "new_connections": sum(r.get("new_connections", 0) for r in results)
            if any("new_connections" in r for r in results)
            else None,
            "lookup_cpu_median_ms": round(statistics.median(cpu), 3)
            if (cpu := [r["cpu_ms"] for r in results if "cpu_ms" in r])
            else None,
            "hop_rtt_median_ms": statistics.median(hops)
            if (hops := [x for r in results for x in r.get("hop_rtt_ms", [])])
            else None,
            "start_s": round(t_ready - t_start, 1),
            "build_s": round(t_built - t_ready, 1),
            "measure_s": round(t_measured - t_built, 1),
        }
        if quorum1 is not None:
            out["quorum1"] = quorum1
        if keep_lookups:
            out["lookup_replies"] = results
        return out
    finally:
        for p in procs:
            p.send({"op": "quit"})
        for p in procs:
            p.stop(grace_s=3.0)
