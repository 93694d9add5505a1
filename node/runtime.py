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
