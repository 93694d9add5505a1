"""The seed's topology as separate OS processes: 1 registry, N providers, 1 client, on 127.0.0.1."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from .scenarios import STREAM_LIMIT_SCENARIO_STREAMS

SERVICE = "calculator"
CHECK_TIMEOUT_S = 60.0
STOP_GRACE_S = 3.0
SCENARIO_REQUEST_TIMEOUT_S = 2.0  # faults show within seconds, not the default 5 s per attempt
SCENARIO_TIMEOUT_S = {
    "healthy": 30.0,
    "loss": 30.0,
    "one-way-loss": 30.0,
    "stream-limit": 45.0,
    # Run this long whatever discovery does: the fault shows over time (see RUN_FULL_TIME).
    "flow-control": 15.0,
    "blackhole": 18.0,  # BLACKHOLE_AFTER_S of service, then over ten seconds of silence
}
FAULT_SCENARIO_TIMEOUT_S = 15.0  # no-accept, alpn-mismatch, stall, bad-certificate: discovery cannot succeed
# Scenarios whose fault is seen only after discovery may already have succeeded: slow requests
# (flow-control), a node that goes silent mid-run (blackhole).
RUN_FULL_TIME = frozenset({"flow-control", "blackhole"})
STREAM_LIMIT_PINGS = STREAM_LIMIT_SCENARIO_STREAMS + 12  # more requests to the registry than it grants streams


@dataclass
class Member:
    name: str
    role: str
    port: int
    args: list[str]
    process: subprocess.Popen[str] | None = None
    buffer: str = ""
    control: str | None = None
    log_path: str | None = None  # output goes to this file instead of a pipe (see Cluster log_dir)
    log_offset: int = 0


@dataclass
class ClusterPlan:
    providers: int = 3
    base_port: int = 4500
    host: str = "127.0.0.1"
    scenario: str = "healthy"
    record_dir: str | None = None
    control_dir: str | None = None
    pcap_dir: str | None = None  # each member's capture and key log: <name>.pcapng, <name>.keys
    # Each member keeps its key, records and routing table in <data_dir>/<name> (`--data-dir`);
    # None: a Cluster gives them a temporary directory for the run.
    data_dir: str | None = None
    members: list[Member] = field(default_factory=list)

    def build(self) -> list[Member]:
        registry = f"{self.host}:{self.base_port}"
        common = ["--json-lines"]
        members = [
            Member(
                "registry",
                "registry",
                self.base_port,
                ["--listen", registry, "--role", "registry", "--scenario", self.scenario],
            )
        ]
        for i in range(1, self.providers + 1):
            port = self.base_port + i
            endpoint = f"{self.host}:{9000 + i}"
            members.append(
                Member(
                    f"provider{i}",
                    "provider",
                    port,
                    [
                        "--listen",
                        f"{self.host}:{port}",
                        "--bootstrap",
                        registry,
                        "--role",
                        "provider",
                        "--advertise",
                        f"{SERVICE}={endpoint}",
                    ],
                )
            )
        client_port = self.base_port + self.providers + 1
        client = [
            "--listen",
            f"{self.host}:{client_port}",
            "--bootstrap",
            registry,
            "--role",
            "client",
            "--discover",
            SERVICE,
        ]
        if self.scenario == "stream-limit":
            # One stream per PING on one connection: the registry's unfinished streams
            # pile up until the credit the registry gives (STREAM_LIMIT_SCENARIO_STREAMS) is gone.
            client += ["--ping-bootstrap", str(STREAM_LIMIT_PINGS)]
        members.append(Member("client", "client", client_port, client))
        for m in members:
            m.args = ["--name", m.name, *m.args, *common]
            if self.scenario != "healthy":
                m.args += ["--request-timeout", str(SCENARIO_REQUEST_TIMEOUT_S)]
            if self.record_dir:
                m.args += ["--record", self.record_dir]
            if self.pcap_dir:
                base = os.path.join(self.pcap_dir, m.name)
                m.args += ["--pcap", f"{base}.pcapng", "--keylog", f"{base}.keys"]
            if self.control_dir:
                m.control = os.path.join(self.control_dir, f"{m.name}.sock")
                m.args += ["--control", m.control]
            if self.data_dir:
                m.args += ["--data-dir", os.path.join(self.data_dir, m.name)]
        self.members = members
        return members


def _take_lines(member: Member, chunk: str) -> list[dict[str, Any]]:
    """The complete lines of a member's output, parsed; a partial last line waits for the rest."""
    member.buffer += chunk
    *lines, member.buffer = member.buffer.split("\n")
    out = []
    for line in lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            event = {"node": member.name, "event": "output", "text": line}
        if not isinstance(event, dict):
            event = {"node": member.name, "event": "output", "text": line}
        event.setdefault("node", member.name)
        out.append(event)
    return out


