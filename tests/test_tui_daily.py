"""The TUI for daily work (issue 14): no traps, nothing wrong on screen, results taken away."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest
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
from textual.widgets import Input, OptionList, TabbedContent

from dhtscope.node.scenarios import SCENARIO_HELP, SCENARIOS
from dhtscope.tui.app import DhtscopeApp
from dhtscope.tui.screens.choose import ChooseScreen, QuitScreen
from dhtscope.tui.screens.event_detail import EventDetailScreen
from dhtscope.tui.screens.export import ExportScreen
from dhtscope.tui.screens.help import SECTIONS, HelpScreen
from dhtscope.tui.screens.timeline import StreamTimelineScreen
from dhtscope.tui.widgets.rtt_chart import RttChart
from dhtscope.tui.widgets.vtable import VirtualTable


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
        table = main.query_one("#findings-table")
        now_first = table.current()
        assert now_first is not None and now_first.kind != "stream_not_delivered"
        assert now_first.kind in table_text(table)[0]
        assert str(detail.render()).startswith(now_first.kind)  # the detail is the row under the cursor


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


async def test_eight_never_traps_the_keys_in_a_text_field() -> None:
    app = DhtscopeApp(fake_live_source())
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(lambda: app.main.node == "registry", pilot, what="nodes")
        tabs = app.main.query_one(TabbedContent)
        await pilot.press("8")
        assert tabs.active == "probe" and not isinstance(app.focused, Input)
        await pilot.press("1")
        assert tabs.active == "nodes"
        await pilot.press("8", "tab")  # into the first argument: now every key is text
        arg = app.main.query_one("#probe-arg1", Input)
        assert app.focused is arg
        await pilot.press("5", "a", "q", "question_mark")
        assert arg.value == "5aq?" and tabs.active == "probe" and app.screen is app.main
        await pilot.press("escape")  # out of the field, as the help and the panel say
        assert not isinstance(app.focused, Input)
        await pilot.press("2")
        assert tabs.active == "connections"
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        keys = dict(dict(SECTIONS)["Text fields"])
        assert "leave the field" in keys["escape / tab"]


async def test_a_second_filter_starting_with_q_asks_before_quitting(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await replay_ready(app, pilot)
        await pilot.press("slash", *"rpc")
        log = app.main.query_one("#event-log")
        assert log.filter_text == "rpc"
        await pilot.press("enter")  # the filter applies; the log has the keys now
        assert app.focused is log
        await pilot.press(*"quic")
        assert isinstance(app.screen, QuitScreen)  # asked, not quit; u, i and c went nowhere
        assert app.is_running
        await pilot.press("escape")
        assert app.screen is app.main and app.is_running
        await pilot.press("q", "q")
        await pilot.pause(0.1)
        assert not app.is_running


async def test_event_detail_shows_local_time_with_milliseconds_not_epoch_ms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        app = _app(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            await replay_ready(app, pilot)
            await pilot.press("slash", *"record_stored", "enter", "enter")
            assert isinstance(app.screen, EventDetailScreen)
            shown = str(app.screen.query_one("#event-head").render()) + app.screen.body
            # REF_MS + 15 ms is 2023-11-14 22:13:20.015 UTC: 23:13 in Berlin.
            assert "2023-11-14 23:13:20.015 CET" in shown
            assert "1700000000015" not in shown and "time_ms" not in shown
            assert "2023-11-14 23:18:20.000 CET" in shown  # expires_at_ms, as a date too
    finally:
        monkeypatch.undo()
        time.tzset()


async def test_the_tui_names_nodes_by_name_id_or_id_prefix_everywhere() -> None:
    source = fake_live_source()
    app = DhtscopeApp(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(lambda: app.main.node == "registry", pilot, what="nodes")
        panel = app.main.query_one("#probe-panel")
        await pilot.press("8")
        for done, (kind, given) in enumerate((("ping", "provider1"), ("find_node", "cccc")), 1):
            panel.set_kind(kind)
            app.main.query_one("#probe-arg1", Input).value = given
            panel.run()
            await wait_until(lambda n=done: len(source.asked) == n and not panel.running, pilot, what=kind)
        assert source.asked == [("registry", "ping", ["127.0.0.1:4501"]), ("registry", "find_node", [CLIENT_ID])]
        assert "cccc is the id prefix of client" in str(app.main.query_one("#probe-status").render())
        await pilot.press("escape", "g", *"bbbb", "enter")
        assert app.main.node == "provider1"
        await pilot.press("g", *"client", "enter")
        assert app.main.node == "client"


TABLES = {"1": "#nodes-table", "2": "#connections-table", "4": "#routing-table"}


async def test_columns_fit_their_values_at_160_and_keep_the_key_ones_at_80() -> None:
    source = fake_live_source()
    source.states["client"] = ("disconnected", "control connection lost: the node went away")
    app = DhtscopeApp(source)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(lambda: app.main.snapshot is not None, pilot, what="a snapshot")
        for key, table_id in TABLES.items():
            await pilot.press(key)
            await pilot.pause(0.05)
            table = app.main.query_one(table_id, VirtualTable)
            cut = [table.hidden_cells(i) for i in range(table.row_count())]
            assert cut == [[]] * table.row_count(), f"{table_id} at 160 columns hides or cuts {cut}"
        await pilot.resize_terminal(80, 24)
        await pilot.press("1")
        await pilot.pause(0.1)
        nodes = app.main.query_one("#nodes-table", VirtualTable)
        shown = [c.label for c, w in zip(nodes.columns, nodes.current_layout().widths, strict=True) if w]
        assert {"node", "address", "state", "faults / detail"} <= set(shown)
        nodes.move_cursor(2)  # the disconnected client: its counts and why, in the detail pane
        await pilot.pause(0.1)
        detail = str(app.main.query_one("#nodes-table-detail").render())
        assert "contacts 2" in detail and "records 1" in detail and "the node went away" in detail
        await pilot.press("4")
        await pilot.pause(0.1)
        routing = app.main.query_one("#routing-table", VirtualTable)
        assert all(row.endswith("contact") for row in _screen_rows(routing))  # not "kin" / "con"


def _screen_rows(table: VirtualTable) -> list[str]:
    return [table.render_line(y).text.rstrip() for y in range(1, table.row_count() + 1)]


async def test_the_rtt_chart_starts_at_zero_and_says_its_scale_and_the_streams_say_their_marks() -> None:
    app = DhtscopeApp(fake_live_source())
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(lambda: app.main.snapshot is not None, pilot, what="a snapshot")
        await pilot.press("2")
        await wait_until(lambda: app.main.query_one(RttChart).data, pilot, what="RTT samples")
        label = str(app.main.query_one("#rtt-label").render())
        assert "min 2.10 ms, max 2.20 ms" in label and "from 0 to 2.5 ms" in label
        rows = str(app.main.query_one(RttChart).render()).splitlines()
        assert rows[0].startswith("2.5 ms ") and rows[-1].startswith("  0 ms ")
        bars = [r[7:27] for r in rows]
        assert set(bars[-1]) == {"█"} and set(bars[1]) == {"█"}  # 2.1 and 2.2 ms: nearly level, not a swing
        assert set(bars[0]) <= set("▄▅")
        await pilot.press("3")
        legend = str(app.main.query_one("#streams-legend").render())
        assert "s a r d A: sent, acked by the peer's transport" in legend and "✗ missing" in legend


async def test_the_scenario_picker_marks_the_active_one_and_says_what_each_does() -> None:
    source = fake_live_source()
    source.faults["registry"] = ("no-accept",)
    app = DhtscopeApp(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(lambda: app.main.node == "registry", pilot, what="nodes")
        await pilot.press("s")
        assert isinstance(app.screen, ChooseScreen)
        options = app.screen.query_one(OptionList)
        prompts = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert prompts[1].startswith("● no-accept (now)") and not any("●" in p for p in prompts[:1] + prompts[2:])
        for name, prompt in zip(SCENARIOS, prompts, strict=True):
            assert SCENARIO_HELP[name] in prompt
        assert options.highlighted == 1
        await pilot.press("down", "enter")
        await wait_until(lambda: ("registry", "scenario", ["stream-limit"]) in source.asked, pilot, what="switch")


def _notices(app: DhtscopeApp, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every notification the app shows from now on, as text, in order (they still show)."""
    said: list[str] = []
    notify = app.notify
    monkeypatch.setattr(app, "notify", lambda message, **kw: (said.append(str(message)), notify(message, **kw)))
    return said


