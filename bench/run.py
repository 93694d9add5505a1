"""The benchmark runner: `make bench` (quick) or `make bench FULL=1`.

Runs dhtscope and its two Python peers side by side on 127.0.0.1, writes
bench/results/<section>.json (with machine facts) and regenerates BENCHMARKS.md.

    python bench/run.py                 quick mode (under 10 minutes on 2 cores)
    python bench/run.py --full          longer runs, 100,000-node simulation
    python bench/run.py --only rpc,sim  some sections; BENCHMARKS.md is rebuilt from all results on disk
    python bench/run.py --report-only   rebuild BENCHMARKS.md from bench/results/*.json

The attack suite (bench/attacks/, about 7 minutes) runs with --full or --only attacks;
`make attacks` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
RESULTS = os.path.join(BENCH_DIR, "results")
TMP = os.path.join(RESULTS, "tmp")
sys.path.insert(0, BENCH_DIR)

from benchlib import load_average, machine_facts  # noqa: E402
from procs import BenchError, Proc  # noqa: E402

SECTIONS = ("rpc", "recording", "lookup", "conns", "sim", "tui", "capture", "accuracy", "attacks")
# The attacks would double a quick run: they run with --full or --only attacks.
QUICK_SECTIONS = tuple(s for s in SECTIONS if s != "attacks")
LEVELS = (1, 16, 128)
LIBP2P_RAISED_CAP = 4096


def log(text: str) -> None:
    print(text, flush=True)


# -- RPC throughput ----------------------------------------------------------------------------


def rpc_run(
    system: str,
    duration_s: float,
    warmup_s: float,
    levels: tuple[int, ...] = LEVELS,
    serve_args: tuple[str, ...] = (),
    load_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One server process and one client process of `system`; the client's figures per concurrency."""
    script = f"rpc_{system}.py"
    server = Proc(script, "serve", *serve_args, name=f"{system} server")
    client: Proc | None = None
    try:
        ready = server.next(120.0)
        target = (
            ["--addr", ready["addr"]] if system == "libp2p" else ["--port", str(ready["port"]), "--id", ready["id"]]
        )
        client = Proc(
            script,
            "load",
            *target,
            "--key",
            ready["key"],
            "--levels",
            ",".join(map(str, levels)),
            "--duration",
            str(duration_s),
            "--warmup",
            str(warmup_s),
            *(["--server-pid", str(ready["pid"])] if ready.get("pid") else []),
            *load_args,
            name=f"{system} client",
        )
        out: dict[str, Any] = {"levels": []}
        per_level_timeout = warmup_s + duration_s + 60.0
        while True:
            msg = client.next(per_level_timeout + 60.0)
            if "level" in msg:
                out["levels"].append(msg["level"])
            if msg.get("done"):
                out["client_rss_mib"] = round(msg["rss_bytes"] / 2**20, 1) if msg.get("rss_bytes") else None
                if "counters" in msg:
                    out["client_counters"] = msg["counters"]
                break
        server.close_stdin()
        try:
            done = server.next(30.0)
            out["server_rss_mib"] = round(done["rss_bytes"] / 2**20, 1) if done.get("rss_bytes") else None
            out["server_cpu_s"] = done.get("cpu_s")
            if done.get("writer_cpu_s") is not None:
                out["server_writer_cpu_s"] = done["writer_cpu_s"]
            if "counters" in done:
                out["server_counters"] = done["counters"]
                out["server_requests"] = sum((done.get("requests_handled") or {}).values())
        except BenchError:
            pass
        return out
    finally:
        if client is not None:
            client.stop()
        server.stop()


def _fmt_level(level: dict[str, Any]) -> str:
    return (
        f"c={level['concurrency']:<4} {level['rps']:>9.1f} RPC/s  failures {level['failures']:<5} "
        f"p50 {level['p50_ms'] if level['p50_ms'] is not None else '-':>8} ms  "
        f"p99 {level['p99_ms'] if level['p99_ms'] is not None else '-':>8} ms"
    )


