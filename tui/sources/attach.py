"""Nodes attached through their control endpoints; one that goes away is retried until it returns."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dhtscope.node.control import REFUSED, ControlClient, ControlError, FingerprintMismatch
from dhtscope.tracing.analysis import Analysis, analyse
from dhtscope.tracing.reader import TraceReadError, open_recording

from ..source import DataSource, EventRow, NodeInfo, SourceError, check_probe
from .memtrace import MemoryRecording

SNAPSHOT_INTERVAL_S = 1.0
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 2.0
CONNECT_TIMEOUT_S = 3.0
SNAPSHOT_TIMEOUT_S = 5.0


def target_label(spec: str) -> str:
    """What to call a target before it says its name: a socket's stem, or HOST:PORT."""
    if spec.startswith("tcp:"):
        return spec[4:]
    return Path(spec.removeprefix("unix:")).stem or spec


@dataclass
class Target:
    spec: str
    name: str
    state: str = "connecting"
    detail: str = ""
    hello: dict[str, Any] = field(default_factory=dict)
    snapshot: dict[str, Any] | None = None
    client: ControlClient | None = None
    task: asyncio.Task[None] | None = None


class AttachSource(DataSource):
    """Control clients to one or more nodes (unix socket paths or tcp:HOST:PORT)."""

    kind = "attach"

    def __init__(
        self,
        targets: list[str],
        token: str | None = None,
        record_dirs: list[str] | None = None,
        fingerprints: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.token = token
        self.fingerprints = list(fingerprints or [])
        self.record_dirs = list(record_dirs or [])
        self.targets: list[Target] = []
        for spec in targets:
            name = target_label(spec)
            if any(t.name == name for t in self.targets):
                name = spec
            self.targets.append(Target(spec, name))
        self.memory = MemoryRecording()
        self.ever_connected = False  # any target answered at least once
        self._closing = False
        self.title = "attach"

    async def start(self) -> None:
        for target in self.targets:
            target.task = asyncio.create_task(self._run(target))

    async def stop(self) -> None:
        self._closing = True
        for target in self.targets:
            if target.task is not None:
                target.task.cancel()
        await asyncio.gather(*(t.task for t in self.targets if t.task), return_exceptions=True)
        for target in self.targets:
            if target.client is not None:
                with contextlib.suppress(Exception):
                    await target.client.close()

    def _rename(self, target: Target, name: str) -> None:
        if any(t is not target and t.name == name for t in self.targets):
            name = f"{name}@{target_label(target.spec)}"
        target.name = name

    async def _run(self, target: Target) -> None:
        delay = RECONNECT_MIN_S
        while not self._closing:
            try:
                client = await ControlClient.connect(
                    target.spec, self.token, timeout_s=CONNECT_TIMEOUT_S, fingerprints=self.fingerprints
                )
            except ControlError as exc:
                if REFUSED in str(exc) or isinstance(exc, FingerprintMismatch):
                    target.state, target.detail = "refused", str(exc)
                    return  # a wrong token does not get better by retrying
                if target.hello:
                    target.state, target.detail = "disconnected", str(exc)
                else:
                    target.state, target.detail = "waiting", f"waiting for the node to start ({exc})"
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            delay = RECONNECT_MIN_S
            target.client = client
            target.hello = client.hello
            self._rename(target, str(client.hello.get("name") or target.name))
            self.memory.name_node(
                target.name, client.hello.get("id"), client.hello.get("address"), client.hello.get("role")
            )
            target.state = "connected"
            target.detail = client.target.description
            self.ever_connected = True
            pump = asyncio.create_task(self._pump(target, client))
            try:
                await client.request("subscribe")
                while not client.closed:
                    target.snapshot = await asyncio.wait_for(client.request("snapshot"), SNAPSHOT_TIMEOUT_S)
                    await asyncio.sleep(SNAPSHOT_INTERVAL_S)
            except (TimeoutError, ControlError) as exc:
                target.detail = str(exc) or "snapshot timed out"
            finally:
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
                target.client = None
                with contextlib.suppress(Exception):
                    await client.close()
            if not self._closing:
                target.state = "disconnected"
                await asyncio.sleep(delay)

    async def _pump(self, target: Target, client: ControlClient) -> None:
        push = self.push
        async for event in client.events():
            name = event.get("name")
            if name == "control:dropped":
                self.dropped += int(event.get("data", {}).get("count", 1))
                continue
            data = event.get("data")
            push(
                EventRow(
                    float(event.get("time_ms") or 0.0),
                    target.name,
                    str(name),
                    event.get("conn"),
                    data if isinstance(data, dict) else {},
                )
            )

    def on_rows(self, rows: list[EventRow]) -> None:
        if not self.record_dirs:
            self.memory.add(rows)

    def nodes(self) -> list[NodeInfo]:
        out = []
        for t in self.targets:
            snap = t.snapshot or {}
            node = snap.get("node", {})
            hello = t.hello
            out.append(
                NodeInfo(
                    name=t.name,
                    role=str(node.get("role") or hello.get("role") or "?"),
                    node_id=str(node.get("id") or hello.get("id") or ""),
                    address=str(node.get("address") or hello.get("address") or "?"),
                    state=t.state,
                    connections=len(snap.get("connections", [])),
                    contacts=int(node.get("contacts", 0)),
                    records=int(node.get("records", 0)),
                    events=self.event_count(t.name),
                    faults=tuple(node.get("faults", hello.get("faults", [])) or ()),
                    detail=t.detail,
                )
            )
        return out

    def _target(self, node: str) -> Target:
        for t in self.targets:
            if t.name == node:
                return t
        raise SourceError(f"no node named {node!r}")

    def snapshot(self, node: str) -> dict[str, Any] | None:
        try:
            return self._target(node).snapshot
        except SourceError:
            return None

    def analyse(self) -> Analysis | None:
        if self.record_dirs:
            dirs = [d for d in self.record_dirs if Path(d).is_dir()]
            if not dirs:
                return None
            try:
                return analyse(open_recording(*dirs))
            except TraceReadError:
                return None
        recording = self.memory.recording()
        return analyse(recording) if recording.traces else None

    def _client(self, node: str) -> ControlClient:
        target = self._target(node)
        if target.client is None or target.client.closed:
            raise SourceError(f"{node} is {target.state}: {target.detail or 'not connected'}")
        return target.client

    async def probe(self, node: str, kind: str, args: list[str]) -> dict[str, Any]:
        args = check_probe(kind, args)
        try:
            return await self._client(node).request("probe", kind=kind, args=args)
        except ControlError as exc:
            raise SourceError(str(exc)) from None

    async def set_scenario(self, node: str, name: str) -> dict[str, Any]:
        try:
            return await self._client(node).request("scenario", name=name)
        except ControlError as exc:
            raise SourceError(str(exc)) from None
