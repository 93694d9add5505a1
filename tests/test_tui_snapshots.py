"""Screens compared with accepted SVG snapshots (tests/snapshots/), at 80x24 and 160x48.

Deterministic by construction: a fixed recording, times relative to it, clocks in UTC, and a
replay (so countdowns count from the replay position, never from the wall clock).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import pytest_textual_snapshot
from helpers.tui import wait_until, write_fixed_recording

from dhtscope.tui.app import DhtscopeApp
from dhtscope.tui.sources.replay import ReplaySource

SIZES = [(80, 24), (160, 48)]
SCREENS = {
    "nodes": [],
    "connections": ["2"],
    "streams": ["3", "a"],
    "records": ["5"],
    "events": ["6"],
    "findings": ["7"],
    "timeline": ["7", "enter"],
    "help": ["question_mark"],
}


class _SnapshotsDir(pytest_textual_snapshot.SVGImageExtension):
    """Keep the SVGs in tests/snapshots/<test file>/ rather than syrupy's __snapshots__."""

    @classmethod
    def dirname(cls, *, test_location: Any) -> str:
        return str(Path(test_location.filepath).parent / "snapshots" / test_location.basename)


@pytest.fixture(autouse=True)
def _fixed_world(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(pytest_textual_snapshot, "SVGImageExtension", _SnapshotsDir)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


MAIN_SCREENS = ("nodes", "streams", "events", "findings", "timeline")
CASES = [(screen, size) for screen in SCREENS for size in (SIZES if screen in MAIN_SCREENS else SIZES[:1])]


@pytest.mark.parametrize("screen,size", CASES, ids=[f"{s}-{w}x{h}" for s, (w, h) in CASES])
def test_screen_snapshot(screen: str, size: tuple[int, int], tmp_path: Path, snap_compare: Any) -> None:
    source = ReplaySource(str(write_fixed_recording(tmp_path / "rec")))
    app = DhtscopeApp(source)

    async def ready(pilot: Any) -> None:
        await wait_until(
            lambda: (
                app.main.analysis is not None
                and not source.state.indexing
                and app.main.query_one("#nodes-table").row_count() == 3
            ),
            pilot,
            what="analysis",
        )
        for key in SCREENS[screen]:
            await pilot.press(key)
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=size, run_before=ready)
