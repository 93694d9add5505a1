"""Connections that made no progress: one end kept sending while nothing came back.

A silence is a gap between packets received while the end kept sending ack-eliciting
packets into it (PTO probes at growing intervals, new requests). With the peer's trace the
silence is told apart: the peer stopped (frozen, gone, unreachable both ways) or the peer
went on sending and its packets were lost. A silence that ends is a stall; one that lasts
until the connection ends is a peer that stopped answering.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

from .context import Context, plural
from .facts import TraceFacts
from .join import Joined, close_of
from .values import ERROR, INFO, WARNING, Evidence, StreamView

# A silence this long while sending is beyond any PTO on a working path, and far beyond the
# scheduling delays of a busy host (loopback on two busy cores stays under a second)...
STALL_MIN_MS = 3000.0
# ...and on long paths it must also last this many smoothed round trips.
STALL_MIN_RTTS = 10.0
# Ack-eliciting packets sent into the silence: at least the first PTO probes.
STALL_MIN_SENDS = 3
# Consecutive gaps between the packets sent into a silence that grow by this factor are PTO backoff.
BACKOFF_GROWTH = 1.5
# Close triggers that mean the connection died of the silence.
_DIED = ("idle_timeout", "handshake_timeout", "connection_lost", "timeout")


@dataclass
class _Silence:
    waiter: TraceFacts
    conn: Joined
    silent: str
    start: float
    end: float
    resumed: bool
    sends: list[tuple[float, int, tuple[str, int] | None]]
    # "frozen", "unreachable", "mute" (the peer stopped), "lost" (its packets were), "one end",
    # "wire" (both ends seen from a capture point), "not started" (the peer's process began after the silence did)
    verdict: str
    died: str | None = None  # the close trigger, when the connection ended of it
    failed: list[StreamView] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.end - self.start


def _count(times: list[float], a: float, b: float) -> int:
    return bisect.bisect_left(times, b) - bisect.bisect_right(times, a)


def _verdict(ctx: Context, peer: TraceFacts, sends: list[tuple[float, int, tuple[str, int] | None]], end: float) -> str:
    """Did the silent peer stop, or were packets lost? Judged by what became of the packets sent into the silence."""
    got = [peer.recv_pkts[k][0] for _, _, k in sends if k is not None and k in peer.recv_pkts]
    if got:
        # The path to it works: did it answer after the first probe reached it?
        return "lost" if _count(peer.sent_times, min(got), end) else "mute"
    if _count(peer.sent_times, sends[0][0], end):
        return "unreachable"  # nothing got through either way
    if _alive(ctx, peer.node, sends[0][0], end):
        return "lost"  # at work elsewhere, and never saw these packets: lost on the way to it
    return "frozen"


def _alive(ctx: Context, node: str, start: float, end: float) -> bool:
    """Did any trace of `node` show it at work between `start` and `end`? A frozen process logs nothing."""
    for f in ctx.facts:
        if f.node != node:
            continue
        if _count(f.sent_times, start, end) or _count(f.recv_times, start, end):
            return True
        if any(start < t < end for t, _, _, _ in f.node_events):
            return True
    return False


def _silences_of(ctx: Context, conn: Joined, f: TraceFacts) -> list[_Silence]:
    if not f.eliciting_sent:
        return []
    other = conn.other(f)
    info = close_of(conn)
    end_of_trace = f.close_ms if f.close_ms is not None else f.last_ms
    assert end_of_trace is not None
    floor = max(STALL_MIN_MS, STALL_MIN_RTTS * (f.rtt_ms or 0.0))
    recv = f.recv_times
    groups: dict[int, list[tuple[float, int, tuple[str, int] | None]]] = {}
    for sent in f.eliciting_sent:
        if sent[0] >= end_of_trace:
            break
        groups.setdefault(bisect.bisect_right(recv, sent[0]), []).append(sent)
    out: list[_Silence] = []
    for i, sends in groups.items():
        if len(sends) < STALL_MIN_SENDS:
            continue
        start = recv[i - 1] if i > 0 else sends[0][0]
        resumed = i < len(recv) and recv[i] <= end_of_trace
        end = recv[i] if resumed else end_of_trace
        died = None
        if not resumed and info is not None and info.time_ms >= start:
            trig = info.trigger.lower()
            if any(d in trig for d in _DIED):
                died = trig.replace("_", " ")
            elif "timeout" in info.reason.lower():
                died = info.reason.lower()
        if end - start < floor and died is None:
            continue
        if died is not None and "handshake" in died:
            continue  # a handshake that never completed is named by its timeout
        silent = other.node if other is not None else ctx.peer_of(conn, f)
        began = _started_ms(ctx, silent)
        if resumed and began is not None and start < began <= end:
            verdict = "not started"  # dialled before its process ran; the handshake waited for it
        elif other is not None and other.on_wire and f.on_wire:
            if other.packets_sent == 0:
                continue  # a server that never answered at all: the handshake's finding names it
            verdict = "wire"  # every packet of both ends is seen, and nothing came from it
        elif (
            other is None
            or not other.has_packets
            or other.on_wire
            or (other.first_ms is not None and other.first_ms > start)
        ):
            verdict = "one end"  # no trace of the peer itself for the silence
        elif other.last_ms is not None and other.last_ms <= start:
            verdict = "frozen"  # its trace ends where the silence begins
        else:
            verdict = _verdict(ctx, other, sends, end)
        s = _Silence(f, conn, silent, start, end, resumed, sends, verdict, died)
        for (cid, _sid), v in ctx.streams.items():
            if cid == conn.id and _gave_up_within(conn, v, start, end):
                s.failed.append(v)
        out.append(s)
    return out


def _started_ms(ctx: Context, node: str) -> float | None:
    """When `node`'s process started, as its own node trace says (dht:node_started); None if no trace says."""
    times = [t for f in ctx.facts if f.node == node for t, name, _, _ in f.node_events if name == "dht:node_started"]
    return min(times) if times else None


