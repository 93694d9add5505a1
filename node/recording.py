"""Recording a node: its connections' qlog traces and its own DHT events, into a recording directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dhtscope.tracing.version import dhtscope_version
from dhtscope.tracing.writer import LiveQuicLogger, NodeTrace, write_manifest, write_node_entry

FLUSH_INTERVAL_S = 0.1


def _safe_name(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return cleaned.strip(".") or "node"


class NodeRecorder:
    """Everything one node records: `<dir>/<name>/node.sqlog`, one .sqlog per connection end, node.json."""

    def __init__(
        self, recording_dir: str | os.PathLike[str], name: str, node_id: str, role: str, address: str | None = None
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
        self._quic = LiveQuicLogger(self.dir, name, flush_interval_s=FLUSH_INTERVAL_S)
        self._node = NodeTrace(self.dir, name, self.entry, flush_interval_s=FLUSH_INTERVAL_S)
        if not (self.root / "manifest.json").exists():
            # A node recorded on its own names itself; a cluster writes the manifest for all.
            write_manifest(self.root, [self.entry], dhtscope_version())

    def quic_logger(self) -> LiveQuicLogger:
        return self._quic

    def set_address(self, address: str) -> None:
        self.entry["address"] = address
        write_node_entry(self.dir, self.entry)

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
