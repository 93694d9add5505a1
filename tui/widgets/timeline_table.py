"""Every event of one stream on both ends in time order, with the missing step drawn as a gap."""

from __future__ import annotations

from dataclasses import dataclass

from dhtscope.tracing.analysis import STEPS, Evidence, StreamView, TimelineEntry

from .vtable import Column, Row, VirtualTable


@dataclass(frozen=True)
class Gap:
    """Where the missing step should have happened, and why it did not."""

    step: str
    node: str | None
    explanation: str


Item = TimelineEntry | Gap


def timeline_items(stream: StreamView, entries: list[TimelineEntry], cause: str = "") -> list[Item]:
    """The entries with a Gap after the last step that did happen before the missing one (a FIN: at the end)."""
    items: list[Item] = list(entries)
    if not stream.missing:
        return items
    missing = stream.step(stream.missing)
    why = missing.note or "no event shows this step"
    explanation = f"{why}." if not why.endswith(".") else why
    if cause:
        explanation += f" {cause}"
    gap = Gap(stream.missing, missing.node, explanation)
    if stream.missing not in STEPS:
        # A FIN that never came (fin_peer) is missing after everything that did happen.
        items.append(gap)
        return items
    before = STEPS[: STEPS.index(stream.missing)]
    at = 0
    for i, item in enumerate(items):
        if isinstance(item, TimelineEntry) and item.step in before:
            at = i + 1
    items.insert(at, gap)
    return items


class TimelineTable(VirtualTable):
    """Rows of a stream timeline; `n`/`p` on the screen jump between steps."""

    DEFAULT_CSS = """
    TimelineTable { height: 1fr; }
    """

    def __init__(self, **kwargs: str | None) -> None:
        super().__init__(
            [
                Column("t+ms", 9, "right"),
                Column("node", 10),
                Column("end", 6),
                Column("step", 11),
                Column("event", 26),
                Column("detail"),
            ],
            empty="no events for this stream",
            **kwargs,
        )
        self.items: list[Item] = []
        self.base_ms = 0.0

    def show(self, items: list[Item], base_ms: float) -> None:
        self.items = items
        self.base_ms = base_ms
        rows = []
        for item in items:
            if isinstance(item, Gap):
                rows.append(
                    Row(["", item.node or "?", "peer", f"✗ {item.step}", "── MISSING ──", item.explanation], tone="gap")
                )
            else:
                step = (
                    (f"✓ {item.step}", "ok")
                    if item.step and item.step != "reset"
                    else (("reset", "warning") if item.step == "reset" else "")
                )
                rows.append(Row([f"{item.time_ms - base_ms:,.1f}", item.node, item.end, step, item.name, item.detail]))
        self.set_rows(rows)

    def is_step(self, index: int) -> bool:
        item = self.items[index]
        return isinstance(item, Gap) or bool(item.step)

    def index_of(self, evidence: Evidence | None) -> int | None:
        if evidence is None:
            return None
        for i, item in enumerate(self.items):
            if (
                isinstance(item, TimelineEntry)
                and item.evidence.path == evidence.path
                and item.evidence.record == evidence.record
                and item.evidence.trace == evidence.trace
            ):
                return i
        return None
