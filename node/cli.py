"""The node layer's commands: `node`, `cluster`, `probe`, `sim`.

Registered on the `dhtscope` command by `add_commands`; `python -m dhtscope.node ARGS` runs
`dhtscope node ARGS` alone (cluster members start that way). Only light modules are
imported here: the node and aioquic load when a command runs, so `dhtscope replay` never
pays for them. Each command turns the node's errors into one-line UsageErrors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from dhtscope.tracing.cli import Parser, UsageError

from .constants import MAX_DATAGRAM_BYTES, MAX_UDP_PAYLOAD_BYTES, MIN_DATAGRAM_BYTES, REQUEST_TIMEOUT_S
from .endpoints import EndpointError, check_endpoint, parse_address
from .scenarios import DEFAULT_LOSS, SCENARIO_HELP, SCENARIOS

CONTROL_TOKEN_ENV = "DHTSCOPE_CONTROL_TOKEN"  # where a control token can come from without `ps` showing it
MAX_TOKEN_FILE_BYTES = 4096  # a token is a line; anything bigger is the wrong file
MAX_TIMEOUT_S = 24 * 3600.0  # longer than any wait a person means to type
MAX_CLUSTER_PROVIDERS = 64  # processes on one machine; more is a typo, not a test
MAX_SIM_NODES = 1_000_000  # the simulator holds every table in memory (about 1 GB at 100,000)
DEFAULT_BASE_PORT = 4500


# -- argument types: every number range-checked, every address and endpoint checked where it enters --


def address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except EndpointError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def service_endpoint(text: str) -> tuple[str, str]:
    service, sep, endpoint = text.partition("=")
    if not sep or not service or not endpoint:
        raise argparse.ArgumentTypeError(f"{text!r} must be SERVICE=ENDPOINT")
    try:
        return service, check_endpoint(endpoint)
    except EndpointError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1")
    return value


def whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argument type for a whole number in low..high."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            span = f"at least {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"{text} must be {span}")
        return value

    parse.__name__ = "whole number"
    return parse


def seconds(text: str) -> float:
    """A duration: a positive number of seconds, at most a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.0 < value <= MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0 and at most {MAX_TIMEOUT_S:g} seconds")
    return value


def datagram_bytes(text: str) -> int:
    return whole(MIN_DATAGRAM_BYTES, MAX_UDP_PAYLOAD_BYTES)(text)


positive = whole(1)


def control_token(token: str | None, token_file: str | None) -> str | None:
    """The control token: given as an option, read from a file, or from DHTSCOPE_CONTROL_TOKEN.

    A token on the command line is visible to every user through `ps`; the file and the
    environment are not. UsageError when the file cannot be read or holds no token.
    """
    if token is not None:
        if not token.strip():
            raise UsageError("the control token is empty")
        return token.strip()
    if token_file is not None:
        try:
            with open(token_file, "rb") as fh:
                raw = fh.read(MAX_TOKEN_FILE_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"cannot read token file {token_file}: {exc.strerror or exc}") from None
        if len(raw) > MAX_TOKEN_FILE_BYTES:
            raise UsageError(f"token file {token_file} is over {MAX_TOKEN_FILE_BYTES} bytes: not a token")
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            raise UsageError(f"token file {token_file} is empty")
        return text
    from_env = os.environ.get(CONTROL_TOKEN_ENV, "").strip()
    return from_env or None


def add_control_token_options(p: argparse.ArgumentParser, for_what: str) -> None:
    """--control-token and --control-token-file (one or the other); DHTSCOPE_CONTROL_TOKEN otherwise."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--control-token",
        metavar="TOKEN",
        help=f"{for_what}; other users can read it with `ps`, so prefer --control-token-file or "
        f"the {CONTROL_TOKEN_ENV} environment variable",
    )
    group.add_argument(
        "--control-token-file",
        metavar="FILE",
        help=f"file whose first line is the control token ({for_what})",
    )


@contextlib.contextmanager
def node_errors() -> Iterator[None]:
    """The node's own errors, as the one line a user reads."""
    from .control import ControlError
    from .keys import KeyFileError
    from .node import NodeError
    from .probes import ProbeError
    from .recording import RecordingError

    try:
        yield
    except (NodeError, KeyFileError, ControlError, ProbeError, EndpointError, RecordingError) as exc:
        raise UsageError(str(exc)) from None


