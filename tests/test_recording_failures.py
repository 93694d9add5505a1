"""Recording never takes the node down: a removed or unwritable directory, a full disk, the fd limit."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from helpers.waiting import eventually

from dhtscope.node.node import Node
from dhtscope.node.recording import NodeRecorder, RecordingError
from dhtscope.tracing import seqfiles, writer


@pytest.fixture
async def recorded(tmp_path: Path):
    """A started node recording into tmp_path/rec, the events it emits, and a way to start clients."""
    started: list[Node] = []
    events: list[tuple[str, dict[str, Any]]] = []

    async def make(**options: Any) -> tuple[Node, NodeRecorder]:
        recorder = NodeRecorder(tmp_path / "rec", "server", "aa" * 32, "registry", **options)
        node = Node(name="server", recorder=recorder)
        node.listeners.append(lambda name, data, conn: events.append((name, data)))
        await node.start()
        started.append(node)
        return node, recorder

    async def client() -> Node:
        node = Node(request_timeout_s=3.0, client_mode=True)
        await node.start()
        started.append(node)
        return node

    yield make, client, events
    await asyncio.gather(*(n.stop() for n in started))


def stopped_events(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [data for name, data in events if name == "dht:recording_stopped"]


async def serve_new_clients(node: Node, client: Any, count: int) -> None:
    for _ in range(count):
        peer = await client()
        assert await peer.ping(("127.0.0.1", node.port)) > 0


async def test_a_removed_recording_directory_stops_recording_once_and_the_node_serves_on(
    recorded: Any, caplog: pytest.LogCaptureFixture
) -> None:
    make, client, events = recorded
    node, recorder = await make()
    await serve_new_clients(node, client, 1)
    shutil.rmtree(recorder.root)
    with caplog.at_level(logging.WARNING):
        await serve_new_clients(node, client, 5)
    [stopped] = stopped_events(events)
    assert stopped["errno"] == "ENOENT" and "cannot create" in stopped["reason"]
    assert [r.levelname for r in caplog.records if "recording stopped" in r.getMessage()] == ["ERROR"]
    assert not [r for r in caplog.records if r.exc_info]  # no traceback anywhere
    assert node.snapshot()["node"]["recording"]["active"] is False
    assert not recorder.root.exists()  # not silently made again


async def test_a_directory_that_refuses_files_stops_recording_and_the_node_serves_on(
    recorded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    make, client, events = recorded
    node, recorder = await make()
    if os.geteuid() == 0:
        # root writes through any mode bits: refuse the files the way a read-only directory would.
        real_open = os.open

        def refusing_open(path: Any, flags: int, mode: int = 0o777) -> int:
            if str(path).startswith(str(recorder.dir)) and flags & os.O_CREAT:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, flags, mode)

        monkeypatch.setattr(seqfiles.os, "open", refusing_open)
    else:
        recorder.dir.chmod(0o500)
    try:
        await serve_new_clients(node, client, 5)
    finally:
        recorder.dir.chmod(0o755)
    [stopped] = stopped_events(events)
    assert stopped["errno"] == "EACCES"


# The writer process with every write to a trace file failing as on a full disk.
_FULL_DISK_WRITER = textwrap.dedent(
    """
    import errno, os
    from dhtscope.tracing import seqfiles

    real_write = os.write

    def full_disk(fd, data):
        if fd > 2:  # not the status pipe: a trace file
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    os.write = full_disk
    seqfiles.writer_main()
    """
)


async def test_a_full_disk_stops_recording_once_and_the_node_serves_on(
    recorded: Any, caplog: pytest.LogCaptureFixture
) -> None:
    make, client, events = recorded
    node, recorder = await make(
        sink=lambda files: seqfiles.ProcessSink(files, command=[sys.executable, "-c", _FULL_DISK_WRITER])
    )
    with caplog.at_level(logging.WARNING):
        await serve_new_clients(node, client, 5)
        recorder.sync()  # the writer process has said how its writes went
        await serve_new_clients(node, client, 2)
        recorder.sync()
    [stopped] = stopped_events(events)
    assert stopped["errno"] == "ENOSPC" and "cannot write" in stopped["reason"]
    assert [r.levelname for r in caplog.records if "recording stopped" in r.getMessage()] == ["ERROR"]
    assert recorder.view()["open_files"] == 0  # every trace file closed
    assert node.snapshot()["node"]["recording"]["active"] is False


def test_a_recording_directory_that_cannot_be_made_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RecordingError, match="cannot record into"):
        NodeRecorder(blocker / "rec", "server", "aa" * 32, "registry")


def test_open_trace_files_are_bounded_and_reopened_in_append_mode(tmp_path: Path) -> None:
    files = writer.TraceFiles(max_open=4)
    logger = writer.LiveQuicLogger(tmp_path, "n", flush_interval_s=0, files=files)
    traces = [logger.start_trace(True, bytes([i])) for i in range(10)]
    assert files.open_files == 0  # created with their headers, then closed: the writer opens what it writes
    for round_ in range(3):
        for trace in traces:
            assert trace is not None
            trace.log("dht:rpc_sent", {"round": round_})
    assert files.open_files == 4 and files.reopened >= 20
    logger.close()
    for trace in traces:
        assert trace is not None
        lines = trace.path.read_bytes().split(b"\x1e")[1:]
        assert len(lines) == 4  # the header, then each round, in order, nothing overwritten
        assert [b'"round":%d' % r in line for r, line in enumerate(lines[1:])] == [True] * 3


_FD_LIMITED_NODE = textwrap.dedent(
    """
    import asyncio, resource, sys
    from dhtscope.node.node import Node
    from dhtscope.node.recording import NodeRecorder

    async def main():
        resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), int(sys.argv[2])))
        node = Node(name="server", recorder=NodeRecorder(sys.argv[1], "server", "aa" * 32, "registry"))
        stopped = []
        node.listeners.append(lambda name, data, conn: name == "dht:recording_stopped" and stopped.append(data))
        await node.start()
        print(node.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        node.recorder.sync()
        print(len(node.rpc.connections()), len(stopped), node.recorder.view()["max_open_files"], flush=True)
        await node.stop()

    asyncio.run(main())
    """
)


async def test_the_fd_limit_no_longer_caps_connections_when_recording(tmp_path: Path) -> None:
    fd_limit = 48
    proc = subprocess.Popen(
        [sys.executable, "-c", _FD_LIMITED_NODE, str(tmp_path), str(fd_limit)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    clients: list[Node] = []
    try:
        assert proc.stdout is not None and proc.stdin is not None
        port = int(await asyncio.to_thread(proc.stdout.readline))
        for _ in range(3 * fd_limit):
            peer = Node(request_timeout_s=5.0, client_mode=True)  # never dialled back: the node serves, not works
            await peer.start()
            clients.append(peer)
            assert await peer.ping(("127.0.0.1", port)) > 0
        await eventually(lambda: len(list((tmp_path / "server").glob("*-server-*.sqlog"))) == 3 * fd_limit, "traces")
        proc.stdin.write("\n")
        proc.stdin.flush()
        connections, stopped, max_open = map(int, (await asyncio.to_thread(proc.stdout.readline)).split())
        assert connections == 3 * fd_limit and stopped == 0
        assert max_open < fd_limit  # it learned the limit and kept under it
    finally:
        await asyncio.gather(*(c.stop() for c in clients))
        _, err = await asyncio.to_thread(proc.communicate, timeout=20)  # its stdin closes: it stops
    assert "Traceback" not in err, err
