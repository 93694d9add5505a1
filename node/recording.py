"""Recording a node: its connections' qlog traces and its own DHT events, into a recording directory.

Recording never takes the node down: once a file cannot be opened or written the whole
recording stops, says why once, and tells `on_stopped` (the node turns that into a
`dht:recording_stopped` event); the node keeps serving every connection.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dhtscope.tracing.version import dhtscope_version
from dhtscope.tracing.writer import (
    MAX_OPEN_TRACE_FILES,
    LiveQuicLogger,
    NodeTrace,
    TraceFiles,
    write_manifest,
    write_node_entry,
)

FLUSH_INTERVAL_S = 0.1


class RecordingError(Exception):
    """A recording that cannot even begin (the directory cannot be made or written); the message says why."""


def _safe_name(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return cleaned.strip(".") or "node"


class NodeRecorder:
    """Everything one node records: `<dir>/<name>/node.sqlog`, one .sqlog per connection end, node.json."""

    def __init__(
        self,
        recording_dir: str | os.PathLike[str],
        name: str,
        node_id: str,
        role: str,
        address: str | None = None,
        max_open_files: int = MAX_OPEN_TRACE_FILES,
    ) -> None:
        self.root = Path(recording_dir)
        self.dir = self.root / _safe_name(name)
        self.entry: dict[str, Any] = {
            "name": name,
            "id": node_id,
            "address": address,
            "role": role,
            "dir": self.dir.name,
        }
        self.on_stopped: Callable[[dict[str, Any]], None] | None = None  # set by the node it records
        self.files = TraceFiles(max_open_files, on_stopped=self._stopped)
        try:
            self._quic = LiveQuicLogger(self.dir, name, flush_interval_s=FLUSH_INTERVAL_S, files=self.files)
            self._node = NodeTrace(self.dir, name, self.entry, flush_interval_s=FLUSH_INTERVAL_S, files=self.files)
            if not (self.root / "manifest.json").exists():
                # A node recorded on its own names itself; a cluster writes the manifest for all.
                write_manifest(self.root, [self.entry], dhtscope_version())
        except OSError as exc:
            where = exc.filename or self.dir
            raise RecordingError(f"cannot record into {where}: {exc.strerror or exc}") from None

    def _stopped(self, info: dict[str, Any]) -> None:
        if self.on_stopped is not None:
            self.on_stopped(info)

    @property
    def stopped(self) -> dict[str, Any] | None:
        """Why recording stopped ({"reason", "errno", "path"}), or None while it records."""
        return self.files.stopped

    def view(self) -> dict[str, Any]:
        """For snapshots: where it records, whether it still does, and its open files."""
        return {
            "dir": str(self.dir),
            "active": self.files.stopped is None,
            "stopped": self.files.stopped,
            "open_files": self.files.open_files,
            "max_open_files": self.files.max_open,
            "reopened": self.files.reopened,
        }

    def quic_logger(self) -> LiveQuicLogger:
        return self._quic

    def set_address(self, address: str) -> None:
        self.entry["address"] = address
        if self.files.stopped is not None:
            return
        try:
            write_node_entry(self.dir, self.entry)
        except OSError as exc:
            self.files.fail(exc, "write", self.dir / "node.json")

    def log(self, name: str, data: dict[str, Any]) -> None:
        self._node.log(name, data)

    def flush(self) -> None:
        self._quic.flush()
        self._node.flush()

    def close(self) -> None:
        self._quic.close()
        self._node.close()


def write_cluster_manifest(recording_dir: str | os.PathLike[str], members: list[tuple[str, str, str]]) -> None:
    """The manifest of a cluster recording: each member's name, role, address and directory."""
    nodes = [{"name": n, "id": None, "address": a, "role": r, "dir": _safe_name(n)} for n, r, a in members]
    write_manifest(recording_dir, nodes, dhtscope_version())
