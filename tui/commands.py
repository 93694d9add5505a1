"""The TUI's subcommands: `tui`, `attach`, `replay`, `demo`. `add_commands(subparsers)` registers them."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from dhtscope.node.scenarios import SCENARIOS


class CommandError(Exception):
    """A command that cannot start; printed as one line, exit status 1."""


def _fail(command: str, message: str, status: int = 1) -> int:
    print(f"dhtscope {command}: {message}", file=sys.stderr)
    return status


def _run_app(source: Any, select: str | None = None) -> int:
    from .app import DhtscopeApp

    app = DhtscopeApp(source, select=select)
    # SIGTERM and SIGHUP (a closed terminal) quit like `q`: the app stops its source and the
    # caller then stops the processes it started and removes its temporary files.
    previous = {sig: signal.signal(sig, lambda *_: app.exit()) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        app.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if app.start_error:
        print(f"dhtscope: {app.start_error}", file=sys.stderr)
        return 1
    return 0


# -- tui: one node inside the app ---------------------------------------------------------------


def cmd_tui(args: argparse.Namespace) -> int:
    from dhtscope.node.cli import node_errors, service_options
    from dhtscope.node.keys import Identity
    from dhtscope.node.node import Node
    from dhtscope.node.recording import NodeRecorder
    from dhtscope.node.service import _work

    from .source import EventRow
    from .sources.embedded import EmbeddedSource

    with node_errors():
        identity = Identity.load_or_create(args.key) if args.key else Identity.generate()
    opts = service_options(args)
    name = opts.name = args.name or identity.node_id.short()
    source: EmbeddedSource

    def factory(record_dir: str) -> Node:
        return opts.make_node(identity, name, NodeRecorder(record_dir, name, identity.node_id.hex(), opts.role))

    async def service(node: Node, stop: asyncio.Event) -> None:
        def report(event: str, text: str, **data: Any) -> None:
            # What `dhtscope node` would print goes into the event log instead.
            source.push(EventRow(_now_ms(), node.name, f"service:{event}", None, {"text": text, **data}))

        control = None
        if opts.control:
            from dhtscope.node.control import ControlServer

            control = ControlServer(node, opts.control, token=opts.control_token)
            await control.start()
            report("control", f"control endpoint {control.description}", control=control.description)
        try:
            await _work(node, opts, report, stop)
            await stop.wait()
        finally:
            if control is not None:
                await control.close()

    source = EmbeddedSource(factory, record_dir=args.record, service=service)
    return _run_app(source)


def _now_ms() -> float:
    import time

    return time.time() * 1000.0


# -- attach: control endpoints of running nodes --------------------------------------------------


def read_token(args: argparse.Namespace) -> str | None:
    if args.token is not None:
        return str(args.token)
    if args.token_file is None:
        return None
    try:
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CommandError(f"cannot read token file {args.token_file}: {exc.strerror or exc}") from None
    if not token:
        raise CommandError(f"token file {args.token_file} is empty")
    return token


async def check_targets(targets: list[str], token: str | None) -> None:
    """Refuse to open the app on a target that refuses us: a wrong token is the user's to fix."""
    from dhtscope.node.control import REFUSED, ControlClient, ControlError, parse_control_target

    for target in targets:
        try:
            parse_control_target(target)
        except ControlError as exc:
            raise CommandError(str(exc)) from None
        try:
            client = await ControlClient.connect(target, token, timeout_s=3.0)
        except ControlError as exc:
            if REFUSED in str(exc) or "token" in str(exc):
                raise CommandError(f"{target}: {exc}") from None
            continue  # not up yet: shown as disconnected and retried
        await client.close()


def cmd_attach(args: argparse.Namespace) -> int:
    from .sources.attach import AttachSource

    try:
        token = read_token(args)
        asyncio.run(check_targets(args.targets, token))
    except CommandError as exc:
        return _fail("attach", str(exc))
    return _run_app(AttachSource(args.targets, token=token, record_dirs=args.record))


# -- replay: a recording ---------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    from dhtscope.tracing.cli import check_input_paths
    from dhtscope.tracing.inputs import InputError, check_inputs

    from .sources.replay import GcBulkLoad, ReplaySource

    check_input_paths(args.paths + ([args.keylog] if args.keylog else []))
    try:
        check_inputs(args.paths, args.keylog)
    except InputError as exc:
        return _fail("replay", str(exc))
    heap = GcBulkLoad()  # the collector is process-wide: the entry point decides
    try:
        return _run_app(ReplaySource(*args.paths, heap=heap, keylog=args.keylog))
    finally:
        heap.close()


