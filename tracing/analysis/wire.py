"""What the network alone shows: requests acknowledged and never answered, and loss seen as data sent twice.

Ends split from one network-vantage trace (a capture) hold every packet both endpoints put
on the wire and every ACK they sent for the other's packets, but never what an application
took from its transport. So a request the peer acknowledged and never answered may never
have been accepted, or been taken and left unanswered: the wire cannot tell which, and the
finding says both. A packet is lost when the receiver's ACKs skip it or its data is sent
again unacknowledged; one missing from the sender's packet numbers never reached the point
where the capture was made.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

from .context import Context, connections_of, ctx_ends, per_opener, plural
from .delivery import NO_RESPONSE_GRACE_MS
from .facts import EMPTY_SIDE, TraceFacts
from .join import close_of, closed_by
from .values import DONE, ERROR, MISSING, Evidence, StreamView

Key = tuple[str, int]

MAX_WIRE_EVIDENCE_STREAMS = 4
# A requester that abandons a stream sooner than this after the peer got it cancelled it (a lookup
# that finished elsewhere), rather than gave up waiting for an answer...
GAVE_UP_MIN_WAIT_MS = 100.0
# ...and on slow paths, sooner than this many round trips.
GAVE_UP_MIN_RTTS = 10.0
# A jump in a sender's packet numbers wider than this is a choice (stacks skip numbers on
# purpose), not packets lost on the way to the capture point.
MAX_PACKET_NUMBER_GAP = 64


def on_wire(conn_ends: tuple[TraceFacts | None, TraceFacts | None]) -> bool:
    """Both ends of a connection, and both split from a network-vantage trace."""
    a, b = conn_ends
    return a is not None and b is not None and a.on_wire and b.on_wire


def find_not_answered(ctx: Context) -> None:
    """Requests the peer's transport acknowledged and the peer never answered, as the wire shows them."""
    by_node: dict[str, list[StreamView]] = defaultdict(list)
    unseen: dict[int, list[float]] = {}  # per peer end: when packets it sent went missing before the capture point
    for v in ctx.streams.values():
        if v.one_ended or v.peer is None:
            continue
        OF, PF = ctx_ends(ctx, v)
        if OF is None or PF is None or not PF.on_wire:
            continue
        if v.step("acked").status != DONE or v.step("received").status != DONE:
            continue
        if v.step("answered").status != MISSING:
            continue
        received = v.step("received").time_ms
        if received is None:
            continue
        gaps = unseen.get(id(PF))
        if gaps is None:
            gaps = unseen[id(PF)] = [PF.sent_pkts[k][0] for k, _ in wire_fates(PF, OF).missing]
        if any(t >= received for t in gaps):
            continue  # the answer may have gone out in packets lost before they reached the capture point
        # The requester waited, then gave up (a cancel at once says nothing of the peer), or the
        # peer itself closed the connection a while after it got the request...
        waited = max(GAVE_UP_MIN_WAIT_MS, GAVE_UP_MIN_RTTS * (OF.rtt_ms or 0.0))
        ended = [t for t in (_gave_up_at(OF, v.stream_id), _closed_by(ctx, v.connection, PF)) if t is not None]
        # ...or the connection went on carrying packets long after: the answer was not merely late.
        lived_on = PF.last_ms is not None and PF.last_ms - received >= NO_RESPONSE_GRACE_MS
        if any(t - received >= waited for t in ended) or lived_on:
            by_node[v.peer].append(v)
    for node, views in by_node.items():
        evidence: list[Evidence] = []
        for v in views[:MAX_WIRE_EVIDENCE_STREAMS]:
            for name in ("sent", "acked"):
                e = v.step(name).evidence
                if e is not None:
                    evidence.append(e)
            OF, _ = ctx_ends(ctx, v)
            stop = OF.streams.get(v.stream_id, EMPTY_SIDE).stop_sent if OF is not None else None
            if OF is not None and stop is not None:
                evidence.append(OF.evidence(stop))
        abandoned = sum(1 for v in views if _gave_up(ctx, v))
        unfinished = sum(1 for v in views if v.fin_peer.status != DONE)
        conns = connections_of(views)
        credit = _credit_note(ctx, node, conns)
        ctx.add_streams(
            views,
            kind="stream_not_answered",
            severity=ERROR,
            node=node,
            summary=(
                f"{node}'s transport acknowledged {plural(len(views), 'stream')} on "
                f"{plural(len(conns), 'connection')} ({per_opener(views)}) and {node} never answered: "
                f"nothing came back on {'it' if len(views) == 1 else 'them'}"
                + (", not even a FIN" if unfinished == len(views) else "")
                + credit
                + (f"; the requester gave up on {abandoned} (STOP_SENDING or reset)" if abandoned else "")
                + ". Seen from the network, whether its application ever took the requests cannot be seen."
            ),
            cause=(
                f"Either {node}'s application never accepted the streams its transport took (the stream "
                "acceptance path drops peer-opened streams: no stream handler, events not handled), or it took "
                "the requests and never answered them (a stalled or blocking handler). Both hold the streams' "
                f"credit. A qlog recording of {node} (with the application's events) tells the two apart."
            ),
            fix=f"make {node} accept every stream its transport takes and answer it (or reset it with an error code)",
            evidence=evidence,
        )


def _gave_up_at(opener: TraceFacts, sid: int) -> float | None:
    """When the opener abandoned the stream (STOP_SENDING or its own reset), if it did."""
    side = opener.streams.get(sid, EMPTY_SIDE)
    times = [r[1] for r in (side.stop_sent, *side.resets_sent) if r is not None]
    return min(times) if times else None


