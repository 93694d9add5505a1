"""The step chain of each stream (sent, acked, received, delivered, answered) and its timeline."""

from __future__ import annotations

from collections import defaultdict

from .facts import EMPTY_SIDE, Ref, StreamSide, TraceFacts, as_int
from .join import Joined
from .values import DONE, MISSING, NOT_VISIBLE, UNKNOWN, Evidence, Step, StreamView, TimelineEntry

# A FIN follows its answer within a round trip; this long after, with the connection still up,
# it is not coming.
FIN_GRACE_MS = 1000.0


def _earliest(*cands: tuple[Ref | None, TraceFacts | None, str]) -> tuple[Ref, TraceFacts, str] | None:
    best = None
    for ref, facts, note in cands:
        if ref is None or facts is None:
            continue
        if best is None or ref[1] < best[0][1]:
            best = (ref, facts, note)
    return best


def _step(
    name: str,
    status: str,
    ref: Ref | None = None,
    facts: TraceFacts | None = None,
    note: str = "",
    node: str | None = None,
) -> Step:
    if ref is not None and facts is not None:
        return Step(name, status, ref[1], facts.evidence(ref), facts.node, note)
    return Step(name, status, None, None, node if node is not None else (facts.node if facts else None), note)


def _fin_withheld(conn: Joined, answered: Step, fin_opener: Step, fin_peer: Step) -> bool:
    if answered.status != DONE or fin_opener.status != DONE or fin_peer.status != MISSING:
        return False
    ends = [f for f in (conn.client, conn.server) if f is not None]
    lived_on = max((f.close_ms or f.last_ms or 0.0) for f in ends) if ends else 0.0
    return answered.time_ms is not None and lived_on - answered.time_ms >= FIN_GRACE_MS


