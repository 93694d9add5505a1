"""Every tab compared with accepted SVG snapshots (tests/snapshots/), at 80x24 and 160x48, over a
healthy and a no-accept recording; the stream timeline and the help too.

Deterministic by construction: fixed recordings, times relative to them, clocks in UTC, and a
replay (so countdowns count from the replay position, never from the wall clock), opened in
the test's own process.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import pytest_textual_snapshot
from helpers.tui import in_process_replay, replay_ready, write_fixed_recording

from dhtscope.tui.app import DhtscopeApp

SIZES = [(80, 24), (160, 48)]
RECORDINGS = ("healthy", "no-accept")
TABS = {
    "nodes": [],
    "connections": ["2"],
    "streams": ["3", "a"],
    "routing": ["4"],
    "records": ["5"],
    "events": ["6"],
    "findings": ["7"],
    "probe": ["8"],
}
OTHER_SCREENS = {"timeline": ["7", "enter"], "help": ["question_mark"]}


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


CASES = [
    *((recording, tab, size) for recording in RECORDINGS for tab in TABS for size in SIZES),
    *(("no-accept", "timeline", size) for size in SIZES),
    ("no-accept", "help", SIZES[0]),
]


@pytest.mark.parametrize("recording,screen,size", CASES, ids=[f"{r}-{s}-{w}x{h}" for r, s, (w, h) in CASES])
def test_screen_snapshot(recording: str, screen: str, size: tuple[int, int], tmp_path: Path, snap_compare: Any) -> None:
    source = in_process_replay(str(write_fixed_recording(tmp_path / "rec", recording)))
    app = DhtscopeApp(source)

    async def ready(pilot: Any) -> None:
        await replay_ready(app, pilot)
        for key in {**TABS, **OTHER_SCREENS}[screen]:
            await pilot.press(key)
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=size, run_before=ready)
