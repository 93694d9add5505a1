"""Exit is certain: the app and every process it started are gone within 3 s, however it ends.

Each run puts `dhtscope` under a pseudo-terminal this test owns (the app is the session
leader and the terminal is its controlling terminal, as in a terminal window or tmux), waits
for its first screen, then ends it: the terminal closed, SIGHUP, SIGTERM, SIGTERM while the
terminal has stopped reading (Textual's output thread then blocks for good), or `q`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest
from helpers.tui import write_fixed_recording
from helpers.waiting import process_running

GONE_WITHIN_S = 3.0
START_TIMEOUT_S = 30.0

# Become the session's controlling terminal's owner, then be `dhtscope` itself (same pid).
AS_TERMINAL_OWNER = (
    "import fcntl, os, sys, termios\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'dhtscope.tui.cli', *sys.argv[1:]])\n"
)


class Terminal:
    """A pty whose slave is `dhtscope ARGS`'s controlling terminal; the master is read in a thread."""

    def __init__(self, *args: str, size: tuple[int, int] = (100, 30)) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        env = dict(os.environ, TERM="xterm-256color", COLORTERM="truecolor")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", AS_TERMINAL_OWNER, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            env=env,
        )
        os.close(slave)
        self.output = bytearray()
        self.reading = threading.Event()
        self.reading.set()
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        import select

        while not self._closed:
            if not self.reading.wait(0.05):
                continue
            try:
                ready, _, _ = select.select([self.master], [], [], 0.05)
                if ready:
                    chunk = os.read(self.master, 65536)
                    if not chunk:
                        return
                    self.output.extend(chunk)
            except OSError:
                return

    def wait_for(self, text: bytes, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.output:
            assert self.proc.poll() is None, f"dhtscope exited early: {bytes(self.output[-500:])!r}"
            assert time.monotonic() < deadline, f"no {text!r} on screen: {bytes(self.output[-500:])!r}"
            time.sleep(0.05)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> None:
        """The terminal goes away (a window closed, tmux kill-session)."""
        if not self._closed:
            self._closed = True
            self._reader.join(1.0)
            with contextlib.suppress(OSError):
                os.close(self.master)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def _wait_all_gone(term: Terminal, pids: list[int]) -> float:
    started = time.monotonic()
    while True:
        term.proc.poll()
        alive = [pid for pid in pids if process_running(pid)]
        if not alive:
            return time.monotonic() - started
        if time.monotonic() - started > GONE_WITHIN_S:
            names = [Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")[:120] for p in alive]
            raise AssertionError(f"still running {GONE_WITHIN_S:g} s later: {names}")
        time.sleep(0.05)


def _kill_all(term: Terminal, pids: list[int]) -> None:
    term.close()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        term.proc.wait(5)


def _end(term: Terminal, how: str) -> None:
    if how == "terminal closed":
        term.close()
    elif how == "SIGHUP":
        os.kill(term.proc.pid, signal.SIGHUP)
    elif how == "SIGTERM":
        os.kill(term.proc.pid, signal.SIGTERM)
    elif how == "SIGTERM, terminal not reading":
        term.reading.clear()
        for _ in range(6):  # redraws fill the terminal's buffer: Textual's output thread blocks
            term.type(b"2345671")
            time.sleep(0.1)
        time.sleep(0.5)
        os.kill(term.proc.pid, signal.SIGTERM)
    elif how == "q":
        term.type(b"q")
        term.wait_for(b"Quit dhtscope?", timeout_s=10)  # it asks first
        term.type(b"q")
    else:
        raise ValueError(how)


ENDINGS = ["terminal closed", "SIGHUP", "SIGTERM", "SIGTERM, terminal not reading", "q"]


def _started(term: Terminal, children: int) -> list[int]:
    """The app and its children, once its first screen is up."""
    term.wait_for(b"Findings")
    pids = [term.proc.pid]
    deadline = time.monotonic() + 20
    while len(pids) < 1 + children and time.monotonic() < deadline:
        pids = [term.proc.pid, *_descendants(term.proc.pid)]
        time.sleep(0.05)
    assert len(pids) >= 1 + children, f"the app started {len(pids) - 1} of {children} child processes"
    return pids


def _end_and_wait(term: Terminal, how: str, pids: list[int], failures: list[str]) -> None:
    try:
        _end(term, how)
        _wait_all_gone(term, pids)
    except AssertionError as exc:
        failures.append(f"{how}: {exc}")


def test_replay_and_its_children_are_gone_within_3_s_however_it_ends(tmp_path: Path) -> None:
    """Ten runs, each way of ending twice; the five of a round run side by side."""
    recording = str(write_fixed_recording(tmp_path / "rec"))
    for _ in range(2):
        terms = {how: Terminal("replay", recording) for how in ENDINGS}
        pids: dict[str, list[int]] = {how: [term.proc.pid] for how, term in terms.items()}
        failures: list[str] = []
        try:
            for how, term in terms.items():
                pids[how] = _started(term, children=1)  # the replay's worker processes
            threads = [
                threading.Thread(target=_end_and_wait, args=(terms[how], how, pids[how], failures)) for how in ENDINGS
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert failures == []
        finally:
            for how, term in terms.items():
                _kill_all(term, pids[how])


@pytest.mark.slow
def test_demo_and_its_five_nodes_are_gone_within_3_s_of_the_terminal_closing(tmp_path: Path) -> None:
    from dhtscope.tui.commands import _ports_free

    base = next(
        p for p in (random.randrange(30000, 40000) for _ in range(50)) if _ports_free("127.0.0.1", p, 5) is None
    )
    term = Terminal("demo", "--base-port", str(base), "--no-keep")
    pids = [term.proc.pid]
    try:
        pids = _started(term, children=5)
        time.sleep(1.0)  # the nodes are up and attached
        term.close()
        _wait_all_gone(term, pids)
    finally:
        _kill_all(term, pids)
