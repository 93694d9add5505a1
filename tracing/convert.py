"""A capture as qlog: one JSON-SEQ file per QUIC connection, logged from the network's vantage.

Each file is what an observer on the path would log: `quic:packet_sent` for the client's
packets and `quic:packet_received` for the server's (vantage `network`, flow `client`), the
header fields qvis reads beside the current draft's (`tracing/writer.py` writes the same
header for a node's traces), and, under `capture`, which address was the client and which
the server, so `dhtscope replay DIR` and `diagnose DIR` name the ends as the capture did.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import _json
from .model import Recording, Trace
from .reader import TRACE_SUFFIXES

RS = b"\x1e"
NL = b"\n"
# What a converted trace keeps of the capture's description of each connection.
CAPTURE_KEYS = ("client", "server", "client_name", "server_name", "version", "decrypted")


class ConvertError(Exception):
    """The output cannot be written; the message is one line for the user."""


def network_header(trace: Trace, reference_ms: float) -> dict[str, Any]:
    """The first record of a converted file: the writer's header, as a network observer's."""
    from .seqfiles import header_record

    info = trace.info
    header = header_record(info.node or "network", "network", reference_ms, info.odcid)
    header["title"] = info.title or f"capture: {info.node or 'network'}"  # never "dhtscope …": no app events here
    body = header["trace"]
    body["vantage_point"]["flow"] = "client"  # the client's packets are the ones "sent"
    body["common_fields"]["protocol_type"] = ["QUIC"]
    body["capture"] = {"file": info.path, **{k: info.extra[k] for k in CAPTURE_KEYS if k in info.extra}}
    return header


def write_network_qlog(rec: Recording, directory: str | os.PathLike[str]) -> list[Path]:
    """Write each network-vantage trace of `rec` to `<odcid>.sqlog` in `directory`; returns the files."""
    out_dir = Path(directory)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConvertError(f"{out_dir}: not a directory")
    if out_dir.is_dir() and any(p.suffix.lower() in TRACE_SUFFIXES for p in out_dir.iterdir()):
        raise ConvertError(f"{out_dir}: already holds qlog files; convert into an empty or new directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConvertError(f"{out_dir}: cannot create the directory ({exc.strerror or exc})") from None
    written: list[Path] = []
    used: set[str] = set()
    for trace in rec.traces:
        if trace.info.vantage != "network":
            continue
        stem = trace.info.odcid or f"connection-{trace.info.index}"
        name = f"{stem}.sqlog"
        n = 1
        while name in used:
            name = f"{stem}-{n}.sqlog"
            n += 1
        used.add(name)
        path = out_dir / name
        try:
            _write_trace(trace, path)
        except OSError as exc:
            raise ConvertError(f"{path}: cannot write ({exc.strerror or exc})") from None
        written.append(path)
    return written


def _write_trace(trace: Trace, path: Path) -> None:
    events = list(trace)
    reference_ms = events[0].time_ms if events else 0.0
    chunks = [RS + _json.dumps(network_header(trace, reference_ms)) + NL]
    for ev in events:
        # Microseconds, as the writer keeps them.
        t = int((ev.time_ms - reference_ms) * 1000.0) / 1000.0
        chunks.append(RS + _json.dumps({"time": t, "name": ev.name, "data": ev.data}) + NL)
    with open(path, "wb") as fh:
        fh.write(b"".join(chunks))


__all__ = ["ConvertError", "network_header", "write_network_qlog"]
