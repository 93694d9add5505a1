"""What `dhtscope diagnose` reports, live: one row per finding, worst first."""

from __future__ import annotations

from textual.reactive import reactive

from dhtscope.tracing.analysis import ERROR, WARNING, Analysis, Finding

from ..messages import StreamChosen
from .vtable import Column, Row, VirtualTable

TONE = {ERROR: "error", WARNING: "warning"}


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
                Column("finding", 22),
                Column("node", 10),
                Column("streams", 7, "right"),
                Column("summary"),
            ],
            empty="no findings",
            **kwargs,
        )
        self.findings: list[Finding] = []

    def watch_analysis(self, analysis: Analysis | None) -> None:
        self.findings = list(analysis.findings) if analysis else []
        self.set_rows(
            [
                Row(
                    [
                        (f.severity, TONE.get(f.severity, "info")),
                        (f.kind, TONE.get(f.severity, "info")),
                        f.node or "-",
                        str(len(f.stream_refs) or len(f.streams) or "-"),
                        f.summary,
                    ]
                )
                for f in self.findings
            ]
        )

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
