"""Packet loss told apart from spurious retransmission, and traces that cannot show delivery.

A packet its sender declared lost is only lost if the receiver never got it. With both ends,
the receiver's trace decides; with one end, an ACK from the peer proves receipt, and a loss
nothing contradicts cannot be confirmed. Real loss is a warning when it is more than noise or
delayed a request, an error when requests failed because of it.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .context import Context, plural
from .facts import TraceFacts
from .join import Joined
from .values import ERROR, INFO, WARNING, Evidence, StreamView
from .wire import WireFates, wire_fates, wire_summary

# Packets sent this close to the receiver's last event (or its close) may be in flight, not lost.
LOSS_TAIL_MARGIN_MS = 50.0
# Loss below both of these is the noise of any real path: reported, never a warning by itself.
LOSS_NOISE_RATE = 0.02
LOSS_NOISE_MIN_PACKETS = 3
MAX_LOSS_EVIDENCE = 8

Key = tuple[str, int]


@dataclass
class _Direction:
    """What happened to the packets one end sent on one connection."""

    sender: TraceFacts
    receiver: str  # node name, or "<node>'s peer" when only the sender's trace exists
    conn: Joined
    both_ends: bool
    sent: int = 0  # packets whose fate the traces can tell
    lost: list[Key] = field(default_factory=list)  # the receiver never got them
    spurious: list[Key] = field(default_factory=list)  # declared lost, yet received
    unconfirmed: list[Key] = field(default_factory=list)  # declared lost; receipt unknowable
    skipped: int = 0  # of the unconfirmed: not declared lost, but left out of the peer's later ACKs
    wire: WireFates | None = None  # judged from a network vantage: how the loss shows there

    @property
    def lost_count(self) -> int:
        """Lost packets, counting those missing from the sender's numbering on the wire."""
        return self.wire.lost_count if self.wire is not None else len(self.lost)


def _received(f: TraceFacts, other: TraceFacts | None, key: Key) -> bool:
    if other is not None and (key in other.recv_pkts or key in other.dropped_keys):
        return True
    acked = f.peer_acked.get(key[0])
    return acked is not None and key[1] in acked


def _directions(ctx: Context) -> list[_Direction]:
    out: list[_Direction] = []
    for conn in ctx.conns:
        for f in (conn.client, conn.server):
            if f is None or f.packets_sent == 0:
                continue
            other = conn.other(f)
            if other is not None and f.on_wire and other.on_wire:
                fates = wire_fates(f, other)
                d = _Direction(f, other.node, conn, True, fates.sent, fates.lost, fates.spurious, wire=fates)
                out.append(d)
                continue
            both = other is not None and other.has_packets and not (f.on_wire or other.on_wire)
            d = _Direction(f, ctx.peer_of(conn, f), conn, both)
            declared = {k for k in f.lost_keys if k is not None}
            if both:
                assert other is not None
                start = other.first_ms if other.first_ms is not None else float("-inf")
                end = min(x for x in (other.last_ms, other.close_ms) if x is not None)
                horizon = end - max(LOSS_TAIL_MARGIN_MS, 2 * (f.rtt_ms or other.rtt_ms or 0.0))
                for key, (t, _rec, _size, _sids, _elicit, closes) in f.sent_pkts.items():
                    if _received(f, other, key):
                        d.sent += 1
                        if key in declared:
                            d.spurious.append(key)
                    elif closes or not start <= t <= horizon:
                        # Before the receiver's trace began, after it closed, or a CONNECTION_CLOSE
                        # meeting a peer that stopped logging: its fate is unknowable.
                        if key in declared:
                            d.unconfirmed.append(key)
                    else:
                        d.sent += 1
                        d.lost.append(key)
                # Packets the receiver dropped without logging their number did arrive.
                arrived = min(len(d.lost), other.dropped_packets)
                if arrived:
                    d.lost = d.lost[: len(d.lost) - arrived]
            else:
                d.sent = f.packets_sent
                for key in declared:
                    (d.spurious if _received(f, None, key) else d.unconfirmed).append(key)
                # The peer acknowledged later packets and never these: a hint of loss, seen from one end.
                for key, (_t, _rec, _size, _sids, elicit, closes) in f.sent_pkts.items():
                    acked = f.peer_acked.get(key[0])
                    if not elicit or closes or key in declared or acked is None or not acked.hi:
                        continue
                    if key[1] < acked.hi[-1] and key[1] not in acked:
                        d.unconfirmed.append(key)
                        d.skipped += 1
            d.unconfirmed.extend(k for k in declared - set(f.sent_pkts) if k not in d.unconfirmed)
            out.append(d)
    return out