# -- node --------------------------------------------------------------------------------------------


def add_node_options(p: argparse.ArgumentParser) -> None:
    """The options of `dhtscope node` (also taken by `dhtscope tui`)."""
    p.add_argument(
        "--listen",
        type=address,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="UDP address to listen on (default 127.0.0.1, any free port)",
    )
    p.add_argument(
        "--bootstrap",
        type=address,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a known node to join through (repeatable)",
    )
    p.add_argument("--key", metavar="FILE", help="Ed25519 key file (PEM); created, mode 0600, if missing")
    p.add_argument("--name", help="name shown in output and recordings (default: short id)")
    p.add_argument("--role", default="node", help="role label: registry, provider, client, node (default node)")
    p.add_argument(
        "--advertise",
        type=service_endpoint,
        action="append",
        default=[],
        metavar="SERVICE=ENDPOINT",
        help="advertise a service endpoint, HOST:PORT or a URI (repeatable)",
    )
    p.add_argument(
        "--discover",
        action="append",
        default=[],
        metavar="SERVICE",
        help="discover a service every --discover-interval and report changes (repeatable)",
    )
    p.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="healthy",
        help="switch on a fault mode for teaching and tests: "
        + "; ".join(f"{name}: {what}" for name, what in SCENARIO_HELP.items()),
    )
    p.add_argument(
        "--loss",
        type=fraction,
        default=DEFAULT_LOSS,
        help=f"drop fraction for --scenario loss (default {DEFAULT_LOSS})",
    )
    p.add_argument("--record", metavar="DIR", help="record qlog traces of this node into DIR")
    p.add_argument(
        "--pcap",
        metavar="FILE",
        help="write every datagram the node sends and receives to FILE (pcapng), as a sniffer would see them",
    )
    p.add_argument(
        "--keylog",
        metavar="FILE",
        help="append the node's TLS secrets to FILE (NSS key log, SSLKEYLOGFILE format) to decrypt --pcap with "
        "(default with --pcap: the capture's name with .keys)",
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="keep this node's records and routing table in DIR (SQLite), and its key unless --key is given, "
        "so a restart loses nothing",
    )
    p.add_argument(
        "--control",
        metavar="PATH",
        help="control endpoint: unix socket path, tcp:HOST:PORT (TLS with the node's key; its fingerprint "
        "is printed at start), or tcp+plain:HOST:PORT (no TLS: loopback only)",
    )
    add_control_token_options(p, "token a client must give on a tcp control endpoint")
    p.add_argument("--json-lines", action="store_true", help="report as JSON lines (for supervisors)")
    p.add_argument(
        "--request-timeout",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help=f"seconds to wait for each answer (default {REQUEST_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--discover-interval",
        type=seconds,
        default=1.0,
        metavar="SECONDS",
        help="pause between discovery rounds (default 1)",
    )
    p.add_argument(
        "--discover-rounds", type=positive, default=None, metavar="N", help="stop discovering after N rounds"
    )
    p.add_argument(
        "--ping-bootstrap",
        type=whole(0),
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
        type=datagram_bytes,
        default=MAX_DATAGRAM_BYTES,
        metavar="N",
        help=f"largest UDP payload to send, {MIN_DATAGRAM_BYTES}..{MAX_UDP_PAYLOAD_BYTES} "
        f"(default {MAX_DATAGRAM_BYTES}, which every path carries; 1350 packs more answers "
        "per datagram where the MTU allows)",
    )
    p.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when standard input closes: how a supervising process (cluster, demo) takes its nodes "
        "with it, even if it is killed",
    )


def service_options(args: argparse.Namespace) -> Any:
    """The ServiceOptions `dhtscope node` options describe: one place for `node` and `tui`."""
    from .scenarios import Faults
    from .service import ServiceOptions

    return ServiceOptions(
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
        control_token=control_token(args.control_token, args.control_token_file),
        json_lines=args.json_lines,
        request_timeout_s=args.request_timeout,
        discover_interval_s=args.discover_interval,
        discover_rounds=args.discover_rounds,
        discover_all=args.discover_all,
        ping_bootstrap=args.ping_bootstrap,
        max_datagram_bytes=args.max_datagram_bytes,
        pcap=args.pcap,
        # A capture is of little use without its keys: they go beside it unless told otherwise.
        keylog=args.keylog or (str(Path(args.pcap).with_suffix(".keys")) if args.pcap else None),
        data_dir=args.data_dir,
    )