def _gave_up_within(conn: Joined, v: StreamView, start: float, end: float) -> bool:
    """The requester gave up on the stream during the silence: it timed out, or it abandoned it unanswered."""
    if v.timed_out is not None:
        return start <= (v.timed_out.time_ms or 0.0) <= end
    if v.missing is None:
        return False
    opener = conn.end(v.opener_role)
    side = opener.streams.get(v.stream_id) if opener is not None else None
    return side is not None and any(start <= r[1] <= end for r in side.resets_sent)


def _backoff(sends: list[tuple[float, int, tuple[str, int] | None]]) -> str:
    """'0.2 → 0.4 → 0.8 s' when the gaps between sends grow like PTO backoff, else ''."""
    gaps = [b[0] - a[0] for a, b in zip(sends, sends[1:], strict=False)]
    best: list[float] = []
    run: list[float] = []
    for g in gaps:
        if run and g >= BACKOFF_GROWTH * run[-1]:
            run.append(g)
        else:
            run = [g]
        if len(run) > len(best):
            best = list(run)
    if len(best) < 3:
        return ""
    return " → ".join(f"{g / 1000:.2g}" for g in best[-5:]) + " s"


def find_stalls(ctx: Context) -> None:
    silences: list[_Silence] = []
    for conn in ctx.conns:
        for f in (conn.client, conn.server):
            if f is not None:
                silences.extend(_silences_of(ctx, conn, f))
    early = [s for s in silences if s.verdict == "not started"]
    for node in dict.fromkeys(s.silent for s in early):
        _emit_not_started(ctx, node, [s for s in early if s.silent == node])
    # Attribute to the node common to most silences: a frozen node leaves all its peers waiting,
    # and in its own trace (if it wrote one) every peer looks silent too.
    lossy = {f.node for f in ctx.findings if f.kind == "packet_loss" and f.severity != INFO and f.node}
    remaining = [s for s in silences if s.verdict != "not started"]
    while remaining:
        count: Counter[str] = Counter()
        for s in remaining:
            count[s.silent] += 2  # the silent end is the likelier culprit than the one waiting
            count[s.waiter.node] += 1
        node = count.most_common(1)[0][0]
        mine = [s for s in remaining if node in (s.silent, s.waiter.node)]
        remaining = [s for s in remaining if s not in mine]
        # Its peers waiting on it come first; its own wait on them is the same silence, seen from it.
        waited_on = [s for s in mine if s.silent == node] or mine
        own = [s for s in mine if s not in waited_on]
        for kind in ("peer_unresponsive", "connection_stalled"):
            group = [s for s in waited_on if _kind(s, lossy) == kind]
            if group:
                _emit(ctx, node, kind, group, lossy, own)
                own = []


