"""Joining the two ends of each connection by ODCID, and each connection's view."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from .facts import Ref, TraceFacts, as_int
from .values import ALPN_MISMATCH_CODE, ConnectionEnd, ConnectionView


class Joined:
    """A connection while analysing: its id and the facts of each end."""

    __slots__ = ("id", "odcid", "client", "server", "view")

    def __init__(self, cid: str, odcid: str | None, client: TraceFacts | None, server: TraceFacts | None) -> None:
        self.id = cid
        self.odcid = odcid
        self.client = client
        self.server = server
        self.view: ConnectionView | None = None

    def end(self, role: str) -> TraceFacts | None:
        return self.client if role == "client" else self.server

    def other(self, facts: TraceFacts) -> TraceFacts | None:
        return self.server if facts is self.client else self.client


def join_ends(conn_facts: list[TraceFacts]) -> list[Joined]:
    """Pair traces by ODCID with opposite roles; everything unpaired stands alone."""
    groups: dict[str, list[TraceFacts]] = defaultdict(list)
    for f in conn_facts:
        groups[f.odcid if f.odcid is not None else f"\0{f.ordinal}"].append(f)
    conns: list[Joined] = []
    used: set[str] = set()
    for key, members in groups.items():
        odcid = None if key.startswith("\0") else key
        clients = [f for f in members if f.role == "client"]
        servers = [f for f in members if f.role == "server"]
        others = [f for f in members if f.role is None]
        # One end of unknown role beside one known end: it is the other end.
        if len(others) == 1 and len(clients) + len(servers) == 1:
            (clients if servers else servers).append(others.pop())
        pairs: list[tuple[TraceFacts | None, TraceFacts | None]] = []
        for i in range(max(len(clients), len(servers))):
            pairs.append((clients[i] if i < len(clients) else None, servers[i] if i < len(servers) else None))
        for f in others:
            pairs.append((f, None))  # unknown role, alone: shown as the client end
        for n, (c, s) in enumerate(pairs):
            if odcid is None:
                # No ODCID: the trace's file names the connection (short unless ambiguous).
                only = c or s
                assert only is not None
                suffix = f"#{only.index}" if only.index else ""
                cid = Path(only.path).name + suffix
                if cid in used:
                    cid = only.path + suffix
            else:
                cid = odcid if n == 0 else f"{odcid}#{n}"
            used.add(cid)
            conns.append(Joined(cid, odcid, c, s))
    conns.sort(key=lambda c: min(f.first_ms or 0.0 for f in (c.client, c.server) if f is not None))
    return conns


def end_view(f: TraceFacts) -> ConnectionEnd:
    return ConnectionEnd(
        node=f.node,
        path=f.path,
        trace_index=f.index,
        vantage=f.role or "unknown",
        events=f.events,
        first_ms=f.first_ms,
        last_ms=f.last_ms,
        packets_sent=f.packets_sent,
        packets_received=f.packets_received,
        packets_lost=len(f.lost),
        app_visible=f.app_visible,
        alpn=tuple(f.alpns),
    )


def close_trigger(code: int | None, reason: str) -> str:
    if code == ALPN_MISMATCH_CODE or "alpn" in reason.lower():
        return "alpn_mismatch"
    if reason == "Idle timeout":
        return "idle_timeout"
    if not code:
        return "clean"
    return "error"


def close_of(conn: Joined) -> tuple[str | None, str | None, int | None, str | None, Ref | None, TraceFacts | None]:
    """(trigger, reason, code, closed_by, evidence ref, facts of that ref) for a connection."""
    ends = [f for f in (conn.client, conn.server) if f is not None]
    logged = sorted((f.closed[0][1], i, f) for i, f in enumerate(ends) if f.closed is not None)
    if logged:
        _, _, f = logged[0]
        assert f.closed is not None
        ref, d = f.closed
        code = as_int(d.get("connection_code"))
        if code is None:
            code = as_int(d.get("application_code"))
        reason = str(d.get("reason") or "")
        trigger = str(d.get("trigger") or "") or close_trigger(code, reason)
        owner = d.get("owner")
        by = f.node if owner == "local" else (conn.other(f).node if owner == "remote" and conn.other(f) else None)
        if owner == "remote" and by is None:
            by = "peer"
        return trigger, reason, code, by, ref, f
    frames: list[tuple[float, int, TraceFacts, Ref, dict[str, Any], bool]] = []
    for i, f in enumerate(ends):
        if f.close_sent is not None:
            frames.append((f.close_sent[0][1], i, f, f.close_sent[0], f.close_sent[1], True))
        if f.close_recv is not None:
            frames.append((f.close_recv[0][1], i, f, f.close_recv[0], f.close_recv[1], False))
    if not frames:
        return None, None, None, None, None, None
    frames.sort(key=lambda x: (x[0], x[1]))
    _, _, f, ref, fr, sent = frames[0]
    code = as_int(fr.get("error_code", fr.get("raw_error_code")))
    reason = str(fr.get("reason") or "")
    trigger = close_trigger(code, reason)
    if trigger == "error" and fr.get("error_space") == "application":
        trigger = "application"
    other = conn.other(f)
    by = f.node if sent else (other.node if other else "peer")
    return trigger, reason, code, by, ref, f


def connection_view(conn: Joined, n_streams: int) -> ConnectionView:
    c, s = conn.client, conn.server
    trigger, reason, code, by, ref, _ = close_of(conn)
    ends = [f for f in (c, s) if f is not None]
    rtt = next((f.smoothed_rtt for f in ends if f.smoothed_rtt), None)
    latest = next((f.latest_rtt for f in ends if f.latest_rtt), None)

    def flow(sender: TraceFacts | None, receiver: TraceFacts | None) -> int:
        a = sum(x.sent_end for x in sender.streams.values()) if sender else 0
        b = sum(x.recv_end for x in receiver.streams.values()) if receiver else 0
        return max(a, b)

    firsts = [f.first_ms for f in ends if f.first_ms is not None]
    lasts = [f.last_ms for f in ends if f.last_ms is not None]
    return ConnectionView(
        id=conn.id,
        odcid=conn.odcid,
        client=end_view(c) if c else None,
        server=end_view(s) if s else None,
        state="closed" if ref is not None else "open",
        close_trigger=trigger,
        close_reason=reason,
        close_code=code,
        closed_by=by,
        rtt_ms=rtt,
        latest_rtt_ms=latest,
        bytes_client_to_server=flow(c, s),
        bytes_server_to_client=flow(s, c),
        streams=n_streams,
        first_ms=min(firsts) if firsts else None,
        last_ms=max(lasts) if lasts else None,
    )
