"""The selected node's routing table: buckets, contacts, distance, last seen, replacement cache."""

from __future__ import annotations

from typing import Any

from textual.reactive import reactive

from ..format import ago, short
from .vtable import Column, Row, VirtualTable


class RoutingTable(VirtualTable):
    """Contacts bucket by bucket; replacement-cache entries follow their bucket, dimmed."""

    DEFAULT_CSS = """
    RoutingTable { height: 1fr; }
    """

    snapshot: reactive[dict[str, Any] | None] = reactive(None, always_update=True)
    now: reactive[float] = reactive(0.0)

    def __init__(self, **kwargs: str | None) -> None:
        super().__init__(
            [
                Column("bucket", 6, "right"),
                Column("distance", 8, priority=3),
                Column("contact", 16),
                Column("address", 14),
                Column("last seen", 9, priority=1),
                Column("failures", 8, "right", priority=2),
                Column("kind", 11),
            ],
            empty="routing table is empty",
            **kwargs,
        )

    def _rebuild(self) -> None:
        rows = []
        for bucket in (self.snapshot or {}).get("routing", []):
            index = bucket.get("index", 0)
            distance = f"2^{index}"
            for c in bucket.get("contacts", []):
                rows.append(
                    Row(
                        [
                            str(index),
                            distance,
                            short(c.get("id"), 16),
                            str(c.get("address")),
                            ago(self.now - c["last_seen"]) if c.get("last_seen") else "-",
                            (str(c.get("failures", 0)), "warning") if c.get("failures") else "0",
                            "contact",
                        ]
                    )
                )
            for c in bucket.get("replacements", []):
                rows.append(
                    Row(
                        [
                            str(index),
                            distance,
                            short(c.get("id"), 16),
                            str(c.get("address")),
                            ago(self.now - c["last_seen"]) if c.get("last_seen") else "-",
                            "-",
                            "replacement",
                        ],
                        tone="dim",
                    )
                )
        self.set_rows(rows)

    def watch_snapshot(self) -> None:
        self._rebuild()

    def watch_now(self) -> None:
        self._rebuild()
