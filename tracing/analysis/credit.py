"""Credit the peer grants: streams (MAX_STREAMS) and bytes (MAX_DATA, MAX_STREAM_DATA).

Stream credit exhausted (STREAMS_BLOCKED), stream credit running low before it runs out,
and senders that sat at the peer's flow-control limit waiting for it to grow. Every stack
names these frames and transport parameters alike, so this works on any qlog.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

from .context import Context, plural
from .facts import EMPTY_SIDE, CreditWait, TraceFacts, as_int
from .join import Joined
from .values import ERROR, WARNING, Evidence

# Warn when the streams a peer still allows fall to this fraction of its limit, before they run out.
STREAM_CREDIT_LOW_FRACTION = 0.2
# Credit that comes back this soon after running low was only a burst, not a leak.
STREAM_CREDIT_GRACE_MS = 1000.0
# A sender waiting this long at the peer's flow-control limit is starved, not briefly paced...
FLOW_CONTROL_WAIT_MIN_MS = 500.0
# ...and on slow paths it must also be this many round trips: credit normally returns within one.
FLOW_CONTROL_WAIT_MIN_RTTS = 4.0
MAX_CREDIT_EVIDENCE = 8


def _unfinished(f: TraceFacts, other: TraceFacts | None) -> tuple[list[int], Evidence | None]:
    """Streams `f` opened that the peer never finished (no FIN, no reset), and one example."""
    my_parity = 0 if (f.role or "client") == "client" else 1
    unfinished: list[int] = []
    example: Evidence | None = None
    for sid, side in f.streams.items():
        if sid & 3 != my_parity or not side.has_data:
            continue
        theirs = other.streams.get(sid, EMPTY_SIDE) if other is not None else EMPTY_SIDE
        if side.first_sent is None and theirs.first_recv is None:
            continue  # never left this node (blocked itself): the peer cannot have finished it
        finned = side.fin_recv is not None or theirs.fin_sent is not None
        reset = bool(side.resets_recv or side.resets_sent or theirs.resets_sent)
        if not finned and not reset:
            unfinished.append(sid)
            if example is None and other is not None and theirs.first_sent is not None:
                example = other.evidence(theirs.first_sent)
    unfinished.sort()
    return unfinished, example


def _exhausted(f: TraceFacts) -> bool:
    if not f.blocked:
        return False
    last_ref, limit = f.blocked[-1]
    return not any(t >= last_ref[1] and m > limit for t, m in f.max_streams_recv)


def find_stream_limit(ctx: Context) -> None:
    for conn in ctx.conns:
        for f in (conn.client, conn.server):
            if f is None or not _exhausted(f):
                continue
            limit = f.blocked[-1][1]
            other = conn.other(f)
            peer = ctx.peer_of(conn, f) if other is None else other.node
            unfinished, example = _unfinished(f, other)
            evidence = [f.evidence(r) for r, _ in f.blocked[:5]]
            if len(f.blocked) > 5:
                evidence.append(f.evidence(f.blocked[-1][0]))
            if example is not None:
                evidence.append(example)
            head = (
                f"{f.node} used all {limit} bidirectional streams {peer} allowed and sent STREAMS_BLOCKED "
                f"({plural(len(f.blocked), 'time')}); {peer} never raised the limit"
            )
            if unfinished:
                severity = ERROR
                summary = (
                    f"{head} and never finished (FIN) its side of {plural(len(unfinished), 'stream')} {f.node} opened."
                )
                cause = (
                    f"Stream credit (MAX_STREAMS) only returns when a stream is finished both ways: {peer} "
                    "keeps its side of each stream open (no FIN after the response); end every stream with "
                    "FIN or reset it, and queue requests that find no credit."
                )
                fix = f"make {peer} finish (FIN) its side of every stream"
            else:
                # Blocked, but the trace shows no stream the peer left open: say so, don't blame.
                severity = WARNING
                summary = f"{head}; the trace shows no stream {peer} left unfinished."
                cause = (
                    f"{peer} returns no stream credit: either it holds streams open that this trace does not "
                    "show, or its stream limit is too low for this load; queue requests that find no credit."
                )
                fix = f"raise {peer}'s stream limit or find the streams it holds open"
            ctx.add(
                kind="stream_limit_exhausted",
                severity=severity,
                node=f.node,
                peer=peer,
                connection=conn.id,
                connections=(conn.id,),
                streams=tuple(unfinished),
                stream_refs=tuple((conn.id, s) for s in unfinished if (conn.id, s) in ctx.streams),
                summary=summary,
                cause=cause,
                fix=fix,
                evidence=evidence,
            )


def _limits(f: TraceFacts) -> tuple[list[float], list[int]] | None:
    """The peer's bidirectional stream limit over time, as (times, limits), or None if never stated."""
    initial = as_int(f.params_remote.get("initial_max_streams_bidi"))
    raises = sorted(f.max_streams_recv)
    if initial is None and not raises:
        return None
    times = [float("-inf")]
    limits = [initial if initial is not None else 0]
    for t, m in raises:
        if m > limits[-1]:
            times.append(t)
            limits.append(m)
    return times, limits


