"""A table drawn with the Line API: only the visible rows are ever rendered, however many there are."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

# A cell is plain text, (text, tone) where tone names one of the table's component classes,
# or a list of (text, tone) pieces (a strip of step marks).
Cell = str | tuple[str, str] | list[tuple[str, str]]
TONES = ("error", "warning", "ok", "dim", "info", "gap", "accent")
MIN_FLEX_WIDTH = 4


class Column(NamedTuple):
    label: str
    width: int = 0  # 0: shares what is left of the row
    justify: str = "left"


class Row(NamedTuple):
    cells: Sequence[Cell]
    tone: str | None = None  # the whole row's tone (a missing step, an error finding)


class VirtualTable(ScrollView, can_focus=True):
    """Columns, rows on demand (`row_count` / `get_row`), a cursor, Selected on enter or click."""

    DEFAULT_CSS = """
    VirtualTable {
        height: 1fr;
        background: $surface;
        scrollbar-size-vertical: 1;
        scrollbar-size-horizontal: 1;
    }
    VirtualTable > .vtable--header { text-style: bold; background: $panel; color: $text; }
    VirtualTable > .vtable--cursor { background: $primary 40%; }
    VirtualTable:focus > .vtable--cursor { background: $primary; color: $text; text-style: bold; }
    VirtualTable > .vtable--error { color: $error; text-style: bold; }
    VirtualTable > .vtable--warning { color: $warning; }
    VirtualTable > .vtable--ok { color: $success; }
    VirtualTable > .vtable--dim { color: $text-muted; }
    VirtualTable > .vtable--info { color: $accent; }
    VirtualTable > .vtable--gap { background: $error 25%; color: $text; text-style: bold; }
    VirtualTable > .vtable--accent { color: $secondary; text-style: bold; }
    VirtualTable > .vtable--empty { color: $text-muted; text-style: italic; }
    """

    COMPONENT_CLASSES = {"vtable--header", "vtable--cursor", "vtable--empty", *(f"vtable--{t}" for t in TONES)}

    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
        Binding("enter", "select", "Open", show=False),
    ]

    cursor: reactive[int] = reactive(0, always_update=True)

    class _RowMessage(Message):
        """About one row of the table (each subclass gets its own handler name)."""

        def __init__(self, table: VirtualTable, index: int) -> None:
            super().__init__()
            self.table = table
            self.index = index

        @property
        def control(self) -> VirtualTable:
            return self.table

    class Highlighted(_RowMessage):
        """The cursor moved to row `index`."""

    class Selected(_RowMessage):
        """Row `index` was chosen (enter)."""

    def __init__(
        self,
        columns: Sequence[Column],
        *,
        empty: str = "nothing to show",
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.columns = list(columns)
        self.empty_text = empty
        self._rows: list[Row] = []
        self._count = 0

    # -- rows (subclasses with their own storage override these two)

    def row_count(self) -> int:
        return len(self._rows)

    def get_row(self, index: int) -> Row:
        return self._rows[index]

    def set_rows(self, rows: list[Row]) -> None:
        """Replace every row, keeping the cursor where it was (clamped).

        The row under the cursor may now be another one: say so, so that whatever shows
        the highlighted row (a detail pane) never keeps the old row's text.
        """
        had_rows = self._count > 0
        self._rows = rows
        self.rows_changed()
        if had_rows and self._count:
            self.post_message(self.Highlighted(self, self.cursor))

    def rows_changed(self) -> None:
        """The row count or contents changed: resize, clamp the cursor, redraw."""
        before = self._count
        self._count = self.row_count()
        fixed = sum(c.width for c in self.columns) + len(self.columns) - 1
        flex = sum(1 for c in self.columns if not c.width)
        self.virtual_size = Size(fixed + flex * MIN_FLEX_WIDTH, self._count + 1)
        if self._count and self.cursor >= self._count:
            self.cursor = self._count - 1
        elif self._count and not before:
            self.post_message(self.Highlighted(self, self.cursor))  # the first rows: say what is highlighted
        self.refresh()

    # -- cursor

    def watch_cursor(self, old: int, new: int) -> None:
        if self._count == 0:
            return
        self._scroll_to_cursor()
        self.post_message(self.Highlighted(self, new))
        self.refresh()

    def _scroll_to_cursor(self) -> None:
        height = max(self.scrollable_content_region.height - 1, 1)
        top = round(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor > top + height - 1:
            self.scroll_to(y=self.cursor - height + 1, animate=False, immediate=True)

    def move_cursor(self, index: int) -> None:
        if self._count:
            self.cursor = max(0, min(index, self._count - 1))

    def action_cursor(self, delta: int) -> None:
        self.move_cursor(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor + direction * max(self.scrollable_content_region.height - 2, 1))

    def action_jump(self, where: int) -> None:
        self.move_cursor(self._count - 1 if where < 0 else where)

    def action_select(self) -> None:
        if self._count:
            self.post_message(self.Selected(self, self.cursor))

    def on_click(self, event: events.Click) -> None:
        index = round(self.scroll_y) + event.y - 1
        if event.y == 0 or not 0 <= index < self._count:
            return
        if index == self.cursor or event.chain > 1:
            self.post_message(self.Selected(self, index))
        self.cursor = index

    # -- drawing

    def _widths(self, width: int) -> list[int]:
        fixed = sum(c.width for c in self.columns if c.width) + len(self.columns) - 1
        flex = [c for c in self.columns if not c.width]
        spare = max(width - fixed, MIN_FLEX_WIDTH * len(flex))
        share = spare // len(flex) if flex else 0
        out = []
        for c in self.columns:
            out.append(c.width or share)
        if flex:
            last = max(i for i, c in enumerate(self.columns) if not c.width)
            out[last] += spare - share * len(flex)
        return out

    def _tone(self, tone: str) -> Style:
        return self.get_component_rich_style(f"vtable--{tone}", partial=True)

    def _line(self, cells: Sequence[Cell], widths: list[int], base: Style) -> Text:
        if len(cells) == 1 and len(widths) > 1:
            widths = [sum(widths) + len(widths) - 1]  # one cell: a heading across the row
        line = Text(style=base, no_wrap=True, end="")
        for i, (cell, width) in enumerate(zip(cells, widths, strict=False)):
            if i:
                line.append(" ")
            if isinstance(cell, list):
                used = 0
                for piece, tone in cell:
                    piece = piece[: max(width - used, 0)]
                    line.append(piece, self._tone(tone) if tone in TONES else "")
                    used += len(piece)
                line.append(" " * max(width - used, 0))
                continue
            if isinstance(cell, tuple):
                content, tone = cell
                style: Style | str = self._tone(tone) if tone in TONES else ""
            else:
                content, style = cell, ""
            content = content.replace("\n", " ")
            if len(content) > width:
                content = content[: max(width - 1, 0)] + "…" if width > 1 else content[:width]
            justify = self.columns[i].justify if len(cells) > 1 and i < len(self.columns) else "left"
            padded = content.rjust(width) if justify == "right" else content.ljust(width)
            line.append(padded, style)
        return line

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        scroll_x = round(self.scroll_x)
        base = self.rich_style
        total = max(width + scroll_x, self.virtual_size.width)
        widths = self._widths(total)
        if y == 0:
            header = self.get_component_rich_style("vtable--header")
            text = self._line([c.label for c in self.columns], widths, header)
            style = header
        else:
            index = round(self.scroll_y) + y - 1
            if index >= self._count:
                if index == 0 and self._count == 0:
                    empty = self.get_component_rich_style("vtable--empty")
                    return Strip([Segment(self.empty_text[:width].ljust(width), base + empty)], width)
                return Strip.blank(width, base)
            row = self.get_row(index)
            style = base
            if row.tone in TONES:
                style = style + self._tone(row.tone)
            if index == self.cursor:
                style = style + self.get_component_rich_style("vtable--cursor")
            text = self._line(row.cells, widths, style)
        segments = list(text.render(self.app.console, end=""))
        return Strip(segments).crop_extend(scroll_x, scroll_x + width, style)
