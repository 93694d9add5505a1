"""Records the selected node stores (and advertises): expiry countdown and signature state."""

from __future__ import annotations

from typing import Any

from textual.reactive import reactive

from ..format import countdown, short
from .vtable import Column, Row, VirtualTable


class RecordsTable(VirtualTable):
    """Stored provider records first, then the node's own advertisements."""

    DEFAULT_CSS = """
    RecordsTable { height: 1fr; }
    """

    snapshot: reactive[dict[str, Any] | None] = reactive(None, always_update=True)
    now: reactive[float] = reactive(0.0)

    def __init__(self, **kwargs: str | None) -> None:
        super().__init__(
            [
                Column("held", 6),
                Column("service/key", 11),
                Column("value", 14),
                Column("publisher", 9, priority=2),
                Column("seq", 5, "right", priority=3),
                Column("expires", 7, "right"),
                Column("signature"),
            ],
            empty="no records stored",
            **kwargs,
        )

    def _rows_of(self, records: list[dict[str, Any]], held: str) -> list[Row]:
        rows = []
        for r in records:
            expires_at = r.get("expires_at")
            left = expires_at - self.now if isinstance(expires_at, (int, float)) else r.get("expires_in_s")
            sig = str(r.get("signature", "?"))
            rows.append(
                Row(
                    [
                        held,
                        r.get("name") or short(r.get("key"), 16),
                        str(r.get("value", "-")),
                        short(r.get("publisher")),
                        str(r.get("seq") if r.get("seq") is not None else "-"),
                        (countdown(left), "error" if left is not None and left <= 30 else "ok"),
                        (sig, "ok") if sig.startswith("valid") else (sig, "error"),
                    ]
                )
            )
        return rows

    def _rebuild(self) -> None:
        snap = self.snapshot or {}
        self.set_rows(
            self._rows_of(snap.get("records", []), "stored") + self._rows_of(snap.get("advertisements", []), "own")
        )

    def watch_snapshot(self) -> None:
        self._rebuild()

    def watch_now(self) -> None:
        self._rebuild()
