"""What `dhtscope diagnose` reports, live: root causes first, each with its consequences under it."""

from __future__ import annotations

from collections import Counter

from textual.reactive import reactive

from dhtscope.tracing.analysis import ERROR, WARNING, Analysis, Finding

from ..messages import StreamChosen
from .vtable import Column, Row, VirtualTable

TONE = {ERROR: "error", WARNING: "warning"}
FINDING_WIDTH = 24  # the longest kind, indented as a consequence: "↳ store_under_replicated"


def root_first(findings: list[Finding]) -> list[Finding]:
    """Each root cause (in the order given), then the findings it caused, indented under it."""
    roots = [f for f in findings if f.caused_by is None]
    known = {f.id for f in roots}
    out: list[Finding] = []
    for root in roots:
        out.append(root)
        out.extend(f for f in findings if f.caused_by is not None and f.caused_by == root.id)
    out.extend(f for f in findings if f.caused_by is not None and f.caused_by not in known)
    return out


class FindingsTable(VirtualTable):
    """Enter on a finding that names streams opens the first one's timeline at its evidence."""

    DEFAULT_CSS = """
    FindingsTable { height: 1fr; }
    """

    analysis: reactive[Analysis | None] = reactive(None, always_update=True)

    def __init__(self, **kwargs: str | None) -> None:
        super().__init__(
            [
                Column("severity", 8),
                Column("finding", FINDING_WIDTH),
                Column("node", 10),
                Column("streams", 7, "right"),
                Column("summary"),
            ],
            empty="no findings",
            **kwargs,
        )
        self.findings: list[Finding] = []

    def watch_analysis(self, analysis: Analysis | None) -> None:
        self.findings = root_first(list(analysis.findings)) if analysis else []
        counts = Counter(f.caused_by for f in self.findings if f.caused_by is not None)
        rows = []
        for f in self.findings:
            tone = TONE.get(f.severity, "info")
            kind = (f"↳ {f.kind}", "dim") if f.caused_by is not None else (f.kind, tone)
            summary = f"[+{counts[f.id]} below] {f.summary}" if counts[f.id] else f.summary
            rows.append(Row([(f.severity, tone), kind, f.node or "-", str(f.stream_count or "-"), summary]))
        self.set_rows(rows)

    def current(self) -> Finding | None:
        return self.findings[self.cursor] if 0 <= self.cursor < len(self.findings) else None

    def on_virtual_table_selected(self, event: VirtualTable.Selected) -> None:
        event.stop()
        if not 0 <= event.index < len(self.findings):
            return
        f = self.findings[event.index]
        if f.stream_refs:
            connection, sid = f.stream_refs[0]
        elif f.connection is not None and f.streams:
            connection, sid = f.connection, f.streams[0]
        else:
            self.notify(f"{f.kind} names no stream: {f.cause}", title="No stream to open", timeout=6)
            return
        evidence = next((e for e in f.evidence), None)
        self.post_message(StreamChosen(connection, sid, evidence=evidence, finding=f))