def bench_rpc(full: bool) -> dict[str, Any]:
    duration, warmup = (10.0, 1.0) if full else (3.0, 0.5)
    rows = [
        ("dhtscope", "defaults", "dhtscope (QUIC + TLS 1.3, signed records)", (), ()),
        ("kademlia", "defaults", "kademlia (UDP datagrams, no security)", (), ()),
        ("libp2p", "defaults", "py-libp2p kad-dht over QUIC (defaults: 12 inbound streams)", (), ()),
        (
            "libp2p",
            "raised-cap",
            f"py-libp2p kad-dht over QUIC (inbound cap raised to {LIBP2P_RAISED_CAP})",
            ("--inbound-cap", str(LIBP2P_RAISED_CAP)),
            (),
        ),
    ]
    out: dict[str, Any] = {"duration_s": duration, "warmup_s": warmup, "levels": list(LEVELS), "rows": []}
    for system, variant, label, serve_args, load_args in rows:
        log(f"rpc: {label}")
        row: dict[str, Any] = {"system": system, "variant": variant, "label": label}
        try:
            row.update(rpc_run(system, duration, warmup, serve_args=serve_args, load_args=load_args))
            for level in row["levels"]:
                log("  " + _fmt_level(level))
        except BenchError as exc:
            row["error"] = str(exc)
            log(f"  failed: {exc}")
        out["rows"].append(row)
    return out


# -- recording cost ------------------------------------------------------------------------------


def bench_recording(full: bool) -> dict[str, Any]:
    duration, warmup = (10.0, 1.0) if full else (3.0, 0.5)
    repeats = 3 if full else 2
    runs: list[dict[str, Any]] = []
    for i in range(repeats):
        for record in (False, True):
            args: tuple[str, ...] = ()
            rec_dir = None
            if record:
                rec_dir = os.path.join(TMP, f"recording-{i}")
                shutil.rmtree(rec_dir, ignore_errors=True)
                args = ("--record", rec_dir)
            log(f"recording: run {i + 1}/{repeats}, recording {'on' if record else 'off'}")
            run: dict[str, Any] = {"record": record, "repeat": i}
            try:
                run.update(rpc_run("dhtscope", duration, warmup, serve_args=args, load_args=args))
                for level in run["levels"]:
                    log("  " + _fmt_level(level))
            except BenchError as exc:
                run["error"] = str(exc)
                log(f"  failed: {exc}")
            if rec_dir is not None:
                run["recording_bytes"] = _dir_size(rec_dir)
                shutil.rmtree(rec_dir, ignore_errors=True)
            runs.append(run)
    summary = []
    for c in LEVELS:
        off = [lv["rps"] for r in runs if not r["record"] for lv in r.get("levels", []) if lv["concurrency"] == c]
        on = [lv["rps"] for r in runs if r["record"] for lv in r.get("levels", []) if lv["concurrency"] == c]
        fails = sum(lv["failures"] for r in runs for lv in r.get("levels", []) if lv["concurrency"] == c)

        def cpu(record: bool, key: str, level: int = c) -> float | None:
            values = [
                lv[key]
                for r in runs
                if r["record"] == record
                for lv in r.get("levels", [])
                if lv["concurrency"] == level and lv.get(key) is not None
            ]
            return round(statistics.fmean(values), 4) if values else None

        writer = [
            lv["client_writer_cpu_s"] * 1000 / lv["ok"]
            for r in runs
            if r["record"]
            for lv in r.get("levels", [])
            if lv["concurrency"] == c and lv.get("client_writer_cpu_s") is not None and lv.get("ok")
        ]
        summary.append(
            {
                "concurrency": c,
                "rps_off": round(statistics.fmean(off), 1) if off else None,
                "rps_on": round(statistics.fmean(on), 1) if on else None,
                "ratio": round(statistics.fmean(on) / statistics.fmean(off), 3) if off and on else None,
                "failures": fails,
                # CPU per successful RPC of both node processes (the writer processes apart)
                "cpu_ms_per_rpc_off": cpu(False, "cpu_ms_per_rpc"),
                "cpu_ms_per_rpc_on": cpu(True, "cpu_ms_per_rpc"),
                "client_writer_cpu_ms_per_rpc": round(statistics.fmean(writer), 4) if writer else None,
            }
        )
    return {"duration_s": duration, "warmup_s": warmup, "repeats": repeats, "runs": runs, "summary": summary}