def find_stream_credit_low(ctx: Context) -> None:
    """Stream credit that fell low and stayed low: a warning before STREAMS_BLOCKED ever happens."""
    for conn in ctx.conns:
        for f in (conn.client, conn.server):
            if f is None or not f.own_streams or _exhausted(f):
                continue
            lim = _limits(f)
            if lim is None:
                continue
            times, limits = lim
            end = f.close_ms if f.close_ms is not None else f.last_ms
            for t, opened, ref in f.own_streams:
                i = bisect.bisect_right(times, t) - 1
                limit = limits[i]
                if limit <= 0 or limit - opened > STREAM_CREDIT_LOW_FRACTION * limit:
                    continue
                raised_at = times[i + 1] if i + 1 < len(times) else None
                if raised_at is not None and raised_at - t <= STREAM_CREDIT_GRACE_MS:
                    continue  # a burst: credit came back
                if raised_at is None and (end is None or end - t < STREAM_CREDIT_GRACE_MS):
                    continue  # the trace ends too soon after to tell
                other = conn.other(f)
                peer = other.node if other is not None else ctx.peer_of(conn, f)
                unfinished, example = _unfinished(f, other)
                if unfinished:
                    left = f" {plural(len(unfinished), 'stream')} {peer} never finished hold the rest"
                else:
                    left = " the stream credit is close to running out"
                during = "for the rest of the trace" if raised_at is None else f"for {(raised_at - t) / 1000:.1f} s"
                evidence = [f.evidence(ref)] + ([example] if example is not None else [])
                ctx.add(
                    kind="stream_credit_low",
                    severity=WARNING,
                    node=f.node,
                    peer=peer,
                    connection=conn.id,
                    connections=(conn.id,),
                    streams=tuple(unfinished[:64]),
                    stream_refs=tuple((conn.id, s) for s in unfinished if (conn.id, s) in ctx.streams),
                    summary=(
                        f"{f.node} had opened {opened} of the {limit} bidirectional streams {peer} allows and "
                        f"{peer} did not raise the limit {during} ({limit - opened} left);{left}."
                    ),
                    cause=(
                        f"{peer} returns stream credit (MAX_STREAMS) only for streams finished both ways; at this "
                        "rate new requests will wait behind STREAMS_BLOCKED. Streams left open (no FIN) leak credit."
                    ),
                    fix=f"make {peer} finish every stream it answers, or raise its stream limit",
                    evidence=evidence,
                )
                break


def _waited(f: TraceFacts, w: CreditWait) -> bool:
    """Did the sender have more to send while at the limit?"""
    if w.blocked_frames or w.more_after:
        return True
    if w.end is not None:
        return False
    if w.scope is not None:
        side = f.streams.get(w.scope)
        return side is not None and side.app_bytes > side.sent_end
    return any(side.app_bytes > side.sent_end for side in f.streams.values())