def _emit_not_started(ctx: Context, node: str, group: list[_Silence]) -> None:
    """Peers that dialled `node` before its process ran: their handshakes waited for it, nothing broke."""
    base = ctx.first_ms or 0.0
    began = _started_ms(ctx, node) or 0.0
    longest = max(group, key=lambda s: s.duration)
    waiters = sorted({s.waiter.node for s in group})
    backoff = next((b for b in (_backoff(s.sends) for s in group) if b), "")
    conns = tuple(dict.fromkeys(s.conn.id for s in group))
    sent = plural(sum(len(s.sends) for s in group), "packet")
    ctx.add(
        kind="connection_stalled",
        severity=INFO,
        node=node,
        peer=", ".join(waiters),
        connections=conns,
        streams=(),
        first_ms=min(s.start for s in group),
        last_ms=max(s.end for s in group),
        summary=(
            f"{', '.join(waiters)} dialled {node} before it was running (it started at +{(began - base) / 1000:.1f} s) "
            f"and waited up to {longest.duration / 1000:.1f} s, sending {sent}"
            f"{f', gaps growing {backoff} (PTO backoff)' if backoff else ''}; then the connection went on."
        ),
        cause=f"{node}'s process started after its peers' did; the handshake's retransmissions bridged the gap.",
        fix=f"nothing to fix; start {node} first to spare its peers the wait",
        evidence=[
            Evidence(s.waiter.path, rec, "quic:packet_sent", t, s.waiter.index)
            for s in group[:3]
            for t, rec, _ in s.sends[:2]
        ],
    )


def _kind(s: _Silence, lossy: set[str]) -> str:
    if s.verdict == "lost" or s.resumed:
        return "connection_stalled"
    if s.verdict == "one end" and s.silent in lossy:
        return "connection_stalled"  # confirmed loss on the silent node's other connections explains it
    return "peer_unresponsive"