class Cluster:
    """Starts, watches and stops the member processes."""

    def __init__(self, plan: ClusterPlan, python: str = sys.executable, log_dir: str | None = None) -> None:
        """`log_dir`: each member writes to `<log_dir>/<name>.log` instead of a pipe, so a caller
        that does not read `events()` (the TUI) never leaves a pipe to fill up and block a node."""
        self.plan = plan
        self.python = python
        self.log_dir = log_dir
        self._own_data_dir: str | None = None
        if plan.data_dir is None:
            self._own_data_dir = plan.data_dir = tempfile.mkdtemp(prefix="dhtscope-cluster-")
        self.members = plan.build()

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.plan.record_dir:
            os.makedirs(self.plan.record_dir, exist_ok=True)
            from .recording import write_cluster_manifest

            write_cluster_manifest(
                self.plan.record_dir, [(m.name, m.role, f"{self.plan.host}:{m.port}") for m in self.members]
            )
        if self.plan.pcap_dir:
            os.makedirs(self.plan.pcap_dir, exist_ok=True)
            for m in self.members:
                open(os.path.join(self.plan.pcap_dir, f"{m.name}.keys"), "w").close()  # a new run, new keys
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
        for m in self.members:
            if self.log_dir:
                m.log_path = os.path.join(self.log_dir, f"{m.name}.log")
                with open(m.log_path, "w") as log:
                    m.process = subprocess.Popen(
                        [self.python, "-m", "dhtscope.node", *m.args, "--exit-on-stdin-eof"],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.PIPE,  # closed when we go, however we go: the member then stops
                        text=True,
                        env=env,
                    )
                continue
            m.process = subprocess.Popen(
                [self.python, "-m", "dhtscope.node", *m.args, "--exit-on-stdin-eof"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.PIPE,  # closed when we go, however we go: the member then stops
                text=True,
                env=env,
            )
            assert m.process.stdout is not None  # stdout=PIPE above
            os.set_blocking(m.process.stdout.fileno(), False)

    def events(self, timeout_s: float) -> list[dict[str, Any]]:
        """Lines the members printed within `timeout_s`, parsed; non-JSON lines come as {'text': ...}."""
        if self.log_dir:
            return self._log_events(timeout_s)
        sel = selectors.DefaultSelector()
        for m in self.members:
            if m.process and m.process.stdout and m.process.poll() is None:
                sel.register(m.process.stdout, selectors.EVENT_READ, m)
        out: list[dict[str, Any]] = []
        if not sel.get_map():
            time.sleep(timeout_s)
            return out
        for key, _ in sel.select(timeout_s):
            member: Member = key.data
            stream = member.process.stdout if member.process else None
            if stream is None:
                continue
            try:
                chunk = stream.read()
            except (OSError, ValueError):
                chunk = ""
            if not chunk:
                continue
            out.extend(_take_lines(member, chunk))
        sel.close()
        return out

    def _log_events(self, timeout_s: float) -> list[dict[str, Any]]:
        """`events()` when output goes to log files: what was appended since the last call."""
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while True:
            for m in self.members:
                if not m.log_path:
                    continue
                try:
                    with open(m.log_path, "rb") as fh:
                        fh.seek(m.log_offset)
                        chunk = fh.read()
                except OSError:
                    continue
                if not chunk:
                    continue
                m.log_offset += len(chunk)
                out.extend(_take_lines(m, chunk.decode("utf-8", "replace")))
            if out or time.monotonic() >= deadline:
                return out
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def exited(self) -> list[Member]:
        return [m for m in self.members if m.process is not None and m.process.poll() is not None]

    def signal(self, signum: int) -> None:
        """Send `signum` to every member still running; safe from any thread, never waits."""
        for m in self.members:
            if m.process is not None and m.process.poll() is None:
                try:
                    m.process.send_signal(signum)
                except OSError:
                    pass  # gone meanwhile

    def stop(self) -> None:
        procs = [m.process for m in self.members if m.process is not None]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for p in procs:
            for pipe in (p.stdin, p.stdout):
                if pipe:
                    try:
                        pipe.close()
                    except OSError:
                        pass  # a member that died mid-write: nothing left to flush
        if self._own_data_dir is not None:
            shutil.rmtree(self._own_data_dir, ignore_errors=True)


def run_check(
    plan: ClusterPlan,
    out: TextIO,
    timeout_s: float = CHECK_TIMEOUT_S,
    echo: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Run the cluster until the client discovers every provider (exit 0) or time runs out (exit 1)."""
    cluster = Cluster(plan)
    started = time.monotonic()
    want = plan.providers
    best = 0
    failures: list[str] = []
    try:
        cluster.start()
        while time.monotonic() - started < timeout_s:
            for event in cluster.events(0.2):
                if echo:
                    echo(event)
                if event.get("event") == "discovered" and event.get("node") == "client":
                    best = max(best, len(event.get("providers", [])))
                    if best >= want:
                        elapsed = (time.monotonic() - started) * 1000
                        out.write(f"discovered {best}/{want} providers of {SERVICE} in {elapsed:.0f} ms\n")
                        return 0
                if event.get("event", "").endswith("_failed"):
                    failures.append(f"{event.get('node')}: {event.get('text')}")
            dead = [m for m in cluster.exited() if m.process and m.process.returncode not in (0, None)]
            if dead:
                for m in dead:
                    failures.append(
                        f"{m.name} exited with code {m.process.returncode}: "  # type: ignore[union-attr]
                        f"{m.buffer.strip()[-300:]}"
                    )
                break
        out.write(
            f"discovered {best}/{want} providers of {SERVICE}: gave up after {time.monotonic() - started:.1f} s\n"
        )
        for line in failures[-5:]:
            out.write(f"  {line}\n")
        return 1
    finally:
        cluster.stop()


def run_foreground(
    plan: ClusterPlan,
    out: TextIO,
    until: Callable[[dict[str, Any]], bool] | None = None,
    timeout_s: float | None = None,
) -> int:
    """Run the cluster printing what every node does, until Ctrl-C, `until(event)` or the timeout."""
    cluster = Cluster(plan)
    started = time.monotonic()
    width = max(len(m.name) for m in cluster.members)
    try:
        cluster.start()
        while timeout_s is None or time.monotonic() - started < timeout_s:
            for event in cluster.events(0.2):
                out.write(f"{event.get('node', '?'):>{width}} | {event.get('text', '')}\n")
                out.flush()
                if until is not None and until(event):
                    return 0
            if len(cluster.exited()) == len(cluster.members):
                return 1
        return 1 if until is not None else 0
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.stop()


def scenario_timeout_s(scenario: str) -> float:
    return SCENARIO_TIMEOUT_S.get(scenario, FAULT_SCENARIO_TIMEOUT_S)


def run_scenario(plan: ClusterPlan, out: TextIO, timeout_s: float | None = None) -> int:
    """Run the topology with the scenario's fault until the client's discovery succeeds or gives up.

    Exits 0 when the run completed either way (a fault scenario is expected to fail
    discovery); 1 only if a node process died.
    """
    timeout_s = timeout_s or scenario_timeout_s(plan.scenario)
    cluster = Cluster(plan)
    started = time.monotonic()
    width = max(len(m.name) for m in cluster.members)
    best = 0
    outcome = None
    try:
        cluster.start()
        while outcome is None and time.monotonic() - started < timeout_s:
            for event in cluster.events(0.2):
                out.write(f"{event.get('node', '?'):>{width}} | {event.get('text', '')}\n")
                out.flush()
                if event.get("node") != "client":
                    continue
                if event.get("event") == "discovered":
                    best = max(best, len(event.get("providers", [])))
                    ends_on_success = plan.scenario != "stream-limit" and plan.scenario not in RUN_FULL_TIME
                    if best >= plan.providers and ends_on_success:
                        outcome = "succeeded"
                elif event.get("event") == "ping_done" and plan.scenario == "stream-limit":
                    outcome = "stopped after the PING burst: " + event.get("text", "")
            dead = [m for m in cluster.exited() if m.process and m.process.returncode not in (0, None)]
            if dead:
                out.write(f"{', '.join(m.name for m in dead)} exited early\n")
                return 1
        elapsed = time.monotonic() - started
        if outcome is None and plan.scenario in RUN_FULL_TIME:
            outcome = f"{'succeeded' if best >= plan.providers else 'did not succeed'}; the run lasted {elapsed:.1f} s"
        verdict = outcome or f"gave up after {elapsed:.1f} s"
        out.write(
            f"scenario {plan.scenario}: client discovered {best}/{plan.providers} providers of "
            f"{SERVICE}; discovery {verdict}\n"
        )
        if plan.record_dir:
            out.write(f"recording in {plan.record_dir}: run `dhtscope diagnose {plan.record_dir}`\n")
        if plan.pcap_dir:
            out.write(
                f"captures in {plan.pcap_dir}: run `dhtscope diagnose {plan.pcap_dir}/registry.pcapng "
                f"--keylog {plan.pcap_dir}/registry.keys`\n"
            )
        return 0
    finally:
        cluster.stop()
