"""Replay position and controls: play/pause, step, time, speed."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from ..source import ReplayState


class ReplayBar(Static):
    """Shows where the replay stands; the keys live on the main screen."""

    DEFAULT_CSS = """
    ReplayBar { height: 1; background: $boost; padding: 0 1; }
    """

    state: reactive[ReplayState | None] = reactive(None, always_update=True)

    def render(self) -> Text:
        s = self.state
        text = Text(no_wrap=True, overflow="ellipsis")
        if s is None:
            return text
        text.append("▶ playing" if s.playing else "❚❚ paused", style="bold green" if s.playing else "bold")
        text.append(f" {s.speed:g}x  event {s.position:,}/{s.total:,}")
        if s.indexing:
            text.append(" (indexing…)", style="yellow")
        if s.first_ms is not None:
            at = ((s.time_ms if s.time_ms is not None else s.first_ms) - s.first_ms) / 1000.0
            span = f" / {(s.last_ms - s.first_ms) / 1000.0:.3f} s" if s.last_ms is not None else ""
            text.append(f"  t+{at:.3f} s{span}")
        text.append("   p play  ,/. step  t time  -/+ speed  [/] start/end", style="dim")
        return text
