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


SNIFF_BYTES = 1 << 16  # what is read of each file to tell qlog from anything else, however large it is
_NOT_TRACE_NAMES = frozenset({"manifest.json", "node.json"})


def check_trace_inputs(paths: list[str]) -> None:
    """Refuse, before any window opens, inputs that hold no qlog: an empty or binary file, a
    directory without trace files. Reads the start of each file only, so it stays quick."""
    check_input_paths(paths)
    for path in paths:
        if os.path.isdir(path):
            _check_directory(path)
        else:
            problem = _sniff(path)
            if problem:
                raise UsageError(f"{path}: {problem}")


def _check_directory(path: str) -> None:
    from .reader import TRACE_SUFFIXES

    problems = []
    for root, _, files in os.walk(path):
        for name in sorted(files):
            if os.path.splitext(name)[1].lower() not in TRACE_SUFFIXES or name in _NOT_TRACE_NAMES:
                continue
            problem = _sniff(os.path.join(root, name))
            if problem is None:
                return
            problems.append(f"{os.path.join(root, name)}: {problem}")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UsageError(f"no readable qlog trace in {path}: {problems[0]}{more}")
    raise UsageError(f"{path}: no qlog traces (.sqlog, .qlog, .qlognd, .json) in this directory")


def _sniff(path: str) -> str | None:
    """Why `path` is not a qlog file, or None if its start looks like one."""
    from . import _json
    from .reader import RS

    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError as exc:
        return str(exc.strerror or exc)
    body = head.lstrip(b" \t\r\n\xef\xbb\xbf")
    if not body:
        return "empty file"
    if body[:1] == RS:
        first = body[1:].split(RS, 1)[0].split(b"\n", 1)[0]
        try:
            record = _json.loads(first)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            return "not a qlog file (its first record is not a JSON object)"
        return None
    if body[:1] != b"{":
        return f"not a qlog file (starts with {body[:12]!r})"
    return None


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
