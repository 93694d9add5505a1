"""The attack suite: each attack of issue 13 against a real node on 127.0.0.1, with an honest peer watching.

    python bench/attacks/run.py                    every attack at the issue's sizes (about 6 minutes)
    python bench/attacks/run.py --only slowloris   some attacks; the others' rows are kept from the last run
    python bench/attacks/run.py --node-src DIR     attack the node of another checkout (e.g. a worktree of main)
    python bench/attacks/run.py --label before     stored beside the default run instead of replacing it

For each attack: the node starts as `dhtscope node` does; the attack sets up; the node's RSS
is read; then the attack runs while an honest peer opens a fresh connection and PINGs every
100 ms; the row records the PINGs that succeeded and their p99 (handshake, Retry included),
the RSS before and at peak, records lost, and the tracebacks the node printed. Results go
to bench/results/attacks.json; BENCHMARKS.md is rebuilt from every result on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ATTACKS_DIR = os.path.dirname(os.path.abspath(__file__))
BENCH_DIR = os.path.dirname(ATTACKS_DIR)
ROOT = os.path.dirname(BENCH_DIR)
RESULTS = os.path.join(BENCH_DIR, "results")
sys.path.insert(0, ATTACKS_DIR)
sys.path.insert(0, BENCH_DIR)

from target import RssSampler, Target, free_port  # noqa: E402

TOKEN = "attack-suite-token"


@dataclass(frozen=True)
class Attack:
    """One row of the table: what runs, at what size, against a node started with which options."""

    name: str
    label: str
    size: str
    hostile_args: tuple[str, ...]
    node_args: Callable[[str], tuple[str, ...]] = lambda work: ()
    needs: tuple[str, ...] = ()  # node options the attack needs; a node without them (an older one) skips it
    extra: dict[str, Any] = field(default_factory=dict)


def _control_tcp(work: str) -> tuple[str, ...]:
    return ("--control", f"tcp:127.0.0.1:{_CONTROL_PORT}", "--control-token", TOKEN)


def _control_unix(work: str) -> tuple[str, ...]:
    return ("--control", os.path.join(work, "c.sock"))


def _data_dir(work: str) -> tuple[str, ...]:
    return ("--data-dir", os.path.join(work, "data"))


_CONTROL_PORT = free_port(1)  # SOCK_STREAM

ATTACKS = [
    Attack("baseline", "none (the honest peer alone)", "-", ("--seconds", "10")),
    Attack(
        "handshake_flood",
        "handshake flood (Initials never answered)",
        "1,100 Initials (1.3 MB) in 5.5 s, twice, 60 s apart",
        ("--size", "1100", "--bursts", "2", "--period", "60", "--tail", "5"),
    ),
    Attack(
        "silent_connections",
        "completed, silent connections",
        "1,100 connections",
        ("--size", "1100", "--seconds", "15"),
    ),
    Attack(
        "slowloris",
        "slowloris (requests never finished)",
        "32 conns x 512 streams",
        ("--size", "32", "--seconds", "15"),
    ),
    Attack(
        "unread_answers",
        "FIND_VALUE answers never read",
        "16 conns x 512 x 80 KB",
        ("--size", "16", "--seconds", "15"),
    ),
    Attack(
        "routing_poisoning_30",
        "routing poisoning, one address",
        "30 identities",
        ("--size", "30"),
        extra={"hostile": "routing_poisoning"},
    ),
    Attack(
        "routing_poisoning_200",
        "routing poisoning, one address",
        "200 identities",
        ("--size", "200"),
        extra={"hostile": "routing_poisoning"},
    ),
    Attack("service_squatting", "service squatting", "64 identities, TTL 3,600 s", ("--size", "64")),
    Attack(
        "store_filling",
        "store filling, one connection",
        "100,000 records",
        ("--size", "100000", "--seconds", "90"),
    ),
    Attack(
        "control_exhaustion",
        "control slots held by idle sockets",
        "64 idle TCP sockets",
        ("--size", "64", "--seconds", "10"),
        node_args=_control_tcp,
    ),
    Attack(
        "deep_json",
        "30,000-deep JSON on the control socket",
        "1 line, 60 KB",
        ("--seconds", "2"),
        node_args=_control_unix,
    ),
    Attack(
        "restart",
        "records across a SIGKILL restart",
        "3 providers",
        (),
        node_args=_data_dir,
        needs=("--data-dir",),
    ),
]

# Targets of issue 13.
PING_SUCCESS_TARGET = 1.0
PING_P99_TARGET_MS = 100.0
RSS_TARGET_MIB = 256.0


def log(text: str) -> None:
    print(text, flush=True)


def _node_help(node_src: str | None) -> str:
    env = dict(os.environ)
    if node_src:
        from target import _source_path

        env["PYTHONPATH"] = _source_path(node_src)
    done = subprocess.run([sys.executable, "-m", "dhtscope.node", "--help"], capture_output=True, text=True, env=env)
    return done.stdout


class Hostile:
    """The attack process: JSON lines out, "go"/"restarted" in."""

    def __init__(self, attack: str, port: int, args: tuple[str, ...]) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, os.path.join(ATTACKS_DIR, "hostile.py"), attack, "--port", str(port), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def next(self) -> dict[str, Any]:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            if line.startswith("{"):
                return dict(json.loads(line))
        return {"phase": "done", "error": f"attack process exited ({self.popen.wait()})"}

    def send(self, text: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(text + "\n")
        self.popen.stdin.flush()

    def close(self) -> None:
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()


class Honest:
    def __init__(self, port: int) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, os.path.join(ATTACKS_DIR, "honest.py"), "--port", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.popen.stdout is not None
        self.popen.stdout.readline()  # ready

    def mark(self) -> None:
        """From now on the PINGs count in a new phase (the attack holds what it has built)."""
        assert self.popen.stdin is not None
        self.popen.stdin.write("mark\n")
        self.popen.stdin.flush()

    def stop(self) -> dict[str, Any]:
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self.popen.stdin.write("stop\n")
        self.popen.stdin.flush()
        line = self.popen.stdout.readline()
        self.popen.wait(30)
        return dict(json.loads(line)) if line else {"pings": 0, "ok": 0, "failed": 0}


def run_attack(attack: Attack, node_src: str | None, help_text: str) -> dict[str, Any]:
    row: dict[str, Any] = {"attack": attack.name, "label": attack.label, "size": attack.size}
    missing = [opt for opt in attack.needs if opt not in help_text]
    if missing:
        row["status"] = "not available"
        row["detail"] = f"this node has no {', '.join(missing)}"
        return row
    row["loadavg_before"] = round(os.getloadavg()[0], 2)
    work = tempfile.mkdtemp(prefix="dhtscope-attack-", dir="/tmp")
    target = Target(*attack.node_args(work), node_src=node_src)
    hostile = Hostile(
        attack.extra.get("hostile", attack.name), target.port, attack.hostile_args + _hostile_extra(attack, target)
    )
    honest: Honest | None = None
    sampler: RssSampler | None = None
    started = time.monotonic()
    try:
        ready = hostile.next()
        if ready.get("phase") == "done":
            row.update(status="error", detail=ready.get("error"))
            return row
        row["rss_before_mib"] = round((target.rss() or 0) / 2**20, 1)
        sampler = RssSampler(target.pid)
        honest = Honest(target.port)
        hostile.send("go")
        while True:
            msg = hostile.next()
            if msg.get("phase") == "kill":
                target.kill()
                target.restart()
                sampler.stop()
                sampler = RssSampler(target.pid)
                hostile.send("restarted")
            elif msg.get("phase") == "holding":
                honest.mark()
            elif msg.get("phase") == "done":
                break
        ping = honest.stop()
        honest = None
        row["rss_peak_mib"] = round(sampler.stop() / 2**20, 1)
        sampler = None
        row.update(
            {
                "pings": ping["pings"],
                "ping_ok": ping["ok"],
                "ping_success": round(ping["ok"] / ping["pings"], 4) if ping["pings"] else None,
                "ping_p50_ms": ping.get("p50_ms"),
                "ping_p99_ms": ping.get("p99_ms"),
                "ping_errors": ping.get("errors", {}),
                "phases": ping.get("phases", []),
                "records_lost": msg.get("records_lost", 0),
                "defended": msg.get("defended"),
                "detail": msg.get("detail") or msg.get("error"),
            }
        )
        if "error" in msg:
            row["status"] = "error"
    finally:
        if honest is not None:
            honest.stop()
        if sampler is not None:
            sampler.stop()
        hostile.close()
        row["node_alive_at_end"] = target.alive()
        row["tracebacks"] = target.stop() if target.alive() else target.tracebacks()
        row["elapsed_s"] = round(time.monotonic() - started, 1)
        shutil.rmtree(work, ignore_errors=True)
    row.setdefault("status", "measured")
    row["targets_met"] = targets_met(row)
    return row


def _hostile_extra(attack: Attack, target: Target) -> tuple[str, ...]:
    if attack.name == "control_exhaustion":
        # A node from before TLS control printed no fingerprint: it is reached in plain TCP.
        pin = ("--fingerprint", target.started["fingerprint"]) if target.started.get("fingerprint") else ()
        return ("--control", f"127.0.0.1:{_CONTROL_PORT}", "--token", TOKEN, *pin)
    if attack.name == "deep_json":
        return ("--control", target.started["control"].removeprefix("unix:"))
    return ()


def targets_met(row: dict[str, Any]) -> bool | None:
    if row.get("status") != "measured":
        return None
    return bool(
        (row.get("ping_success") or 0) >= PING_SUCCESS_TARGET
        and (row.get("ping_p99_ms") or 1e9) <= PING_P99_TARGET_MS
        and (row.get("rss_peak_mib") or 1e9) <= RSS_TARGET_MIB
        and row.get("records_lost", 0) == 0
        and row.get("tracebacks", 0) == 0
        and row.get("defended") is not False  # the attack's own check (the rightful control client got in, ...)
    )


def _fmt(row: dict[str, Any]) -> str:
    if row.get("status") != "measured":
        return f"  {row.get('status')}: {row.get('detail')}"
    phases = row.get("phases") or []
    hold = ""
    if len(phases) > 1:
        build, held = phases[0], phases[1]
        hold = (
            f" (build {build['ok']}/{build['pings']} p99 {build['p99_ms']}; "
            f"hold {held['ok']}/{held['pings']} p99 {held['p99_ms']})"
        )
    return (
        f"  PING {row['ping_ok']}/{row['pings']} p99 {row['ping_p99_ms']} ms{hold}  RSS {row['rss_before_mib']} -> "
        f"{row['rss_peak_mib']} MiB  lost {row['records_lost']}  tracebacks {row['tracebacks']}  "
        f"{'met' if row['targets_met'] else 'MISSED'}  ({row['detail']})"
    )


def main() -> int:
    from benchlib import load_average, machine_facts

    parser = argparse.ArgumentParser(description="attacks of issue 13 against a real node on 127.0.0.1")
    parser.add_argument("--only", default="", help="comma list of attacks (default: all)")
    parser.add_argument("--node-src", help="run the node from this checkout (node/, tracing/, tui/ at its root)")
    parser.add_argument("--label", default="current", help="stored under this label (default: current)")
    parser.add_argument("--note", help="what the node is, for the table (e.g. 'main at 46bd70c')")
    parser.add_argument("--no-report", action="store_true", help="do not rebuild BENCHMARKS.md")
    args = parser.parse_args()
    names = [a.name for a in ATTACKS]
    only = [s.strip() for s in args.only.split(",") if s.strip()] or names
    unknown = [s for s in only if s not in names]
    if unknown:
        parser.error(f"unknown attack(s): {', '.join(unknown)}; choose from {', '.join(names)}")
    path = os.path.join(RESULTS, "attacks.json")
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        doc = {"section": "attacks", "runs": {}}
    run = doc["runs"].get(args.label, {"rows": []})
    help_text = _node_help(args.node_src)
    started = time.monotonic()
    log(f"attacks ({args.label}{', node from ' + args.node_src if args.node_src else ''}): {', '.join(only)}")
    rows = {r["attack"]: r for r in run.get("rows", [])}
    for attack in ATTACKS:
        if attack.name not in only:
            continue
        log(f"{attack.name}: {attack.label}, {attack.size}")
        try:
            rows[attack.name] = run_attack(attack, args.node_src, help_text)
        except Exception as exc:
            rows[attack.name] = {
                "attack": attack.name,
                "label": attack.label,
                "size": attack.size,
                "status": "error",
                "detail": str(exc)[:200],
            }
        log(_fmt(rows[attack.name]))
    run = {
        "rows": [rows[n] for n in names if n in rows],
        "node_src": args.node_src,
        "note": args.note or run.get("note"),
        "machine": machine_facts(),
        "loadavg_after": load_average(),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    doc["runs"][args.label] = run
    os.makedirs(RESULTS, exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    if not args.no_report:
        from report import write_report

        log(write_report(RESULTS, os.path.join(ROOT, "BENCHMARKS.md"), run_s=None, sections_run=[]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