def stream_view(conn: Joined, sid: int) -> StreamView:
    opener_role = "server" if sid & 1 else "client"
    OF = conn.end(opener_role)
    PF = conn.end("client" if opener_role == "server" else "server")
    o = OF.streams.get(sid, EMPTY_SIDE) if OF else EMPTY_SIDE
    p = PF.streams.get(sid, EMPTY_SIDE) if PF else EMPTY_SIDE

    # sent: the opener's packets carry the stream's first bytes.
    if OF is None:
        sent = _step("sent", UNKNOWN, note="no trace of the opener")
    elif o.first_sent is not None:
        sent = _step("sent", DONE, o.first_sent, OF)
    elif o.app_write is not None and not OF.has_packets:
        sent = _step("sent", DONE, o.app_write, OF, "written by the application (trace logs no packets)")
    elif o.app_write is not None:
        sent = _step(
            "sent",
            MISSING,
            facts=OF,
            note=f"the application wrote {o.app_bytes} bytes but no packet carried them "
            "(stream credit or flow control?)",
        )
    else:
        sent = _step("sent", MISSING, facts=OF, note="no packet carried this stream's data")

    # acked: the peer's transport acknowledged a packet carrying the stream's data.
    if OF is not None and OF.has_packets:
        if o.ack_received is not None:
            acked = _step("acked", DONE, o.ack_received, OF)
        else:
            acked = _step("acked", MISSING, facts=OF, note="no ACK covered the packets carrying this stream")
    elif PF is not None and p.ack_sent is not None:
        acked = _step("acked", DONE, p.ack_sent, PF, "ACK sent by the peer; the opener's trace does not show it")
    else:
        acked = _step("acked", UNKNOWN, facts=OF, note="the opener's trace is missing or logs no packets")

    # received: the peer's transport got the stream frame.
    if PF is None:
        received = _step("received", UNKNOWN, note="no trace of the peer")
    elif not PF.has_packets:
        received = _step("received", UNKNOWN, facts=PF, note="the peer's trace logs no packets")
    elif p.first_recv is not None:
        received = _step("received", DONE, p.first_recv, PF)
    else:
        received = _step("received", MISSING, facts=PF, note="no packet with this stream's data arrived")

    # delivered: the peer's application took the data.
    if PF is None:
        delivered = _step("delivered", UNKNOWN, note="no trace of the peer")
    elif p.delivered is not None:
        part = ""
        if p.taken_whole() is None and o.app_bytes > p.taken_bytes:
            part = f"the application took {p.taken_bytes} of the {o.app_bytes} bytes written; the rest never reached it"
        delivered = _step("delivered", DONE, p.delivered, PF, part)
    elif p.delivered_http is not None:
        delivered = _step("delivered", DONE, p.delivered_http, PF, "HTTP/3 layer parsed a frame")
    elif PF.on_wire:
        delivered = _step(
            "delivered", NOT_VISIBLE, facts=PF, note="seen from the network: delivery to the application is not visible"
        )
    elif not PF.app_visible:
        delivered = _step(
            "delivered", NOT_VISIBLE, facts=PF, note="the peer's stack logs no delivery to the application"
        )
    else:
        delivered = _step(
            "delivered", MISSING, facts=PF, note="no stream_data_moved to the application for this stream"
        )

    # answered: the peer wrote back on the stream (or refused it with a reset before the
    # opener gave up), seen at the peer or, failing that, arriving at the opener.
    # A STOP_SENDING from the opener abandons the answer: stacks reset their side in reply to it.
    opener_gave_up = min((r[1] for r in (*o.resets_sent, o.timeout, o.stop_sent) if r is not None), default=None)
    peer_reset = min(p.resets_sent, key=lambda r: r[1]) if p.resets_sent else None
    if peer_reset is not None and opener_gave_up is not None and peer_reset[1] >= opener_gave_up:
        peer_reset = None  # the peer only reset because the opener abandoned the stream
    best = _earliest(
        (p.first_sent, PF, ""),
        (p.app_write, PF, ""),
        (p.resp_sent, PF, ""),
        (peer_reset, PF, "answered with a stream reset"),
    )
    if best is None:
        best = _earliest(
            (o.first_recv, OF, "seen arriving at the opener"), (o.resp_recv, OF, "seen arriving at the opener")
        )
    if best is not None:
        answered = _step("answered", DONE, best[0], best[1], best[2])
    elif PF is None:
        answered = _step("answered", UNKNOWN, note="no trace of the peer, and no answer arrived")
    else:
        answered = _step("answered", MISSING, facts=PF, note="the peer sent nothing back on this stream")

    steps = (sent, acked, received, delivered, answered)

    def fin(
        name: str, mine: StreamSide, mine_f: TraceFacts | None, theirs: StreamSide, theirs_f: TraceFacts | None
    ) -> Step:
        if mine.fin_sent is not None and mine_f is not None:
            return _step(name, DONE, mine.fin_sent, mine_f)
        if theirs.fin_recv is not None and theirs_f is not None:
            return _step(name, DONE, theirs.fin_recv, theirs_f, "FIN seen arriving")
        if mine_f is not None and not mine_f.has_packets and mine.app_fin is not None:
            return _step(name, DONE, mine.app_fin, mine_f, "FIN written by the application")
        if mine_f is None:
            return _step(name, UNKNOWN, note="no trace of this end")
        return _step(name, MISSING, facts=mine_f, note="no FIN sent on this side")

    fin_opener = fin("fin_opener", o, OF, p, PF)
    fin_peer = fin("fin_peer", p, PF, o, OF)

    resets: list[Evidence] = []
    for side, f in ((o, OF), (p, PF)):
        if f is not None:
            resets.extend(f.evidence(r) for r in (*side.resets_sent, *side.resets_recv))
    resets.sort(key=lambda e: e.time_ms or 0.0)
    if OF is not None and OF.on_wire:
        # On the wire one frame is both ends' reset, sent by one and received by the other.
        resets = list({(e.path, e.frame if e.frame is not None else (e.trace, e.record)): e for e in resets}.values())

    req = o.rpc_sent or p.rpc_received
    rtype = str(req[1].get("type")) if req and req[1].get("type") is not None else None
    rid = as_int(req[1].get("request_id")) if req else None

    furthest = None
    for st in steps:
        if st.status == DONE:
            furthest = st.name
    missing = next((st.name for st in steps if st.status == MISSING), None)
    if missing is None and not resets and _fin_withheld(conn, answered, fin_opener, fin_peer):
        # Answered, but the peer never finished its side while the connection lived on: the
        # stream never closes, and its credit never comes back.
        fin_peer = Step(
            fin_peer.name,
            MISSING,
            fin_peer.time_ms,
            fin_peer.evidence,
            fin_peer.node,
            "the peer answered but never sent FIN on its side while the connection lived on",
        )
        missing = "fin_peer"

    if OF is None:
        note = f"only {PF.node if PF else '?'}'s trace exists: the opener's steps are unknown"
    elif PF is None:
        note = f"only {OF.node}'s trace (the opener) exists: the peer's steps are unknown"
    elif PF.on_wire:
        note = f"seen from the network: delivery to {PF.node}'s application is not visible"
    elif not PF.app_visible:
        note = f"{PF.node}'s trace logs no application events: delivery is not visible"
    else:
        note = ""

    times = [r[1] for side in (o, p) for r in side.refs]
    return StreamView(
        connection=conn.id,
        stream_id=sid,
        opener=OF.node if OF else None,
        peer=PF.node if PF else None,
        opener_role=opener_role,
        steps=steps,
        fin_opener=fin_opener,
        fin_peer=fin_peer,
        resets=tuple(resets),
        request_type=rtype,
        request_id=rid,
        response_received=OF.evidence(o.resp_recv) if (OF and o.resp_recv) else None,
        timed_out=OF.evidence(o.timeout) if (OF and o.timeout) else None,
        furthest=furthest,
        missing=missing,
        one_ended=OF is None or PF is None,
        note=note,
        first_ms=min(times) if times else None,
        last_ms=max(times) if times else None,
        bytes_opener=max(o.sent_end, p.recv_end, o.app_bytes),
        bytes_peer=max(p.sent_end, o.recv_end, p.app_bytes),
    )


