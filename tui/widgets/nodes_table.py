"""Every node: role, id, address, state, counts."""

from __future__ import annotations

from textual.reactive import reactive

from ..format import count, short
from ..messages import NodeChosen
from ..source import NodeInfo
from .vtable import Column, Row, VirtualTable

STATE_TONE = {
    "running": "ok",
    "connected": "ok",
    "recorded": "ok",
    "connecting": "warning",
    "waiting": "warning",
    "disconnected": "error",
    "refused": "error",
    "not started": "dim",
    "starting": "warning",
}


class NodesTable(VirtualTable):
    """One row per node; enter picks the node the other views show."""

    DEFAULT_CSS = """
    NodesTable { height: 1fr; }
    """

    nodes: reactive[list[NodeInfo]] = reactive(list, always_update=True)
    selected: reactive[str] = reactive("")

    def __init__(self, **kwargs: str | None) -> None:
        super().__init__(
            [
                Column("", 1),
                Column("node", 8),
                Column("role", 8, priority=1),
                Column("id", 8, priority=1),
                Column("address", 14),
                Column("state", 9),
                Column("conns", 5, "right", priority=3),
                Column("contacts", 8, "right", priority=3),
                Column("records", 7, "right", priority=3),
                Column("events", 6, "right", priority=2),
                Column("faults / detail"),
            ],
            empty="no nodes yet",
            **kwargs,
        )

    def _rebuild(self) -> None:
        rows = []
        for n in self.nodes:
            detail = (
                ", ".join(n.faults)
                if n.faults
                else (n.detail if n.state in ("disconnected", "refused", "waiting") else "")
            )
            rows.append(
                Row(
                    [
                        ("▶", "accent") if n.name == self.selected else " ",
                        (n.name, "accent"),
                        n.role,
                        short(n.node_id),
                        n.address,
                        (n.state, STATE_TONE.get(n.state, "dim")),
                        str(n.connections),
                        str(n.contacts),
                        str(n.records),
                        count(n.events),
                        (detail, "warning") if n.faults else detail,
                    ]
                )
            )
        self.set_rows(rows)

    def watch_nodes(self) -> None:
        self._rebuild()

    def watch_selected(self) -> None:
        self._rebuild()

    def on_virtual_table_selected(self, event: VirtualTable.Selected) -> None:
        event.stop()
        if 0 <= event.index < len(self.nodes):
            self.post_message(NodeChosen(self.nodes[event.index].name))
