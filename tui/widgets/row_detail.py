"""Under a table: what its highlighted row cannot show at this width, hidden columns and cut values."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class RowDetail(Static):
    """Empty (and out of the way) while the row shows everything; the screen feeds it."""

    DEFAULT_CSS = """
    RowDetail { height: auto; max-height: 4; padding: 0 1; background: $boost; }
    RowDetail.-empty { display: none; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.add_class("-empty")
        self.cells: list[tuple[str, str]] = []

    def show(self, cells: list[tuple[str, str]]) -> None:
        if cells == self.cells:
            return
        self.cells = cells
        self.set_class(not cells, "-empty")
        text = Text()
        for i, (label, value) in enumerate(cells):
            if i:
                text.append("   ")
            text.append(f"{label} ", style="bold")
            text.append(value)
        self.update(text)
