"""A node as a long-running process: join, advertise, discover, report, and stop cleanly on a signal."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from .constants import FIND_VALUE_QUORUM, MAX_DATAGRAM_BYTES
from .keys import Identity
from .node import Node, NodeError
from .persistence import key_path
from .probes import store_summary
from .rpc import RpcError
from .scenarios import Faults
from .transport import Address

# What the node does, one line each: (event, text, **data); Reporter prints it, the TUI logs it.
Report = Callable[..., None]

BOOTSTRAP_RETRY_S = 0.5
DISCOVER_INTERVAL_S = 1.0


@dataclass
class ServiceOptions:
    listen: Address
    bootstrap: list[Address] = field(default_factory=list)
    key_file: str | None = None
    name: str | None = None
    role: str = "node"
    advertise: list[tuple[str, str]] = field(default_factory=list)
    discover: list[str] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    record_dir: str | None = None
    control: str | None = None
    control_token: str | None = None
    json_lines: bool = False
    request_timeout_s: float | None = None
    discover_interval_s: float = DISCOVER_INTERVAL_S
    discover_rounds: int | None = None  # stop discovering after this many rounds (None: run on)
    discover_all: bool = False  # ask all k closest nodes, not just the first few holders
    ping_bootstrap: int = 0  # PING each bootstrap node this many times after joining
    max_datagram_bytes: int = MAX_DATAGRAM_BYTES
    pcap: str | None = None  # capture file for the node's datagrams
    keylog: str | None = None  # NSS key log for its TLS secrets
    data_dir: str | None = None  # records and routing table in SQLite; the key too, unless key_file

    def node_kwargs(self) -> dict[str, Any]:
        """The Node settings these options carry (besides identity, address, name, role, faults)."""
        kwargs: dict[str, Any] = {
            "max_datagram_bytes": self.max_datagram_bytes,
            "pcap": self.pcap,
            "keylog": self.keylog,
        }
        if self.request_timeout_s:
            kwargs["request_timeout_s"] = self.request_timeout_s
        if self.data_dir:
            kwargs["data_dir"] = self.data_dir
        return kwargs

    def key_path(self) -> str | None:
        """The key file to use: the one given, else the one in the data dir, else none (a fresh key)."""
        if self.key_file:
            return self.key_file
        return key_path(self.data_dir) if self.data_dir else None

    def identity(self) -> Identity:
        """The node's key: loaded from (or created in) `key_path()`, or a fresh one when there is none."""
        key_file = self.key_path()
        return Identity.load_or_create(key_file) if key_file else Identity.generate()

    def make_node(self, identity: Identity, name: str, recorder: Any = None) -> Node:
        """The (unstarted) node these options describe: `dhtscope node` and `dhtscope tui` both build it here."""
        return Node(
            identity,
            self.listen[0],
            self.listen[1],
            name=name,
            role=self.role,
            faults=self.faults,
            recorder=recorder,
            **self.node_kwargs(),
        )


class Reporter:
    """What the node does, one line each: readable text, or JSON objects for a supervising process."""

    def __init__(self, name: str, json_lines: bool, out: TextIO = sys.stdout) -> None:
        self.name = name
        self.json_lines = json_lines
        self.out = out

    def __call__(self, event: str, text: str, **data: Any) -> None:
        if self.json_lines:
            line = json.dumps({"node": self.name, "event": event, "text": text, "t": time.time(), **data})
        else:
            line = f"[{self.name}] {text}"
        try:
            self.out.write(line + "\n")
            self.out.flush()
        except (BrokenPipeError, ValueError):
            pass  # whoever read our output has gone; keep serving


