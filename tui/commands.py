"""The TUI's subcommands: `tui`, `attach`, `replay`, `demo`. `add_commands(subparsers)` registers them."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import signal
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from dhtscope.tracing.cli import UsageError


class CommandError(Exception):
    """A command that cannot start; printed as one line, exit status 1."""


def _fail(command: str, message: str, status: int = 1) -> int:
    print(f"dhtscope {command}: {message}", file=sys.stderr)
    return status


def _run_app(
    source: Any,
    select: str | None = None,
    last_resort: list[Callable[[], None]] | None = None,
    on_exit: list[Callable[[], None]] | None = None,
) -> int:
    """Run the app until it quits; once quitting starts, the process ends within EXIT_GRACE_S.

    SIGTERM, SIGHUP and a terminal that went away quit like `q`; the caller then stops what it
    started. If anything hangs on the way (Textual's shutdown can, on a dead terminal), the
    guard's watchdog ends the process and the children leave with it.
    """
    from .app import DhtscopeApp
    from .exit_guard import ExitGuard

    app = DhtscopeApp(source, select=select)
    guard = ExitGuard(app.request_exit, last_resort=last_resort, on_begin=on_exit)
    app.exit_begins = guard.begin
    guard.install()
    try:
        app.run()
    finally:
        guard.uninstall()
    if guard.status is not None and guard.status > 128:
        return guard.status  # ended by a signal or a lost terminal: the caller cleans up and goes
    if app.start_error:
        print(f"dhtscope: {app.start_error}", file=sys.stderr)
        return 1
    return 0


# -- tui: one node inside the app ---------------------------------------------------------------


def cmd_tui(args: argparse.Namespace) -> int:
    from dhtscope.node.cli import node_errors, service_options
    from dhtscope.node.node import Node
    from dhtscope.node.recording import NodeRecorder
    from dhtscope.node.service import _work

    from .source import EventRow
    from .sources.embedded import EmbeddedSource

    opts = service_options(args)
    with node_errors():
        identity = opts.identity()
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
            fingerprint = f" (TLS key {control.fingerprint})" if control.fingerprint else ""
            report("control", f"control endpoint {control.description}{fingerprint}", control=control.description)
        try:
            await _work(node, opts, report, stop)
            await stop.wait()
        finally:
            if control is not None:
                await control.close()

    source = EmbeddedSource(factory, record_dir=args.record, service=service)
    return _run_app(source)


def _now_ms() -> float:
    return time.time() * 1000.0


# -- attach: control endpoints of running nodes --------------------------------------------------


async def check_targets(
    targets: list[str], token: str | None, wait: bool, fingerprints: list[str] | None = None
) -> None:
    """Refuse to open the app on a target that refuses us (a wrong token or key is the user's to fix),
    and, unless told to wait, on one that is not there: no app full of nothing."""
    from dhtscope.node.control import (
        REFUSED,
        ControlClient,
        ControlError,
        FingerprintMismatch,
        normalize_fingerprint,
        parse_control_target,
    )

    try:
        for fingerprint in fingerprints or []:
            normalize_fingerprint(fingerprint)
    except ControlError as exc:
        raise CommandError(str(exc)) from None

    for target in targets:
        try:
            where = parse_control_target(target)
        except ControlError as exc:
            raise CommandError(str(exc)) from None
        if where.kind == "unix" and where.path is not None:
            try:
                mode = os.stat(where.path).st_mode
            except FileNotFoundError:
                if wait:
                    continue
                raise CommandError(
                    f"{where.path}: no such control socket; start the node with --control {where.path}, "
                    "or pass --wait to wait for it"
                ) from None
            except OSError as exc:
                raise CommandError(f"{where.path}: {exc.strerror or exc}") from None
            if not stat.S_ISSOCK(mode):
                raise CommandError(f"{where.path}: not a socket (a node's --control PATH is a unix socket)")
        try:
            client = await ControlClient.connect(target, token, timeout_s=3.0, fingerprints=fingerprints)
        except ControlError as exc:
            if REFUSED in str(exc) or "token" in str(exc) or isinstance(exc, FingerprintMismatch):
                raise CommandError(f"{target}: {exc}") from None
            if wait:
                continue  # shown as waiting, and tried again until it answers
            raise CommandError(f"{exc}; pass --wait to wait for the node") from None
        await client.close()


def cmd_attach(args: argparse.Namespace) -> int:
    from dhtscope.node.cli import control_token

    from .sources.attach import AttachSource

    try:
        token = control_token(args.control_token, args.control_token_file)
        asyncio.run(check_targets(args.targets, token, args.wait, args.fingerprint))
    except (CommandError, UsageError) as exc:
        return _fail("attach", str(exc))
    source = AttachSource(args.targets, token=token, record_dirs=args.record, fingerprints=args.fingerprint)
    status = _run_app(source)
    if status == 0 and not source.ever_connected:
        return _fail("attach", f"quit before any node answered at {', '.join(args.targets)}")
    return status


# -- replay: a recording ---------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    from dhtscope.tracing.cli import check_trace_inputs

    from .sources.replay import GcBulkLoad, ReplaySource

    check_trace_inputs(args.paths, args.keylog)
    heap = GcBulkLoad()  # the collector is process-wide: the entry point decides
    try:
        return _run_app(ReplaySource(*args.paths, heap=heap, keylog=args.keylog))
    finally:
        heap.close()


# -- demo: the cluster as processes, the app attached to all of them -------------------------------


DEMO_HOST = "127.0.0.1"
PORT_SEARCH_RUNS = 200  # runs of consecutive ports tried after the asked-for one is busy


def _ports_free(host: str, first: int, count: int) -> str | None:
    """None if UDP ports first..first+count-1 are all free on host, else why not."""
    for port in range(first, first + count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError:
            return f"UDP port {port} on {host} is in use"
        finally:
            sock.close()
    return None


def free_port_run(host: str, first: int, count: int) -> tuple[int, str | None]:
    """The first run of `count` free UDP ports at or after `first`, and what was busy if it moved.

    CommandError when none is found: every run up to PORT_SEARCH_RUNS away is taken."""
    busy = _ports_free(host, first, count)
    if busy is None:
        return first, None
    for step in range(1, PORT_SEARCH_RUNS + 1):
        base = first + step * count
        if base + count - 1 > 65535:
            break
        if _ports_free(host, base, count) is None:
            return base, (
                f"UDP ports {first}-{first + count - 1} are taken ({busy}: another demo or cluster?); "
                f"using {base}-{base + count - 1}"
            )
    raise CommandError(f"{busy}, and no {count} free ports follow it; try --base-port")


def _say(text: str) -> None:
    """A line for the terminal the demo ran in, which may be gone or no longer reading."""
    try:
        print(text, flush=True)
    except (OSError, ValueError):
        pass


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        return run_demo(args)
    except CommandError as exc:
        return _fail("demo", str(exc))


def run_demo(args: argparse.Namespace, runner: Any = None, on_started: Any = None) -> int:
    """Start the cluster, run the app on it (`runner(source, select)`), stop every process.

    The recording stays, in `--record DIR` or ./dhtscope-demo-<time>/, unless --no-keep; the
    path and the command to replay it are printed once the app is gone.
    """
    from dhtscope.node.cluster import Cluster, ClusterPlan

    from .sources.attach import AttachSource

    count = args.providers + 2
    if not 1024 <= args.base_port <= 65535 - count + 1:
        return _fail("demo", f"--base-port {args.base_port} leaves no room for {count} nodes")
    keep = not getattr(args, "no_keep", False)
    if args.record and not keep:
        return _fail("demo", "--no-keep deletes the recording: it does not go with --record DIR")
    base, moved = free_port_run(DEMO_HOST, args.base_port, count)
    work = tempfile.mkdtemp(prefix="dhtscope-demo-")  # control sockets, logs, nodes' data: never kept
    if args.record:
        record = os.path.abspath(args.record)
    elif keep:
        record = _new_directory_name(os.path.join(os.getcwd(), time.strftime("dhtscope-demo-%Y%m%d-%H%M%S")))
    else:
        record = os.path.join(work, "recording")
    plan = ClusterPlan(
        providers=args.providers,
        base_port=base,
        scenario=args.scenario or "healthy",
        record_dir=record,
        control_dir=work,
        # The nodes' keys, records and routing tables: kept in --data-dir if given, else with the sockets.
        data_dir=getattr(args, "data_dir", None) or os.path.join(work, "data"),
        pcap_dir=getattr(args, "pcap", None),
    )
    cluster = Cluster(plan, log_dir=os.path.join(work, "logs"))
    status = 1
    try:
        cluster.start()
        if on_started is not None:
            on_started(cluster)
        source = AttachSource([m.control for m in cluster.members if m.control], record_dirs=[record])
        kept = f"; the recording stays in {record}" if keep else "; the recording is deleted (--no-keep)"
        source.quit_note = f"This stops the {count} node processes the demo started{kept}."
        if moved:
            source.notices.append(moved)
        if runner is not None:
            status = runner(source, "registry")
        else:
            # The nodes stop while the app does; if anything hangs, the watchdog still tidies up.
            status = _run_app(
                source,
                select="registry",
                on_exit=[partial(cluster.signal, signal.SIGTERM)],
                last_resort=[partial(shutil.rmtree, work, ignore_errors=True)],
            )
    finally:
        if moved:
            _say(f"dhtscope demo: {moved}")
        if keep:
            _say(f"recording kept in {record}\nreplay it with: dhtscope replay {shlex.quote(record)}")
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    return status


def _new_directory_name(path: str) -> str:
    """`path`, or `path-2`, `path-3`... whichever does not exist yet."""
    candidate, n = path, 1
    while os.path.exists(candidate):
        n += 1
        candidate = f"{path}-{n}"
    return candidate


# -- registration ----------------------------------------------------------------------------------------


def add_commands(subparsers: Any) -> None:
    """Register `tui`, `attach`, `replay` and `demo` on the `dhtscope` subparsers."""
    from dhtscope.node.cli import CONTROL_TOKEN_ENV, add_cluster_options, add_node_options

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
    token.add_argument(
        "--control-token",
        "--token",
        dest="control_token",
        metavar="TOKEN",
        help=f"control token for tcp endpoints; other users can read it with `ps`, so prefer "
        f"--control-token-file or the {CONTROL_TOKEN_ENV} environment variable",
    )
    token.add_argument(
        "--control-token-file",
        "--token-file",
        dest="control_token_file",
        metavar="FILE",
        help="file whose first line is the control token",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="open even if a node is not up yet, and wait for it (exit status 1 if quit before any answered)",
    )
    p.add_argument(
        "--fingerprint",
        action="append",
        default=[],
        metavar="SHA256:HEX",
        help="the key fingerprint a tcp endpoint must show (printed by the node at start; repeatable). "
        "Without it the first one seen is trusted and remembered, with a warning",
    )
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
        "sockets and attach the TUI to all of them; quitting stops them all and keeps the recording.",
    )
    add_cluster_options(
        p,
        scenario_help="the registry's fault scenario at start (switch any node's live with `s`)",
        record_help="record into DIR (default: ./dhtscope-demo-<time>/); kept after quitting",
    )
    p.add_argument(
        "--no-keep",
        action="store_true",
        help="record into a temporary directory and delete it on quit (not with --record)",
    )
    p.set_defaults(func=cmd_demo)
