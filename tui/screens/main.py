"""The main screen: a status line, one tab per view, the replay bar, the footer."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from functools import partial
from typing import Any, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane

from dhtscope.node.probes import KnownNode, ProbeError, resolve_node
from dhtscope.node.scenarios import SCENARIO_HELP, Faults
from dhtscope.tracing.analysis import ERROR, WARNING, Analysis

from ..export import (
    EXPORT_MAX_ROWS,
    ViewExport,
    event_record,
    events_export,
    exported_at,
    finding_text,
    findings_export,
    table_export,
)
from ..messages import EventChosen, NodeChosen, ProbeFinished, ScenarioChosen, StreamChosen
from ..source import SCENARIOS, DataSource, NodeInfo, ReplayState
from ..widgets.connections_table import ConnectionLimits, ConnectionsTable
from ..widgets.event_log import EventLog
from ..widgets.finding_detail import FindingDetail
from ..widgets.findings_table import FindingsTable
from ..widgets.nodes_table import NodesTable
from ..widgets.probe_panel import ProbePanel
from ..widgets.records_table import RecordsTable
from ..widgets.replay_bar import ReplayBar
from ..widgets.routing_table import RoutingTable
from ..widgets.row_detail import RowDetail
from ..widgets.rtt_chart import RttChart, scale_top
from ..widgets.status_line import StatusLine
from ..widgets.streams_table import StreamsTable
from ..widgets.vtable import VirtualTable, cell_text
from .choose import AskScreen, ChooseScreen
from .event_detail import EventDetailScreen
from .timeline import StreamTimelineScreen

TABS = [
    ("nodes", "Nodes", NodesTable),
    ("connections", "Conns", ConnectionsTable),
    ("streams", "Streams", StreamsTable),
    ("routing", "Routing", RoutingTable),
    ("records", "Records", RecordsTable),
    ("events", "Events", EventLog),
    ("findings", "Findings", FindingsTable),
    ("probe", "Probe", ProbePanel),
]


def _built(export: ViewExport) -> ViewExport:
    return export


def _events_export(
    store: Any, indices: list[int], total: int, context: dict[str, str]
) -> ViewExport:  # in a worker thread: reading a replay's events parses them
    events = []
    for index in indices:
        try:
            events.append(store.get(index))
        except IndexError:
            continue  # fell off the front of a live ring buffer meanwhile
    return events_export(events, total, context)


STREAMS_LEGEND = (
    "s a r d A: sent, acked by the peer's transport, received by the peer's transport, delivered to "
    "the peer's application, answered.  ✓ done  ✗ missing  · not visible in this trace"
)
ROUTING_LEGEND = "replacement (dimmed): waits in the bucket's replacement cache.  distance 2^i: the bucket's XOR range"
REPLAY_ACTIONS = {"replay_toggle", "replay_step", "replay_seek", "replay_speed", "replay_edge"}
LIVE_ACTIONS = {"scenario"}


class MainScreen(Screen[None]):
    """Data comes down as reactives set by the app; choices go up as messages."""

    DEFAULT_CSS = """
    MainScreen TabbedContent { height: 1fr; }
    MainScreen TabPane { padding: 0; }
    MainScreen #rtt-spark { height: 3; margin: 0 1; }
    MainScreen #rtt-label { height: auto; padding: 0 1; color: $text-muted; }
    MainScreen .legend { height: auto; padding: 0 1; color: $text-muted; }
    MainScreen #event-filter { display: none; height: 3; }
    MainScreen #event-filter.shown { display: block; }
    MainScreen #event-state { height: 1; padding: 0 1; color: $text-muted; }
    """

    BINDINGS = [
        *(Binding(str(i + 1), f"show_tab('{tab}')", label, show=False) for i, (tab, label, _) in enumerate(TABS)),
        Binding("n", "next_node(1)", "Next node"),
        Binding("g", "go_to_node", "Go to node", show=False),
        Binding("N", "next_node(-1)", "Prev node", show=False),
        Binding("s", "scenario", "Scenario"),
        Binding("slash", "filter", "Filter"),
        Binding("e", "export('markdown')", "Export"),
        Binding("E", "export('json')", "Export JSON", show=False),
        Binding("y", "copy", "Copy", show=False),
        Binding("a", "toggle_all_streams", "All streams", show=False),
        Binding("escape", "back", "Back", show=False),
        Binding("p", "replay_toggle", "Play/pause"),
        Binding("comma", "replay_step(-1)", "Step back", show=False),
        Binding("full_stop", "replay_step(1)", "Step", show=False),
        Binding("t", "replay_seek", "Time", show=False),
        Binding("minus", "replay_speed(-1)", "Slower", show=False),
        Binding("plus", "replay_speed(1)", "Faster", show=False),
        Binding("equals_sign", "replay_speed(1)", "Faster", show=False),
        Binding("left_square_bracket", "replay_edge(0)", "Start", show=False),
        Binding("right_square_bracket", "replay_edge(1)", "End", show=False),
    ]

    node: reactive[str] = reactive("")
    nodes: reactive[list[NodeInfo]] = reactive(list, always_update=True)
    snapshot: reactive[dict[str, Any] | None] = reactive(None, always_update=True)
    analysis: reactive[Analysis | None] = reactive(None, always_update=True)
    events_end: reactive[int] = reactive(0)
    now: reactive[float] = reactive(0.0)
    replay_state: reactive[ReplayState | None] = reactive(None, always_update=True)

    def __init__(self, source: DataSource) -> None:
        super().__init__()
        self.source = source
        self.ready = False  # set once composed: the app's timers feed nothing before
        self._filter_wanted = False  # `/` was pressed: the filter box gets the focus, not the log

    # -- layout

    def compose(self) -> ComposeResult:
        yield StatusLine(id="status")
        with TabbedContent(initial="nodes"):
            with TabPane("Nodes", id="nodes"):
                yield NodesTable(id="nodes-table").data_bind(nodes=MainScreen.nodes, selected=MainScreen.node)
                yield RowDetail(id="nodes-table-detail")
            with TabPane("Conns", id="connections"):
                yield ConnectionLimits(id="connection-limits").data_bind(snapshot=MainScreen.snapshot)
                yield ConnectionsTable(id="connections-table").data_bind(snapshot=MainScreen.snapshot)
                yield RowDetail(id="connections-table-detail")
                yield Static("RTT of the highlighted connection", id="rtt-label")
                yield RttChart(id="rtt-spark")
            with TabPane("Streams", id="streams"):
                yield StreamsTable(id="streams-table").data_bind(analysis=MainScreen.analysis, node=MainScreen.node)
                yield RowDetail(id="streams-table-detail")
                yield Static(STREAMS_LEGEND, classes="legend", id="streams-legend")
            with TabPane("Routing", id="routing"):
                yield RoutingTable(id="routing-table").data_bind(snapshot=MainScreen.snapshot, now=MainScreen.now)
                yield RowDetail(id="routing-table-detail")
                yield Static(ROUTING_LEGEND, classes="legend", id="routing-legend")
            with TabPane("Records", id="records"):
                yield RecordsTable(id="records-table").data_bind(snapshot=MainScreen.snapshot, now=MainScreen.now)
                yield RowDetail(id="records-table-detail")
            with TabPane("Events", id="events"), Vertical():
                yield Input(
                    placeholder="filter: words match name/node/conn; a number is a stream id; escape leaves",
                    id="event-filter",
                )
                yield EventLog(self.source.events, id="event-log").data_bind(end=MainScreen.events_end)
                yield RowDetail(id="event-log-detail")
                yield Static(id="event-state")
            with TabPane("Findings", id="findings"):
                yield FindingsTable(id="findings-table").data_bind(analysis=MainScreen.analysis)
                yield FindingDetail(id="finding-detail")
            with TabPane("Probe", id="probe"):
                yield ProbePanel(self.source.live, id="probe-panel").data_bind(node=MainScreen.node)
        if self.source.replay is not None:
            yield ReplayBar(id="replay-bar").data_bind(state=MainScreen.replay_state)
        yield Footer()

    def on_mount(self) -> None:
        status = self.query_one(StatusLine)
        status.mode = self.source.title
        self.ready = True
        self.app.call_later(getattr(self.app, "refresh_now", lambda: None))
        self._event_state()
        self.query_one("#nodes-table").focus()

    def on_unmount(self) -> None:
        self.ready = False

    # -- data coming down

    def watch_node(self, node: str) -> None:
        if not self.ready:
            return
        self.query_one(StatusLine).node = node

    def watch_nodes(self, nodes: list[NodeInfo]) -> None:
        if not self.ready:
            return
        self.query_one(StatusLine).nodes = len(nodes)

    def watch_analysis(self, analysis: Analysis | None) -> None:
        if not self.ready:
            return
        status = self.query_one(StatusLine)
        findings = analysis.findings if analysis else []
        status.errors = sum(1 for f in findings if f.severity == ERROR)
        status.warnings = sum(1 for f in findings if f.severity == WARNING)
        table = self.query_one(FindingsTable)
        detail = self.query_one(FindingDetail)
        detail.root = analysis.recording_path if analysis else None
        detail.finding = table.current()

    def watch_events_end(self, end: int) -> None:
        if not self.ready:
            return
        self.query_one(StatusLine).events = end
        self._event_state()

    def watch_snapshot(self) -> None:
        if not self.ready:
            return
        self._update_spark()

    def _event_state(self) -> None:
        log = self.query_one(EventLog)
        parts = []
        parts.append("PAUSED (space resumes)" if log.paused else "live")
        parts.append("following" if log.follow else "not following (f)")
        if log.filter_text:
            parts.append(
                f"filter '{log.filter_text}': {log.row_count():,} match" + (" (scanning…)" if log.filtering else "")
            )
        text = "  ·  ".join(parts)
        if text != getattr(self, "_event_state_text", None):  # an update costs a layout pass
            self._event_state_text = text
            self.query_one("#event-state", Static).update(Text(text))

    def _update_spark(self) -> None:
        table = self.query_one(ConnectionsTable)
        series = table.series(table.cursor)
        self.query_one("#rtt-spark", RttChart).data = series
        label = "RTT of the highlighted connection"
        if series:
            label += (
                f": min {min(series):.2f} ms, max {max(series):.2f} ms, last {series[-1]:.2f} ms; "
                f"{len(series)} samples, bars from 0 to {scale_top(series):g} ms"
            )
        else:
            label += ": no samples yet"
        self.query_one("#rtt-label", Static).update(label)

    # -- messages going up

    def on_virtual_table_highlighted(self, event: VirtualTable.Highlighted) -> None:
        for detail in self.query(f"#{event.table.id}-detail").results(RowDetail):
            detail.show(event.table.hidden_cells(event.index))
        if isinstance(event.table, ConnectionsTable):
            self._update_spark()
        elif isinstance(event.table, FindingsTable):
            self.query_one(FindingDetail).finding = event.table.current()

    def on_node_chosen(self, message: NodeChosen) -> None:
        self.node = message.name
        self.action_show_tab("connections")

    def on_stream_chosen(self, message: StreamChosen) -> None:
        analysis = self.analysis
        stream = analysis.stream(message.connection, message.stream_id) if analysis else None
        if analysis is None or stream is None:
            self.notify("that stream is not in the analysis yet", severity="warning")
            return
        self.app.push_screen(StreamTimelineScreen(analysis, stream, message.evidence, message.finding))

    def on_event_chosen(self, message: EventChosen) -> None:
        self.app.push_screen(EventDetailScreen(message.row))

    def on_probe_finished(self, message: ProbeFinished) -> None:
        self.query_one(ProbePanel).show(message)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "event-filter":
            self.query_one(EventLog).filter_text = event.value.strip()
            self._event_state()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "event-filter":
            event.stop()
            self.query_one(EventLog).focus()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        pane = event.pane
        if pane is not None and pane.id:
            self._focus_tab(pane.id)

    def _focus_tab(self, tab: str) -> None:
        """Focus what a tab is for; `/` asked for the filter box, which wins once."""
        if tab == "events" and self._filter_wanted:
            self._filter_wanted = False
            self.query_one("#event-filter", Input).focus()
            return
        if tab == "probe":
            self.query_one(self._probe_focus()).focus()
            return
        table = next(iter(self.query_one(f"#{tab}", TabPane).query(VirtualTable)), None)
        if table is not None:
            table.focus()

    # -- actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in REPLAY_ACTIONS:
            return self.source.replay is not None
        if action in LIVE_ACTIONS:
            return self.source.live
        return True

    def action_show_tab(self, tab: str) -> None:
        tabs = self.query_one(TabbedContent)
        if tabs.active == tab:
            self._focus_tab(tab)
        else:
            tabs.active = tab  # focus follows when the tab says it is active

    def _probe_focus(self) -> str:
        # The operation's chooser, not a text field: digits, q and ? must keep working on arrival.
        return "#probe-kind" if self.source.live else "#probe-rounds"

    def action_next_node(self, direction: int) -> None:
        names = [n.name for n in self.nodes]
        if not names:
            return
        i = names.index(self.node) if self.node in names else -direction
        self.node = names[(i + direction) % len(names)]
        self.notify(f"node {self.node}", timeout=1.5)

    def select_node(self, name: str) -> None:
        self.node = name

    def known_nodes(self) -> list[KnownNode]:
        """Every node this view can name: the listed nodes, and the selected node's contacts."""
        known = [KnownNode(n.node_id, n.name, n.address) for n in self.nodes if n.node_id]
        for bucket in (self.snapshot or {}).get("routing", []):
            for c in [*bucket.get("contacts", []), *bucket.get("replacements", [])]:
                if c.get("id"):
                    known.append(KnownNode(str(c["id"]), None, c.get("address")))
        return known

    def action_go_to_node(self) -> None:
        def chosen(text: str | None) -> None:
            if not text or not text.strip():
                return
            listed = [KnownNode(n.node_id, n.name, n.address) for n in self.nodes if n.node_id]
            try:
                ref = resolve_node(text, listed)
            except ProbeError as exc:
                self.notify(str(exc), severity="error", timeout=8)
                return
            if ref.node is None or not ref.node.name:
                self.notify(f"no listed node is named {text.strip()!r} or has an id starting so", severity="error")
                return
            self.node = ref.node.name
            self.notify(ref.note(), timeout=3)

        self.app.push_screen(AskScreen("Go to node: its name, id or id prefix", "e.g. registry or 5a13"), chosen)

    def action_filter(self) -> None:
        self.query_one("#event-filter", Input).add_class("shown")
        self._filter_wanted = True
        self.action_show_tab("events")

    def action_back(self) -> None:
        box = self.query_one("#event-filter", Input)
        if box.has_focus:
            self.query_one(EventLog).focus()
            if not box.value:
                box.remove_class("shown")
        elif isinstance(self.focused, Input):
            # Out of a text field, so single-letter keys (q, n, s) work again.
            self.query_one(self._probe_focus()).focus()
        elif box.value:
            box.value = ""
            box.remove_class("shown")

    def action_pause_events(self) -> None:
        self.query_one(EventLog).action_toggle_pause()
        self._event_state()

    def action_follow_events(self) -> None:
        self.query_one(EventLog).action_toggle_follow()
        self._event_state()

    def action_toggle_all_streams(self) -> None:
        table = self.query_one(StreamsTable)
        table.show_all = not table.show_all
        self.notify("streams of every node" if table.show_all else f"streams of {self.node}", timeout=1.5)

    def action_scenario(self, name: str | None = None) -> None:
        node = self.node
        if not node:
            return
        if name is not None:
            self.post_message(ScenarioChosen(node, name))
            return

        def chosen(choice: str | None) -> None:
            if choice:
                self.post_message(ScenarioChosen(node, choice))

        info = next((n for n in self.nodes if n.name == node), None)
        active = Faults.from_names(list(info.faults)).active_scenario() if info is not None else None
        options: list[tuple[str, str | Text]] = [
            (
                name,
                Text.assemble(
                    ("● " if name == active else "  ", "bold green"),
                    (name, "bold"),
                    (" (now)" if name == active else "", "bold green"),
                    "\n    ",
                    (SCENARIO_HELP[name], "dim"),
                ),
            )
            for name in SCENARIOS
        ]
        now = f" (now {active})" if active else ""
        self.app.push_screen(ChooseScreen(f"Fault scenario for {node}{now}", options, active), chosen)

    def action_probe(self, kind: str) -> None:
        self.action_show_tab("probe")
        self.query_one(ProbePanel).set_kind(kind)

    # taking results away

    def _export_context(self) -> dict[str, str]:
        context = {"source": self.source.title, "exported at": exported_at()}
        if self.node:
            context["selected node"] = self.node
        return context

    def action_export(self, fmt: str = "markdown") -> None:
        """Save what the active tab shows: its rows as Markdown, or the data behind them as JSON."""
        tab = self.query_one(TabbedContent).active
        context = self._export_context()
        build: Callable[[], ViewExport]
        if tab == "findings":
            table = self.query_one(FindingsTable)
            findings, root = list(table.findings), table.analysis.recording_path if table.analysis else None
            what = f"{len(findings)} finding{'s' if len(findings) != 1 else ''}"
            build = partial(findings_export, findings, context, root)
        elif tab == "events":
            log = self.query_one(EventLog)
            if log.filter_text:
                context["filter"] = log.filter_text
            total = log.row_count()
            indices = [log.index_of(i) for i in range(min(total, EXPORT_MAX_ROWS))]
            store = log.store
            what = f"{total:,} event{'s' if total != 1 else ''}" + (" under the filter" if log.filter_text else "")
            build = partial(_events_export, store, indices, total, context)
        elif tab == "probe":
            build = self.query_one(ProbePanel).export(context)
            what = "the probe's result"
        else:
            shown = next(iter(self.query_one(f"#{tab}", TabPane).query(VirtualTable)))
            columns = [c.label for c in shown.columns]
            rows = [[cell_text(c) for c in shown.get_row(i).cells] for i in range(shown.row_count())]
            label = dict((t, lbl) for t, lbl, _ in TABS)[tab].lower()
            what = f"the {label} table"
            title = f"dhtscope {label}" + (f" of {self.node}" if tab not in ("nodes",) and self.node else "")
            export = table_export(tab, title, context, columns, rows, self._records(tab))
            if tab == "streams":
                export = dataclasses.replace(export, sections=[("steps", STREAMS_LEGEND)])
            build = partial(_built, export)
        cast("Any", self.app).save_export(what, "probe" if tab == "probe" else tab, fmt, build)

    def _records(self, tab: str) -> list[Any] | None:
        """The data behind a table's rows, for JSON; None: the rows by column."""
        snap = self.snapshot or {}
        if tab == "nodes":
            return [dataclasses.asdict(n) for n in self.nodes]
        if tab == "connections":
            return list(self.query_one(ConnectionsTable).conns)
        if tab == "streams":
            return [s.to_json() for s in self.query_one(StreamsTable).streams]
        if tab == "routing":
            return [
                {"bucket": b.get("index"), "kind": kind, **c}
                for b in snap.get("routing", [])
                for kind, key in (("contact", "contacts"), ("replacement", "replacements"))
                for c in b.get(key, [])
            ]
        if tab == "records":
            return [{"held": "stored", **r} for r in snap.get("records", [])] + [
                {"held": "own", **r} for r in snap.get("advertisements", [])
            ]
        return None

    def action_copy(self) -> None:
        """Copy the highlighted row (a finding in full, an event as JSON) to the clipboard."""
        tab = self.query_one(TabbedContent).active
        if tab == "findings":
            table = self.query_one(FindingsTable)
            finding = table.current()
            if finding is None:
                self.notify("no finding to copy", severity="warning")
                return
            root = table.analysis.recording_path if table.analysis else None
            cast("Any", self.app).copy_text(f"finding {finding.kind}", finding_text(finding, root))
            return
        if tab == "events":
            log = self.query_one(EventLog)
            try:
                event = log.event(log.cursor)
            except IndexError:
                self.notify("no event to copy", severity="warning")
                return
            text = json.dumps(event_record(event), indent=2, ensure_ascii=False, default=str)
            cast("Any", self.app).copy_text(f"event {event.name}", text)
            return
        pane = self.query_one(f"#{tab}", TabPane)
        rows = self.query_one("#probe-rounds", VirtualTable) if tab == "probe" else next(iter(pane.query(VirtualTable)))
        if not rows.row_count():
            self.notify("no row to copy", severity="warning")
            return
        cells = rows.get_row(rows.cursor).cells
        labels = [c.label for c in rows.columns]
        if len(cells) == 1:
            text = cell_text(cells[0])
        else:
            text = "\n".join(f"{label or 'mark'}: {cell_text(c)}" for label, c in zip(labels, cells, strict=False))
        cast("Any", self.app).copy_text("the highlighted row", text)

    # replay

    def _replay(self) -> Any:
        return self.source if self.source.replay is not None else None

    def action_replay_toggle(self) -> None:
        if (src := self._replay()) is not None:
            src.toggle()

    def action_replay_step(self, delta: int) -> None:
        if (src := self._replay()) is not None:
            src.step(delta)

    def action_replay_speed(self, direction: int) -> None:
        if (src := self._replay()) is not None:
            speed = src.faster(direction > 0)
            self.notify(f"speed {speed:g}x", timeout=1.0)

    def action_replay_edge(self, end: int) -> None:
        if (src := self._replay()) is not None:
            src.to_end() if end else src.to_start()

    def action_replay_seek(self) -> None:
        src = self._replay()
        if src is None:
            return

        def chosen(text: str | None) -> None:
            if not text:
                return
            try:
                src.seek_relative(float(text.strip().rstrip("s")))
            except ValueError:
                self.notify(f"{text!r} is not a number of seconds", severity="error")

        self.app.push_screen(AskScreen("Jump to seconds after the first event", "e.g. 2.5"), chosen)
