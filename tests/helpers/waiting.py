"""Waiting in tests on events and on an injected clock, never on the wall clock alone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class FakeClock:
    """A node's clock (`Node(clock=...)`) that moves only when a test advances it."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def eventually(predicate: Callable[[], Any], what: str, timeout_s: float = 10.0) -> None:
    """Wait for a condition the node reaches on its own (an event, not a time); fail naming it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.01)


def process_running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has ended; only its parent's wait remains). Linux /proc."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