async def run_service(
    opts: ServiceOptions, stop: asyncio.Event | None = None, on_started: Callable[[Node], None] | None = None
) -> None:
    """Run one node until `stop` is set or SIGINT, SIGTERM or SIGHUP (its terminal closed) arrives."""
    identity = opts.identity()
    name = opts.name or identity.node_id.short()
    report = Reporter(name, opts.json_lines)
    recorder = None
    if opts.record_dir:
        from .recording import NodeRecorder

        recorder = NodeRecorder(opts.record_dir, name, identity.node_id.hex(), opts.role)
    node = opts.make_node(identity, name, recorder)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGHUP too: a node whose terminal closes stops as cleanly as on Ctrl-C (files flushed,
    # control socket removed) instead of dying where it stands.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    control = None
    if opts.control:
        from .control import ControlServer

        # Built before the node starts: a mistaken --control is one line, and nothing to undo.
        control = ControlServer(node, opts.control, token=opts.control_token)
    await node.start()
    if recorder is not None:
        recorder.set_address(node.address)
    if control is not None:
        try:
            await control.start()
        except BaseException:
            await node.stop()
            raise
    faults = f" faults: {', '.join(opts.faults.names())}" if opts.faults.names() else ""
    report(
        "started",
        f"listening on {node.address} as {node.id.short()} ({opts.role}){faults}",
        address=node.address,
        id=node.id.hex(),
        role=opts.role,
        control=control.description if control else None,
        fingerprint=control.fingerprint if control else None,
    )
    if control is not None and control.fingerprint is not None:
        report(
            "control",
            f"control endpoint {control.description} (TLS); its key fingerprint is {control.fingerprint}: "
            f"attach with --fingerprint {control.fingerprint}",
            control=control.description,
            fingerprint=control.fingerprint,
        )
    if node.state_loaded is not None:
        loaded = node.state_loaded
        report(
            "state_loaded",
            f"loaded {loaded['records']} record(s) and {loaded['contacts']} contact(s) from {opts.data_dir}"
            + (f"; {loaded['records_refused']} no longer valid" if loaded["records_refused"] else ""),
            **loaded,
        )
    if on_started is not None:
        on_started(node)
    work = asyncio.create_task(_work(node, opts, report, stop))
    try:
        await stop.wait()
    finally:
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        if control is not None:
            await control.close()
        await node.stop()
        report("stopped", "stopped")


async def _work(node: Node, opts: ServiceOptions, report: Report, stop: asyncio.Event) -> None:
    if opts.bootstrap:
        while not stop.is_set():
            try:
                known = await node.bootstrap(opts.bootstrap)
                report(
                    "joined",
                    f"joined through {len(opts.bootstrap)} bootstrap node(s); routing table holds {known} contacts",
                    contacts=known,
                )
                break
            except NodeError as exc:
                report("bootstrap_failed", f"bootstrap failed, retrying: {exc}", error=str(exc))
                await asyncio.sleep(BOOTSTRAP_RETRY_S)
    for service, endpoint in opts.advertise:
        while not stop.is_set():
            try:
                stored = await node.advertise(service, endpoint)
                summary = store_summary(len(stored.accepted), len(stored.targets), stored.stored_locally)
                report(
                    "advertised",
                    f"advertised {service}={endpoint}: {summary}",
                    service=service,
                    endpoint=endpoint,
                    replicas=stored.replicas,
                    accepted=len(stored.accepted),
                    closest=len(stored.targets),
                    stored_locally=stored.stored_locally,
                )
                break
            except NodeError as exc:
                report("advertise_failed", f"advertise {service} failed, retrying: {exc}", error=str(exc))
                await asyncio.sleep(BOOTSTRAP_RETRY_S)
    if opts.ping_bootstrap:
        await _ping_bootstrap(node, opts, report)
    started = time.monotonic()
    last: dict[str, int] = {}
    rounds = 0
    quorum = None if opts.discover_all else FIND_VALUE_QUORUM
    while opts.discover and not stop.is_set():
        if opts.discover_rounds is not None and rounds >= opts.discover_rounds:
            report("discover_done", f"finished {rounds} discovery rounds", rounds=rounds)
            return
        rounds += 1
        for service in opts.discover:
            try:
                found = await node.discover(service, quorum)
            except NodeError as exc:
                report("discover_failed", f"discover {service} failed: {exc}", service=service, error=str(exc))
                continue
            endpoints = sorted(r.value.decode("utf-8", "replace") for r in found.records)
            if last.get(service) != len(endpoints):
                report(
                    "discovered",
                    f"discovered {len(endpoints)} provider(s) of {service}: {', '.join(endpoints) or '-'} "
                    f"({found.lookup.rounds} rounds, {found.lookup.messages} messages)",
                    service=service,
                    providers=endpoints,
                    rounds=found.lookup.rounds,
                    messages=found.lookup.messages,
                    elapsed_ms=round((time.monotonic() - started) * 1000),
                )
                last[service] = len(endpoints)
        await asyncio.sleep(opts.discover_interval_s)


async def _ping_bootstrap(node: Node, opts: ServiceOptions, report: Report) -> None:
    """PING the bootstrap nodes one request (and one stream) after another."""
    for addr in opts.bootstrap:
        ok = failed = 0
        error = None
        for _ in range(opts.ping_bootstrap):
            try:
                await node.ping(addr)
                ok += 1
            except (NodeError, RpcError) as exc:
                failed += 1
                error = str(exc)
                break  # the rest would wait on the same jammed connection
        text = f"pinged {addr[0]}:{addr[1]}: {ok} answered, {failed} failed"
        report("ping_done", text + (f" (last error: {error})" if error else ""), ok=ok, failed=failed)
