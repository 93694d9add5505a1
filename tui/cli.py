"""The `dhtscope` command: each layer's commands, assembled. A user error is one line, never a traceback.

`tracing` owns `diagnose`, `node` owns `node`, `cluster`, `probe` and `sim`, and the TUI
owns `tui`, `attach`, `replay` and `demo`; each registers its own with `add_commands`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dhtscope.node import cli as node_cli
from dhtscope.tracing import cli as tracing_cli
from dhtscope.tracing.cli import Parser, UsageError

from . import commands as tui_commands


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dhtscope", description="A Kademlia DHT node over QUIC, and the tools to see inside it.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    node_cli.add_commands(sub)
    tracing_cli.add_commands(sub)
    tui_commands.add_commands(sub)
    return parser


def _version() -> str:
    from dhtscope.tracing.version import dhtscope_version

    return dhtscope_version()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (UsageError, ValueError, OSError) as exc:
        print(f"dhtscope {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