def _emit(ctx: Context, node: str, kind: str, group: list[_Silence], lossy: set[str], own: list[_Silence]) -> None:
    group.sort(key=lambda s: s.start)
    base = ctx.first_ms or 0.0
    conns = tuple(dict.fromkeys(s.conn.id for s in group + own))
    waiters = sorted({s.waiter.node for s in group} - {node}) or sorted({s.waiter.node for s in group})
    sends = sum(len(s.sends) for s in group)
    longest = max(group, key=lambda s: s.duration)
    backoff = next((b for b in (_backoff(s.sends) for s in group) if b), "")
    died = [s for s in group if s.died]
    died_own = [s for s in own if s.died and s.conn not in {d.conn for d in died}]
    failed = [v for s in group for v in s.failed]
    verdicts = {s.verdict for s in group}
    if verdicts == {"lost"}:
        why = f"; {node} kept sending too, but none of its packets arrived"
    elif verdicts == {"frozen"}:
        why = f"; {node}'s own trace shows it neither received nor sent meanwhile"
    elif verdicts == {"unreachable"}:
        why = f"; nothing arrived either way: what {node} sent was lost too"
    elif verdicts == {"mute"}:
        why = f"; {node} received those packets and sent nothing back"
    elif verdicts == {"wire"}:
        why = (
            f"; on the wire nothing came from {node} meanwhile: whether the packets sent to it reached it cannot "
            "be seen from where the capture was made"
        )
    elif "one end" in verdicts and node in lossy:
        why = f"; packets to and from {node} are lost on its other connections too"
    elif "one end" in verdicts:
        why = f"; with one end recorded it cannot be told whether {node} froze or the path dropped its packets"
    else:
        why = ""
    if own:
        why += f"; in {node}'s own trace nothing came from {', '.join(sorted({s.silent for s in own}))} either"
    effects = []
    if died or died_own:
        effects.append(f"{plural(len(died) + len(died_own), 'connection')} ended by {(died or died_own)[0].died}")
    if failed:
        timed_out = sum(1 for v in failed if v.timed_out is not None)
        if timed_out == len(failed):
            how = "timed out"
        elif timed_out:
            how = f"went unanswered ({timed_out} timed out, the rest abandoned)"
        else:
            how = "went unanswered (abandoned by the requester)"
        effects.append(f"{plural(len(failed), 'request')} {how}")
    effect = f"; {', '.join(effects)}" if effects else ""
    where = f"on {plural(len(conns), 'connection')}"
    if kind == "peer_unresponsive":
        summary = (
            f"{node} stopped answering at +{(group[0].start - base) / 1000:.1f} s {where}: "
            f"{', '.join(waiters)} kept sending ({plural(sends, 'packet')}"
            f"{f', gaps growing {backoff}: PTO backoff' if backoff else ''}) and got nothing back for up to "
            f"{longest.duration / 1000:.1f} s{why}{effect}."
        )
        cause = (
            f"{node} went silent: a frozen or overloaded process, a crash, or a path that drops everything to and "
            f"from it; its peers retransmit with growing backoff until they give up."
        )
        fix = f"find out why {node} stopped (process state, CPU, firewall) and check the path to it"
    else:
        resumed = [s for s in group if s.resumed]
        if len(conns) == 1:
            came_back = "; then it resumed" if resumed else ""
            head = f"The connection with {node} made no progress for {longest.duration / 1000:.1f} s"
        else:
            came_back = f"; {plural(len(resumed), 'connection')} resumed" if resumed else ""
            head = f"{len(conns)} connections with {node} made no progress for up to {longest.duration / 1000:.1f} s"
        summary = (
            f"{head} (from +{(longest.start - base) / 1000:.1f} s): "
            f"{', '.join(waiters)} sent {plural(sends, 'packet')} into the silence"
            f"{f', gaps growing {backoff} (PTO backoff)' if backoff else ''}"
            f"{came_back}{why}{effect}."
        )
        cause = (
            f"Nothing from {node} arrived for seconds while its peers waited on it: the packets were lost on the "
            "path, or it paused; every request in flight waited the whole time."
        )
        fix = f"check the path to and from {node} for loss or outages, and the host for pauses"
    severity = ERROR if died or failed else WARNING
    evidence: list[Evidence] = []
    for s in group[:3]:
        for t, rec, _ in s.sends[:3] + s.sends[-1:]:
            evidence.append(s.waiter.evidence((rec, t, "quic:packet_sent", "")))
        info = close_of(s.conn) if s.died else None
        if info is not None:
            evidence.append(info.facts.evidence(info.ref))
    evidence += [v.timed_out for v in failed[:2] if v.timed_out is not None]
    for s in group + own:
        if s.died:
            ctx.silenced.add(s.conn.id)
    ctx.add(
        kind=kind,
        severity=severity,
        node=node,
        peer=", ".join(waiters) or None,
        connections=conns,
        streams=tuple(sorted({v.stream_id for v in failed})),
        stream_refs=tuple((v.connection, v.stream_id) for v in failed),
        first_ms=group[0].start,
        last_ms=max(s.end for s in group),
        summary=summary,
        cause=cause,
        fix=fix,
        evidence=evidence,
    )
