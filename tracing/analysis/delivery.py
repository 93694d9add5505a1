"""Findings about requests on streams: not delivered to the application, never answered, timed out."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from .context import Context, connections_of, counts_text, ctx_ends, per_opener, plural
from .facts import EMPTY_SIDE, Ref, StreamSide, TraceFacts, as_float, as_int
from .join import Joined
from .values import DONE, ERROR, MISSING, WARNING, Evidence, StreamView

# How long a peer must keep running after taking a request before "no answer" is a fact
# rather than a recording that stopped too soon.
NO_RESPONSE_GRACE_MS = 1000.0


def _slowest_delivery_ms(f: TraceFacts) -> float:
    """The longest an application took to take a stream's first bytes after its transport received them."""
    return max(
        (s.delivered[1] - s.first_recv[1] for s in f.streams.values() if s.delivered and s.first_recv),
        default=0.0,
    )


def find_not_delivered(ctx: Context) -> None:
    by_node: dict[str, list[StreamView]] = defaultdict(list)
    slowest: dict[int, float] = {}
    for v in ctx.streams.values():
        if v.one_ended or v.peer is None:
            continue
        if v.step("received").status != DONE or v.step("acked").status != DONE:
            continue
        if v.step("delivered").status != MISSING:
            continue  # MISSING already implies the peer's trace shows application events
        _, PF = ctx_ends(ctx, v)
        rcv = v.step("received")
        if PF is None or PF.last_ms is None or rcv.time_ms is None:
            continue
        # A slow application (as slow as it was with the streams it did take) may yet take it:
        # not if its trace stops sooner, nor if the requester abandoned the stream sooner.
        if id(PF) not in slowest:
            slowest[id(PF)] = _slowest_delivery_ms(PF)
        may_take = rcv.time_ms + slowest[id(PF)]
        gave_up = _gave_up_ms(ctx, v)
        if PF.last_ms <= may_take or (gave_up is not None and gave_up <= may_take):
            continue
        by_node[v.peer].append(v)
    for node, views in by_node.items():
        evidence: list[Evidence] = []
        for v in views[:4]:
            for name in ("sent", "acked", "received"):
                e = v.step(name).evidence
                if e is not None:
                    evidence.append(e)
        conns = connections_of(views)
        ctx.add_streams(
            views,
            kind="stream_not_delivered",
            severity=ERROR,
            node=node,
            summary=(
                f"{node}'s transport received and acknowledged {plural(len(views), 'stream')} "
                f"on {plural(len(conns), 'connection')} ({per_opener(views)}) but its application "
                "never took their data (no stream_data_moved to the application)."
            ),
            cause=(
                "The application never took the streams the transport accepted: the stream acceptance "
                "path drops peer-opened streams (e.g. no stream handler / events not handled); "
                "handle every StreamDataReceived."
            ),
            fix=f"make {node}'s application take every stream its transport accepts (handle every StreamDataReceived)",
            evidence=evidence,
        )


def find_no_response(ctx: Context) -> None:
    by_node: dict[str, list[StreamView]] = defaultdict(list)
    late: dict[str, list[tuple[StreamView, float]]] = defaultdict(list)
    for v in ctx.streams.values():
        OF, PF = ctx_ends(ctx, v)
        if PF is None or v.peer is None:
            continue
        p = PF.streams.get(v.stream_id)
        if p is None:
            continue
        if p.delivered is not None and _partly_taken(ctx, v):
            slow = _taken_late(v, OF, p)
            if slow is not None:
                late[v.peer].append((v, slow))
            continue  # the rest of the request never reached the application in time: not its handler's fault
        took = p.taken_whole()
        delivered = v.step("delivered")
        took_ms = took[1] if took is not None else (delivered.time_ms if delivered.status == DONE else None)
        if took_ms is None or v.step("answered").status != MISSING:
            continue
        gave_up = _gave_up_ms(ctx, v) is not None
        ran_on = PF.last_ms is not None and PF.last_ms - took_ms >= NO_RESPONSE_GRACE_MS
        if gave_up or ran_on:
            by_node[v.peer].append(v)
    for node, views in by_node.items():
        evidence: list[Evidence] = []
        for v in views[:6]:
            _, PF = ctx_ends(ctx, v)
            p = PF.streams[v.stream_id] if PF else None
            if PF is not None and p is not None and p.rpc_received:
                evidence.append(PF.evidence(p.rpc_received[0]))
            elif v.step("delivered").evidence:
                evidence.append(v.step("delivered").evidence)  # type: ignore[arg-type]
            if v.timed_out:
                evidence.append(v.timed_out)
        timeouts = sum(1 for v in views if v.timed_out)
        kinds = counts_text(v.request_type or "" for v in views)
        ctx.add_streams(
            views,
            kind="no_response",
            severity=ERROR,
            node=node,
            summary=(
                f"{node} took {plural(len(views), 'request')}{f' ({kinds})' if kinds else ''} "
                f"from its peers ({per_opener(views)}) and never answered"
                f"{f'; {timeouts} of them timed out at the requester' if timeouts else ''}."
            ),
            cause=(
                "The request handler read the request and never wrote a response (a stalled or blocking "
                "handler, or an exception swallowed): answer every request, or reset the stream with an "
                "error code, and never block the event loop."
            ),
            fix=f"make {node} answer every request (or reset the stream with an error code) without blocking",
            evidence=evidence,
        )
    for node, items in late.items():
        _late(ctx, node, items)


