"""One stream followed across both ends, step by step."""

from __future__ import annotations

from functools import partial
from typing import Any, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static

from dhtscope.tracing.analysis import DONE, MISSING, STEPS, Analysis, ConnectionView, Evidence, Finding, StreamView

from ..export import exported_at, timeline_export
from ..format import evidence_address, short
from ..widgets.timeline_table import Gap, TimelineTable, timeline_items
from ..widgets.vtable import VirtualTable

STEP_STYLE = {DONE: "bold green", MISSING: "bold white on red"}


def step_bar(stream: StreamView) -> Text:
    text = Text()
    for i, name in enumerate(STEPS):
        st = stream.step(name)
        if i:
            text.append(" → ", style="dim")
        mark = "✓" if st.status == DONE else "✗" if st.status == MISSING else "?"
        text.append(f"{mark} {name}", style=STEP_STYLE.get(st.status, "dim"))
    return text


def credit_line(conn: ConnectionView | None, base_ms: float | None) -> Text | None:
    """The connection's stream credit: what each end allowed the other (MAX_STREAMS) and when it rose."""
    if conn is None or not conn.stream_credit:
        return None
    text = Text("stream credit: ", style="bold")
    for i, c in enumerate(conn.stream_credit):
        if i:
            text.append("; ")
        steps = []
        for k, (t, limit) in enumerate(c.grants):
            # The first grant is the handshake's: only later raises need their time.
            when = "" if k == 0 or t is None or base_ms is None else f" at {(t - base_ms) / 1000:+.1f} s"
            steps.append(f"{limit}{when}")
        allows = f"allows {' → '.join(steps)}" if steps else "sets a limit the traces do not show"
        text.append(f"{c.grantor} {allows}, peer opened {c.peer_opened}")
        if c.text.endswith("blocked"):
            text.append(" (blocked)", style="bold red")
    return text


class StreamTimelineScreen(Screen[None]):
    """Header with the step bar, the timeline, and the highlighted event's detail."""

    DEFAULT_CSS = """
    StreamTimelineScreen #timeline-head { height: auto; padding: 0 1; background: $boost; }
    StreamTimelineScreen #timeline-detail { height: auto; max-height: 8; border-top: solid $primary; padding: 0 1; }
    """

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("n", "step(1)", "Next step"),
        Binding("p", "step(-1)", "Prev step"),
        Binding("e", "export('markdown')", "Export"),
        Binding("E", "export('json')", "Export JSON", show=False),
        Binding("y", "copy", "Copy", show=False),
    ]

    def __init__(
        self, analysis: Analysis, stream: StreamView, evidence: Evidence | None = None, finding: Finding | None = None
    ) -> None:
        super().__init__()
        self.analysis = analysis
        self.stream = stream
        self.evidence = evidence
        self.finding = finding or next(
            (f for f in analysis.findings if (stream.connection, stream.stream_id) in f.stream_refs), None
        )

    def compose(self) -> ComposeResult:
        s = self.stream
        head = Text()
        head.append(f"stream {s.stream_id}", style="bold")
        head.append(f"  {s.request_type or '?'}  {s.opener or '?'} → {s.peer or '?'}  conn {short(s.connection, 16)}\n")
        head.append_text(step_bar(s))
        if s.missing:
            head.append("   missing: ", style="bold")
            head.append(s.missing, style="bold red")
        credit = credit_line(self.analysis.connection(s.connection), s.first_ms)
        if credit is not None:
            head.append("\n")
            head.append_text(credit)
        yield Static(head, id="timeline-head")
        yield TimelineTable(id="timeline")
        yield Static(id="timeline-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(TimelineTable)
        entries = self.analysis.timeline(self.stream)
        cause = self.finding.cause if self.finding is not None else ""
        base = self.stream.first_ms if self.stream.first_ms is not None else (entries[0].time_ms if entries else 0.0)
        table.show(timeline_items(self.stream, entries, cause), base)
        at = table.index_of(self.evidence)
        if at is None:
            at = next((i for i, item in enumerate(table.items) if isinstance(item, Gap)), 0)
        table.focus()
        table.move_cursor(at)
        self._detail(at)

    def action_export(self, fmt: str = "markdown") -> None:
        """Save the timeline: every event of the stream on both ends, and the gap."""
        table = self.query_one(TimelineTable)
        app = cast("Any", self.app)
        context = {"source": app.source.title, "exported at": exported_at()}
        build = partial(
            timeline_export, self.stream, list(table.items), table.base_ms, context, self.analysis.recording_path
        )
        app.save_export(
            f"the timeline of stream {self.stream.stream_id}", f"stream-{self.stream.stream_id}", fmt, build
        )

    def action_copy(self) -> None:
        """The highlighted event (or the gap) and its evidence, as text."""
        table = self.query_one(TimelineTable)
        if not table.items:
            return
        detail = self.query_one("#timeline-detail", Static).render()
        cast("Any", self.app).copy_text("the highlighted timeline row", str(detail))

    def action_step(self, direction: int) -> None:
        table = self.query_one(TimelineTable)
        i = table.cursor + direction
        while 0 <= i < len(table.items):
            if table.is_step(i):
                table.move_cursor(i)
                return
            i += direction

    def on_virtual_table_highlighted(self, event: VirtualTable.Highlighted) -> None:
        self._detail(event.index)

    def _detail(self, index: int) -> None:
        table = self.query_one(TimelineTable)
        detail = self.query_one("#timeline-detail", Static)
        if not 0 <= index < len(table.items):
            detail.update("")
            return
        item = table.items[index]
        text = Text()
        if isinstance(item, Gap):
            text.append(f"{item.step} never happened on {item.node or '?'}\n", style="bold red")
            text.append(item.explanation)
        else:
            text.append(f"{item.name}", style="bold")
            if item.step:
                text.append(f"  step {item.step}", style="bold green")
            text.append(f"  on {item.node} ({item.end})  t+{item.time_ms - table.base_ms:,.3f} ms\n")
            text.append(item.detail + "\n")
            ev = item.evidence
            where = evidence_address(self.analysis.recording_path, ev.path, ev.record, ev.trace, ev.frame)
            text.append(f"evidence {where}", style="dim")
        detail.update(text)
