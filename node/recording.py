"""Recording a node: its connections' qlog traces and its own DHT events, into a recording directory.

Recording never takes the node down: once a file cannot be opened or written the whole
recording stops, says why once, and tells `on_stopped` (the node turns that into a
`dht:recording_stopped` event); the node keeps serving every connection.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dhtscope.tracing.seqfiles import HANDOVER_INTERVAL_S, InlineSink, ProcessSink, Spool
from dhtscope.tracing.version import dhtscope_version
from dhtscope.tracing.writer import (
    MAX_OPEN_TRACE_FILES,
    LiveQuicLogger,
    NodeTrace,
    TraceFiles,
    write_manifest,
    write_node_entry,
)

# Events wait at most this long in the node before the writer process has them: a SIGKILL
# of both loses at most this much.
FLUSH_INTERVAL_S = HANDOVER_INTERVAL_S
SinkFactory = Callable[[TraceFiles], InlineSink | ProcessSink]


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
        sink: SinkFactory | None = None,
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
        self._spool: Spool | None = None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            # Formatting and writing happen in a writer process, off the node's request path.
            self._spool = Spool(self.files, (sink or ProcessSink)(self.files), FLUSH_INTERVAL_S)
            self._quic = LiveQuicLogger(self.dir, name, flush_interval_s=FLUSH_INTERVAL_S, files=self.files)
            self._node = NodeTrace(self.dir, name, self.entry, flush_interval_s=FLUSH_INTERVAL_S, files=self.files)
            if not (self.root / "manifest.json").exists():
                # A node recorded on its own names itself; a cluster writes the manifest for all.
                write_manifest(self.root, [self.entry], dhtscope_version())
        except OSError as exc:
            if self._spool is not None:
                self._spool.close()
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
        """For snapshots: where it records, whether it still does, and the writer's open files."""
        stats = self._spool.sink.stats() if self._spool is not None else {}
        return {
            "dir": str(self.dir),
            "active": self.files.stopped is None,
            "stopped": self.files.stopped,
            "open_files": stats.get("open_files", 0),
            "max_open_files": stats.get("max_open", self.files.max_open),
            "reopened": stats.get("reopened", 0),
        }

    @property
    def writer_pid(self) -> int | None:
        """The writer process's id (None when events are written in this process)."""
        sink = self._spool.sink if self._spool is not None else None
        return sink.pid if isinstance(sink, ProcessSink) else None

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
        """Hand every event held so far to the writer (it writes them a moment later)."""
        self._quic.flush()

    def sync(self, timeout_s: float = 5.0) -> bool:
        """Hand over and wait until the writer has written everything; False if it did not in time."""
        return self._spool.sync(timeout_s) if self._spool is not None else True

    async def written(self, timeout_s: float = 5.0) -> bool:
        """Hand over, then wait (without blocking the loop) until the writer has written everything."""
        if self._spool is None:
            return True
        self._spool.handover()
        deadline = time.monotonic() + timeout_s
        while not self._spool.sink.confirmed():
            if time.monotonic() > deadline or self.files.stopped is not None:
                return False
            await asyncio.sleep(0.005)
        return True

    def close(self) -> None:
        """Close every file and wait while the writer writes what it holds."""
        self._quic.close()
        self._node.close()
        if self._spool is not None:
            self._spool.close()


def write_cluster_manifest(recording_dir: str | os.PathLike[str], members: list[tuple[str, str, str]]) -> None:
    """The manifest of a cluster recording: each member's name, role, address and directory."""
    nodes = [{"name": n, "id": None, "address": a, "role": r, "dir": _safe_name(n)} for n, r, a in members]
    write_manifest(recording_dir, nodes, dhtscope_version())
