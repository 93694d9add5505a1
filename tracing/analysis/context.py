"""What every finding rule shares: the joined facts, node names, and how a finding is added."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from ..model import Recording
from .facts import TraceFacts
from .join import Joined
from .values import Finding, StreamView

MAX_EVIDENCE = 12


def short_id(hex_id: str | None) -> str:
    return (hex_id or "?")[:12]


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def counts_text(items: Iterable[str]) -> str:
    """'STORE×3, FIND_NODE×2' for a multiset of names."""
    c = Counter(i for i in items if i)
    return ", ".join(f"{k}×{v}" if v > 1 else k for k, v in c.most_common())


class Context:
    """Shared state while deriving findings."""

    def __init__(
        self, rec: Recording, facts: list[TraceFacts], conns: list[Joined], streams: dict[tuple[str, int], StreamView]
    ) -> None:
        self.rec = rec
        self.facts = facts
        self.conns = conns
        self.streams = streams
        self.conn_by_id = {c.id: c for c in conns}
        self.findings: list[Finding] = []
        self.blind: list[str] = []
        self.silenced: set[str] = set()  # connections a stall finding already explains the end of
        self.names: dict[str, str] = {}  # node id hex -> node name
        self.addresses: dict[str, str] = {}  # "ip:port" -> node name, from the manifest
        for n in rec.nodes:
            if n.node_id:
                self.names[n.node_id.lower()] = n.name
            if n.address:
                self.addresses[n.address] = n.name
        for conn in conns:
            # The peer a trace identified is whoever wrote the other end's trace.
            for f in (conn.client, conn.server):
                other = conn.other(f) if f is not None else None
                if f is not None and other is not None:
                    for pid in f.peer_ids:
                        self.names.setdefault(pid, other.node)
        for f in facts:
            if f.local_node_id:
                self.names.setdefault(f.local_node_id, f.node)
            for _, name, d, _ in f.node_events:
                if name == "dht:node_started" and isinstance(d.get("node_id"), str):
                    self.names.setdefault(d["node_id"].lower(), f.node)
        first = [f.first_ms for f in facts if f.first_ms is not None]
        last = [f.last_ms for f in facts if f.last_ms is not None]
        self.first_ms = min(first) if first else None
        self.last_ms = max(last) if last else None

    def peer_name(self, peer_id: Any) -> str:
        if isinstance(peer_id, str):
            return self.names.get(peer_id.lower(), short_id(peer_id))
        return "?"

    def peer_of(self, conn: Joined, f: TraceFacts) -> str:
        """The node at the other end of `f`'s connection: its trace's, else the id `f` identified."""
        other = conn.other(f)
        if other is not None:
            return other.node
        for pid in f.peer_ids:
            if pid in self.names:
                return self.names[pid]
        if f.remote_addr is not None and f.remote_addr in self.addresses:
            return self.addresses[f.remote_addr]
        return f"{f.node}'s peer"

    def add(self, **kw: Any) -> None:
        """A finding; `connection` defaults to the only one of `connections`, and times to the evidence's."""
        conns = kw.get("connections", ())
        kw.setdefault("connection", conns[0] if len(conns) == 1 else None)
        ev = tuple(sorted(kw.pop("evidence"), key=lambda e: e.time_ms if e.time_ms is not None else 0.0))
        times = [e.time_ms for e in ev if e.time_ms is not None]
        kw.setdefault("first_ms", min(times) if times else None)
        kw.setdefault("last_ms", max(times) if times else None)
        self.findings.append(Finding(evidence=ev[:MAX_EVIDENCE], **kw))

    def add_streams(self, views: list[StreamView], **kw: Any) -> None:
        """A finding about a group of streams: ids, connections and (connection, id) pairs come from
        `views`, and the peer defaults to their openers."""
        sids, conns, refs = group_streams(views)
        kw.setdefault("peer", ", ".join(sorted({v.opener for v in views if v.opener})) or None)
        self.add(streams=sids, connections=conns, stream_refs=refs, **kw)


def group_streams(views: list[StreamView]) -> tuple[tuple[int, ...], tuple[str, ...], tuple[tuple[str, int], ...]]:
    """(stream ids, connections, (connection, stream id) pairs) of a group of streams."""
    refs = tuple((v.connection, v.stream_id) for v in views)
    sids = tuple(sorted({v.stream_id for v in views}))
    return sids, connections_of(views), refs


def connections_of(views: list[StreamView]) -> tuple[str, ...]:
    """The connections a group of streams rode on, in first-seen order."""
    return tuple(dict.fromkeys(v.connection for v in views))


def per_opener(views: list[StreamView]) -> str:
    """'provider1: 0, 4; client: 0' — which streams came from whom."""
    by: dict[str, list[int]] = defaultdict(list)
    for v in views:
        by[v.opener or "?"].append(v.stream_id)
    parts = []
    for who, sids in by.items():
        shown = ", ".join(str(s) for s in sids[:8]) + (", …" if len(sids) > 8 else "")
        parts.append(f"{who}: {shown}")
    return "; ".join(parts)


def ctx_ends(ctx: Context, v: StreamView) -> tuple[TraceFacts | None, TraceFacts | None]:
    conn = ctx.conn_by_id[v.connection]
    OF = conn.end(v.opener_role)
    return OF, conn.end("client" if v.opener_role == "server" else "server")
