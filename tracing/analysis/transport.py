"""Transport findings: stream credit, packet loss, ALPN, and traces that cannot show delivery."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from .context import Context, plural
from .facts import EMPTY_SIDE, TraceFacts
from .join import Joined, close_of
from .values import ALPN_MISMATCH_CODE, ERROR, INFO, WARNING, Evidence

# Packets sent this close to the receiver's last event may be in flight, not lost.
LOSS_TAIL_MARGIN_MS = 50.0
# A loss rate above this is an error, but only over enough packets to mean something.
LOSS_ERROR_RATE = 0.10
LOSS_ERROR_MIN_PACKETS = 20


def find_stream_limit(ctx: Context) -> None:
    for conn in ctx.conns:
        for f in (conn.client, conn.server):
            if f is None or not f.blocked:
                continue
            last_ref, limit = f.blocked[-1]
            if any(t >= last_ref[1] and m > limit for t, m in f.max_streams_recv):
                continue  # credit came back after the last block: a transient stall, not exhaustion
            role = f.role or "client"
            other = conn.other(f)
            peer = other.node if other is not None else "the peer"
            my_parity = 0 if role == "client" else 1
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
            else:
                # Blocked, but the trace shows no stream the peer left open: say so, don't blame.
                severity = WARNING
                summary = f"{head}; the trace shows no stream {peer} left unfinished."
                cause = (
                    f"{peer} returns no stream credit: either it holds streams open that this trace does not "
                    "show, or its stream limit is too low for this load; queue requests that find no credit."
                )
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
                evidence=evidence,
            )


def find_loss(ctx: Context) -> None:
    # Per direction: (sender facts, receiver node, sent, lost, evidence refs).
    directions: list[tuple[TraceFacts, str | None, int, int, int, int, list[Evidence], str]] = []
    for conn in ctx.conns:
        for f in (conn.client, conn.server):
            if f is None or f.packets_sent == 0:
                continue
            other = conn.other(f)
            declared = len(f.lost)
            unseen_refs: list[tuple[float, int]] = []
            if other is not None and other.has_packets and other.last_ms is not None:
                margin = max(LOSS_TAIL_MARGIN_MS, 2 * (f.smoothed_rtt or other.smoothed_rtt or 0.0))
                horizon = other.last_ms - margin
                start = other.first_ms if other.first_ms is not None else float("-inf")
                recv = other.recv_pkts
                for key, (t, rec) in f.sent_pkts.items():
                    if start <= t <= horizon and key not in recv:
                        unseen_refs.append((t, rec))
            # Packets the receiver dropped (undecryptable yet, duplicates) did arrive.
            unseen = max(0, len(unseen_refs) - (other.dropped if other is not None else 0))
            lost = max(declared, unseen)
            if lost == 0:
                continue
            ev = [f.evidence(r) for r in f.lost[:8]]
            if not ev:
                unseen_refs.sort()
                ev = [Evidence(f.path, rec, "quic:packet_sent", t, f.index) for t, rec in unseen_refs[:8]]
            directions.append((f, other.node if other else None, f.packets_sent, lost, declared, unseen, ev, conn.id))
    # Attribute to the node common to most lost packets: in a lossy node's recording every
    # direction touching it loses packets, and its peers are not to blame.
    remaining = list(range(len(directions)))
    while remaining:
        weight: Counter[str] = Counter()
        for i in remaining:
            f, recv, _, lost, *_ = directions[i]
            weight[f.node] += lost
            if recv is not None:
                weight[recv] += lost
        node = weight.most_common(1)[0][0]
        mine = [i for i in remaining if directions[i][0].node == node or directions[i][1] == node]
        taken = set(mine)
        remaining = [i for i in remaining if i not in taken]
        sent = sum(directions[i][2] for i in mine)
        lost = sum(directions[i][3] for i in mine)
        declared = sum(directions[i][4] for i in mine)
        unseen = sum(directions[i][5] for i in mine)
        rate = lost / sent if sent else 0.0
        out_sent = sum(directions[i][2] for i in mine if directions[i][0].node == node)
        out_lost = sum(directions[i][3] for i in mine if directions[i][0].node == node)
        in_sent, in_lost = sent - out_sent, lost - out_lost
        conns = tuple(dict.fromkeys(directions[i][7] for i in mine))
        peers = sorted(
            {(directions[i][1] if directions[i][0].node == node else directions[i][0].node) or "?" for i in mine}
        )
        parts = []
        if out_sent:
            parts.append(f"sent by {node}: {out_lost}/{out_sent}")
        if in_sent:
            parts.append(f"sent to {node}: {in_lost}/{in_sent}")
        severity = ERROR if rate > LOSS_ERROR_RATE and sent >= LOSS_ERROR_MIN_PACKETS else WARNING
        evidence = [e for i in mine for e in directions[i][6]]
        ctx.add(
            kind="packet_loss",
            severity=severity,
            node=node,
            peer=", ".join(peers) or None,
            connection=conns[0] if len(conns) == 1 else None,
            connections=conns,
            streams=(),
            summary=(
                f"{lost} of {sent} packets lost ({rate:.1%}) on {plural(len(conns), 'connection')} of {node} "
                f"({'; '.join(parts)}); {declared} declared lost by the sender, {unseen} never seen by the "
                "receiver."
            ),
            cause=(
                f"Packets are lost on the path to or from {node} (network loss, congestion, or a loss fault); "
                "QUIC retransmits, but requests slow down and may time out: check the link or the node's "
                "loss setting."
            ),
            evidence=evidence,
        )


def find_alpn(ctx: Context) -> None:
    votes: Counter[str] = Counter()
    per_node: dict[str, str] = {}
    for f in ctx.facts:
        if f.alpns and f.node not in per_node:
            per_node[f.node] = f.alpns[0]
    votes.update(per_node.values())
    top = votes.most_common(2)
    # The ALPN most nodes offer is the expected one; a tie names no culprit.
    majority = top[0][0] if top and (len(top) == 1 or top[0][1] > top[1][1]) else None
    groups: dict[str, list[tuple[Joined, Evidence, str, str]]] = defaultdict(list)
    for conn in ctx.conns:
        trigger, reason, code, _, ref, f = close_of(conn)
        if ref is None or f is None:
            continue
        if not (trigger == "alpn_mismatch" or code == ALPN_MISMATCH_CODE or "alpn" in (reason or "").lower()):
            continue
        ends = [e for e in (conn.client, conn.server) if e is not None]
        alpn = {e.node: (e.alpns[0] if e.alpns else None) for e in ends}
        culprits: list[str] = []
        if majority is not None:
            culprits = [e.node for e in ends if alpn[e.node] is not None and alpn[e.node] != majority]
        if not culprits:
            culprits = [e.node for e in ends]
            if len(ends) == 1:
                culprits.append("its peer")
        key = ", ".join(culprits)
        offered = "; ".join(f"{n} offers {a!r}" for n, a in alpn.items() if a) or "ALPNs not logged"
        groups[key].append((conn, f.evidence(ref), offered, f"0x{code:x}" if code is not None else "?"))
    for key, items in groups.items():
        conns = tuple(c.id for c, _, _, _ in items)
        codes = ", ".join(sorted({c for _, _, _, c in items}))
        offered = items[0][2]
        peers = sorted({e.node for c, _, _, _ in items for e in (c.client, c.server) if e is not None} - {key})
        blame = (
            f"{key} offers a different ALPN from the rest of the recording ({majority!r})"
            if majority is not None and "," not in key
            else "The two ends offer different ALPNs"
        )
        ctx.add(
            kind="alpn_mismatch",
            severity=ERROR,
            node=key,
            peer=", ".join(peers) or None,
            connection=conns[0] if len(conns) == 1 else None,
            connections=conns,
            streams=(),
            summary=(
                f"{plural(len(items), 'connection')} closed during the handshake for lack of a common ALPN "
                f"(code {codes}): {offered}."
            ),
            cause=(f"{blame}, so TLS refuses the handshake; configure the same ALPN (protocol version) on every node."),
            evidence=[e for _, e, _, _ in items],
        )


def find_not_visible(ctx: Context) -> None:
    by_node: dict[str, list[TraceFacts]] = defaultdict(list)
    for conn in ctx.conns:
        for f in (conn.client, conn.server):
            if f is not None and not f.app_visible:
                by_node[f.node].append(f)
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
