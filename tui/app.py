"""The Textual app: one data source, timers that drain it, workers that analyse and probe."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from rich.console import RenderableType
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen

from dhtscope.node.probes import ProbeError, name_probe_target

from .export import ViewExport, write_export
from .messages import AnalysisReady, ProbeFinished, ProbeRequested, ScenarioChosen
from .screens.choose import QuitScreen
from .screens.export import ExportScreen
from .screens.help import HelpScreen
from .screens.main import TABS, MainScreen
from .screens.timeline import StreamTimelineScreen
from .source import PROBE_KINDS, SCENARIOS, DataSource, SourceError
from .widgets.event_log import EventLog
from .widgets.probe_panel import ProbePanel
from .widgets.status_line import StatusLine

DRAIN_HZ = 15  # the event buffer is drained (and views told) this often
SLOW_REFRESH_S = 1.0  # nodes and snapshots
RATE_WINDOW_S = 2.0


def state_following(source: DataSource) -> bool:
    """A replay whose position is still following its growing index."""
    state = source.replay
    return state is not None and state.indexing and state.position == state.total


class DhtscopeApp(App[int]):
    """`DhtscopeApp(source).run()`; every screen reads the same source."""

    CSS_PATH = "dhtscope.tcss"
    TITLE = "dhtscope"
    BINDINGS = [
        Binding("q", "ask_quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("ctrl+p", "command_palette", "Commands", show=False),
    ]

    def __init__(self, source: DataSource, select: str | None = None, drain_hz: float = DRAIN_HZ) -> None:
        super().__init__()
        self.source = source
        self.main = MainScreen(source)
        self._select = select
        self._drain_hz = drain_hz
        self._analysing = False
        self._analysed_at: float | None = None
        self._rate_mark = (time.monotonic(), 0)
        self.started = False
        self.start_error: str | None = None
        self._last_end_push = 0.0
        self.exit_begins: Callable[[int], None] | None = None  # the entry point's watchdog (exit_guard)
        self.last_export: Path | None = None
        self._running_loop: asyncio.AbstractEventLoop | None = None

    def get_default_screen(self) -> Screen:
        return self.main

    async def on_mount(self) -> None:
        self._running_loop = asyncio.get_running_loop()
        self.theme = "textual-dark"
        self.set_interval(1.0 / self._drain_hz, self._tick)
        self.set_interval(SLOW_REFRESH_S, self._slow)
        self.run_worker(self._start(), group="source", exit_on_error=False)
        for notice in self.source.notices:
            self.notify(notice, severity="warning", timeout=20)

    async def _start(self) -> None:
        try:
            await self.source.start()
        except Exception as exc:  # the app stays up to say why
            self.start_error = f"{type(exc).__name__}: {exc}"
            self.notify(f"could not start: {exc}", severity="error", timeout=30)
            return
        self.started = True
        self._slow()

    async def on_unmount(self) -> None:
        self._exit_began(self.return_code or 0)  # also after a crash, which never calls exit()
        await self.source.stop()

    # -- ending: whatever starts it, the entry point's watchdog hears of it

    def exit(self, result: int | None = None, return_code: int = 0, message: RenderableType | None = None) -> None:
        self._exit_began(return_code)
        super().exit(result, return_code, message)

    def request_exit(self) -> None:
        """Ask the app to quit; safe from a signal handler or another thread."""
        loop = self._running_loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.exit)

    def _exit_began(self, status: int) -> None:
        if self.exit_begins is not None:
            self.exit_begins(status)

    # -- timers

    def _tick(self) -> None:
        try:
            self._drain()
        except NoMatches:
            pass  # the screen is being taken down while the app quits

    def _drain(self) -> None:
        source, main = self.source, self.main
        if not main.ready:
            return
        source.tick()
        source.drain()
        end = source.events.end
        if state_following(source) and time.monotonic() - self._last_end_push < 0.5:
            end = main.events_end
        else:
            self._last_end_push = time.monotonic()
        if end != main.events_end:
            main.events_end = end
        state = source.replay
        if state is not None:
            # While the index grows, the views follow it twice a second, not on every tick:
            # each refresh redraws them, and nobody reads a count that changes 15 times a second.
            coarse = state.total if not state.indexing else state.total // 50_000
            key = (
                state.position if not (state.indexing and state.position == state.total) else coarse,
                coarse,
                state.playing,
                state.speed,
                state.indexing,
                int(time.monotonic() * 2),
            )
            if key != getattr(self, "_replay_key", None):
                self._replay_key = key
                main.replay_state = state
                self._refresh_views()
        for log in main.query("#event-log").results(EventLog):
            log.refresh_filter()

    def refresh_now(self) -> None:
        """Fill the views at once (the screen just appeared) rather than at the next slow tick."""
        self._slow()

    def _slow(self) -> None:
        if not self.main.ready:
            return
        try:
            self._refresh_views()
        except NoMatches:
            return
        now = time.monotonic()
        then, count = self._rate_mark
        if now - then >= RATE_WINDOW_S or count > self.source.ingested:
            rate = (self.source.ingested - count) / (now - then) if now > then else 0.0
            self._rate_mark = (now, self.source.ingested)
            if self.source.live:
                for status in self.main.query("#status").results(StatusLine):
                    status.rate = rate
        self._maybe_analyse()

    def _refresh_views(self) -> None:
        main = self.main
        nodes = self.source.nodes()
        if not main.node and nodes:
            names = [n.name for n in nodes]
            main.node = self._select if self._select in names else names[0]
        main.nodes = nodes
        main.now = self.source.now()
        main.snapshot = self.source.snapshot(main.node) if main.node else None

    # -- analysis in a thread; the worker only posts a message

    def _maybe_analyse(self) -> None:
        if self._analysing:
            return
        interval = self.source.analysis_interval_s
        if (
            self._analysed_at is not None
            and self.main.analysis is not None
            and (interval is None or time.monotonic() - self._analysed_at < interval)
        ):
            return
        self._analysing = True
        self.run_worker(self._analyse, thread=True, group="analysis", exit_on_error=False)

    def _analyse(self) -> None:
        started = time.perf_counter()
        try:
            analysis, error = self.source.analyse(), None
        except Exception as exc:  # a half-written trace must not end the app
            analysis, error = None, f"{type(exc).__name__}: {exc}"
        self.post_message(AnalysisReady(analysis, error, time.perf_counter() - started))

    def on_analysis_ready(self, message: AnalysisReady) -> None:
        self._analysing = False
        self._analysed_at = time.monotonic()
        if message.analysis is not None and self.main.ready:
            try:
                self.main.analysis = message.analysis
                self._refresh_views()
            except NoMatches:
                return
        for status in self.main.query("#status").results(StatusLine):
            if message.error:
                status.analysing = f"analysis failed: {message.error}"
            else:
                status.analysing = "analysed" if message.analysis else "waiting for traces"

    # -- actions that talk to nodes: async workers that post their outcome

    def on_probe_requested(self, message: ProbeRequested) -> None:
        node = self.main.node
        self.main.query_one("#probe-panel", ProbePanel).running = True
        self.run_worker(self._probe(node, message.kind, message.args), group="probe", exit_on_error=False)

    async def _probe(self, node: str, kind: str, args: list[str]) -> None:
        started = time.perf_counter()
        try:
            args, note = name_probe_target(kind, args, self.main.known_nodes())
            result, error = await self.source.probe(node, kind, args), None
            if note:
                result["target_note"] = note  # ours knows the names the node does not
        except (SourceError, ProbeError) as exc:
            result, error = None, str(exc)
        except Exception as exc:
            result, error = None, f"{type(exc).__name__}: {exc}"
        self.main.post_message(ProbeFinished(node, kind, result, error, time.perf_counter() - started))

    def on_scenario_chosen(self, message: ScenarioChosen) -> None:
        self.run_worker(self._scenario(message.node, message.name), group="scenario", exit_on_error=False)

    async def _scenario(self, node: str, name: str) -> None:
        try:
            result = await self.source.set_scenario(node, name)
        except SourceError as exc:
            self.notify(f"scenario on {node}: {exc}", severity="error")
            return
        faults = ", ".join(result.get("faults") or []) or "none"
        self.notify(f"{node}: scenario {name} (faults: {faults})", timeout=4)

    # -- taking results away: a file named on screen, or the clipboard

    def save_export(self, what: str, view: str, fmt: str, build: Callable[[], ViewExport]) -> None:
        """Ask where (and Markdown or JSON), then build and write the export in a thread."""

        def chosen(answer: tuple[str, str] | None) -> None:
            if answer is not None:
                path, chosen_fmt = answer
                self.run_worker(
                    lambda: self._write_export(build, path, chosen_fmt, what),
                    thread=True,
                    group="export",
                    exit_on_error=False,
                )

        self.push_screen(ExportScreen(what, view, fmt), chosen)

    def _write_export(self, build: Callable[[], ViewExport], path: str, fmt: str, what: str) -> None:
        try:
            export = build()
            written = write_export(export, path, fmt)
        except (OSError, ValueError) as exc:
            self.call_from_thread(self.notify, f"could not save {what}: {exc}", severity="error", timeout=12)
            return
        self.last_export = written
        rows = f"{len(export.rows):,} row{'s' if len(export.rows) != 1 else ''}"
        self.call_from_thread(self.notify, f"saved {what} ({rows}) to {written}", title="Exported", timeout=15)

    def copy_text(self, what: str, text: str) -> None:
        """Copy with OSC 52 (the terminal decides whether to allow it) and say so."""
        self.copy_to_clipboard(text)
        self.notify(
            f"copied {what} ({len(text):,} characters) with OSC 52: in the clipboard where the terminal "
            "allows it (tmux: set-clipboard on). e saves to a file instead.",
            timeout=8,
        )

    def action_ask_quit(self) -> None:
        """`q` asks first: a word meant for a text field must not end the session (ctrl+q does not ask)."""
        if isinstance(self.screen, QuitScreen):
            return

        def answered(quit_: bool | None) -> None:
            if quit_:
                self.exit()

        self.push_screen(QuitScreen(self.source.quit_note), answered)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    # -- command palette: every action by name

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        main = self.main
        for tab, label, _ in TABS:
            yield SystemCommand(f"Show {label}", f"switch to the {tab} view", lambda t=tab: main.action_show_tab(t))
        yield SystemCommand("Go to node…", "select a node by name, id or id prefix", main.action_go_to_node)
        yield SystemCommand("Next node", "select the next node", lambda: main.action_next_node(1))
        yield SystemCommand("Previous node", "select the previous node", lambda: main.action_next_node(-1))
        for n in main.nodes:
            yield SystemCommand(
                f"Select node {n.name}", f"{n.role} at {n.address}", lambda name=n.name: main.select_node(name)
            )
        if isinstance(screen, MainScreen | StreamTimelineScreen):
            yield SystemCommand(
                "Export this view as Markdown", "save what the view shows to a file", screen.action_export
            )
            yield SystemCommand(
                "Export this view as JSON", "save what the view shows to a file", lambda: screen.action_export("json")
            )
            yield SystemCommand("Copy the highlighted row", "to the clipboard (OSC 52)", screen.action_copy)
        yield SystemCommand("Events: filter", "filter events by name, node or stream", main.action_filter)
        yield SystemCommand("Events: pause / resume", "freeze the event log", main.action_pause_events)
        yield SystemCommand("Events: follow", "keep the newest event in view", main.action_follow_events)
        yield SystemCommand(
            "Streams: all nodes / selected node", "toggle which streams are listed", main.action_toggle_all_streams
        )
        if self.source.live:
            for kind in PROBE_KINDS:
                yield SystemCommand(
                    f"Probe: {kind.upper()}", f"run {kind} on the selected node", lambda k=kind: main.action_probe(k)
                )
            yield SystemCommand("Scenario…", "choose a fault scenario for the selected node", main.action_scenario)
            for n in main.nodes:
                for name in SCENARIOS:
                    yield SystemCommand(
                        f"Scenario {name} on {n.name}",
                        f"switch {n.name}'s faults to {name}",
                        lambda node=n.name, s=name: self.post_message(ScenarioChosen(node, s)),
                    )
        if self.source.replay is not None:
            yield SystemCommand("Replay: play / pause", "play the recording", main.action_replay_toggle)
            yield SystemCommand("Replay: step forward", "one event forward", lambda: main.action_replay_step(1))
            yield SystemCommand("Replay: step back", "one event back", lambda: main.action_replay_step(-1))
            yield SystemCommand("Replay: jump to time", "seconds after the first event", main.action_replay_seek)
            yield SystemCommand("Replay: faster", "double the speed", lambda: main.action_replay_speed(1))
            yield SystemCommand("Replay: slower", "halve the speed", lambda: main.action_replay_speed(-1))
            yield SystemCommand("Replay: to start", "before the first event", lambda: main.action_replay_edge(0))
            yield SystemCommand("Replay: to end", "after the last event", lambda: main.action_replay_edge(1))
        yield SystemCommand("Help", "every key", self.action_help)
