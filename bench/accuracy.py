"""How often `dhtscope diagnose` names each fault, and what else it claims: `make accuracy`.

Records every scenario of `dhtscope cluster` RUNS times (random free base ports, the cluster
run as a user would: `dhtscope cluster --scenario S --record DIR`), diagnoses each recording
with `dhtscope diagnose DIR --json`, and counts per scenario:

- recall: runs in which the expected finding (its kind, on the node it belongs to, above info)
  was found;
- false alarms: findings above info that should not be there. On `healthy`, any; on a fault
  scenario, any that is neither the expected finding nor `caused_by` it.

Writes bench/results/accuracy.json and rebuilds BENCHMARKS.md (bench/report.py renders the table).

    python bench/accuracy.py                      5 runs of every scenario
    python bench/accuracy.py --runs 1 --scenarios healthy,blackhole --keep /tmp/acc
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
RESULTS = os.path.join(BENCH_DIR, "results")
sys.path.insert(0, BENCH_DIR)

from benchlib import load_average, machine_facts  # noqa: E402

from dhtscope.node.cluster import scenario_timeout_s  # noqa: E402
from dhtscope.node.scenarios import SCENARIOS  # noqa: E402

RUNS = 5
PROVIDERS = 3  # the cluster's default topology: 1 registry, 3 providers, 1 client
RUN_MARGIN_S = 60.0  # beyond the scenario's own time: starting five processes and stopping them
DIAGNOSE_TIMEOUT_S = 120.0
PORT_RANGE = (20_000, 60_000)  # base ports are drawn from here, away from the defaults people use
PORT_ATTEMPTS = 50
INFO = "info"


@dataclass(frozen=True)
class Expect:
    """The finding a scenario must produce: one of `kinds`, on `node`, above info."""

    kinds: tuple[str, ...]
    node: str
    peer: str | None = None  # the node the finding must name as its peer, where it is another's
    direction: str | None = None  # for loss: "sent" when only what `node` sent was lost

    def matches(self, f: dict[str, Any]) -> bool:
        return (
            f.get("kind") in self.kinds
            and f.get("node") == self.node
            and f.get("severity") != INFO
            and (self.peer is None or self.peer in (f.get("peer") or "").split(", "))
            and (self.direction is None or f.get("direction") == self.direction)
        )

    def label(self) -> str:
        what = " or ".join(f"`{k}`" for k in self.kinds)
        extra = f" naming {self.peer}" if self.peer else ""
        extra += f", direction {self.direction}" if self.direction else ""
        return f"{what} on {self.node}{extra}"


# What each scenario's fault must be diagnosed as; healthy expects nothing.
EXPECTED: dict[str, Expect | None] = {
    "healthy": None,
    "no-accept": Expect(("stream_not_delivered",), "registry"),
    # The client's requests run out of the registry's stream credit: named on the client, blaming the registry.
    "stream-limit": Expect(("stream_limit_exhausted",), "client", peer="registry"),
    "loss": Expect(("packet_loss",), "registry"),
    "alpn-mismatch": Expect(("alpn_mismatch",), "registry"),
    "stall": Expect(("no_response",), "registry"),
    "bad-certificate": Expect(("handshake_failed",), "registry"),
    "flow-control": Expect(("flow_control_blocked",), "registry"),
    "blackhole": Expect(("peer_unresponsive", "connection_stalled"), "registry"),
    "one-way-loss": Expect(("packet_loss",), "registry", direction="sent"),
}


def log(text: str) -> None:
    print(text, flush=True)


def dhtscope_command() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "dhtscope")
    found = here if os.path.exists(here) else shutil.which("dhtscope")
    if found is None:
        raise SystemExit("accuracy: no dhtscope command found (run `make accuracy`, which installs it)")
    return found


def free_base_port(count: int) -> int:
    """A base port with `count` free UDP ports from it on 127.0.0.1."""
    for _ in range(PORT_ATTEMPTS):
        base = random.randrange(*PORT_RANGE)
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise SystemExit(f"accuracy: no {count} free UDP ports in a row after {PORT_ATTEMPTS} tries")


def judge(scenario: str, findings: list[dict[str, Any]]) -> tuple[bool, list[dict[str, Any]], list[str]]:
    """(expected finding found, false alarms, ids of the expected findings) for one run's findings."""
    expect = EXPECTED[scenario]
    if expect is None:
        return True, [f for f in findings if f.get("severity") != INFO], []
    roots = [f["id"] for f in findings if expect.matches(f)]
    alarms = [
        f for f in findings if f.get("severity") != INFO and f["id"] not in roots and f.get("caused_by") not in roots
    ]
    return bool(roots), alarms, roots


