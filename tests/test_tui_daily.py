"""The TUI for daily work (issue 14): no traps, nothing wrong on screen, results taken away."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from helpers.tui import (
    CLIENT_ID,
    KEY,
    P1_ID,
    fake_live_source,
    in_process_replay,
    replay_ready,
    table_text,
    wait_until,
    write_fixed_recording,
)

from dhtscope.tui.app import DhtscopeApp
from dhtscope.tui.screens.event_detail import EventDetailScreen


def _app(tmp_path: Path, scenario: str = "no-accept") -> DhtscopeApp:
    return DhtscopeApp(in_process_replay(str(write_fixed_recording(tmp_path / "rec", scenario))))


async def test_double_clicking_an_event_opens_its_detail(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await replay_ready(app, pilot)
        await pilot.press("6")
        assert app.main.query_one("#event-log").row_count() > 3
        assert await pilot.double_click("#event-log", offset=(5, 3))
        await pilot.pause(0.1)
        assert isinstance(app.screen, EventDetailScreen)


async def test_the_finding_detail_follows_new_findings_without_the_cursor_moving(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await replay_ready(app, pilot)
        await pilot.press("7")
        main = app.main
        analysis = main.analysis
        assert analysis is not None and analysis.findings[0].kind == "stream_not_delivered"
        detail = main.query_one("#finding-detail")
        assert "stream_not_delivered" in str(detail.render())
        main.analysis = dataclasses.replace(analysis, findings=analysis.findings[1:])  # a newer analysis
        await pilot.pause(0.1)
        now_first = analysis.findings[1].kind
        assert table_text(main.query_one("#findings-table"))[0].split(" | ")[1] == now_first
        assert now_first in str(detail.render()) and "stream_not_delivered" not in str(detail.render())


STORE_RESULT = {
    "op": "store",
    "kind": "store",
    "key": KEY,
    "name": "mykey",
    "value": "myvalue",
    "rounds": 1,
    "messages": 5,
    "hops": [
        *(
            {
                "round": 1,
                "node": n,
                "address": "127.0.0.1:4501",
                "rtt_ms": 2.0,
                "returned": 3,
                "values": 0,
                "error": None,
            }
            for n in (P1_ID, CLIENT_ID)
        ),
        {
            "round": 2,
            "node": KEY,
            "address": "127.0.0.1:4509",
            "rtt_ms": None,
            "returned": 0,
            "values": 0,
            "error": "timed out",
        },
    ],
    "closest": [{"node": P1_ID, "address": "127.0.0.1:4501"}, {"node": CLIENT_ID, "address": "127.0.0.1:4502"}],
    "replicas": 3,
    "targets": 2,
    "accepted": 2,
    "stored_locally": True,
    "refused": [],
    "ok": True,
}


async def test_the_probe_summary_says_what_its_tables_show() -> None:
    source = fake_live_source({"store": STORE_RESULT})
    app = DhtscopeApp(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(lambda: app.main.node == "registry", pilot, what="nodes")
        await pilot.press("8")
        app.main.query_one("#probe-panel").set_kind("store")
        app.main.query_one("#probe-arg1").value = "mykey"
        app.main.query_one("#probe-arg2").value = "myvalue"
        app.main.query_one("#probe-panel").run()
        rounds = app.main.query_one("#probe-rounds")
        await wait_until(lambda: rounds.row_count() > 0, pilot, what="probe rounds")
        status = str(app.main.query_one("#probe-status").render())
        assert table_text(rounds)[-2].startswith("round 2")
        assert "2 rounds (no answer in round 2), 5 messages" in status
        assert "stored on 2 of the 2 closest nodes found, and on this node itself" in status
        assert "1 rounds" not in status and "3 of 2" not in status
        assert source.asked == [("registry", "store", ["mykey", "myvalue"])]
