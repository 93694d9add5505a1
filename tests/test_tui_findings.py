"""The Findings tab: root causes first, their consequences indented under them, the cause in the detail."""

from __future__ import annotations

from helpers.traces import MANIFEST, End, deliver, recording, rpc, seed_bug_with_node_logs, start
from helpers.tui import table_text
from textual.app import App, ComposeResult

from dhtscope.tracing.analysis import Analysis, analyse
from dhtscope.tui.widgets.finding_detail import FindingDetail
from dhtscope.tui.widgets.findings_table import FindingsTable
from dhtscope.tui.widgets.timeline_table import Gap, timeline_items


class _Findings(App[None]):
    def compose(self) -> ComposeResult:
        yield FindingsTable(id="findings-table")
        yield FindingDetail(id="finding-detail")


def _analysis() -> Analysis:
    return analyse(recording(*seed_bug_with_node_logs(), nodes=MANIFEST))


async def test_roots_come_first_with_their_consequences_indented_and_counted() -> None:
    a = _analysis()
    app = _Findings()
    async with app.run_test(size=(120, 20)) as pilot:
        table = app.query_one(FindingsTable)
        table.analysis = a
        await pilot.pause()
        rows = table_text(table)
        assert rows[0].startswith("error | stream_not_delivered | registry")
        assert "[+3 below]" in rows[0]
        assert all(" | ↳ " in r for r in rows[1:4])
        assert [f.caused_by for f in table.findings[1:4]] == ["stream_not_delivered/registry"] * 3
        assert len(rows) == len(a.findings)


async def test_the_detail_names_what_caused_a_consequence_and_the_fix() -> None:
    app = _Findings()
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.query_one(FindingsTable)
        detail = app.query_one(FindingDetail)
        table.analysis = _analysis()
        await pilot.pause()
        detail.finding = table.findings[0]
        await pilot.pause()
        root_text = str(detail.render())
        assert "fix: make registry's application take every stream" in root_text
        assert "caused by" not in root_text
        detail.finding = table.findings[1]
        await pilot.pause()
        assert "caused by stream_not_delivered/registry" in str(detail.render())


def test_a_missing_fin_of_the_peer_is_drawn_after_the_last_event() -> None:
    c, s = End("client", "client", "tf01"), End("registry", "server", "tf01")
    start(c, s)
    rpc(c, s, 10, 0, fin_back=False)  # answered, never finished
    deliver(c, s, 3000, {"frame_type": "ping"})  # the connection lived on
    a = analyse(recording(c, s))
    view = a.stream("tf01", 0)
    assert view is not None and view.missing == "fin_peer"
    entries = a.timeline(view)
    items = timeline_items(view, entries)
    gaps = [i for i, item in enumerate(items) if isinstance(item, Gap)]
    assert gaps == [len(items) - 1] and len(entries) > 1
    assert items[-1].step == "fin_peer"
