"""The `dhtscope` command line. User errors print one line and exit non-zero; never a traceback."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from dhtscope.node import runtime
from dhtscope.node.constants import MAX_DATAGRAM_BYTES, MAX_UDP_PAYLOAD_BYTES, MIN_DATAGRAM_BYTES
from dhtscope.node.endpoints import parse_address
from dhtscope.node.keys import KeyFileError
from dhtscope.node.node import NodeError
from dhtscope.node.scenarios import SCENARIOS, Faults


class UsageError(Exception):
    """A command line that cannot be carried out; printed as one line."""


def _address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _service_endpoint(text: str) -> tuple[str, str]:
    service, sep, endpoint = text.partition("=")
    if not sep or not service or not endpoint:
        raise argparse.ArgumentTypeError(f"{text!r} must be SERVICE=ENDPOINT")
    return service, endpoint


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def _datagram_bytes(text: str) -> int:
    value = _positive_int(text)
    if not MIN_DATAGRAM_BYTES <= value <= MAX_UDP_PAYLOAD_BYTES:
        raise argparse.ArgumentTypeError(
            f"{value} is outside {MIN_DATAGRAM_BYTES}..{MAX_UDP_PAYLOAD_BYTES} "
            f"(QUIC needs at least {MIN_DATAGRAM_BYTES})"
        )
    return value


# -- node ----------------------------------------------------------------------------


def _add_node_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--listen",
        type=_address,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="UDP address to listen on (default 127.0.0.1, any free port)",
    )
    p.add_argument(
        "--bootstrap",
        type=_address,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a known node to join through (repeatable)",
    )
    p.add_argument("--key", metavar="FILE", help="Ed25519 key file (PEM); created if missing")
    p.add_argument("--name", help="name shown in output and recordings (default: short id)")
    p.add_argument("--role", default="node", help="role label: registry, provider, client, node")
    p.add_argument(
        "--advertise",
        type=_service_endpoint,
        action="append",
        default=[],
        metavar="SERVICE=ENDPOINT",
        help="advertise a service endpoint (repeatable)",
    )
    p.add_argument(
        "--discover",
        action="append",
        default=[],
        metavar="SERVICE",
        help="discover a service every second and report changes (repeatable)",
    )
    p.add_argument(
        "--scenario", choices=SCENARIOS, default="healthy", help="switch on a fault mode for teaching and tests"
    )
    p.add_argument("--loss", type=_fraction, default=0.3, help="drop fraction for --scenario loss")
    p.add_argument("--record", metavar="DIR", help="record qlog traces of this node into DIR")
    p.add_argument("--control", metavar="PATH", help="control endpoint: unix socket path or tcp:HOST:PORT")
    p.add_argument("--control-token", metavar="TOKEN", help="token required on a tcp control endpoint")
    p.add_argument("--json-lines", action="store_true", help="report as JSON lines (for supervisors)")
    p.add_argument(
        "--request-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds to wait for each answer (default 5)",
    )
    p.add_argument(
        "--discover-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="pause between discovery rounds (default 1)",
    )
    p.add_argument(
        "--discover-rounds", type=_positive_int, default=None, metavar="N", help="stop discovering after N rounds"
    )
    p.add_argument(
        "--ping-bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="after joining, PING each bootstrap node N times, one stream each",
    )
    p.add_argument(
        "--discover-all",
        action="store_true",
        help="ask all k closest nodes in each discovery, not only the first holders",
    )
    p.add_argument(
        "--max-datagram-bytes",
        type=_datagram_bytes,
        default=MAX_DATAGRAM_BYTES,
        metavar="N",
        help=f"largest UDP payload to send, {MIN_DATAGRAM_BYTES}..{MAX_UDP_PAYLOAD_BYTES} "
        f"(default {MAX_DATAGRAM_BYTES}, which every path carries; 1350 packs more answers "
        "per datagram where the MTU allows)",
    )


def cmd_node(args: argparse.Namespace) -> int:
    from dhtscope.node.service import ServiceOptions, run_service

    opts = ServiceOptions(
        listen=args.listen,
        bootstrap=args.bootstrap,
        key_file=args.key,
        name=args.name,
        role=args.role,
        advertise=args.advertise,
        discover=args.discover,
        faults=Faults.for_scenario(args.scenario, loss=args.loss),
        record_dir=args.record,
        control=args.control,
        control_token=args.control_token,
        json_lines=args.json_lines,
        request_timeout_s=args.request_timeout,
        discover_interval_s=args.discover_interval,
        discover_rounds=args.discover_rounds,
        discover_all=args.discover_all,
        ping_bootstrap=args.ping_bootstrap,
        max_datagram_bytes=args.max_datagram_bytes,
    )
    runtime.run(run_service(opts))
    return 0


# -- cluster and demo -------------------------------------------------------------------


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--providers", type=_positive_int, default=3, help="number of providers (default 3)")
    p.add_argument("--base-port", type=int, default=4500, help="registry port; others follow (default 4500)")
    p.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default=None,
        help="fault mode on the registry; the run ends once discovery succeeds or gives up",
    )
    p.add_argument("--record", metavar="DIR", help="record every node's qlog traces into DIR")


def _plan(args: argparse.Namespace) -> Any:
    from dhtscope.node.cluster import ClusterPlan

    if not 1024 <= args.base_port <= 65535 - args.providers - 2:
        raise UsageError(f"--base-port {args.base_port} leaves no room for {args.providers + 2} nodes")
    return ClusterPlan(
        providers=args.providers, base_port=args.base_port, scenario=args.scenario or "healthy", record_dir=args.record
    )


def _stop_on_sigterm() -> None:
    """SIGTERM ends a supervisor the way Ctrl-C does, so it stops its children before it goes."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def cmd_cluster(args: argparse.Namespace) -> int:
    from dhtscope.node.cluster import run_check, run_foreground, run_scenario

    _stop_on_sigterm()
    plan = _plan(args)
    if args.check:
        return run_check(plan, sys.stdout, timeout_s=args.timeout)
    if args.scenario or args.record:
        return run_scenario(plan, sys.stdout)
    return run_foreground(plan, sys.stdout)