def cmd_node(args: argparse.Namespace) -> int:
    from . import runtime
    from .service import run_service

    if args.exit_on_stdin_eof:
        runtime.exit_when_stdin_closes()
    with node_errors():
        runtime.run(run_service(service_options(args)))
    return 0


# -- cluster ---------------------------------------------------------------------------------------------


def add_cluster_options(
    p: argparse.ArgumentParser,
    scenario_help: str = "fault mode on the registry; the run ends once discovery succeeds or gives up",
    record_help: str = "record every node's qlog traces into DIR",
) -> None:
    """The options `cluster` and `demo` share (each says what its scenario and recording do)."""
    p.add_argument(
        "--providers",
        type=whole(1, MAX_CLUSTER_PROVIDERS),
        default=3,
        help=f"number of providers, 1..{MAX_CLUSTER_PROVIDERS} (default 3)",
    )
    p.add_argument(
        "--base-port",
        type=whole(1024, 65535),
        default=DEFAULT_BASE_PORT,
        help=f"the registry's UDP port; the others follow it (default {DEFAULT_BASE_PORT})",
    )
    p.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default=None,
        help=scenario_help,
    )
    p.add_argument("--record", metavar="DIR", help=record_help)
    p.add_argument(
        "--pcap",
        metavar="DIR",
        help="each node writes its datagrams to DIR/<name>.pcapng and its TLS secrets to DIR/<name>.keys",
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="each node keeps its key, records and routing table in DIR/NAME (default: a temporary directory "
        "for the run)",
    )


def cluster_plan(args: argparse.Namespace) -> Any:
    """The ClusterPlan the cluster options describe; UsageError if the ports do not fit."""
    from .cluster import ClusterPlan

    if args.base_port > 65535 - args.providers - 1:
        raise UsageError(f"--base-port {args.base_port} leaves no room for {args.providers + 2} nodes")
    return ClusterPlan(
        providers=args.providers,
        base_port=args.base_port,
        scenario=args.scenario or "healthy",
        record_dir=args.record,
        pcap_dir=args.pcap,
        data_dir=args.data_dir,
    )


def _stop_on_sigterm() -> None:
    """SIGTERM ends a supervisor the way Ctrl-C does, so it stops its children before it goes."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def cmd_cluster(args: argparse.Namespace) -> int:
    from .cluster import run_check, run_foreground, run_scenario

    _stop_on_sigterm()
    plan = cluster_plan(args)
    if args.check:
        return run_check(plan, sys.stdout, timeout_s=args.timeout)
    if args.scenario or args.record or args.pcap:
        return run_scenario(plan, sys.stdout)
    return run_foreground(plan, sys.stdout)


# -- probe --------------------------------------------------------------------------------------------------

PROBE_OPS = ("ping", "find-node", "find-value", "store", "discover", "advertise")


def cmd_probe(args: argparse.Namespace) -> int:
    from . import runtime
    from .probes import check_probe_args

    kind = args.op.replace("-", "_")
    to = f"{args.to[0]}:{args.to[1]}"
    if kind == "ping":
        if args.args:
            raise UsageError("ping takes no arguments: it pings the node given with --to")
        probe_args = [to]
    else:
        probe_args = list(args.args)
    with node_errors():
        check_probe_args(kind, probe_args)
        return runtime.run(_probe(args, kind, probe_args))


async def _probe(args: argparse.Namespace, kind: str, probe_args: list[str]) -> int:
    from .control import run_probe
    from .node import Node

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
        if kind != "ping":
            await node.bootstrap([args.to])
        result = await run_probe(node, kind, probe_args)
    finally:
        await node.stop()
    result["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_probe(result)
    return 0 if result.get("ok", True) else 1


def print_probe(result: dict[str, Any]) -> None:
    """A probe's result as text: each lookup hop, then what it found."""
    from .probes import lookup_summary, store_result_summary

    op = result["op"]
    if result.get("target_note"):
        print(result["target_note"])
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
    print(
        f"{lookup_summary(result.get('rounds', 0), result.get('hops', []), result.get('messages', 0))}, "
        f"{result['elapsed_ms']:.0f} ms"
    )
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
        print(store_result_summary(result))
        for r in result["refused"]:
            print(f"  refused by {r['node'][:8]}: {r['reason']}")