def _attribute(directions: list[_Direction], weight_of: str) -> list[tuple[str, list[_Direction]]]:
    """Group directions under the node common to most of their packets: a lossy node's peers are not to blame."""

    def count(d: _Direction) -> int:
        return d.lost_count if weight_of == "lost" else len(getattr(d, weight_of))

    remaining = [d for d in directions if count(d)]
    groups: list[tuple[str, list[_Direction]]] = []
    while remaining:
        weight: Counter[str] = Counter()
        sent: Counter[str] = Counter()
        for d in remaining:
            n = count(d)
            weight[d.sender.node] += n
            weight[d.receiver] += n
            sent[d.sender.node] += n
        # A tie (one lossy direction, say) goes to the node that sent the lost packets, then by
        # name: never to whichever happened to be counted first.
        top = max(weight.values())
        node = min((n for n, w in weight.items() if w == top), key=lambda n: (-sent[n], n))
        mine = [d for d in remaining if node in (d.sender.node, d.receiver)]
        remaining = [d for d in remaining if d not in mine]
        groups.append((node, mine))
    return groups


def _streams_of(ctx: Context, dirs: list[_Direction]) -> list[StreamView]:
    """The request streams whose data rode in the lost packets."""
    refs: dict[tuple[str, int], StreamView] = {}
    for d in dirs:
        for key in d.lost:
            for sid in d.sender.sent_pkts[key][3]:
                view = ctx.streams.get((d.conn.id, sid))
                if view is not None:
                    refs.setdefault((d.conn.id, sid), view)
    return sorted(refs.values(), key=lambda v: (v.first_ms or 0.0, v.connection, v.stream_id))


def _failed(ctx: Context, view: StreamView) -> bool:
    """The requester gave up on the stream: it timed out or reset its side."""
    if view.timed_out is not None:
        return True
    conn = ctx.conn_by_id[view.connection]
    opener = conn.end(view.opener_role)
    side = opener.streams.get(view.stream_id) if opener is not None else None
    return bool(side and side.resets_sent)


def _sent_evidence(d: _Direction, keys: list[Key]) -> list[Evidence]:
    f = d.sender
    return [f.evidence((f.sent_pkts[k][1], f.sent_pkts[k][0], "quic:packet_sent", "")) for k in keys]


def find_loss(ctx: Context) -> None:
    directions = _directions(ctx)
    for node, dirs in _attribute(directions, "lost"):
        conns = {d.conn.id for d in dirs}
        # The clean directions of the same connections count too: they show loss that is one-way.
        clean = [d for d in directions if d.conn.id in conns and not d.lost_count and d.both_ends]
        _real_loss(ctx, node, dirs + [d for d in clean if node in (d.sender.node, d.receiver)])
    for node, dirs in _attribute(directions, "unconfirmed"):
        _unconfirmed_loss(ctx, node, dirs)
    spurious = [d for d in directions if d.spurious]
    if spurious:
        _spurious(ctx, spurious)  # one finding: a cost, the same story wherever it happened


def _real_loss(ctx: Context, node: str, dirs: list[_Direction]) -> None:
    sent = sum(d.sent for d in dirs)
    lost = sum(d.lost_count for d in dirs)
    rate = lost / sent if sent else 1.0
    out_sent = sum(d.sent for d in dirs if d.sender.node == node)
    out_lost = sum(d.lost_count for d in dirs if d.sender.node == node)
    in_sent, in_lost = sent - out_sent, lost - out_lost
    conns = tuple(dict.fromkeys(d.conn.id for d in dirs))
    peers = sorted({d.receiver if d.sender.node == node else d.sender.node for d in dirs})
    parts = []
    if out_sent:
        parts.append(f"sent by {node}: {out_lost}/{out_sent}")
    if in_sent:
        parts.append(f"sent to {node}: {in_lost}/{in_sent}")
    one_way = ""
    direction = None
    if out_lost and not in_lost and in_sent >= LOSS_NOISE_MIN_PACKETS:
        one_way = f"; only packets sent by {node} were lost (one direction)"
        direction = "sent"
    elif in_lost and not out_lost and out_sent >= LOSS_NOISE_MIN_PACKETS:
        one_way = f"; only packets sent to {node} were lost (one direction)"
        direction = "received"

    views = _streams_of(ctx, dirs)
    failed = [v for v in views if _failed(ctx, v)]
    noise = lost < LOSS_NOISE_MIN_PACKETS or rate < LOSS_NOISE_RATE
    if failed:
        severity = ERROR
        effect = f"; {plural(len(failed), 'request')} whose packets were lost failed (timed out or abandoned)"
    elif views:
        severity = WARNING
        effect = f"; {plural(len(views), 'request stream')} waited for retransmissions"
    elif not noise:
        severity = WARNING
        effect = ""
    else:
        severity = INFO
        effect = "; within the noise of any path, and no request was held up"
    evidence: list[Evidence] = []
    for d in dirs:
        evidence.extend(_sent_evidence(d, d.lost[:MAX_LOSS_EVIDENCE]))
        if d.wire is not None:
            # The packet right after a gap in the sender's numbering shows where the gap is.
            evidence.extend(_sent_evidence(d, [k for k, _ in d.wire.missing[:MAX_LOSS_EVIDENCE]]))
    evidence = sorted(evidence, key=lambda e: e.time_ms or 0.0)[:MAX_LOSS_EVIDENCE]
    wire = [d.wire for d in dirs if d.wire is not None]
    seen = (
        f"seen on the wire: {wire_summary(wire)}"
        if wire and len(wire) == len(dirs)
        else "the receiver's trace never shows them"
    )
    evidence += [v.timed_out for v in failed[:3] if v.timed_out is not None]
    shown = failed or views
    ctx.add(
        kind="packet_loss",
        severity=severity,
        node=node,
        peer=", ".join(peers) or None,
        connections=conns,
        streams=tuple(sorted({v.stream_id for v in shown})),
        stream_refs=tuple((v.connection, v.stream_id) for v in shown),
        summary=(
            f"{lost} of {sent} packets lost ({rate:.1%}) on {plural(len(conns), 'connection')} of {node} "
            f"({'; '.join(parts)}): {seen}{one_way}{effect}."
        ),
        cause=(
            f"Packets are lost on the path to or from {node} (network loss, congestion, a full socket buffer or "
            "a loss fault); QUIC retransmits them, so requests slow down and may time out."
        ),
        fix=f"check the link and socket buffers of {node} (or its loss setting)",
        evidence=evidence,
        direction=direction,
    )