# -- demo: the cluster as processes, the app attached to all of them -------------------------------


def _ports_free(host: str, first: int, count: int) -> str | None:
    for port in range(first, first + count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError:
            return f"UDP port {port} on {host} is in use (another demo or cluster?); try --base-port"
        finally:
            sock.close()
    return None


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(args)


def run_demo(args: argparse.Namespace, runner: Any = None, on_started: Any = None) -> int:
    """Start the cluster, run the app on it (`runner(source, select)`), stop every process."""
    from dhtscope.node.cluster import Cluster, ClusterPlan

    from .sources.attach import AttachSource

    if not 1024 <= args.base_port <= 65535 - args.providers - 2:
        return _fail("demo", f"--base-port {args.base_port} leaves no room for {args.providers + 2} nodes")
    busy = _ports_free("127.0.0.1", args.base_port, args.providers + 2)
    if busy:
        return _fail("demo", busy)
    work = tempfile.mkdtemp(prefix="dhtscope-demo-")
    record = args.record or os.path.join(work, "recording")
    plan = ClusterPlan(
        providers=args.providers,
        base_port=args.base_port,
        scenario=args.scenario,
        record_dir=record,
        control_dir=work,
        pcap_dir=args.pcap,
    )
    cluster = Cluster(plan, log_dir=os.path.join(work, "logs"))
    try:
        cluster.start()
        if on_started is not None:
            on_started(cluster)
        sockets = [m.control for m in cluster.members if m.control]
        return (runner or _run_app)(AttachSource(sockets, record_dirs=[record]), select="registry")
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


# -- registration ----------------------------------------------------------------------------------------


def add_commands(subparsers: Any) -> None:
    """Register `tui`, `attach`, `replay` and `demo` on the `dhtscope` subparsers."""
    from dhtscope.node.cli import add_node_options, whole

    p = subparsers.add_parser(
        "tui",
        help="a TUI around one node run inside it",
        description="Run one DHT node inside the TUI (options as for `dhtscope node`).",
    )
    add_node_options(p)
    p.set_defaults(func=cmd_tui)

    p = subparsers.add_parser(
        "attach",
        help="a TUI attached to running nodes' control endpoints",
        description="Attach to running nodes through their control endpoints.",
    )
    p.add_argument("targets", nargs="+", metavar="PATH_OR_TCP", help="a node's control socket path, or tcp:HOST:PORT")
    token = p.add_mutually_exclusive_group()
    token.add_argument("--token", help="control token (tcp endpoints)")
    token.add_argument("--token-file", metavar="FILE", help="file holding the control token")
    p.add_argument(
        "--record",
        action="append",
        default=[],
        metavar="DIR",
        help="recording directory the nodes write to (repeatable); analysis reads it. "
        "Without it, analysis uses the live events",
    )
    p.set_defaults(func=cmd_attach)

    p = subparsers.add_parser(
        "replay",
        help="a TUI over a recording or a packet capture",
        description="Replay a recording directory, trace files or pcap/pcapng captures: play, pause, step, seek.",
    )
    p.add_argument(
        "paths", nargs="+", metavar="PATH", help="recording directory, .sqlog/.qlog files, or pcap/pcapng captures"
    )
    p.add_argument(
        "--keylog",
        metavar="FILE",
        help="TLS key log (SSLKEYLOGFILE) for the captures; not needed for a pcapng carrying its keys",
    )
    p.set_defaults(func=cmd_replay)

    p = subparsers.add_parser(
        "demo",
        help="the local cluster with the TUI attached to every node",
        description="Start 1 registry + N providers + 1 client as processes with control "
        "sockets and attach the TUI to all of them; quitting stops them all.",
    )
    p.add_argument("--providers", type=whole(1, 64), default=3, help="number of providers, 1..64 (default 3)")
    p.add_argument(
        "--base-port", type=whole(1024, 65535), default=4500, help="registry port; others follow (default 4500)"
    )
    p.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="healthy",
        help="the registry's fault scenario at start (switch it live with `s`)",
    )
    p.add_argument("--record", metavar="DIR", help="keep the recording in DIR (default: a temporary directory)")
    p.add_argument(
        "--pcap",
        metavar="DIR",
        help="each node writes its datagrams to DIR/<name>.pcapng and its TLS secrets to DIR/<name>.keys",
    )
    p.set_defaults(func=cmd_demo)
