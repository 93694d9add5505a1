"""A node run inside the app's own event loop, recorded into a temporary directory for analysis."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from typing import Any

from dhtscope.node.control import run_probe
from dhtscope.node.node import Node, NodeError
from dhtscope.node.rpc import RpcError
from dhtscope.node.transport import Conn, TransportError
from dhtscope.tracing.analysis import Analysis, analyse
from dhtscope.tracing.reader import TraceReadError, open_recording

from ..source import DataSource, EventRow, NodeInfo, SourceError, check_probe


class EmbeddedSource(DataSource):
    """Runs one `Node` (built by the caller, not started) and the service work around it.

    `service` is an optional coroutine function `(node, stop_event) -> None` that joins,
    advertises and discovers, the way `dhtscope node` does.
    """

    kind = "embedded"

    def __init__(self, node_factory: Any, record_dir: str | None = None, service: Any = None) -> None:
        super().__init__()
        self._factory = node_factory
        self._own_dir = record_dir is None
        self.record_dir = record_dir or tempfile.mkdtemp(prefix="dhtscope-tui-")
        self._service = service
        self.node: Node | None = None
        self._stop = asyncio.Event()
        self._work: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.error: str | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.node = self._factory(self.record_dir)
        self.title = "tui"
        self.node.listeners.append(self._listener)
        try:
            await self.node.start()
        except NodeError as exc:
            self.error = str(exc)
            raise
        recorder = self.node.recorder
        if recorder is not None and hasattr(recorder, "set_address"):
            recorder.set_address(self.node.address)
        if self._service is not None:
            self._work = asyncio.create_task(self._service(self.node, self._stop))

    async def stop(self) -> None:
        self._stop.set()
        if self._work is not None:
            self._work.cancel()
            await asyncio.gather(self._work, return_exceptions=True)
        if self.node is not None:
            if self._listener in self.node.listeners:
                self.node.listeners.remove(self._listener)
            await self.node.stop()
        if self._own_dir:
            shutil.rmtree(self.record_dir, ignore_errors=True)

    def _listener(self, name: str, data: dict[str, Any], conn: Conn | None) -> None:
        # Called inside the node's code paths: one append, never an exception.
        try:
            odcid = conn.odcid if conn is not None else None
        except Exception:
            odcid = None
        self.push(EventRow(time.time() * 1000.0, self.node.name if self.node else "?", name, odcid, data))

    def nodes(self) -> list[NodeInfo]:
        node = self.node
        if node is None:
            return []
        conns = node.rpc.connections() if node.rpc else []
        return [
            NodeInfo(
                name=node.name,
                role=node.role,
                node_id=node.id.hex(),
                address=node.address,
                state="running" if node.rpc is not None else "starting",
                connections=len(conns),
                contacts=len(node.routing),
                records=len(node.store_),
                events=self.event_count(node.name),
                faults=tuple(node.faults.names()),
                detail=f"recording in {self.record_dir}",
            )
        ]

    def snapshot(self, node: str) -> dict[str, Any] | None:
        if self.node is None or node != self.node.name or self.node.rpc is None:
            return None
        return self.node.snapshot()

    def analyse(self) -> Analysis | None:
        recorder = self.node.recorder if self.node else None
        if recorder is not None and hasattr(recorder, "written") and self._loop is not None:
            # The recording's writer runs beside the node: wait (on the node's loop) until it
            # has written every event so far, so the analysis is current.
            try:
                asyncio.run_coroutine_threadsafe(recorder.written(), self._loop).result(timeout=10)
            except Exception:  # a stopped loop or a slow writer: analyse what is on disk
                pass
        try:
            return analyse(open_recording(self.record_dir))
        except TraceReadError:
            return None

    def _require(self, node: str) -> Node:
        if self.node is None or node != self.node.name:
            raise SourceError(f"no node named {node!r} here")
        return self.node

    async def probe(self, node: str, kind: str, args: list[str]) -> dict[str, Any]:
        args = check_probe(kind, args)
        target = self._require(node)
        try:
            return await run_probe(target, kind, args)
        except (NodeError, RpcError, TransportError, ValueError) as exc:
            raise SourceError(f"{kind} failed: {exc}") from None
        except Exception as exc:  # the control server's own guard: a probe never kills the app
            raise SourceError(f"{kind} failed: {type(exc).__name__}: {exc}") from None

    async def set_scenario(self, node: str, name: str) -> dict[str, Any]:
        target = self._require(node)
        try:
            return target.set_scenario(name)
        except ValueError as exc:
            raise SourceError(str(exc)) from None