def _unconfirmed_loss(ctx: Context, node: str, dirs: list[_Direction]) -> None:
    n = sum(len(d.unconfirmed) for d in dirs)
    skipped = sum(d.skipped for d in dirs)
    sent = sum(d.sent for d in dirs)
    conns = tuple(dict.fromkeys(d.conn.id for d in dirs))
    one_ended = [d for d in dirs if not d.both_ends]
    why = (
        "only the sender's trace exists and no ACK shows them received"
        if one_ended and len(one_ended) == len(dirs)
        else "they were sent before the receiver's trace began or after it closed"
        if not one_ended
        else "the receiver's trace is missing or did not cover them"
    )
    evidence: list[Evidence] = []
    for d in dirs:
        refs = [r for r, k in zip(d.sender.lost, d.sender.lost_keys, strict=False) if k in d.unconfirmed]
        evidence.extend(d.sender.evidence(r) for r in refs[:MAX_LOSS_EVIDENCE])
    ctx.add(
        kind="packet_loss",
        severity=INFO,
        node=node,
        peer=", ".join(sorted({d.receiver if d.sender.node == node else d.sender.node for d in dirs})) or None,
        connections=conns,
        streams=(),
        summary=(
            f"{plural(n, 'packet')} {_how_lost(n, skipped)} on {plural(len(conns), 'connection')} of {node}"
            f"{f' (of {sent} sent)' if sent else ''}; the loss could not be confirmed: {why}."
        ),
        cause=(
            "A sender declares a packet lost when its ACK is late; whether the packet really went missing only "
            "the receiver's trace can tell."
        ),
        fix=(
            "record both ends of the connection to tell real loss from late ACKs"
            if one_ended
            else "nothing to fix: the receiver was not there yet (or had closed) when they were sent"
        ),
        evidence=evidence,
    )


def _how_lost(n: int, skipped: int) -> str:
    if not skipped:
        return "declared lost"
    if skipped == n:
        return "left out of the peer's ACKs"
    return f"declared lost or left out of the peer's ACKs ({skipped})"


