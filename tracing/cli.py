"""The trace layer's commands (`diagnose`), and what every layer's commands share.

Each layer owns its commands and registers them with `add_commands(subparsers)`;
`dhtscope.tui.cli` assembles the `dhtscope` command from all three. A command turns its
layer's own errors into `UsageError`, which the assembler prints as one line.
"""

from __future__ import annotations

import argparse
import os
import stat
from typing import Any, NoReturn


class UsageError(Exception):
    """A command line that cannot be carried out; printed as one line, exit status 1."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming the fix, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def check_input_paths(paths: list[str]) -> None:
    """Trace inputs must exist and be regular files or directories: a FIFO would hang a reader."""
    for path in paths:
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise UsageError(f"{path}: no such file or directory") from None
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror or exc}") from None
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise UsageError(f"{path}: not a regular file or directory")


def cmd_diagnose(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .analysis import analyse
    from .reader import TraceReadError, open_recording
    from .report import exit_code, render_json, render_text

    check_input_paths(args.paths)
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
    return exit_code(analysis, args.fail_on)


FAIL_ON = ("error", "warning")  # the severities --fail-on accepts, worst first


def add_commands(subparsers: Any) -> None:
    """Register `diagnose` on the `dhtscope` subparsers."""
    p = subparsers.add_parser(
        "diagnose",
        help="a recording's findings: where each stream's bytes went",
        description="Analyse a recording (directory) or qlog files and report findings.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="recording directory or .sqlog/.qlog/.qlognd files")
    p.add_argument("--json", action="store_true", help="one JSON document with a top-level findings list")
    p.add_argument("--verbose", action="store_true", help="show every stream, not only the affected ones")
    p.add_argument(
        "--fail-on",
        choices=FAIL_ON,
        metavar="{error,warning}",
        help="exit 1 when a finding of this severity or worse exists (for CI); 0 otherwise",
    )
    p.set_defaults(func=cmd_diagnose)
