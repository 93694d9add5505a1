"""One line on top: mode, selected node, event rate, findings, analysis age."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static


class StatusLine(Static):
    """Fed by the screen; holds no clock of its own (snapshot tests stay stable)."""

    DEFAULT_CSS = """
    StatusLine { height: 1; background: $primary-background; color: $text; padding: 0 1; }
    """

    mode: reactive[str] = reactive("")
    node: reactive[str] = reactive("")
    nodes: reactive[int] = reactive(0)
    events: reactive[int] = reactive(0)
    rate: reactive[float] = reactive(0.0)
    errors: reactive[int] = reactive(0)
    warnings: reactive[int] = reactive(0)
    analysing: reactive[str] = reactive("")

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(self.mode, style="bold")
        text.append("  node ")
        text.append(self.node or "-", style="bold reverse")
        text.append(f"  {self.nodes} nodes  {self.events:,} ev")
        if self.rate:
            text.append(f" {self.rate:,.0f}/s")
        text.append("  ")
        text.append(f"{self.errors} err", style="bold red" if self.errors else "dim")
        text.append(" ")
        text.append(f"{self.warnings} warn", style="bold yellow" if self.warnings else "dim")
        if self.analysing:
            text.append(f"  {self.analysing}", style="dim")
        return text
