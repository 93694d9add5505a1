"""The highlighted finding in full: what caused it, summary, cause, fix, evidence addresses."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from dhtscope.tracing.analysis import ERROR, WARNING, Finding

from ..format import evidence_address

STYLE = {ERROR: "bold red", WARNING: "bold yellow"}
MAX_EVIDENCE_LINES = 4


class FindingDetail(Static):
    """Three to eight lines under the findings table."""

    DEFAULT_CSS = """
    FindingDetail { height: auto; max-height: 10; border-top: solid $primary; padding: 0 1; }
    """

    finding: reactive[Finding | None] = reactive(None, always_update=True)
    root: str | None = None  # the recording's directory: evidence paths are shown relative to it

    def watch_finding(self, f: Finding | None) -> None:
        if f is None:
            self.update(Text("Select a finding; enter opens its stream timeline.", style="dim"))
            return
        text = Text()
        text.append(f"{f.kind}", style=STYLE.get(f.severity, "bold cyan"))
        text.append(f"  on {f.node or '-'}" + (f" (peer {f.peer})" if f.peer else ""))
        if f.caused_by is not None:
            text.append("  caused by ", style="dim")
            text.append(f.caused_by, style="bold")
        text.append("\n" + f.summary + "\n")
        text.append("cause: ", style="bold")
        text.append(f.cause + "\n")
        if f.fix:
            text.append("fix: ", style="bold")
            text.append(f.fix + "\n")
        for e in f.evidence[:MAX_EVIDENCE_LINES]:
            where = evidence_address(self.root, e.path, e.record, e.trace, e.frame)
            text.append(f"  {e.name:<26} {where}\n", style="dim")
        if len(f.evidence) > MAX_EVIDENCE_LINES:
            text.append(f"  … {len(f.evidence) - MAX_EVIDENCE_LINES} more evidence events\n", style="dim")
        text.rstrip()
        self.update(text)
