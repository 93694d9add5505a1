"""The raw event log: virtual rows over a capped ring buffer (or a replay), filter, pause, follow."""

from __future__ import annotations

import time
from array import array
from datetime import datetime

from textual.binding import Binding
from textual.reactive import reactive

from ..format import data_text, short
from ..messages import EventChosen
from ..source import EventRow, EventStore, event_matches, parse_filter
from .vtable import Column, Row, VirtualTable

FILTER_BUDGET_S = 0.008  # filtering work per refresh, so a huge log never stalls a key press

TONE_BY_PREFIX = (
    ("dht:rpc_timeout", "error"),
    ("dht:rpc_error", "error"),
    ("quic:connection_closed", "warning"),
    ("quic:stream_state_updated", "warning"),
    ("dht:", "info"),
    ("control:", "warning"),
)


def clock(time_ms: float) -> str:
    return datetime.fromtimestamp(time_ms / 1000.0).strftime("%H:%M:%S.%f")[:-3]


class EventLog(VirtualTable):
    """Rows are read from the store when drawn; only the filter keeps a list (of indices)."""

    DEFAULT_CSS = """
    EventLog { height: 1fr; }
    """

    BINDINGS = [
        Binding("space", "toggle_pause", "Pause"),
        Binding("f", "toggle_follow", "Follow"),
    ]

    end: reactive[int] = reactive(0, always_update=True)
    paused: reactive[bool] = reactive(False)
    follow: reactive[bool] = reactive(True)
    filter_text: reactive[str] = reactive("")  # not `query`: that would shadow DOMNode.query

    def __init__(self, store: EventStore, **kwargs: str | None) -> None:
        super().__init__(
            [
                Column("time", 12),
                Column("node", 10),
                Column("event", 28),
                Column("conn", 8, priority=1),
                Column("data"),
            ],
            empty="no events yet",
            **kwargs,
        )
        self.store = store
        self._shown_end = 0  # events up to here are visible (frozen while paused)
        self._matches = array("q")  # absolute indices that pass the filter
        self._scanned = 0  # events examined by the filter so far
        self._words: list[str] = []
        self._streams: set[int] = set()
        self.filtering = False  # the filter has not caught up with the log yet

    # -- rows

    def row_count(self) -> int:
        if self.filter_text:
            return self._visible_matches()
        return max(0, self._shown_end - self.store.first)

    def _visible_matches(self) -> int:
        first = self.store.first
        matches = self._matches
        # Matches that fell off the ring buffer's front are no longer shown.
        if matches and matches[0] < first:
            keep = next((i for i, m in enumerate(matches) if m >= first), len(matches))
            del matches[:keep]
        return len(matches)

    def index_of(self, row: int) -> int:
        return self._matches[row] if self.filter_text else self.store.first + row

    def event(self, row: int) -> EventRow:
        return self.store.get(self.index_of(row))

    def get_row(self, index: int) -> Row:
        try:
            ev = self.event(index)
        except IndexError:
            return Row(["", "", ("(gone from the buffer)", "dim"), "", ""])
        tone = next((t for prefix, t in TONE_BY_PREFIX if ev.name.startswith(prefix)), None)
        return Row(
            [clock(ev.time_ms), ev.node, (ev.name, tone) if tone else ev.name, short(ev.conn), data_text(ev.data)]
        )

    # -- updates

    def watch_end(self, end: int) -> None:
        if not self.paused:
            self._shown_end = end
        self._update()

    def _scan(self) -> None:
        if not self.filter_text:
            return
        store, matches = self.store, self._matches
        start = max(self._scanned, store.first)
        stop = self._shown_end
        deadline = time.perf_counter() + FILTER_BUDGET_S
        words, streams = self._words, self._streams
        i = start
        while i < stop:
            if event_matches(store.get(i), words, streams):
                matches.append(i)
            i += 1
            if i & 0xFF == 0 and time.perf_counter() > deadline:
                break
        self._scanned = i
        self.filtering = i < stop

    def _update(self) -> None:
        self._scan()
        self.rows_changed()
        if self.follow and not self.paused and self._count:
            self.cursor = self._count - 1

    def refresh_filter(self) -> None:
        """Continue a filter that ran out of its time budget (called on the app's timer)."""
        if self.filtering:
            self._update()

    def watch_filter_text(self, query: str) -> None:
        self._words, self._streams = parse_filter(query)
        self._matches = array("q")
        self._scanned = self.store.first
        self.cursor = 0
        self._update()

    def watch_paused(self, paused: bool) -> None:
        if not paused:
            self._shown_end = self.end
            self._update()

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        if self.follow:
            self._update()

    def action_cursor(self, delta: int) -> None:
        # Moving up by hand stops following, like `less +F`.
        if delta < 0:
            self.follow = False
        super().action_cursor(delta)

    def on_virtual_table_selected(self, event: VirtualTable.Selected) -> None:
        event.stop()
        try:
            self.post_message(EventChosen(self.event(event.index)))
        except IndexError:
            pass
