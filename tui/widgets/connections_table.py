"""The selected node's connections: peer, state, RTT, bytes, streams, stream credit, closure reason."""

from __future__ import annotations

from collections import deque
from typing import Any

from textual.reactive import reactive

from ..format import ms, short, size
from .vtable import Column, Row, VirtualTable

RTT_HISTORY = 120


def _credit(text: object) -> str | tuple[str, str]:
    """Streams this node opened of those its peer allows (MAX_STREAMS), `blocked` when it ran out."""
    if not isinstance(text, str):
        return "-"
    return (text, "error") if text.endswith("blocked") else text


class ConnectionsTable(VirtualTable):
    """One row per connection; keeps each connection's RTT samples for the sparkline."""

    DEFAULT_CSS = """
    ConnectionsTable { height: 1fr; }
    """

    snapshot: reactive[dict[str, Any] | None] = reactive(None, always_update=True)

    def __init__(self, **kwargs: str | None) -> None:
        super().__init__(
            [
                Column("conn", 8),
                Column("role", 6, priority=2),
                Column("peer", 14),
                Column("state", 6),
                Column("rtt ms", 6, "right"),
                Column("sent", 6, "right", priority=1),
                Column("received", 8, "right", priority=1),
                Column("streams open/all", 7, "right", priority=3),
                Column("credit used/max", 9, "right", priority=3),
                Column("closed because"),
            ],
            empty="no connections",
            **kwargs,
        )
        self.conns: list[dict[str, Any]] = []
        self._history: dict[str, deque[float]] = {}

    def watch_snapshot(self, snapshot: dict[str, Any] | None) -> None:
        conns = list((snapshot or {}).get("connections", []))
        conns.sort(key=lambda c: (not c.get("open"), str(c.get("peer_address"))))
        self.conns = conns
        rows = []
        for c in conns:
            odcid = str(c.get("odcid"))
            rtt = c.get("rtt_ms")
            if isinstance(rtt, (int, float)) and "rtt_series" not in c:
                self._history.setdefault(odcid, deque(maxlen=RTT_HISTORY)).append(float(rtt))
            peer = c.get("peer_address") or "?"
            if c.get("peer_id"):
                peer = f"{peer} {short(c['peer_id'], 4)}"
            state = ("open", "ok") if c.get("open") else ("closed", "dim")
            reason = c.get("close_reason") or c.get("close_trigger") or ""
            rows.append(
                Row(
                    [
                        short(odcid),
                        str(c.get("role", "?")),
                        peer,
                        state,
                        ms(rtt, 2),
                        size(c.get("bytes_sent")),
                        size(c.get("bytes_received")),
                        f"{c.get('streams_open', 0)}/{c.get('streams_opened', 0)}",
                        _credit(c.get("stream_credit")),
                        (reason, "warning") if reason and reason not in ("clean", "node shutting down") else reason,
                    ]
                )
            )
        self.set_rows(rows)

    def series(self, index: int) -> list[float]:
        """RTT samples of the connection in row `index`, oldest first."""
        if not 0 <= index < len(self.conns):
            return []
        c = self.conns[index]
        if c.get("rtt_series"):
            return [float(v) for v in c["rtt_series"]]
        return list(self._history.get(str(c.get("odcid")), ()))