def find_flow_control(ctx: Context) -> None:
    """Senders starved of flow-control credit, named on the receiver that granted too little."""
    by_receiver: dict[str, list[tuple[Joined, TraceFacts, CreditWait, float]]] = defaultdict(list)
    for conn in ctx.conns:
        for f in (conn.client, conn.server):
            if f is None:
                continue
            end = f.close_ms if f.close_ms is not None else f.last_ms
            floor = max(FLOW_CONTROL_WAIT_MIN_MS, FLOW_CONTROL_WAIT_MIN_RTTS * (f.rtt_ms or 0.0))
            for w in f.credit_waits:
                stop = w.end if w.end is not None else end
                if stop is None or stop - w.start < floor or not _waited(f, w):
                    continue
                by_receiver[ctx.peer_of(conn, f)].append((conn, f, w, stop - w.start))
            # Only the receiver's trace exists: the sender's *_BLOCKED frames are the evidence.
            if conn.other(f) is None and len(f.blocked_recv) >= 2:
                span = f.blocked_recv[-1][0][1] - f.blocked_recv[0][0][1]
                if span >= floor:
                    w = CreditWait(f.blocked_recv[0][1], f.blocked_recv[0][2] or 0, f.blocked_recv[0][0])
                    w.end = f.blocked_recv[-1][0][1]
                    w.blocked_frames = len(f.blocked_recv)
                    by_receiver[f.node].append((conn, f, w, span))
    for receiver, items in by_receiver.items():
        conns = tuple(dict.fromkeys(c.id for c, _, _, _ in items))
        senders = sorted(
            {f.node for _, f, _, _ in items if f.node != receiver}
            | {ctx.peer_of(c, f) for c, f, _, _ in items if f.node == receiver}
        )
        stuck = [(c, f, w) for c, f, w, _ in items if w.end is None]
        longest = max(d for _, _, _, d in items)
        total = sum(d for _, _, _, d in items)
        sids = sorted({w.scope for _, _, w, _ in items if w.scope is not None})
        frames = sum(w.blocked_frames for _, _, w, _ in items)
        scopes = []
        conn_waits = sum(1 for _, _, w, _ in items if w.scope is None)
        if conn_waits:
            scopes.append(f"the connection's MAX_DATA {plural(conn_waits, 'time')}")
        if sids:
            scopes.append(f"MAX_STREAM_DATA on {plural(len(sids), 'stream')}")
        evidence: list[Evidence] = []
        for _, f, w, _ in sorted(items, key=lambda x: -x[3])[: MAX_CREDIT_EVIDENCE // 2]:
            evidence.append(f.evidence(w.start_ref))
            if w.end_ref is not None:
                evidence.append(f.evidence(w.end_ref))
        severity = ERROR if stuck else WARNING
        said = f"; {plural(frames, 'DATA_BLOCKED / STREAM_DATA_BLOCKED frame')} sent" if frames else ""
        never = f"; on {plural(len(stuck), 'connection')} the credit never grew again" if stuck else ""
        ctx.add(
            kind="flow_control_blocked",
            severity=severity,
            node=receiver,
            peer=", ".join(senders) or None,
            connections=conns,
            streams=tuple(sids[:64]),
            stream_refs=tuple(
                (c.id, w.scope) for c, _, w, _ in items if w.scope is not None and (c.id, w.scope) in ctx.streams
            ),
            summary=(
                f"{', '.join(senders) or 'the sender'} waited at the flow-control limit {receiver} granted "
                f"({' and '.join(scopes) or 'credit'}): {plural(len(items), 'wait')}, {total / 1000:.1f} s in all, "
                f"the longest {longest / 1000:.1f} s{said}{never}."
            ),
            cause=(
                f"{receiver} grants little flow-control credit and raises it late (its application reads slowly, "
                "or its receive windows are small), so senders sit idle with data to send."
            ),
            fix=f"raise {receiver}'s receive windows (initial_max_data, initial_max_stream_data) or read faster",
            evidence=evidence,
        )