def _dir_size(path: str) -> int:
    total = 0
    for base, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(base, name))
            except OSError:
                pass
    return total


# -- lookups in a cluster --------------------------------------------------------------------------


def bench_lookup(full: bool) -> dict[str, Any]:
    from lookup_bench import run_cluster

    nodes, lookups = 32, 50
    out: dict[str, Any] = {"nodes": nodes, "lookups": lookups, "systems": []}
    for system in ("dhtscope", "kademlia", "libp2p"):
        log(f"lookup: {system}, {nodes} node processes, {lookups} lookups")
        try:
            # Quick mode bounds each system's lookups in time (py-libp2p's take ~1 s each on a busy machine).
            result = run_cluster(system, nodes, lookups, log=log, measure_budget_s=None if full else 150.0)
            log(
                f"  success {result['success_rate']:.0%}  median {result['median_ms']} ms  "
                f"p95 {result['p95_ms']} ms  messages {result['median_messages']}  "
                f"RSS {result['rss_median_mib']} MiB/node"
            )
        except BenchError as exc:
            result = {"system": system, "error": str(exc)}
            log(f"  failed: {exc}")
        out["systems"].append(result)
    return out


# -- connections held by one node ------------------------------------------------------------------


def bench_conns(full: bool) -> dict[str, Any]:
    """bench/conns_bench.py: memory per idle connection, then one node holding many, each PINGing now and then."""
    from conns_bench import run

    # 10,000 in both modes: the figure, about 3 minutes (the handshakes are most of it).
    levels, hold_s = ([500, 2_000, 10_000], 30.0) if full else ([500, 2_000, 10_000], 20.0)
    log(f"conns: one dhtscope node, {', '.join(f'{n:,}' for n in levels)} client connections, held {hold_s:g} s")
    try:
        result = run(levels, clients=4, hold_s=hold_s, log=log)
    except BenchError as exc:
        log(f"  failed: {exc}")
        return {"levels_planned": levels, "error": str(exc)}
    result["levels_planned"] = levels
    return result


# -- simulation --------------------------------------------------------------------------------------


def bench_sim(full: bool) -> dict[str, Any]:
    sizes = [1_000, 3_000, 10_000, 30_000, 100_000] if full else [1_000, 3_000, 10_000]
    lookups = 1000
    out: dict[str, Any] = {"lookups": lookups, "seed": 1, "runs": []}
    for n in sizes:
        log(f"sim: {n:,} nodes, {lookups} lookups")
        proc = Proc("sim_bench.py", str(n), str(lookups), "1", name=f"sim {n}")
        try:
            result = proc.next(1800.0)
            log(
                f"  median rounds {result['median_rounds']}  mean {result['mean_rounds']:.2f}  "
                f"median messages {result['median_messages']}  cpu {result['cpu_s']:.1f} s  "
                f"peak RSS {result['peak_rss_bytes'] / 2**20:.0f} MiB"
            )
        except BenchError as exc:
            result = {"nodes": n, "error": str(exc)}
            log(f"  failed: {exc}")
        finally:
            proc.stop()
        out["runs"].append(result)
    return out


# -- the TUI under load ----------------------------------------------------------------------------


def bench_tui(full: bool) -> dict[str, Any]:
    """bench/tui_bench.py in its own process: live ingest and keys under 20,000 events/s, 1,000,000-event replay."""
    seconds = "10" if full else "4"
    log(f"tui: 20,000 events/s for {seconds} s with key presses, then a 1,000,000-event replay")
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH_DIR, "tui_bench.py"), "--seconds", seconds, "--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        log(f"  failed: {tail[0]}")
        return {"error": tail[0]}
    result = json.loads(proc.stdout)
    live, replay = result["live"], result["replay"]
    log(
        f"  live: {live['ingested_events_per_s']:,} events/s ingested, key median "
        f"{live['key_press_latency']['median_ms']} ms; replay: first screen {replay['first_screen_s']} s, "
        f"keys while indexing median {replay['key_press_latency_while_indexing']['median_ms']} ms"
    )
    return result


# -- reading captures -------------------------------------------------------------------------------


