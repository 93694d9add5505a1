"""The main screen: a status line, one tab per view, the replay bar, the footer."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Input, Sparkline, Static, TabbedContent, TabPane

from dhtscope.tracing.analysis import ERROR, WARNING, Analysis

from ..messages import EventChosen, NodeChosen, ProbeFinished, ScenarioChosen, StreamChosen
from ..source import SCENARIOS, DataSource, NodeInfo, ReplayState
from ..widgets.connections_table import ConnectionsTable
from ..widgets.event_log import EventLog
from ..widgets.finding_detail import FindingDetail
from ..widgets.findings_table import FindingsTable
from ..widgets.nodes_table import NodesTable
from ..widgets.probe_panel import ProbePanel
from ..widgets.records_table import RecordsTable
from ..widgets.replay_bar import ReplayBar
from ..widgets.routing_table import RoutingTable
from ..widgets.status_line import StatusLine
from ..widgets.streams_table import StreamsTable
from ..widgets.vtable import VirtualTable
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
REPLAY_ACTIONS = {"replay_toggle", "replay_step", "replay_seek", "replay_speed", "replay_edge"}
LIVE_ACTIONS = {"scenario"}


class MainScreen(Screen[None]):
    """Data comes down as reactives set by the app; choices go up as messages."""

    DEFAULT_CSS = """
    MainScreen TabbedContent { height: 1fr; }
    MainScreen TabPane { padding: 0; }
    MainScreen #rtt-spark { height: 3; margin: 0 1; }
    MainScreen #rtt-label { height: 1; padding: 0 1; color: $text-muted; }
    MainScreen #event-filter { display: none; height: 3; }
    MainScreen #event-filter.shown { display: block; }
    MainScreen #event-state { height: 1; padding: 0 1; color: $text-muted; }
    """

    BINDINGS = [
        *(Binding(str(i + 1), f"show_tab('{tab}')", label, show=False) for i, (tab, label, _) in enumerate(TABS)),
        Binding("n", "next_node(1)", "Next node"),
        Binding("N", "next_node(-1)", "Prev node", show=False),
        Binding("s", "scenario", "Scenario"),
        Binding("slash", "filter", "Filter"),
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

    # -- layout

    def compose(self) -> ComposeResult:
        yield StatusLine(id="status")
        with TabbedContent(initial="nodes"):
            with TabPane("Nodes", id="nodes"):
                yield NodesTable(id="nodes-table").data_bind(nodes=MainScreen.nodes, selected=MainScreen.node)
            with TabPane("Conns", id="connections"):
                yield ConnectionsTable(id="connections-table").data_bind(snapshot=MainScreen.snapshot)
                yield Static("RTT of the highlighted connection", id="rtt-label")
                yield Sparkline([], id="rtt-spark")
            with TabPane("Streams", id="streams"):
                yield StreamsTable(id="streams-table").data_bind(analysis=MainScreen.analysis, node=MainScreen.node)
            with TabPane("Routing", id="routing"):
                yield RoutingTable(id="routing-table").data_bind(snapshot=MainScreen.snapshot, now=MainScreen.now)
            with TabPane("Records", id="records"):
                yield RecordsTable(id="records-table").data_bind(snapshot=MainScreen.snapshot, now=MainScreen.now)
            with TabPane("Events", id="events"), Vertical():
                yield Input(
                    placeholder="filter: words match name/node/conn; a number is a stream id", id="event-filter"
                )
                yield EventLog(self.source.events, id="event-log").data_bind(end=MainScreen.events_end)
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
        self.query_one("#rtt-spark", Sparkline).data = series or [0.0]
        label = "RTT of the highlighted connection"
        if series:
            label += f": {min(series):.1f}–{max(series):.1f} ms over {len(series)} samples"
        self.query_one("#rtt-label", Static).update(label)

    # -- messages going up

    def on_virtual_table_highlighted(self, event: VirtualTable.Highlighted) -> None:
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
        if pane is None:
            return
        target = {"probe": "#probe-arg1" if self.source.live else "#probe-rounds"}.get(pane.id or "")
        widget = self.query_one(target) if target else next(iter(pane.query(VirtualTable)), None)
        if widget is not None:
            widget.focus()

    # -- actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in REPLAY_ACTIONS:
            return self.source.replay is not None
        if action in LIVE_ACTIONS:
            return self.source.live
        return True

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        if tab == "probe":
            self.query_one("#probe-arg1" if self.source.live else "#probe-rounds").focus()
        else:
            pane = self.query_one(f"#{tab}", TabPane)
            table = next(iter(pane.query(VirtualTable)), None)
            if table is not None:
                table.focus()

    def action_next_node(self, direction: int) -> None:
        names = [n.name for n in self.nodes]
        if not names:
            return
        i = names.index(self.node) if self.node in names else -direction
        self.node = names[(i + direction) % len(names)]
        self.notify(f"node {self.node}", timeout=1.5)

    def select_node(self, name: str) -> None:
        self.node = name

    def action_filter(self) -> None:
        self.action_show_tab("events")
        box = self.query_one("#event-filter", Input)
        box.add_class("shown")
        box.focus()

    def action_back(self) -> None:
        box = self.query_one("#event-filter", Input)
        if box.has_focus:
            self.query_one(EventLog).focus()
            if not box.value:
                box.remove_class("shown")
        elif isinstance(self.focused, Input):
            # Out of a text field, so single-letter keys (q, n, s) work again.
            self.query_one("#probe-rounds").focus()
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

        self.app.push_screen(ChooseScreen(f"Fault scenario for {node}", [(s, s) for s in SCENARIOS]), chosen)

    def action_probe(self, kind: str) -> None:
        self.action_show_tab("probe")
        self.query_one(ProbePanel).set_kind(kind)

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
