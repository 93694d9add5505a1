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
                Column("node", 10),
                Column("role", 8),
                Column("id", 8),
                Column("address", 15),
                Column("state", 10),
                Column("conn", 4, "right"),
                Column("cont", 4, "right"),
                Column("recs", 4, "right"),
                Column("events", 7, "right"),
                Column("faults / detail"),
            ],
            empty="no nodes yet",
            **kwargs,
        )

    def _rebuild(self) -> None:
        rows = []
        for n in self.nodes:
            detail = ", ".join(n.faults) if n.faults else (n.detail if n.state in ("disconnected", "refused") else "")
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