def stream_timeline(ends: tuple[TraceFacts | None, TraceFacts | None], stream: StreamView) -> list[TimelineEntry]:
    """Every event on both ends (opener, peer) concerning `stream`, in time order, steps labelled."""
    OF, PF = ends
    rows: list[tuple[float, int, int, Evidence, str, str, str]] = []
    for order, (facts, end) in enumerate(((OF, "opener"), (PF, "peer"))):
        if facts is None:
            continue
        side = facts.streams.get(stream.stream_id)
        if side is None:
            continue
        for ref in side.refs:
            rows.append((ref[1], order, ref[0], facts.evidence(ref), facts.node, end, ref[3]))
    rows.sort(key=lambda x: (x[0], x[1], x[2]))
    by_address: dict[tuple[str, int, int], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        at = row[3]
        by_address[(at.path, at.trace, at.record)].append(i)
    # One packet can carry an ACK, stream data and a FIN: each label goes to the row
    # whose detail shows that step, and each step labels one row only.
    keyword = {"acked": "ACK", "fin_opener": "FIN", "fin_peer": "FIN", "reset": "RESET"}
    labelled: dict[int, str] = {}
    marks = [(st.name, st.evidence) for st in (*stream.steps, stream.fin_opener, stream.fin_peer)]
    marks += [("reset", e) for e in stream.resets]
    for name, ev in marks:
        if ev is None:
            continue
        free = [i for i in by_address.get((ev.path, ev.trace, ev.record), ()) if i not in labelled]
        if not free:
            continue
        word = keyword.get(name)
        pick = next((i for i in free if word and word in rows[i][6].upper()), free[0])
        labelled[pick] = name
    return [TimelineEntry(r[0], r[4], r[5], r[3].name, r[6], labelled.get(i), r[3]) for i, r in enumerate(rows)]
