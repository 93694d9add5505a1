"""The TUI for daily work (issue 14): no traps, nothing wrong on screen, results taken away."""

from __future__ import annotations

from pathlib import Path

from helpers.tui import in_process_replay, replay_ready, write_fixed_recording

from dhtscope.tui.app import DhtscopeApp
from dhtscope.tui.screens.event_detail import EventDetailScreen


def _app(tmp_path: Path, scenario: str = "no-accept") -> DhtscopeApp:
    return DhtscopeApp(in_process_replay(str(write_fixed_recording(tmp_path / "rec", scenario))))


async def test_double_clicking_an_event_opens_its_detail(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await replay_ready(app, pilot)
        await pilot.press("6")
        assert app.main.query_one("#event-log").row_count() > 3
        assert await pilot.double_click("#event-log", offset=(5, 3))
        await pilot.pause(0.1)
        assert isinstance(app.screen, EventDetailScreen)