def _spurious(ctx: Context, dirs: list[_Direction]) -> None:
    n = sum(len(d.spurious) for d in dirs)
    by_sender: Counter[str] = Counter()
    for d in dirs:
        by_sender[d.sender.node] += len(d.spurious)
    node = by_sender.most_common(1)[0][0]
    resent = sum(d.sender.sent_pkts[k][2] for d in dirs for k in d.spurious if k in d.sender.sent_pkts)
    declared_after: list[float] = []
    arrived_after: list[float] = []
    evidence: list[Evidence] = []
    for d in dirs:
        f = d.sender
        when_lost = {k: r for r, k in zip(f.lost, f.lost_keys, strict=False) if k is not None}
        other = d.conn.other(f)
        for k in d.spurious:
            sent = f.sent_pkts.get(k)
            lost_ref = when_lost.get(k)
            if sent is not None and lost_ref is None and d.wire is not None and len(evidence) < MAX_LOSS_EVIDENCE:
                evidence.append(f.evidence((sent[1], sent[0], "quic:packet_sent", "")))
            if sent is None or lost_ref is None:
                continue
            declared_after.append(lost_ref[1] - sent[0])
            got = other.recv_pkts.get(k) if other is not None else None
            if got is not None:
                arrived_after.append(got[0] - sent[0])
            if len(evidence) < MAX_LOSS_EVIDENCE:
                evidence.append(f.evidence(lost_ref))
                if other is not None and got is not None:
                    evidence.append(other.evidence((got[1], got[0], "quic:packet_received", "")))
    conns = tuple(dict.fromkeys(d.conn.id for d in dirs))
    peers = sorted({d.receiver for d in dirs} - {node})
    proof = "received" if any(d.both_ends and d.wire is None for d in dirs) else "acknowledged"
    # From the wire a loss declaration is not visible; the data sent again is.
    declared = "resent the data of" if all(d.wire is not None for d in dirs) else "declared"
    lost_word = "" if declared != "declared" else " lost"
    if len(by_sender) == 1:
        who = f"{node} {declared} {plural(n, 'packet')}{lost_word} that {', '.join(peers)} {proof}"
    else:
        most = ", ".join(f"{s} {k}" for s, k in by_sender.most_common(4))
        more = f", and {len(by_sender) - 4} more" if len(by_sender) > 4 else ""
        senders = plural(len(by_sender), "node")
        who = f"{senders} {declared} {plural(n, 'packet')}{lost_word} that their peers {proof} ({most}{more})"
    timing = ""
    if declared_after:
        timing = f"; declared lost {statistics.median(declared_after):.0f} ms after sending (median)"
        if arrived_after:
            timing += f", while they had arrived within {max(arrived_after):.0f} ms"
    ctx.add(
        kind="spurious_retransmission",
        severity=INFO,
        node=node,
        peer=", ".join(peers) or None,
        connections=conns,
        streams=(),
        summary=(
            f"{who} (spurious retransmissions on {plural(len(conns), 'connection')}): nothing was lost; "
            f"{resent:,} bytes were resent{timing}."
        ),
        cause=(
            "Loss detection fired before the ACK came back (a busy host delays packets and ACKs, or the RTT "
            "estimate was still low, e.g. while processes start); the cost is the bytes resent and a smaller "
            "congestion window, not lost data."
        ),
        fix="nothing to fix unless it is frequent: then look for a host too busy to answer in time",
        evidence=evidence,
    )


def find_not_visible(ctx: Context) -> None:
    by_node: dict[str, list[TraceFacts]] = defaultdict(list)
    by_capture: dict[str, list[Joined]] = defaultdict(list)
    for conn in ctx.conns:
        for f in (conn.client, conn.server):
            if f is not None and f.on_wire:
                source = f.info.extra.get("capture_file") or f.path  # a converted capture counts as its capture
                if conn not in by_capture[source]:
                    by_capture[source].append(conn)
            elif f is not None and not f.app_visible:
                by_node[f.node].append(f)
    for path, conns in by_capture.items():
        ends = [{f.node for f in (c.client, c.server) if f is not None} for c in conns]
        common = set.intersection(*ends) if ends else set()
        ctx.add(
            kind="application_not_visible",
            severity=INFO,
            node=sorted(common)[0] if len(common) == 1 else None,
            connection=conns[0].id if len(conns) == 1 else None,
            streams=(),
            connections=tuple(c.id for c in conns),
            summary=(
                f"{Path(path).name} shows {plural(len(conns), 'connection')} as the network saw "
                f"{'it' if len(conns) == 1 else 'them'}: what each end sent and what the other acknowledged, never "
                "what an application took from its transport."
            ),
            cause=(
                "A packet capture sees the wire, not the processes at its ends: a request acknowledged and never "
                "answered may never have reached the application, or reached it and stayed unanswered."
            ),
            evidence=[],
        )
    for node, traces in by_node.items():
        files = ", ".join(sorted({Path(t.path).name for t in traces})[:4])
        fmt = ", ".join(sorted({t.info.format for t in traces}))
        mine = {id(t) for t in traces}
        ctx.add(
            kind="application_not_visible",
            severity=INFO,
            node=node,
            connection=None,
            streams=(),
            connections=tuple(c.id for c in ctx.conns if id(c.client) in mine or id(c.server) in mine),
            summary=(
                f"{plural(len(traces), 'trace')} of {node} ({files}; {fmt}) "
                f"{'logs' if len(traces) == 1 else 'log'} transport events only: "
                "whether the application took each stream's data, and whether it answered, cannot be seen."
            ),
            cause=(
                "This stack does not log delivery to the application (quic:stream_data_moved transport → "
                "application); only transport-level problems can be diagnosed from it."
            ),
            evidence=[],
        )
