"""The app's process ends, always: on `q`, SIGTERM, SIGHUP, or a terminal that went away.

Textual's shutdown can block for good once the terminal is gone or stops reading: its
output thread blocks (or dies) writing to the terminal, the queue in front of it fills, and
`LinuxDriver.close` -> `WriterThread.stop` waits on `Queue.put` or `join` for ever. A signal
handler cannot help by asking the app to exit: the app's loop is what is blocked. So once an
exit begins, a watchdog thread gives the orderly shutdown `grace_s` and then ends the
process with `os._exit`. The children the app started hold a pipe on their stdin that
closes with this process, and leave on their own (`dhtscope.node.runtime.exit_when_stdin_closes`).
`on_begin` callbacks run as soon as an exit begins (telling children to stop, so they stop
while the app does); `last_resort` callbacks run just before the process ends itself.

The entry point installs the guard (signal handlers are process-wide); tests driving the
app with Pilot never do.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

EXIT_GRACE_S = 1.5  # orderly shutdown's time once an exit begins; everything must be gone within 2 s
TERMINAL_POLL_MS = 250  # how often the terminal is checked for a hang-up
SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
HUNG_UP = select.POLLHUP | select.POLLERR | select.POLLNVAL


class ExitGuard:
    """`install()` before the app runs; `begin(status)` whenever an exit starts (idempotent)."""

    def __init__(
        self,
        request_exit: Callable[[], None],
        grace_s: float = EXIT_GRACE_S,
        last_resort: list[Callable[[], None]] | None = None,
        on_begin: list[Callable[[], None]] | None = None,
    ) -> None:
        """`request_exit` asks the app to quit; it and `on_begin` must be safe from a signal handler."""
        self.request_exit = request_exit
        self.grace_s = grace_s
        self.last_resort = list(last_resort or [])
        self.on_begin = list(on_begin or [])
        self.status: int | None = None
        self._lock = threading.Lock()
        self._previous: dict[int, Any] = {}
        self._stop_watching = threading.Event()

    def install(self) -> None:
        """Signal handlers for SIGTERM, SIGHUP and SIGINT, and a thread watching the terminal."""
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        ttys = [fd for fd in (0, 1, 2) if _isatty(fd)]
        if ttys:
            threading.Thread(target=self._watch_terminal, args=(ttys,), name="dhtscope-terminal", daemon=True).start()

    def uninstall(self) -> None:
        """Restore the previous signal handlers; an exit already begun still ends the process."""
        self._stop_watching.set()
        for sig, handler in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)
        self._previous.clear()

    def begin(self, status: int = 0) -> None:
        """An exit has started: the process ends within `grace_s` from now, whatever hangs."""
        with self._lock:
            if self.status is not None:
                return
            self.status = status
        threading.Thread(target=self._watchdog, name="dhtscope-exit-watchdog", daemon=True).start()
        for callback in self.on_begin:
            with contextlib.suppress(Exception):
                callback()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.status is not None and signum != signal.SIGHUP:
            self._end()  # asked twice: no more waiting
        self.begin(128 + signum)
        self.request_exit()

    def _watch_terminal(self, fds: list[int]) -> None:
        poller = select.poll()
        for fd in fds:
            poller.register(fd, 0)  # hang-ups and errors are always reported
        while not self._stop_watching.is_set():
            try:
                events = poller.poll(TERMINAL_POLL_MS)
            except OSError:
                continue
            if any(mask & HUNG_UP for _, mask in events):
                self.begin(128 + signal.SIGHUP)
                self.request_exit()
                return

    def _watchdog(self) -> None:
        threading.Event().wait(self.grace_s)
        self._end()

    def _end(self) -> None:
        for callback in self.last_resort:
            with contextlib.suppress(Exception):
                callback()
        # No flushing of stdout or stderr: a terminal that stopped reading would block it.
        os._exit(self.status if self.status is not None else 1)


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False
