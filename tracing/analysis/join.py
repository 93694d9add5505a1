"""Joining the two ends of each connection by ODCID, and each connection's view."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..codes import Code, close_code, transport_code_by_name
from .facts import Ref, TraceFacts, as_int
from .values import ALPN_MISMATCH_CODE, ConnectionEnd, ConnectionView, StreamCredit


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
    if reason.lower() == "idle timeout":
        return "idle_timeout"
    if reason.lower() == "handshake timeout":
        return "handshake_timeout"
    if not code:
        return "clean"
    return "error"


@dataclass(frozen=True, slots=True)
class CloseInfo:
    """How a connection ended, from the earliest close event or CONNECTION_CLOSE frame of either end."""

    trigger: str
    reason: str
    code: int | None
    space: str | None  # "transport" or "application" (the close frame's error space), None if not known
    by_local: bool | None  # did the end whose trace shows it (`facts`) begin the close? None: not known
    ref: Ref
    facts: TraceFacts
    frame: bool  # seen as a CONNECTION_CLOSE frame on the wire, not only as an event

    @property
    def time_ms(self) -> float:
        return float(self.ref[1])


def _code(value: Any) -> int | None:
    n = as_int(value)
    return n if n is not None else (transport_code_by_name(value) if isinstance(value, str) else None)


def close_of(conn: Joined) -> CloseInfo | None:
    """How `conn` ended: the close event's trigger and owner, the close frame's code and space."""
    ends = [f for f in (conn.client, conn.server) if f is not None]
    frames: list[tuple[float, int, TraceFacts, Ref, dict[str, Any], bool]] = []
    for i, f in enumerate(ends):
        if f.close_sent is not None:
            frames.append((f.close_sent[0][1], i, f, f.close_sent[0], f.close_sent[1], True))
        if f.close_recv is not None:
            frames.append((f.close_recv[0][1], i, f, f.close_recv[0], f.close_recv[1], False))
    frames.sort(key=lambda x: (x[0], x[1]))
    frame = frames[0] if frames else None
    fcode = fspace = None
    if frame is not None:
        fr = frame[4]
        fcode = _code(fr.get("error_code", fr.get("raw_error_code")))
        fspace = "application" if fr.get("error_space") == "application" else "transport"
    logged = sorted((f.closed[0][1], i, f) for i, f in enumerate(ends) if f.closed is not None)
    if logged:
        _, _, f = logged[0]
        assert f.closed is not None
        ref, d = f.closed
        code = _code(d.get("connection_code"))
        space: str | None = "transport" if code is not None else None
        if code is None:
            code = _code(d.get("application_code"))
            space = "application" if code is not None else None
        crossed = frame is not None and fcode is not None and code is not None and code != fcode
        if not crossed:
            if frame is not None and fcode is not None:
                code, space = fcode, fspace  # the wire says which space the code belongs to
            reason = str(d.get("reason") or (frame[4].get("reason") if frame else "") or "")
            trigger = str(d.get("trigger") or "") or close_trigger(code, reason)
            owner = d.get("owner")
            by_local = True if owner == "local" else False if owner == "remote" else None
            return CloseInfo(trigger, reason, code, space, by_local, ref, f, frame is not None)
        # Both ends closed at once, each with its own code: the close that went out first is how
        # the connection ended; the logged one answered a close already on its way.
    if frame is None:
        return None
    _, _, f, ref, fr, sent = frame
    reason = str(fr.get("reason") or "")
    trigger = close_trigger(fcode, reason)
    if trigger == "error" and fspace == "application":
        trigger = "application"
    return CloseInfo(trigger, reason, fcode, fspace, sent, ref, f, True)


def closed_by(conn: Joined, info: CloseInfo) -> str | None:
    """The node that began the close ("peer" when only the other end's trace shows it)."""
    if info.by_local is None:
        return None
    if info.by_local:
        return info.facts.node
    other = conn.other(info.facts)
    return other.node if other is not None else "peer"


def connection_alpns(conn: Joined) -> list[str]:
    return list(dict.fromkeys(a for f in (conn.client, conn.server) if f is not None for a in f.alpns))


def close_name(conn: Joined, info: CloseInfo | None) -> Code | None:
    if info is None or info.code is None:
        return None
    return close_code(info.code, info.space, connection_alpns(conn))


def _credit(conn: Joined, role: str) -> StreamCredit | None:
    """What the `role` end allowed its peer: from its own trace, else from what its peer's trace received."""
    mine = conn.end(role)
    peer = conn.end("server" if role == "client" else "client")
    grants: list[tuple[float | None, int]] = []
    initial = None
    raises: list[tuple[float, int]] = []
    if mine is not None:
        initial = as_int(mine.params_local.get("initial_max_streams_bidi"))
        raises = list(mine.max_streams_sent)
    if peer is not None and initial is None:
        initial = as_int(peer.params_remote.get("initial_max_streams_bidi"))
    if peer is not None and not raises:
        raises = list(peer.max_streams_recv)
    if initial is not None:
        grants.append((mine.params_ms if mine is not None else None, initial))
    for t, limit in sorted(raises):
        if not grants or limit > grants[-1][1]:
            grants.append((t, limit))
    peer_parity = 1 if role == "client" else 0  # the streams the other end opened
    opened = 0
    blocked: list[tuple[float, int]] = []
    for f in (mine, peer):
        if f is None:
            continue
        for sid, side in f.streams.items():
            if sid & 3 == peer_parity and (side.first_sent is not None or side.first_recv is not None):
                opened = max(opened, sid // 4 + 1)
    if peer is not None:
        blocked = [(ref[1], limit) for ref, limit in peer.blocked]
    if not grants and not opened and not blocked:
        return None
    node = mine.node if mine is not None else (f"{peer.node}'s peer" if peer is not None else "?")
    return StreamCredit(node, role, tuple(grants), opened, tuple(blocked))


def connection_view(conn: Joined, n_streams: int) -> ConnectionView:
    c, s = conn.client, conn.server
    info = close_of(conn)
    named = close_name(conn, info)
    trigger = info.trigger if info else None
    if trigger in ("application", "error") and named is not None and not named.is_error:
        trigger = "clean"  # e.g. H3_NO_ERROR: an application's clean close
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
        state="closed" if info is not None else "open",
        close_trigger=trigger,
        close_reason=info.reason if info else None,
        close_code=info.code if info else None,
        closed_by=closed_by(conn, info) if info else None,
        rtt_ms=rtt,
        latest_rtt_ms=latest,
        bytes_client_to_server=flow(c, s),
        bytes_server_to_client=flow(s, c),
        streams=n_streams,
        first_ms=min(firsts) if firsts else None,
        last_ms=max(lasts) if lasts else None,
        close_name=named.label if named is not None else None,
        stream_credit=tuple(c for c in (_credit(conn, "client"), _credit(conn, "server")) if c is not None),
    )
