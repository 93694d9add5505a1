"""`?`: every key, where it works."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

SECTIONS: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "Everywhere",
        [
            ("1…8", "Nodes, Connections, Streams, Routing, Records, Events, Findings, Probe"),
            ("n / N", "next / previous node"),
            ("g", "go to a node by its name, id or id prefix"),
            ("s", "fault scenario of the selected node (live)"),
            ("ctrl+p", "command palette: every action by name"),
            ("?", "this help"),
            ("escape", "back; out of a text field"),
            ("q", "quit (asks first; ctrl+q does not)"),
        ],
    ),
    (
        "Text fields",
        [
            ("", "the Probe arguments and the Events filter take every key as text, digits and q too"),
            ("escape / tab", "leave the field: 1…8, q and ? work again"),
        ],
    ),
    ("Tables", [("↑ ↓ pgup pgdn home end", "move"), ("enter / click", "open the row")]),
    (
        "Taking results away",
        [
            ("e", "save what the view shows as Markdown (the file is named on screen; ./dhtscope-<view>-<time>.md)"),
            ("E", "the same as JSON, with the data behind each row"),
            ("y", "copy the highlighted row, finding or event (OSC 52: where the terminal allows it)"),
        ],
    ),
    (
        "Streams",
        [
            ("a", "all nodes' streams / the selected node's"),
            ("s a r d A", "steps: sent, acked, received, delivered, answered (✓ done, ✗ missing, ? unseen)"),
        ],
    ),
    (
        "Events",
        [
            ("/", "filter: words match name, node, connection; a number (or stream:N) names a stream"),
            ("space", "pause / resume"),
            ("f", "follow the newest event"),
            ("enter", "event detail"),
        ],
    ),
    ("Findings", [("enter", "open the stream timeline at the finding's evidence")]),
    ("Stream timeline", [("↑ ↓", "event by event"), ("n / p", "next / previous step"), ("escape", "back")]),
    (
        "Probe",
        [
            ("enter on the chooser", "pick the operation; tab moves on to its arguments"),
            ("enter / Run", "run the operation on the selected node"),
        ],
    ),
    (
        "Replay",
        [
            ("p", "play / pause"),
            (", / .", "step one event back / forward"),
            ("t", "jump to a time"),
            ("- / +", "slower / faster"),
            ("[ / ]", "start / end"),
        ],
    ),
]


class HelpScreen(ModalScreen[None]):
    """A table of keys; escape, q or ? closes it."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; max-width: 110; height: 90%; border: thick $primary;
                                  background: $surface; padding: 0 1; }
    """

    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("q", "dismiss", "Close", show=False),
        Binding("question_mark", "dismiss", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for title, keys in SECTIONS:
            table.add_row(Text(title, style="bold underline"), "")
            for key, what in keys:
                table.add_row(key, what)
        with VerticalScroll():
            yield Static(Text("dhtscope keys", style="bold"))
            yield Static(table)
