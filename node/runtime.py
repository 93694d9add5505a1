"""The event loop node processes run on: uvloop where it is installed, asyncio's own otherwise.

uvloop (libuv) cuts the loop's own cost per RPC: about a fifth less CPU per request at 16
and 128 requests in flight (BENCHMARKS.md). `DHTSCOPE_LOOP=asyncio` picks asyncio's loop
anyway, to compare or to rule the loop out while debugging. The TUI keeps Textual's loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

LOOP_ENV = "DHTSCOPE_LOOP"


def loop_name() -> str:
    """'uvloop' or 'asyncio': the loop `run` will use."""
    if os.environ.get(LOOP_ENV, "").strip().lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on the loop `loop_name()` names."""
    if loop_name() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


STDIN_EXIT_GRACE_S = 3.0  # after stdin closes, how long a clean stop may take before the process just ends


def exit_when_stdin_closes(graceful: bool = True) -> None:
    """End this process once standard input closes: how a supervisor takes its children with it.

    The supervisor holds the write end of a pipe; it closes when the supervisor exits or is
    killed, even by SIGKILL. `graceful` sends ourselves SIGTERM first (the node stops and
    closes its files), then ends the process outright after STDIN_EXIT_GRACE_S; otherwise
    the process ends at once. One mechanism for every child dhtscope starts.
    """
    import signal
    import threading

    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        if graceful:
            os.kill(os.getpid(), signal.SIGTERM)
            threading.Event().wait(STDIN_EXIT_GRACE_S)
        os._exit(0)

    threading.Thread(target=watch, name="exit-when-stdin-closes", daemon=True).start()
