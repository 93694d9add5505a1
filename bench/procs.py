"""Driver processes for the runner: start them, talk JSON lines to them, always stop them."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


class BenchError(Exception):
    """A benchmark step that could not complete; the runner records it and moves on."""


class Proc:
    """One driver script as a child process; each stdout line that is JSON is a message."""

    def __init__(self, script: str, *args: str, name: str | None = None) -> None:
        self.name = name or script
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.popen = subprocess.Popen(
            [sys.executable, os.path.join(BENCH_DIR, script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
        )
        self.pid = self.popen.pid
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stderr_tail: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            line = line.strip()
            if line.startswith("{"):
                try:
                    self.messages.put(json.loads(line))
                except ValueError:
                    pass
        self.messages.put(None)

    def _read_stderr(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.stderr_tail.append(line.rstrip())
            del self.stderr_tail[:-20]

    def next(self, timeout_s: float) -> dict[str, Any]:
        """The next message; BenchError if none comes in time or the process ended."""
        try:
            msg = self.messages.get(timeout=timeout_s)
        except queue.Empty:
            raise BenchError(f"{self.name}: no answer within {timeout_s:g} s") from None
        if msg is None:
            tail = " | ".join(self.stderr_tail[-3:])
            raise BenchError(f"{self.name} exited (code {self.popen.poll()}): {tail}")
        return msg

    def send(self, obj: dict[str, Any] | str) -> None:
        assert self.popen.stdin is not None
        try:
            self.popen.stdin.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
            self.popen.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    def call(self, obj: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        self.send(obj)
        return self.next(timeout_s)

    def close_stdin(self) -> None:
        try:
            if self.popen.stdin is not None:
                self.popen.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def stop(self, grace_s: float = 5.0) -> None:
        """Ask politely (stdin closed), then SIGTERM, then SIGKILL: never leave a child behind."""
        self.close_stdin()
        try:
            self.popen.wait(grace_s)
            return
        except subprocess.TimeoutExpired:
            pass
        self.popen.terminate()
        try:
            self.popen.wait(2.0)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def call_all(procs: list[Proc], make: Any, timeout_s: float, batch: int | None = None) -> list[dict[str, Any]]:
    """Send make(i) to every process (`batch` at a time in flight), gather one answer from each."""
    replies: list[dict[str, Any]] = [{} for _ in procs]
    step = batch or len(procs)
    for start in range(0, len(procs), step):
        group = list(range(start, min(start + step, len(procs))))
        deadline = time.monotonic() + timeout_s
        for i in group:
            procs[i].send(make(i))
        for i in group:
            replies[i] = procs[i].next(max(0.1, deadline - time.monotonic()))
    return replies