def bench_capture(full: bool) -> dict[str, Any]:
    """bench/capture_bench.py in its own process: decode rate beside tshark's on the same capture and keys."""
    connections = "3000" if full else "1000"
    tshark = shutil.which("tshark")
    log(f"capture: {connections} interleaved connections decoded by dhtscope" + (" and tshark" if tshark else ""))
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH_DIR, "capture_bench.py"), "--connections", connections, "--json"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        log(f"  failed: {tail[0]}")
        return {"error": tail[0]}
    result: dict[str, Any] = json.loads(proc.stdout)
    if tshark is None:
        result["tshark_missing"] = "tshark is not installed here (apt-get install -y tshark to measure it)"
    else:
        said = subprocess.run([tshark, "--version"], capture_output=True, text=True).stdout
        version = re.search(r"\d+\.\d+\.\d+", said)
        result["tshark_version"] = f"tshark {version.group(0)}" if version else "tshark"
    log(
        f"  dhtscope {result['dhtscope_packets_per_s']:,} packets/s"
        + (f", tshark {result['tshark_packets_per_s']:,} packets/s" if result.get("tshark_packets_per_s") else "")
    )
    return result


def bench_attacks(full: bool) -> None:
    """bench/attacks/run.py in its own process; it writes bench/results/attacks.json itself."""
    log("attacks: issue 13's attacks against a node on 127.0.0.1, an honest peer PINGing throughout")
    subprocess.run([sys.executable, os.path.join(BENCH_DIR, "attacks", "run.py"), "--no-report"], timeout=3600)


def bench_accuracy(full: bool) -> dict[str, Any] | None:
    """The diagnosis accuracy table (bench/accuracy.py): 5 runs of every scenario take about 10 minutes,
    more than quick mode's budget, so only full mode runs it; quick mode keeps the last accuracy.json."""
    if not full:
        log("accuracy: not run in quick mode (about 10 minutes); `make accuracy` or `make bench FULL=1` runs it")
        return None
    from accuracy import RUNS, run_accuracy

    from dhtscope.node.scenarios import SCENARIOS

    return run_accuracy(RUNS, list(SCENARIOS), keep=None)


RUNNERS = {
    "rpc": bench_rpc,
    "recording": bench_recording,
    "lookup": bench_lookup,
    "conns": bench_conns,
    "sim": bench_sim,
    "tui": bench_tui,
    "attacks": bench_attacks,
    "capture": bench_capture,
    "accuracy": bench_accuracy,
}


def main() -> int:
    parser = argparse.ArgumentParser(description="dhtscope benchmarks against kademlia and py-libp2p")
    parser.add_argument("--full", action="store_true", help="longer runs and the 100,000-node simulation")
    parser.add_argument("--only", default=None, help=f"comma list of {', '.join(SECTIONS)}")
    parser.add_argument("--report-only", action="store_true", help="only rebuild BENCHMARKS.md from results")
    args = parser.parse_args()
    only = args.only if args.only is not None else ",".join(SECTIONS if args.full else QUICK_SECTIONS)
    sections = [s.strip() for s in only.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    started = time.monotonic()
    mode = "full" if args.full else "quick"
    if not args.report_only:
        os.makedirs(TMP, exist_ok=True)
        facts = machine_facts()
        log(
            f"dhtscope benchmarks, {mode} mode: {facts['cpu_count']} CPUs, Python {facts['python']}, "
            + ", ".join(f"{k} {v}" for k, v in facts["packages"].items() if v)
        )
        for section in sections:
            t0 = time.monotonic()
            load_before = load_average()
            result = RUNNERS[section](args.full)
            if result is None:
                continue  # the section wrote its own results, or was not run in this mode: the results on disk stand
            doc = {
                "section": section,
                "mode": mode,
                "machine": facts,
                "elapsed_s": round(time.monotonic() - t0, 1),
                "loadavg_before": load_before,
                "loadavg_after": load_average(),
                "result": result,
            }
            with open(os.path.join(RESULTS, f"{section}.json"), "w") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
            log(f"{section}: {doc['elapsed_s']} s")
        shutil.rmtree(TMP, ignore_errors=True)
    from report import write_report

    summary = write_report(
        RESULTS,
        os.path.join(ROOT, "BENCHMARKS.md"),
        run_s=None if args.report_only else time.monotonic() - started,
        sections_run=[] if args.report_only else sections,
    )
    log(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