def _taken_late(v: StreamView, OF: TraceFacts | None, p: StreamSide) -> float | None:
    """How long the application let a whole request wait at its transport before taking it, when the
    requester timed out meanwhile and no flow-control wait held the request back; else None."""
    took = p.taken_whole()
    if took is None or p.fin_recv is None or v.timed_out is None or v.timed_out.time_ms is None:
        return None
    if not p.fin_recv[1] <= v.timed_out.time_ms < took[1]:
        return None
    if OF is not None and any(
        w.scope in (None, v.stream_id) and w.start <= v.timed_out.time_ms for w in OF.credit_waits
    ):
        return None  # the request waited for credit: flow_control_blocked tells it
    return took[1] - p.fin_recv[1]


def _late(ctx: Context, node: str, items: list[tuple[StreamView, float]]) -> None:
    views = [v for v, _ in items]
    waits = sorted(w for _, w in items)
    kinds = counts_text(v.request_type or "" for v in views)
    evidence: list[Evidence] = []
    for v in views[:4]:
        for e in (v.step("received").evidence, v.timed_out, v.step("delivered").evidence):
            if e is not None:
                evidence.append(e)
    ctx.add_streams(
        views,
        kind="no_response",
        severity=ERROR,
        node=node,
        summary=(
            f"{node} took {plural(len(views), 'request')}{f' ({kinds})' if kinds else ''} from its peers "
            f"({per_opener(views)}) only after the requesters had timed out: its application left each whole "
            f"request at its transport {waits[len(waits) // 2]:.0f} ms (median) before taking it."
        ),
        cause=(
            f"{node}'s application reads its streams too slowly (a busy or blocked event loop, or a reader that "
            "takes one stream at a time), so requests wait at its transport longer than their requesters do."
        ),
        fix=f"make {node}'s application take each request as it arrives",
        evidence=evidence,
    )


def _gave_up_ms(ctx: Context, v: StreamView) -> float | None:
    """When the requester gave up on the stream (timed out or reset its side), if it did."""
    OF, _ = ctx_ends(ctx, v)
    o = OF.streams.get(v.stream_id, EMPTY_SIDE) if OF is not None else EMPTY_SIDE
    times = [r[1] for r in o.resets_sent]
    if v.timed_out is not None and v.timed_out.time_ms is not None:
        times.append(v.timed_out.time_ms)
    return min(times) if times else None


def _partly_taken(ctx: Context, v: StreamView) -> bool:
    """The peer's application took some of the request, but not all of it before the requester gave up."""
    _, PF = ctx_ends(ctx, v)
    p = PF.streams.get(v.stream_id) if PF is not None else None
    if p is None or p.delivered is None:
        return False
    whole = p.taken_whole()
    if whole is None:
        return True
    gave_up = _gave_up_ms(ctx, v)
    return gave_up is not None and whole[1] > gave_up


def find_rpc_timeouts(ctx: Context) -> None:
    groups: dict[tuple[str, str], list[tuple[TraceFacts, Ref, dict[str, Any], Joined | None]]] = defaultdict(list)
    conn_of = {id(f): c for c in ctx.conns for f in (c.client, c.server) if f is not None}
    for f in ctx.facts:
        for ref, d in f.rpc_timeouts:
            conn = conn_of.get(id(f))
            other = conn.other(f) if conn else None
            peer = other.node if other is not None else ctx.peer_name(d.get("peer_id"))
            groups[(f.node, peer)].append((f, ref, d, conn))
    for (node, peer), items in groups.items():
        views = []
        for _f, _ref, d, conn in items:
            sid = as_int(d.get("stream_id"))
            if conn is not None and sid is not None and (conn.id, sid) in ctx.streams:
                views.append(ctx.streams[(conn.id, sid)])
        kinds = counts_text(str(d.get("type") or "") for _, _, d, _ in items)
        waits = sorted({w for _, _, d, _ in items if (w := as_float(d.get("timeout_ms"))) is not None})
        wait = f" after {waits[0]:.0f} ms" if len(waits) == 1 else ""
        stuck = Counter(v.missing for v in views if v.missing)
        where = stuck.most_common(1)[0][0] if stuck else None
        if where == "answered" and all(_partly_taken(ctx, v) for v in views if v.missing == "answered"):
            where = "partly delivered"
        cause = {
            "sent": (
                "The requests never left the requester (no stream credit or flow control); see stream_limit_exhausted"
            ),
            "acked": "The requests' packets were never acknowledged: packet loss or an unreachable peer",
            "received": "The requests never reached the peer's transport: packet loss or an unreachable peer",
            "delivered": (
                f"{peer}'s transport accepted the requests but its application never took them "
                "(see stream_not_delivered)"
            ),
            "answered": f"{peer} took the requests and never answered (see no_response)",
            "partly delivered": (
                f"{peer}'s application had taken only part of each request when the requester gave up; the rest "
                "came too late or not at all, held back by flow control or lost (see flow_control_blocked, packet_loss)"
            ),
        }.get(
            where or "",
            f"{peer} did not answer in time: a slow or blocked peer, or loss on the path; "
            "the stream steps show where each request stopped",
        )
        ctx.add_streams(
            views,
            kind="rpc_timeout",
            severity=WARNING,
            node=node,
            peer=peer,
            summary=f"{node}: {plural(len(items), 'request')} to {peer} timed out{wait}"
            f"{f' ({kinds})' if kinds else ''}.",
            cause=cause + ".",  # may start with a node name: never re-case identifiers
            fix=f"follow the timed-out requests' steps to where they stopped on the way to {peer}",
            evidence=[f.evidence(ref) for f, ref, _, _ in items],
        )
