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
MIN_FLEX_WIDTH = 8  # the flexible column never shrinks below this, so it is never a stub
MAX_AUTO_WIDTH = 40  # a column sized to its content grows at most this wide; the rest is in the detail
MAX_MEASURED_ROWS = 5_000  # rows measured for column widths; more rows cost more than they tell


class Column(NamedTuple):
    label: str
    width: int = 0  # the least it takes; 0: flexible, it takes what is left of the row
    justify: str = "left"
    priority: int = 0  # 0: a key column, always shown; higher numbers give way first when narrow


class Layout(NamedTuple):
    """How a row is laid out at one width: each column's width, 0 for a hidden column."""

    widths: list[int]
    total: int

    @property
    def hidden(self) -> list[int]:
        return [i for i, w in enumerate(self.widths) if not w]


def cell_text(cell: Cell) -> str:
    """A cell's text without its tones."""
    if isinstance(cell, list):
        return "".join(piece for piece, _ in cell)
    if isinstance(cell, tuple):
        return cell[0]
    return cell


def layout(columns: Sequence[Column], content: Sequence[int], width: int) -> Layout:
    """Column widths at `width`. A column is as wide as its content (up to MAX_AUTO_WIDTH; its
    declared width while it has none); the flexible column takes what is left. When the row is
    too narrow, columns give way by priority (highest first), then shrink to their least."""
    want = []
    least = []
    for col, seen in zip(columns, content, strict=True):
        label = len(col.label)
        if not col.width:
            want.append(max(MIN_FLEX_WIDTH, label))
            least.append(MIN_FLEX_WIDTH)
        else:
            want.append(max(label, min(seen, MAX_AUTO_WIDTH)) if seen else max(col.width, label))
            least.append(min(col.width, max(label, 3)))
    shown = list(range(len(columns)))

    def need(indices: list[int]) -> int:
        return sum(want[i] for i in indices) + len(indices) - 1

    while need(shown) > width:
        candidates = [i for i in shown if columns[i].priority > 0]
        if not candidates:
            break
        shown.remove(max(candidates, key=lambda i: (columns[i].priority, i)))
    widths = [want[i] if i in shown else 0 for i in range(len(columns))]
    excess = need(shown) - width
    for i in sorted(shown, key=lambda i: -widths[i]):  # the widest give first
        if excess <= 0:
            break
        give = min(excess, widths[i] - least[i])
        if give > 0:
            widths[i] -= give
            excess -= give
    if excess < 0 and shown:  # room to spare: to the flexible column, or the last one shown
        flex = [i for i in shown if not columns[i].width]
        widths[(flex or shown)[-1]] += -excess
    total = sum(widths[i] for i in shown) + len(shown) - 1
    return Layout(widths, max(total, 0))


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
        self._content = [0] * len(self.columns)  # the widest text seen in each column
        self._layout: tuple[int, Layout] | None = None  # (width, layout) last drawn at
        self._hidden: list[int] = []

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

    def content_widths(self) -> list[int]:
        """The widest text in each column (rows held in memory are measured; others override)."""
        widths = [0] * len(self.columns)
        for row in self._rows[:MAX_MEASURED_ROWS]:
            if len(row.cells) == 1 and len(self.columns) > 1:
                continue  # a heading across the row sizes no column
            for i, cell in enumerate(row.cells[: len(widths)]):
                n = len(cell_text(cell))
                if n > widths[i]:
                    widths[i] = n
        return widths

    def current_layout(self) -> Layout:
        """The layout at the table's present width."""
        width = max(self.scrollable_content_region.width, 1)
        if self._layout is None or self._layout[0] != width:
            self._layout = (width, layout(self.columns, self._content, width))
            # Wider than the table only when its key columns do not fit: then it scrolls sideways.
            size = Size(max(self._layout[1].total, width), self._count + 1)
            if size != self.virtual_size:
                self.virtual_size = size
            hidden = self._layout[1].hidden
            if hidden != self._hidden:
                self._hidden = hidden
                if self._count:  # the detail of the highlighted row now holds other columns
                    self.post_message(self.Highlighted(self, self.cursor))
        return self._layout[1]

    def hidden_cells(self, index: int) -> list[tuple[str, str]]:
        """(label, text) of the columns row `index` cannot show here: hidden, or cut short."""
        if not 0 <= index < self._count:
            return []
        cells = self.get_row(index).cells
        if len(cells) == 1 and len(self.columns) > 1:
            return []
        widths = self.current_layout().widths
        out = []
        for i, (col, cell) in enumerate(zip(self.columns, cells, strict=False)):
            text = cell_text(cell)
            if text and (widths[i] == 0 or len(text) > widths[i]):
                out.append((col.label or "·", text))
        return out

    def on_resize(self) -> None:
        self._relayout()

    def _relayout(self) -> None:
        self._layout = None
        self.current_layout()

    def rows_changed(self) -> None:
        """The row count or contents changed: resize, clamp the cursor, redraw."""
        before = self._count
        self._count = self.row_count()
        content = self.content_widths()
        if content != self._content:
            self._content = content
        self._relayout()
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

    def _tone(self, tone: str) -> Style:
        return self.get_component_rich_style(f"vtable--{tone}", partial=True)

    def _line(self, cells: Sequence[Cell], widths: list[int], base: Style) -> Text:
        if len(cells) == 1 and len(widths) > 1:
            widths = [sum(w for w in widths if w) + sum(1 for w in widths if w) - 1]  # a heading across the row
        line = Text(style=base, no_wrap=True, end="")
        first = True
        for i, (cell, width) in enumerate(zip(cells, widths, strict=False)):
            if not width:
                continue  # hidden at this width: the detail pane shows it
            if not first:
                line.append(" ")
            first = False
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
        widths = self.current_layout().widths
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
