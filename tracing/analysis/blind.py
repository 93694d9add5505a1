"""What the traces could not show, said plainly beside the findings."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .context import Context, plural
from .join import Joined


def blind_spots(ctx: Context, conns: list[Joined]) -> list[str]:
    out: list[str] = []
    one: dict[str, int] = Counter()
    for c in conns:
        if c.client is None or c.server is None:
            only = c.client or c.server
            assert only is not None
            one[only.node] += 1
    for node, n in one.items():
        out.append(
            f"{plural(n, 'connection')} of {node} {'has' if n == 1 else 'have'} no trace from the other end: "
            "on their streams the peer's steps (received, delivered, answered) are unknown."
        )
    captures: dict[str, int] = Counter()
    for f in ctx.facts:
        if f.is_connection and f.on_wire:
            captures[str(f.info.extra.get("capture_file") or f.path)] += 1
            continue
        if f.is_connection and not f.app_visible:
            out.append(
                f"{f.node} ({Path(f.path).name}, {f.info.format}) logs no application events: delivery to "
                "the application and answers are not visible."
            )
        if f.is_connection and f.odcid is None:
            out.append(f"{Path(f.path).name} names no ODCID: it cannot be joined with the other end's trace.")
        if f.malformed:
            out.append(
                f"{Path(f.path).name}: {plural(f.malformed, 'event')} could not be interpreted and were skipped."
            )
    for path, n in captures.items():
        out.append(
            f"{Path(path).name} is seen from the network ({plural(n // 2 or 1, 'connection')}): delivery to each "
            "application is not visible; a request counts as answered when bytes came back on its stream."
        )
    has_dht_conn = any(f.dht_events for f in ctx.facts if f.is_connection)
    has_node_trace = any(f.node_events for f in ctx.facts)
    if has_dht_conn and not has_node_trace:
        out.append("No node-level trace (node.sqlog): routing tables, lookups and stored records were not analysed.")
    for w in ctx.rec.warnings:
        out.append(f"reader: {w}")
    return out