async def _export(app: DhtscopeApp, pilot: Any, key: str = "e") -> Path:
    app.last_export = None
    await pilot.press(key)
    assert isinstance(app.screen, ExportScreen)
    await pilot.press("enter")
    await wait_until(lambda: app.last_export is not None, pilot, what="the export")
    assert app.last_export is not None
    return app.last_export


async def test_every_view_exports_what_it_shows_to_a_file_named_on_screen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = _app(tmp_path)
    said = _notices(app, monkeypatch)
    async with app.run_test(size=(120, 40)) as pilot:
        await replay_ready(app, pilot)
        expected = {
            "1": ("nodes", "provider1"),
            "2": ("connections", "node shutting down"),
            "3": ("streams", "delivered"),
            "4": ("routing", "127.0.0.1:4501"),
            "5": ("records", "calculator"),
            "7": ("findings", "Cause: The application never took the streams"),
        }
        for key, (view, text) in expected.items():
            await pilot.press(key)
            path = await _export(app, pilot)
            assert path.parent == tmp_path and path.name.startswith(f"dhtscope-{view}-") and path.suffix == ".md"
            assert text in path.read_text() and path.read_text().startswith("# dhtscope")
            assert any(str(path) in line for line in said), said  # the file is named on screen
        await pilot.press("slash", *"rpc_", "enter")
        events = json.loads((await _export(app, pilot, "E")).read_text())
        assert events["context"]["filter"] == "rpc_"
        assert {row["name"] for row in events["rows"]} == {
            "dht:rpc_sent",
            "dht:rpc_received",
            "dht:rpc_response",
            "dht:rpc_timeout",
        }
        assert events["rows"][0]["time"].startswith("2023-11-")
        await pilot.press("7", "enter")
        assert isinstance(app.screen, StreamTimelineScreen)
        timeline = (await _export(app, pilot)).read_text()
        assert "MISSING delivered" in timeline and "quic:stream_data_moved" in timeline


async def test_y_copies_the_highlighted_finding_and_says_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(tmp_path)
    said = _notices(app, monkeypatch)
    async with app.run_test(size=(120, 40)) as pilot:
        await replay_ready(app, pilot)
        await pilot.press("7", "y")
        assert app.clipboard.startswith("**stream_not_delivered** (error) on registry")
        assert "registry/c0ffee0000000001-server-0.sqlog#" in app.clipboard
        assert any("OSC 52" in line for line in said)
        await pilot.press("6", "y")
        assert json.loads(app.clipboard)["node"] in ("registry", "provider1", "client")


async def test_the_quit_question_shows_its_whole_note() -> None:
    from textual.app import App

    note = "This stops the 5 node processes the demo started; their recording is kept in ./dhtscope-demo-x"

    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(QuitScreen(note))

    app = Host()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        shown = " ".join(str(app.screen.query_one("#quit-question").render()).split())
        assert note in shown
        region = app.screen.query_one("#quit-question").region
        assert region.height >= 2  # wrapped inside the dialog, not cut at its edge