# -- probe ---------------------------------------------------------------------------------


def cmd_probe(args: argparse.Namespace) -> int:
    return runtime.run(_probe(args))


async def _probe(args: argparse.Namespace) -> int:
    from dhtscope.node.node import Node

    node = Node(
        host=args.listen[0],
        port=args.listen[1],
        name="probe",
        role="probe",
        request_timeout_s=args.timeout,
        client_mode=True,
    )
    await node.start()
    started = time.monotonic()
    try:
        result = await _probe_op(node, args)
    finally:
        await node.stop()
    result["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_probe(result)
    return 0 if result.get("ok", True) else 1


async def _probe_op(node: Any, args: argparse.Namespace) -> dict[str, Any]:
    from dhtscope.node.control import run_probe

    to = f"{args.to[0]}:{args.to[1]}"
    if args.op == "ping":
        return await run_probe(node, "ping", [to])
    await node.bootstrap([args.to])
    return await run_probe(node, args.op.replace("-", "_"), list(args.args))


def _print_probe(result: dict[str, Any]) -> None:
    op = result["op"]
    if op == "ping":
        print(f"PING {result['to']}: rtt {result['rtt_ms']:.2f} ms")
        return
    for hop in result.get("hops", []):
        rtt = f"{hop['rtt_ms']:7.2f} ms" if hop["rtt_ms"] is not None else "   failed "
        what = f"{hop['returned']:2d} contacts"
        if hop["values"]:
            what += f", {hop['values']} record(s)"
        if hop["error"]:
            what = hop["error"]
        print(f"round {hop['round']}  {hop['node'][:8]} {hop['address']:<21} rtt {rtt}  {what}")
    print(f"{result.get('rounds', 0)} rounds, {result.get('messages', 0)} messages, {result['elapsed_ms']:.0f} ms")
    if op in ("find-value", "discover"):
        records = result["records"]
        label = result.get("name") or result["key"][:16]
        print(f"{len(records)} record(s) under {label}:")
        for r in records:
            print(
                f"  {r['value']:<24} publisher {r['publisher'][:8]}  seq {r['seq']}  "
                f"expires in {r['expires_in_s']:.0f} s  signature {r['signature']}"
            )
    elif op == "find-node":
        print(f"{len(result['closest'])} closest nodes:")
        for c in result["closest"]:
            print(f"  {c['node'][:16]}  {c['address']}")
    else:
        print(f"stored on {result['replicas']} of the {result['targets']} closest nodes")
        for r in result["refused"]:
            print(f"  refused by {r['node'][:8]}: {r['reason']}")


# -- sim ------------------------------------------------------------------------------------


def cmd_sim(args: argparse.Namespace) -> int:
    from dhtscope.node.sim import run_simulation

    result = run_simulation(args.nodes, args.lookups, churn=args.churn, loss=args.loss, seed=args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>16}: {v}")
    return 0


# -- diagnose ----------------------------------------------------------------------------------


def cmd_diagnose(args: argparse.Namespace) -> int:
    from rich.console import Console

    from dhtscope.tracing.analysis import analyse
    from dhtscope.tracing.reader import TraceReadError, open_recording
    from dhtscope.tracing.report import render_json, render_text

    try:
        recording = open_recording(*args.paths)
    except TraceReadError as exc:
        raise UsageError(str(exc)) from None
    if not recording.traces:
        raise UsageError(f"no qlog traces found in {', '.join(args.paths)}")
    analysis = analyse(recording)
    if args.json:
        print(render_json(analysis))
    else:
        render_text(analysis, Console(), verbose=args.verbose)
    return 0


# -- entry -------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming the fix, not the whole usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dhtscope", description=("A Kademlia DHT node over QUIC, and the tools to see inside it."))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("node", help="run a node until Ctrl-C", description="Run one DHT node until Ctrl-C.")
    _add_node_options(p)
    p.set_defaults(func=cmd_node)

    p = sub.add_parser(
        "cluster",
        help="run 1 registry + N providers + 1 client as processes",
        description="Run the seed's topology on 127.0.0.1 as separate processes.",
    )
    _add_cluster_options(p)
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 0 once the client discovered every provider, 1 if not within --timeout",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds --check waits (default 60)")
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser(
        "probe",
        help="one RPC or discovery from a short-lived node, printing each hop",
        description="Run one operation from a short-lived node against --to.",
    )
    p.add_argument("--to", type=_address, required=True, metavar="HOST:PORT", help="node to start from")
    p.add_argument("--listen", type=_address, default=("127.0.0.1", 0), metavar="HOST:PORT")
    p.add_argument("--timeout", type=float, default=5.0, help="per-request timeout in seconds")
    p.add_argument("--json", action="store_true", help="one JSON document instead of text")
    p.add_argument("op", choices=["ping", "find-node", "find-value", "store", "discover", "advertise"])
    p.add_argument("args", nargs="*", help="ID | KEY | KEY VALUE | SERVICE | SERVICE ENDPOINT")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser(
        "diagnose",
        help="a recording's findings: where each stream's bytes went",
        description="Analyse a recording (directory) or qlog files and report findings.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="recording directory or .sqlog/.qlog/.qlognd files")
    p.add_argument("--json", action="store_true", help="one JSON document with a top-level findings list")
    p.add_argument("--verbose", action="store_true", help="show every stream, not only the affected ones")
    p.set_defaults(func=cmd_diagnose)

    p = sub.add_parser(
        "sim",
        help="simulate a large network in memory",
        description="Simulate N nodes in memory and run lookups over them.",
    )
    p.add_argument("--nodes", type=_positive_int, default=1000)
    p.add_argument("--lookups", type=_positive_int, default=100)
    p.add_argument("--churn", type=_fraction, default=0.0, help="fraction of nodes offline")
    p.add_argument("--loss", type=_fraction, default=0.0, help="fraction of queries lost")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sim)

    from dhtscope.tui.commands import add_commands

    add_commands(sub, _add_node_options)
    return parser


PROBE_ARITY = {"ping": 0, "find-node": 1, "find-value": 1, "discover": 1, "store": 2, "advertise": 2}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "probe" and len(args.args) != PROBE_ARITY[args.op]:
        parser.error(f"probe {args.op} takes {PROBE_ARITY[args.op]} argument(s), got {len(args.args)}")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (UsageError, NodeError, KeyFileError, ValueError, OSError) as exc:
        print(f"dhtscope {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
