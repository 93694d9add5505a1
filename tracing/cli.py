"""The trace layer's commands (`diagnose`, `convert`), and what every layer's commands share.

Each layer owns its commands and registers them with `add_commands(subparsers)`;
`dhtscope.tui.cli` assembles the `dhtscope` command from all three. A command turns its
layer's own errors into `UsageError`, which the assembler prints as one line.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
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


def check_trace_inputs(paths: list[str], keylog: str | None = None) -> None:
    """Refuse, before any window opens, inputs that hold no qlog and no capture: an empty or
    binary file, a directory without trace files, a key log without secrets. Reads the start
    of each file only, so it stays quick."""
    from .capture import is_capture
    from .inputs import InputError, captures_in, check_inputs

    check_input_paths(paths + ([keylog] if keylog is not None else []))
    try:
        check_inputs(paths, keylog)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    for path in paths:
        if os.path.isdir(path):
            if not captures_in(path):
                _check_directory(path)
        elif not is_capture(path):
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


def _read(args: argparse.Namespace) -> Any:
    """The command's inputs (recordings, qlog files, captures), or UsageError with one line."""
    from .inputs import InputError, read_inputs

    check_input_paths(args.paths)
    if args.keylog is not None:
        check_input_paths([args.keylog])
    try:
        opened = read_inputs(args.paths, args.keylog)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    if not opened.recording.traces:
        raise UsageError(f"no qlog traces or QUIC connections found in {', '.join(args.paths)}")
    return opened


def _cut_short(command: str, lines: list[str]) -> int:
    """A capture that stops early was read up to there; say where, and fail."""
    for line in lines:
        print(f"dhtscope {command}: {line}", file=sys.stderr)
    return 1 if lines else 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .analysis import analyse
    from .report import exit_code, render_json, render_text

    opened = _read(args)
    analysis = analyse(opened.recording)
    if args.json:
        print(render_json(analysis))
    else:
        render_text(analysis, Console(), verbose=args.verbose)
    return max(exit_code(analysis, args.fail_on), _cut_short("diagnose", opened.cut_short))


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import ConvertError, write_network_qlog

    opened = _read(args)
    if not opened.captures:
        raise UsageError(f"no pcap or pcapng capture among {', '.join(args.paths)}: convert reads captures")
    rec = opened.recording
    try:
        written = write_network_qlog(rec, args.output)
    except ConvertError as exc:
        raise UsageError(str(exc)) from None
    for warning in rec.warnings:
        print(f"note: {warning}", file=sys.stderr)
    print(f"wrote {len(written)} qlog file{'' if len(written) == 1 else 's'} (one per connection) to {args.output}")
    return _cut_short("convert", opened.cut_short)


FAIL_ON = ("error", "warning")  # the severities --fail-on accepts, worst first
KEYLOG_HELP = (
    "TLS key log (SSLKEYLOGFILE, NSS format) to decrypt captures with; "
    "not needed for a pcapng that carries its keys (a decryption secrets block)"
)


def add_commands(subparsers: Any) -> None:
    """Register `diagnose` and `convert` on the `dhtscope` subparsers."""
    p = subparsers.add_parser(
        "diagnose",
        help="a recording's or a capture's findings: where each stream's bytes went",
        description="Analyse a recording (directory), qlog files or packet captures and report findings.",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="recording directory, .sqlog/.qlog/.qlognd files, or pcap/pcapng captures (several may be given)",
    )
    p.add_argument("--keylog", metavar="FILE", help=KEYLOG_HELP)
    p.add_argument("--json", action="store_true", help="one JSON document with a top-level findings list")
    p.add_argument("--verbose", action="store_true", help="show every stream, not only the affected ones")
    p.add_argument(
        "--fail-on",
        choices=FAIL_ON,
        metavar="{error,warning}",
        help="exit 1 when a finding of this severity or worse exists (for CI); 0 otherwise",
    )
    p.set_defaults(func=cmd_diagnose)

    p = subparsers.add_parser(
        "convert",
        help="a packet capture as qlog: one file per QUIC connection",
        description=(
            "Decrypt a pcap/pcapng capture with its TLS keys and write one qlog file (JSON-SEQ, network vantage) "
            "per QUIC connection, for `dhtscope replay DIR`, `dhtscope diagnose DIR` and qvis."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="CAPTURE", help="pcap or pcapng capture(s)")
    p.add_argument("--keylog", metavar="FILE", help=KEYLOG_HELP)
    p.add_argument("-o", "--output", metavar="DIR", required=True, help="directory to write the qlog files into")
    p.set_defaults(func=cmd_convert)