def one_run(cmd: str, scenario: str, index: int, workdir: str) -> dict[str, Any]:
    rec = os.path.join(workdir, f"{scenario}-{index}")
    base = free_base_port(PROVIDERS + 2)
    started = time.monotonic()
    out: dict[str, Any] = {"run": index, "base_port": base}
    try:
        run = subprocess.run(
            [cmd, "cluster", "--scenario", scenario, "--record", rec, "--base-port", str(base)],
            capture_output=True,
            text=True,
            timeout=scenario_timeout_s(scenario) + RUN_MARGIN_S,
        )
    except subprocess.TimeoutExpired:
        out.update(error="the cluster run did not end in time", found=False, false_alarms=[])
        return out
    out["cluster_s"] = round(time.monotonic() - started, 1)
    lines = [line for line in run.stdout.splitlines() if line.startswith("scenario ")]
    out["outcome"] = lines[-1] if lines else (run.stdout.strip().splitlines() or [""])[-1]
    if run.returncode != 0:
        out.update(error=f"cluster exited {run.returncode}: {run.stdout.strip()[-300:]}", found=False, false_alarms=[])
        return out
    diag = subprocess.run([cmd, "diagnose", rec, "--json"], capture_output=True, text=True, timeout=DIAGNOSE_TIMEOUT_S)
    try:
        doc = json.loads(diag.stdout)
    except ValueError:
        out.update(error=f"diagnose failed: {diag.stderr.strip()[-300:]}", found=False, false_alarms=[])
        return out
    findings = doc.get("findings", [])
    found, alarms, roots = judge(scenario, findings)
    out.update(
        found=found,
        expected_ids=roots,
        false_alarms=[
            {"id": f["id"], "severity": f["severity"], "caused_by": f.get("caused_by"), "summary": f["summary"]}
            for f in alarms
        ],
        findings={sev: sum(1 for f in findings if f.get("severity") == sev) for sev in ("error", "warning", "info")},
        root_causes=doc.get("summary", {}).get("root_causes", []),
        streams=doc.get("summary", {}).get("streams"),
    )
    if not found:
        above = [f"{f['id']} ({f['severity']})" for f in findings if f.get("severity") != INFO]
        out["missed"] = f"no {EXPECTED[scenario].label() if EXPECTED[scenario] else '?'}; found: " + (
            ", ".join(above) or "nothing above info"
        )
    return out


def run_accuracy(runs: int, scenarios: list[str], keep: str | None) -> dict[str, Any]:
    missing = [s for s in SCENARIOS if s not in EXPECTED]
    if missing:
        raise SystemExit(f"accuracy: no expected finding for scenario(s) {', '.join(missing)}: add them to EXPECTED")
    cmd = dhtscope_command()
    workdir = keep or tempfile.mkdtemp(prefix="dhtscope-accuracy-")
    os.makedirs(workdir, exist_ok=True)
    per: dict[str, Any] = {}
    try:
        for scenario in scenarios:
            results = []
            for i in range(1, runs + 1):
                r = one_run(cmd, scenario, i, workdir)
                results.append(r)
                mark = "found" if r.get("found") else "MISSED"
                alarms = len(r.get("false_alarms", []))
                log(
                    f"  {scenario:<16} run {i}/{runs}: {mark}, {alarms} false alarm(s)"
                    f"{'; ' + r['error'] if 'error' in r else ''} ({r.get('cluster_s', '?')} s)"
                )
                if not keep:
                    shutil.rmtree(os.path.join(workdir, f"{scenario}-{i}"), ignore_errors=True)
            found = sum(1 for r in results if r.get("found"))
            failures = []
            for r in results:
                if "error" in r:
                    failures.append({"run": r["run"], "what": "run failed", "finding": r["error"]})
                elif not r.get("found"):
                    failures.append({"run": r["run"], "what": "missed", "finding": r.get("missed", "")})
                for a in r.get("false_alarms", []):
                    failures.append(
                        {
                            "run": r["run"],
                            "what": "false alarm",
                            "finding": f"{a['id']} ({a['severity']}): {a['summary']}",
                        }
                    )
            expect = EXPECTED[scenario]
            per[scenario] = {
                "expected": expect.label() if expect else "no finding above info",
                "runs": len(results),
                "found": found,
                "recall": round(found / len(results), 3) if results else None,
                "false_alarms": sum(len(r.get("false_alarms", [])) for r in results),
                "runs_with_false_alarms": sum(1 for r in results if r.get("false_alarms")),
                "failures": failures,
                "details": results,
            }
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    total_runs = sum(p["runs"] for p in per.values())
    total_found = sum(p["found"] for p in per.values())
    return {
        "runs_per_scenario": runs,
        "scenarios": per,
        "totals": {
            "runs": total_runs,
            "found": total_found,
            "recall": round(total_found / total_runs, 3) if total_runs else None,
            "false_alarms": sum(p["false_alarms"] for p in per.values()),
            "runs_with_false_alarms": sum(p["runs_with_false_alarms"] for p in per.values()),
        },
    }


def write(result: dict[str, Any], elapsed_s: float, load_before: Any, facts: dict[str, Any]) -> str:
    doc = {
        "section": "accuracy",
        "mode": "accuracy",
        "machine": facts,
        "elapsed_s": round(elapsed_s, 1),
        "loadavg_before": load_before,
        "loadavg_after": load_average(),
        "result": result,
    }
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "accuracy.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description="recall and false alarms of `dhtscope diagnose` on every scenario")
    parser.add_argument("--runs", type=int, default=RUNS, help=f"recordings per scenario (default {RUNS})")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list (default: all)")
    parser.add_argument("--keep", metavar="DIR", help="keep the recordings in DIR")
    parser.add_argument("--no-report", action="store_true", help="write accuracy.json only, not BENCHMARKS.md")
    args = parser.parse_args()
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    facts = machine_facts()
    load_before = load_average()
    started = time.monotonic()
    log(f"accuracy: {args.runs} run(s) of {len(scenarios)} scenario(s)")
    result = run_accuracy(args.runs, scenarios, args.keep)
    path = write(result, time.monotonic() - started, load_before, facts)
    t = result["totals"]
    log(
        f"accuracy: recall {t['found']}/{t['runs']}, {t['false_alarms']} false alarm(s) "
        f"in {t['runs_with_false_alarms']} run(s); wrote {path}"
    )
    if not args.no_report:
        from report import write_report

        write_report(RESULTS, os.path.join(ROOT, "BENCHMARKS.md"), run_s=None, sections_run=[])
    return 0


if __name__ == "__main__":
    sys.exit(main())