def _closed_by(ctx: Context, cid: str, end: TraceFacts) -> float | None:
    """When `end` closed the connection, if it was the one to close it."""
    conn = ctx.conn_by_id.get(cid)
    info = close_of(conn) if conn is not None else None
    if conn is None or info is None or closed_by(conn, info) != end.node:
        return None
    return info.time_ms


def _gave_up(ctx: Context, v: StreamView) -> bool:
    OF, _ = ctx_ends(ctx, v)
    return OF is not None and _gave_up_at(OF, v.stream_id) is not None


def _credit_note(ctx: Context, node: str, conns: tuple[str, ...]) -> str:
    """Whether `node` ever returned stream credit (MAX_STREAMS) on these connections."""
    raised = 0
    for cid in conns:
        conn = ctx.conn_by_id.get(cid)
        if conn is None:
            continue
        for f in (conn.client, conn.server):
            if f is not None and f.node == node and f.max_streams_sent:
                raised += 1
    if raised:
        return f"; it raised the stream limit (MAX_STREAMS) on {plural(raised, 'connection')} all the same"
    return "; it never returned stream credit (no MAX_STREAMS)"


@dataclass
class WireFates:
    """What became of the packets one end put on the wire, judged from the wire alone."""

    sent: int = 0  # packets seen, plus those missing from the sender's numbering
    unacked: list[Key] = field(default_factory=list)  # never acknowledged, though later packets were
    resent: list[Key] = field(default_factory=list)  # as `unacked`, and their data sent again
    missing: list[tuple[Key, int]] = field(default_factory=list)  # (packet after the gap, packets missing)
    spurious: list[Key] = field(default_factory=list)  # data sent again though the packet was acknowledged

    @property
    def lost(self) -> list[Key]:
        return self.unacked + self.resent

    @property
    def lost_count(self) -> int:
        return len(self.unacked) + len(self.resent) + sum(n for _, n in self.missing)


def wire_fates(f: TraceFacts, other: TraceFacts) -> WireFates:
    """Loss and retransmission of the packets `f` sent, from `f`'s packets and the peer's ACKs on the wire.

    A packet is lost when the receiver acknowledged a later packet of its number space and never
    it: ACK ranges repeat until acknowledged, so a packet received shows in some ACK. A packet
    never acknowledged and nothing after it either (the last Handshake packets, whose keys are
    dropped once the handshake is confirmed) is not judged.
    """
    fates = WireFates(sent=len(f.sent_pkts))
    resent_of = _resent(f)
    by_space: dict[str, list[int]] = defaultdict(list)
    for space, pn in f.sent_pkts:
        by_space[space].append(pn)
    used = {pn for _, pn in f.sent_pkts}
    # Before the peer ever answered it may not have been there yet (a server still starting): the
    # fate of those packets is no loss to judge, as a trace that began later cannot judge it either.
    heard = other.sent_times[0] if other.sent_times else float("inf")
    for space, pns in by_space.items():
        pns.sort()
        acked = f.peer_acked.get(space)
        top = acked.hi[-1] if acked is not None and acked.hi else None
        for pn in pns:
            key = (space, pn)
            t, _rec, _size, _sids, eliciting, closes = f.sent_pkts[key]
            if t < heard:
                fates.sent -= 1
                continue
            was_acked = acked is not None and pn in acked
            if was_acked:
                if key in resent_of:
                    fates.spurious.append(key)
            elif eliciting and not closes and top is not None and pn < top:
                (fates.resent if key in resent_of else fates.unacked).append(key)
        # Packets that could not be opened have no number: gaps then say nothing. Some stacks
        # (aioquic) number all spaces from one counter: a number another space used is no gap.
        if other.dropped == 0:
            for a, b in zip(pns, pns[1:], strict=False):
                if 1 < b - a <= MAX_PACKET_NUMBER_GAP:
                    gone = sum(1 for x in range(a + 1, b) if x not in used)
                    if gone:
                        fates.missing.append(((space, b), gone))
    fates.sent += sum(n for _, n in fates.missing)
    return fates


def _resent(f: TraceFacts) -> set[Key]:
    """The packets whose stream or CRYPTO data `f` sent again in a later packet."""
    out: set[Key] = set()
    # Per stream (or crypto space): ranges sent so far, sorted by offset, with their packet.
    seen: dict[int | str, list[tuple[int, int, Key]]] = defaultdict(list)
    order = sorted(f.sent_data, key=lambda k: f.sent_pkts[k][0])
    for key in order:
        for what, start, end in f.sent_data[key]:
            if end <= start:
                continue
            ranges = seen[what]
            i = bisect.bisect_left(ranges, (end, -1, ("", -1)))
            # Earlier ranges that start before this one ends and end after it starts overlap it.
            j = i - 1
            while j >= 0 and ranges[j][0] < end:
                if ranges[j][1] <= start:
                    break  # data goes out in order: what lies before this ends before it too
                if ranges[j][2] != key:
                    out.add(ranges[j][2])
                j -= 1
            bisect.insort(ranges, (start, end, key))
    return out


def wire_summary(fates: list[WireFates]) -> str:
    """How the lost packets show on the wire, for the loss finding's summary."""
    unacked = sum(len(x.unacked) for x in fates)
    resent = sum(len(x.resent) for x in fates)
    missing = sum(n for x in fates for _, n in x.missing)
    parts = []
    if resent:
        parts.append(f"{resent} never acknowledged though later ones were, and their data sent again")
    if unacked:
        parts.append(f"{unacked} never acknowledged though later ones were")
    if missing:
        parts.append(f"{missing} missing from the sender's packet numbers (lost before the capture point)")
    return "; ".join(parts)
