"""Every way in, opened by one function: recordings, qlog files and packet captures.

`open_inputs` decides per path. A pcap or pcapng file is decoded with the key log given,
the `<name>.keys` beside it (as `dhtscope node --pcap` writes them) and any Decryption
Secrets Blocks it carries; a directory yields its qlog traces and its captures; anything
else is read as qlog.
`dhtscope diagnose`, `convert` and `replay` (its indexing and analysing children too) all
open their inputs here, so a capture works wherever a recording does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .capture import CaptureError, KeyLog, is_capture, read_keylog
from .model import NodeEntry, Recording, Trace
from .reader import TRACE_SUFFIXES, TraceReadError, open_recording

CAPTURE_SUFFIXES = (".pcapng", ".pcap", ".cap")
# The key log a capture written by `dhtscope node --pcap` (or `cluster --pcap DIR`) sits beside.
KEY_SUFFIXES = (".keys", ".keylog")


class InputError(TraceReadError):
    """Inputs that cannot be diagnosed at all; the message is one line for the user.

    A TraceReadError, so whoever already handles unreadable traces handles these too."""


@dataclass
class OpenedInputs:
    """What `open_inputs` read, and what a command should tell the user about how it went."""

    recording: Recording
    captures: list[str] = field(default_factory=list)
    cut_short: list[str] = field(default_factory=list)  # inputs read only up to where they stop


def open_inputs(paths: Sequence[str | os.PathLike[str]], keylog: str | os.PathLike[str] | None = None) -> Recording:
    """Every path as one Recording; captures come as network-vantage traces, one per connection."""
    return read_inputs(paths, keylog).recording


def read_inputs(paths: Sequence[str | os.PathLike[str]], keylog: str | os.PathLike[str] | None = None) -> OpenedInputs:
    """`open_inputs` and what the caller should report: truncated captures, the captures read.

    InputError when nothing can be read as asked: a file that is neither qlog nor a capture,
    a key log with no secret for any connection of the captures, a capture whose every
    connection speaks a QUIC version that cannot be decrypted.
    """
    if not paths:
        raise InputError("no input given")
    given = [Path(p) for p in paths]
    captures: list[tuple[Path, Path | None]] = []  # (capture, its own key log beside it)
    qlog_paths: list[Path] = []
    for p in given:
        if p.is_dir():
            found = captures_in(p)
            captures.extend(found)
            if not found or _has_traces(p):
                qlog_paths.append(p)
        elif is_capture(p):
            captures.append((p, _keys_beside(p)))
        elif p.suffix.lower() in CAPTURE_SUFFIXES and p.is_file():
            raise InputError(f"{p}: not a pcap or pcapng capture (starts with 0x{_head(p)})")
        else:
            qlog_paths.append(p)

    keys: KeyLog | None = None
    if keylog is not None:
        if not captures:
            raise InputError(f"--keylog {keylog}: no packet capture among the inputs to decrypt with it")
        try:
            keys = read_keylog(Path(keylog))
        except CaptureError as exc:
            raise InputError(str(exc)) from None

    rec = Recording(path=str(given[0]), traces=[])
    if qlog_paths:
        try:
            qlog = open_recording(*qlog_paths)
        except TraceReadError as exc:
            raise InputError(_not_a_trace(str(exc))) from None
        rec.traces.extend(qlog.traces)
        rec.nodes.extend(qlog.nodes)
        rec.warnings.extend(qlog.warnings)
        rec.dhtscope_version = qlog.dhtscope_version

    opened = OpenedInputs(rec)
    if captures:
        _read_captures(captures, keys, keylog, opened)
    return opened


def _read_captures(
    captures: list[tuple[Path, Path | None]],
    keys: KeyLog | None,
    keylog: str | os.PathLike[str] | None,
    opened: OpenedInputs,
) -> None:
    from .capture import read_capture_with_summary
    from .capture.files import node_names, open_capture

    rec = opened.recording
    # Names first, from every input: a node's capture names itself, a manifest names them all.
    names: dict[str, str] = {n.address: n.name for n in rec.nodes if n.address}
    for path, _ in captures:
        try:
            with open_capture(path) as capture:
                for _frame in capture.frames():
                    break  # the section header (and its comment) comes before the first frame
                for address, name in node_names(capture.comments).items():
                    names.setdefault(address, name)
        except CaptureError as exc:
            raise InputError(str(exc)) from None
    matched: set[bytes] = set()
    hellos = 0
    for path, own_keys in captures:
        merged = KeyLog()
        if keys is not None:
            merged.merge(keys)
        if own_keys is not None:
            try:
                merged.merge(read_keylog(own_keys))
            except CaptureError as exc:
                rec.warnings.append(f"{own_keys}: {exc}")
        try:
            capture_rec, summary = read_capture_with_summary(path, merged, names)
        except CaptureError as exc:
            raise InputError(str(exc)) from None
        opened.captures.append(str(path))
        if summary.truncated:
            opened.cut_short.append(f"{path}: {summary.truncated}")
        if (
            summary.connections
            and summary.unsupported
            and not any(t.info.extra.get("supported", True) for t in capture_rec.traces)
        ):
            raise InputError(
                f"{path}: QUIC version {', '.join(summary.unsupported)} is not supported (only QUIC v1, RFC 9000, "
                f"and v2, RFC 9369): {summary.packets} packet(s) on {summary.connections} connection(s) not decrypted"
            )
        matched |= summary.matched_randoms
        hellos += summary.client_hellos
        known = {n.name for n in rec.nodes}
        for trace in capture_rec.traces:
            for end in ("client", "server"):
                who, where = trace.info.extra.get(f"{end}_name"), trace.info.extra.get(end)
                if isinstance(who, str) and who not in known and isinstance(where, str):
                    known.add(who)
                    rec.nodes.append(NodeEntry(name=who, node_id=None, address=where, role=None, dir=None))
        rec.traces.extend(capture_rec.traces)
        rec.warnings.extend(capture_rec.warnings)
    _one_vantage_per_connection(rec)
    if keys is not None and keys.secrets and not matched & keys.secrets.keys():
        which = ", ".join(Path(p).name for p, _ in captures)
        raise InputError(
            f"{keylog}: the key log matches no connection in {which} ({len(keys.secrets)} client random(s) in it, "
            f"{hellos} ClientHello(s) seen): is it the key log of this capture?"
        )


def check_inputs(paths: Sequence[str | os.PathLike[str]], keylog: str | os.PathLike[str] | None = None) -> None:
    """What can be told without reading everything (for a window about to open): each file is a
    capture or starts like qlog, and a key log given holds QUIC secrets. InputError otherwise."""
    from .capture.files import sniff_capture

    has_capture = False
    for p in map(Path, paths):
        if p.is_dir():
            has_capture = has_capture or bool(captures_in(p))
            continue
        if sniff_capture(p) is not None:
            has_capture = True
        elif p.suffix.lower() in CAPTURE_SUFFIXES:
            raise InputError(f"{p}: not a pcap or pcapng capture (starts with 0x{_head(p)})")
    if keylog is not None:
        if not has_capture:
            raise InputError(f"--keylog {keylog}: no packet capture among the inputs to decrypt with it")
        try:
            read_keylog(Path(keylog))
        except CaptureError as exc:
            raise InputError(str(exc)) from None


def _one_vantage_per_connection(rec: Recording) -> None:
    """A connection captured at both its ends (each node's own capture) is analysed once, from the
    capture that holds more of it; counting it twice would count its packets and streams twice."""

    def key(t: Trace) -> tuple[str, object, object] | None:
        info = t.info
        if info.vantage != "network" or info.odcid is None:
            return None
        return (info.odcid, info.extra.get("client"), info.extra.get("server"))

    best: dict[tuple[str, object, object], Trace] = {}
    for t in rec.traces:
        k = key(t)
        if k is not None and (k not in best or len(t) > len(best[k])):
            best[k] = t
    kept: list[Trace] = []
    for t in rec.traces:
        k = key(t)
        if k is None or best[k] is t:
            kept.append(t)
            continue
        where, other = Path(t.info.path).name, Path(best[k].info.path).name
        rec.warnings.append(
            f"connection {t.info.node} (odcid {t.info.odcid}) is in {where} and {other}: analysed from {other}, "
            "which holds more of it"
        )
    rec.traces = kept


def captures_in(directory: str | os.PathLike[str]) -> list[tuple[Path, Path | None]]:
    """The pcap/pcapng files under `directory`, each with the key log beside it (or None)."""
    out = []
    for p in sorted(Path(directory).rglob("*")):
        if p.suffix.lower() in CAPTURE_SUFFIXES and is_capture(p):
            out.append((p, _keys_beside(p)))
    return out


def _keys_beside(capture: Path) -> Path | None:
    for suffix in KEY_SUFFIXES:
        candidate = capture.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def _has_traces(directory: Path) -> bool:
    return any(p.suffix.lower() in TRACE_SUFFIXES and p.is_file() for p in directory.rglob("*"))


def _head(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(4).hex()
    except OSError:
        return ""


def _not_a_trace(message: str) -> str:
    if "not a qlog file" in message:
        return message.replace("not a qlog file", "neither a qlog trace nor a pcap/pcapng capture")
    return message


__all__ = ["InputError", "OpenedInputs", "check_inputs", "open_inputs", "read_inputs"]
