"""One event in full."""

from __future__ import annotations

import json

from rich.syntax import Syntax
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ..format import local_time, readable_times
from ..source import EventRow


class EventDetailScreen(ModalScreen[None]):
    """The event's name, node, connection and data as indented JSON; times as local time."""

    DEFAULT_CSS = """
    EventDetailScreen { align: center middle; }
    EventDetailScreen > VerticalScroll { width: 90%; height: 85%; border: thick $primary; background: $surface; }
    EventDetailScreen #event-head { padding: 0 1; text-style: bold; }
    """

    BINDINGS = [Binding("escape", "dismiss", "Back"), Binding("enter", "dismiss", "Back", show=False)]

    def __init__(self, row: EventRow) -> None:
        super().__init__()
        self.row = row

    def compose(self) -> ComposeResult:
        row = self.row
        when = local_time(row.time_ms)
        self.body = body = json.dumps(
            {"time": when, "node": row.node, "name": row.name, "conn": row.conn, "data": readable_times(row.data)},
            indent=2,
            default=str,
        )
        with VerticalScroll():
            yield Static(f"{row.name} on {row.node} at {when}", id="event-head")
            yield Static(Syntax(body, "json", word_wrap=True, theme="ansi_dark"), id="event-body")