# -- sim ------------------------------------------------------------------------------------------------------


def cmd_sim(args: argparse.Namespace) -> int:
    from .sim import run_simulation

    result = run_simulation(args.nodes, args.lookups, churn=args.churn, loss=args.loss, seed=args.seed)
    if args.json:
        print(json.dumps(result))
        return 0
    width = max(len(k) for k in result)
    for key, value in result.items():
        shown = f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
        print(f"{key:>{width}}: {shown}")
    return 0


# -- registration ---------------------------------------------------------------------------------------------


def add_commands(subparsers: Any) -> None:
    """Register `node`, `cluster`, `probe` and `sim` on the `dhtscope` subparsers."""
    p = subparsers.add_parser("node", help="run a node until Ctrl-C", description="Run one DHT node until Ctrl-C.")
    add_node_options(p)
    p.set_defaults(func=cmd_node)

    p = subparsers.add_parser(
        "cluster",
        help="run 1 registry + N providers + 1 client as processes",
        description="Run the seed's topology on 127.0.0.1 as separate processes.",
    )
    add_cluster_options(p)
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 0 once the client discovered every provider, 1 if not within --timeout",
    )
    p.add_argument("--timeout", type=seconds, default=60.0, help="seconds --check waits (default 60)")
    p.set_defaults(func=cmd_cluster)

    p = subparsers.add_parser(
        "probe",
        help="one RPC or discovery from a short-lived node, printing each hop",
        description="Run one operation from a short-lived node against --to.",
    )
    p.add_argument("--to", type=address, required=True, metavar="HOST:PORT", help="node to start from")
    p.add_argument(
        "--listen",
        type=address,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="UDP address of the probe's own node (default 127.0.0.1, any free port)",
    )
    p.add_argument(
        "--timeout",
        type=seconds,
        default=REQUEST_TIMEOUT_S,
        help=f"per-request timeout in seconds (default {REQUEST_TIMEOUT_S:g})",
    )
    p.add_argument("--json", action="store_true", help="one JSON document instead of text")
    p.add_argument("op", choices=PROBE_OPS, help="the operation")
    p.add_argument(
        "args",
        nargs="*",
        help="ping: none; find-node ID|ID-PREFIX|NAME (a node's id, a unique prefix of a known node's id, "
        "or a name, hashed); find-value KEY|NAME; discover SERVICE; store KEY VALUE; advertise SERVICE ENDPOINT",
    )
    p.set_defaults(func=cmd_probe)

    p = subparsers.add_parser(
        "sim",
        help="simulate a large network in memory",
        description="Simulate N nodes in memory and run lookups over them.",
    )
    p.add_argument(
        "--nodes",
        type=whole(2, MAX_SIM_NODES),
        default=1000,
        help=f"nodes in the simulated network, 2..{MAX_SIM_NODES:,} (default 1000)",
    )
    p.add_argument("--lookups", type=positive, default=100, help="FIND_VALUE lookups to run (default 100)")
    p.add_argument("--churn", type=fraction, default=0.0, help="fraction of nodes offline during lookups (0..1)")
    p.add_argument("--loss", type=fraction, default=0.0, help="fraction of queries lost (0..1)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same network")
    p.add_argument("--json", action="store_true", help="one JSON object instead of aligned text")
    p.set_defaults(func=cmd_sim)


def main_node(argv: Sequence[str] | None = None) -> int:
    """`python -m dhtscope.node ARGS`: `dhtscope node ARGS`, without the rest of the command."""
    parser = Parser(prog="python -m dhtscope.node", description="Run one DHT node until Ctrl-C.")
    add_node_options(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_node(args)
    except KeyboardInterrupt:
        return 130
    except (UsageError, OSError, ValueError) as exc:
        print(f"dhtscope node: {exc}", file=sys.stderr)
        return 1
