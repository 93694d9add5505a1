"""Every stream with the furthest step it reached and the missing step highlighted."""

from __future__ import annotations

from textual.reactive import reactive

from dhtscope.tracing.analysis import DONE, MISSING, NOT_VISIBLE, STEPS, Analysis, StreamView

from ..format import short
from ..messages import StreamChosen
from .vtable import Column, Row, VirtualTable

MAX_STREAM_ROWS = 20_000  # the newest streams; older ones are counted, not listed
MARK = {DONE: ("✓", "ok"), MISSING: ("✗", "error"), NOT_VISIBLE: ("·", "dim")}


def step_strip(stream: StreamView) -> list[tuple[str, str]]:
    """sent, acked, received, delivered, answered as five marks; the missing one stands out."""
    pieces: list[tuple[str, str]] = []
    for i, name in enumerate(STEPS):
        mark, tone = MARK.get(stream.step(name).status, ("?", "dim"))
        if i:
            pieces.append((" ", ""))
        pieces.append((mark, "gap" if name == stream.missing else tone))
    return pieces


class StreamsTable(VirtualTable):
    """Streams of the selected node (or all nodes); enter opens the stream's timeline."""

    DEFAULT_CSS = """
    StreamsTable { height: 1fr; }
    """

    analysis: reactive[Analysis | None] = reactive(None, always_update=True)
    node: reactive[str] = reactive("")
    show_all: reactive[bool] = reactive(False)

    def __init__(self, **kwargs: str | None) -> None:
        super().__init__(
            [
                Column("conn", 8, priority=2),
                Column("id", 3, "right"),
                Column("rpc", 4),
                Column("opener → peer", 14, priority=1),
                Column("s a r d A", 9),
                Column("furthest", 8, priority=3),
                Column("missing step"),
            ],
            empty="no streams (analysis runs in the background)",
            **kwargs,
        )
        self.streams: list[StreamView] = []
        self.hidden = 0

    def _rebuild(self) -> None:
        analysis = self.analysis
        streams = list(analysis.streams) if analysis else []
        if not self.show_all and self.node:
            streams = [s for s in streams if self.node in (s.opener, s.peer)]
        streams.sort(key=lambda s: (s.first_ms or 0.0, s.connection, s.stream_id))
        self.hidden = max(0, len(streams) - MAX_STREAM_ROWS)
        self.streams = streams[self.hidden :]
        rows = []
        for s in self.streams:
            who = f"{s.opener or '?'} → {s.peer or '?'}"
            rows.append(
                Row(
                    [
                        short(s.connection),
                        str(s.stream_id),
                        s.request_type or "-",
                        who,
                        step_strip(s),
                        s.furthest or "-",
                        (s.missing, "error") if s.missing else ("none", "ok"),
                    ]
                )
            )
        self.set_rows(rows)

    def watch_analysis(self) -> None:
        self._rebuild()

    def watch_node(self) -> None:
        self._rebuild()

    def watch_show_all(self) -> None:
        self._rebuild()

    def on_virtual_table_selected(self, event: VirtualTable.Selected) -> None:
        event.stop()
        if 0 <= event.index < len(self.streams):
            s = self.streams[event.index]
            self.post_message(StreamChosen(s.connection, s.stream_id))
