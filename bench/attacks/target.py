"""The node under attack, as its own process: started like `dhtscope node`, its RSS sampled, its stderr read.

`--node-src DIR` runs the node from another checkout (a directory holding node/, tracing/
and tui/, e.g. a git worktree of main), so the same attacks measure the node before and
after a change.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HOST = "127.0.0.1"
RSS_SAMPLE_S = 0.1  # how often the node's RSS is read while an attack runs


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@functools.cache
def _source_path(node_src: str) -> str:
    """A directory that imports as dhtscope.* from `node_src` (sources at its root, as in this repository).

    One per run, removed when the runner exits.
    """
    root = tempfile.mkdtemp(prefix="dhtscope-src-")
    atexit.register(shutil.rmtree, root, True)
    os.mkdir(os.path.join(root, "dhtscope"))
    for part in ("node", "tracing", "tui"):
        os.symlink(os.path.join(os.path.abspath(node_src), part), os.path.join(root, "dhtscope", part))
    return root


class Target:
    """One `dhtscope node` process; stop() returns the tracebacks it wrote to stderr."""

    def __init__(self, *args: str, port: int | None = None, node_src: str | None = None, name: str = "target") -> None:
        self.port = port or free_port()
        self.args = args
        self.node_src = node_src
        self.name = name
        self._start()

    def _start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.node_src:
            # Ahead of the editable install (whose finder comes after the path finder).
            env["PYTHONPATH"] = _source_path(self.node_src) + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, "-m", "dhtscope.node", "--listen", f"{HOST}:{self.port}", "--name", self.name]
        cmd += ["--role", "registry", "--json-lines", "--exit-on-stdin-eof", *self.args]
        self.popen = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        deadline = time.monotonic() + 30
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"{self.name} did not start: {' | '.join(self.stderr[-3:])}") from None
            if line is None:
                raise RuntimeError(f"{self.name} exited: {' | '.join(self.stderr[-3:])}")
            if line.get("event") == "started":
                self.started = line
                return

    def _read_stdout(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                pass
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.popen.stderr is not None
        for raw in self.popen.stderr:
            self.stderr.append(raw.rstrip())

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss(self) -> int | None:
        return rss_bytes(self.pid)

    def tracebacks(self) -> int:
        return sum(1 for line in self.stderr if line.startswith("Traceback"))

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed or closed."""
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def restart(self) -> None:
        self._start()

    def stop(self) -> int:
        """Stop it as a supervisor does (stdin closed); the number of tracebacks it printed."""
        if self.popen.stdin is not None:
            try:
                self.popen.stdin.close()
            except OSError:
                pass
        try:
            self.popen.wait(15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        time.sleep(0.2)  # the stderr reader catches up
        return self.tracebacks()


class RssSampler:
    """The peak RSS of a process while it is sampled."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_bytes(pid) or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_S):
            value = rss_bytes(self.pid)
            if value is not None:
                self.peak = max(self.peak, value)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak
