"""The selected node's connections: peer, state, RTT, bytes, streams, stream credit, closure reason."""

from __future__ import annotations

from collections import deque
from typing import Any

from textual.reactive import reactive
from textual.widgets import Static

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


def limits_text(limits: dict[str, Any] | None) -> str:
    """One line: connection slots in use of the node's limit, and what the limits have refused or closed."""
    if not limits:
        return ""
    admission = limits.get("admission") or {}
    in_use = limits.get("in_use") or {}
    counters = limits.get("counters") or {}
    refused = sum(v for k, v in counters.items() if k.startswith("refused_") and isinstance(v, int))
    return (
        f"slots {in_use.get('slots_used', 0)}/{admission.get('max_connections', '?')} "
        f"(established {in_use.get('established', 0)}, half-open {in_use.get('half_open', 0)}"
        f"/{admission.get('max_half_open', '?')}, dialing {in_use.get('dialing', 0)}) · "
        f"idle after {admission.get('idle_eviction_min_s', '?')} s closed least recently used first: "
        f"{counters.get('evicted_idle', 0)} · refused {refused}"
        + (f" · UDP receive buffer {size(buffer)}" if (buffer := limits.get("udp_receive_buffer_bytes")) else "")
    )


class ConnectionLimits(Static):
    """The node's connection limit and its use, from `Node.snapshot()["limits"]` (live nodes only)."""

    DEFAULT_CSS = """
    ConnectionLimits { height: 1; color: $text-muted; }
    """

    snapshot: reactive[dict[str, Any] | None] = reactive(None, always_update=True)

    def watch_snapshot(self, snapshot: dict[str, Any] | None) -> None:
        text = limits_text((snapshot or {}).get("limits"))
        self.display = bool(text)  # a replay has no limits to show: the table keeps the room
        self.update(text)
