"""How connections began and ended: every failure named from its close code, trigger or packets.

TLS alerts by name, QUIC transport errors by name, application codes by the registry the
ALPN gives, version negotiation, handshake and idle timeouts, stateless resets, 0-RTT that
the server refused. A close frame names its failure even when only one end was recorded.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from ..codes import BOTH, NO_APPLICATION_PROTOCOL_ALERT, RECEIVER, TLS_ALERT_FIXES, Code
from ..codes import CLOSER as BLAME_CLOSER
from .context import Context, plural
from .join import CloseInfo, Joined, close_name, close_of
from .values import ALPN_MISMATCH_CODE, ERROR, INFO, WARNING, Evidence

MAX_REASON_CHARS = 200  # a peer's reason phrase is quoted, not dumped
# A client whose first packets go unanswered this long has met no server: well past the
# first retransmissions (aioquic's first PTO is under half a second), short of any give-up.
UNANSWERED_HANDSHAKE_MIN_MS = 1000.0


@dataclass
class _Item:
    """One connection's part in a finding."""

    conn: Joined
    closer: str
    receiver: str
    blame: str  # CLOSER, RECEIVER or BOTH: whom the code blames
    evidence: list[Evidence] = field(default_factory=list)
    reason: str = ""

    def culprit(self) -> str | None:
        if self.blame == RECEIVER:
            return self.receiver
        if self.blame == BLAME_CLOSER:
            return self.closer
        return None


def _ends_names(ctx: Context, conn: Joined, info: CloseInfo) -> tuple[str, str]:
    """(the node that closed, the node that received the close)."""
    me, peer = info.facts.node, ctx.peer_of(conn, info.facts)
    if info.by_local is False:
        return peer, me
    return me, peer


def is_alpn_close(info: CloseInfo) -> bool:
    return (
        info.trigger == "alpn_mismatch"
        or (info.code == ALPN_MISMATCH_CODE and info.space != "application")
        or "alpn" in info.reason.lower()
    )


def _handshake_done(conn: Joined, before_ms: float) -> bool:
    return any(f.handshake_ms is not None and f.handshake_ms <= before_ms for f in (conn.client, conn.server) if f)


def _quoted(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        return ""
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 1] + "…"
    return f': "{reason}"'


def _attribute(items: list[_Item]) -> dict[str, list[_Item]]:
    """Group by culprit; where a code blames neither end, the node common to most connections."""
    out: dict[str, list[_Item]] = defaultdict(list)
    unsure: list[_Item] = []
    for it in items:
        c = it.culprit()
        if c is not None:
            out[c].append(it)
        else:
            unsure.append(it)
    while unsure:
        count: Counter[str] = Counter()
        for it in unsure:
            count.update({it.closer, it.receiver})
        node, n = count.most_common(1)[0]
        if n < 2:
            for it in unsure:
                out[f"{it.closer}, {it.receiver}"].append(it)
            break
        out[node].extend(it for it in unsure if node in (it.closer, it.receiver))
        unsure = [it for it in unsure if node not in (it.closer, it.receiver)]
    return out


def _others(node: str, items: list[_Item]) -> str | None:
    names = sorted({n for it in items for n in (it.closer, it.receiver)} - set(node.split(", ")))
    return ", ".join(names) or None


def _add(
    ctx: Context, kind: str, severity: str, node: str, items: list[_Item], summary: str, cause: str, fix: str
) -> None:
    conns = tuple(dict.fromkeys(it.conn.id for it in items))
    ctx.add(
        kind=kind,
        severity=severity,
        node=node,
        peer=_others(node, items),
        connections=conns,
        streams=(),
        summary=summary,
        cause=cause,
        fix=fix,
        evidence=[e for it in items for e in it.evidence],
    )


def _closers(items: list[_Item]) -> str:
    names = list(dict.fromkeys(it.closer for it in items))
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


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
        info = close_of(conn)
        if info is None or not is_alpn_close(info):
            continue
        ends = [e for e in (conn.client, conn.server) if e is not None]
        alpn = {e.node: (e.alpns[0] if e.alpns else None) for e in ends}
        culprits: list[str] = []
        if majority is not None:
            culprits = [e.node for e in ends if alpn[e.node] is not None and alpn[e.node] != majority]
            silent = [e.node for e in ends if alpn[e.node] is None and e.on_wire]
            if not culprits and len(ends) == 2 and len(silent) == 1:
                # On the wire a server that refuses never names its own ALPNs: it refused the one most offer.
                culprits = silent
        if not culprits:
            culprits = [e.node for e in ends]
            if len(ends) == 1:
                culprits.append("its peer")
        key = ", ".join(culprits)
        offered = "; ".join(
            f"{n} offers {a!r}"
            if a
            else f"{n} refused it (its own ALPNs are not on the wire)"
            if any(e.node == n and e.on_wire for e in ends)
            else f"{n}'s ALPNs not logged"
            for n, a in alpn.items()
        )
        code = f"0x{info.code:x}" if info.code is not None else "?"
        groups[key].append((conn, info.facts.evidence(info.ref), offered, code))
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
            connections=conns,
            streams=(),
            summary=(
                f"{plural(len(items), 'connection')} closed during the handshake for lack of a common ALPN "
                f"(code {codes}, TLS alert {NO_APPLICATION_PROTOCOL_ALERT} no application protocol): {offered}."
            ),
            cause=(f"{blame}, so TLS refuses the handshake; configure the same ALPN (protocol version) on every node."),
            fix="configure the same ALPN (protocol version) on every node",
            evidence=[e for _, e, _, _ in items],
        )


def find_connection_failures(ctx: Context) -> None:
    """Every connection that ended in a failure its close, trigger or packets can name."""
    groups: dict[tuple[str, str, str], list[_Item]] = defaultdict(list)
    names: dict[tuple[str, str, str], Code | None] = {}
    for conn in ctx.conns:
        ends = [f for f in (conn.client, conn.server) if f is not None]
        for f in ends:
            peer = ctx.peer_of(conn, f)
            if f.stateless_reset is not None:
                groups[("stateless_reset", "", ERROR)].append(
                    _Item(conn, peer, f.node, BLAME_CLOSER, [f.evidence(f.stateless_reset)])
                )
            if f.version_failed is not None or f.version_negotiation is not None:
                failed = f.version_failed is not None
                ref = f.version_failed or f.version_negotiation
                assert ref is not None
                key = ("version_negotiation_failed" if failed else "version_negotiation", "", ERROR if failed else INFO)
                groups[key].append(_Item(conn, f.node, peer, BOTH, [f.evidence(ref)]))
        info = close_of(conn)
        if conn.id not in ctx.silenced:
            unanswered = _unanswered_handshake(conn, info)
            if unanswered is not None:
                # Nothing ever came back: whatever code the client closed with, it gave up waiting.
                groups[("handshake_timeout", "", ERROR)].append(unanswered)
                continue
        if info is None or is_alpn_close(info) or conn.id in ctx.silenced:
            continue
        closer, receiver = _ends_names(ctx, conn, info)
        ev = [info.facts.evidence(info.ref)]
        trigger = info.trigger
        hs_done = _handshake_done(conn, info.time_ms)
        if trigger == "stateless_reset":
            if not any(f.stateless_reset for f in ends):
                groups[("stateless_reset", "", ERROR)].append(_Item(conn, receiver, closer, BLAME_CLOSER, ev))
            continue
        if trigger == "handshake_timeout" or (trigger in ("clean", "error") and not hs_done and _timed_out(info)):
            client = conn.client or info.facts
            server = conn.server.node if conn.server is not None else ctx.peer_of(conn, client)
            sends = [client.evidence((r, t, "quic:packet_sent", "")) for t, r, _ in client.eliciting_sent[:4]]
            it = _Item(conn, client.node, server, RECEIVER, ev + sends)
            it.reason = "nothing came back" if client.packets_received == 0 else "the handshake never completed"
            groups[("handshake_timeout", "", ERROR)].append(it)
            continue
        if trigger == "idle_timeout":
            groups[("idle_timeout", "", INFO)].append(_Item(conn, closer, receiver, BOTH, ev))
            continue
        code = close_name(conn, info)
        if code is None:
            continue
        if code.registry == "tls":
            kind = "handshake_failed" if not hs_done else "connection_error"
            key = (kind, code.label, ERROR)
        elif info.space != "application" and code.name == "APPLICATION_ERROR":
            # An application closing during the handshake, its own code hidden (RFC 9000 §10.2.3).
            key = ("application_close", code.label, WARNING)
        elif info.space != "application":
            if not code.is_error:
                continue
            key = ("connection_error", code.label, ERROR if code.registry == "quic" else WARNING)
        else:
            if not code.is_error:
                continue
            key = ("application_close", code.label, WARNING if code.registry != "unknown" else INFO)
        names[key] = code
        item = _Item(conn, closer, receiver, code.blames, ev, info.reason)
        groups[key].append(item)
    for (kind, label, severity), items in groups.items():
        for node, mine in _attribute(items).items():
            _emit(ctx, kind, severity, node, mine, names.get((kind, label, severity)))


def _unanswered_handshake(conn: Joined, info: CloseInfo | None) -> _Item | None:
    """Seen on the wire: a client that kept sending its first packets, or closed, while nothing came back."""
    client, server = conn.client, conn.server
    if client is None or server is None or not (client.on_wire and server.on_wire) or server.packets_sent:
        return None
    sends = client.eliciting_sent
    if not sends:
        return None
    gave_up = info is not None and info.facts is client and info.by_local is not False
    if not gave_up and (len(sends) < 2 or sends[-1][0] - sends[0][0] < UNANSWERED_HANDSHAKE_MIN_MS):
        return None
    evidence = [client.evidence((r, t, "quic:packet_sent", "")) for t, r, _ in sends[:4]]
    if info is not None:
        evidence.append(info.facts.evidence(info.ref))
    it = _Item(conn, client.node, server.node, RECEIVER, evidence)
    span = (sends[-1][0] - sends[0][0]) / 1000
    it.reason = f"nothing came back to {plural(len(sends), 'packet')} over {span:.1f} s" + (
        ", then it closed the connection" if gave_up else ""
    )
    return it


def _timed_out(info: CloseInfo) -> bool:
    return "handshake" in info.reason.lower() and "timeout" in info.reason.lower().replace(" ", "")


def _emit(ctx: Context, kind: str, severity: str, node: str, items: list[_Item], code: Code | None) -> None:
    n = plural(len(items), "connection")
    who = _closers(items)
    reasons = list(dict.fromkeys(it.reason for it in items if it.reason))
    quoted = _quoted(reasons[0]) if reasons else ""
    if kind in ("handshake_failed", "connection_error") and code is not None:
        when = "during the handshake" if kind == "handshake_failed" else ""
        if code.tls_alert is not None:
            fix = TLS_ALERT_FIXES.get(code.tls_alert, f"look up TLS alert {code.tls_alert} ({code.words})")
            if code.blames == RECEIVER:
                cause = f"{who} refused the certificate {node} presented ({code.words}): {fix}."
            elif code.blames == BLAME_CLOSER:
                cause = f"{node} failed the TLS handshake on its own side ({code.words}): {fix}."
            else:
                cause = f"TLS failed between {node} and {_others(node, items) or 'its peer'} ({code.words}): {fix}."
        else:
            fix = f"fix what {node} sends: {code.words}" if code.blames == RECEIVER else code.words
            cause = f"{code.name}: {code.words}. " + (
                f"{who} closed the connection because of what {node} sent."
                if code.blames == RECEIVER
                else f"{who} closed the connection itself."
            )
        summary = f"{n} {'failed ' + when if when else 'closed'}: {who} closed with {code.label}{quoted}."
        summary = summary.replace("  ", " ")
        _add(ctx, kind, severity, node, items, summary, cause, fix)
    elif kind == "application_close" and code is not None:
        summary = f"{n} closed by the application of {who} with {code.label}: {code.words}{quoted}."
        cause = f"The application on {who} ended the connection with an error code ({code.name})."
        _add(ctx, kind, severity, node, items, summary, cause, f"see why {who} closed with {code.name}")
    elif kind == "handshake_timeout":
        what = "; ".join(f"{it.closer}: {it.reason}" for it in items[:4])
        summary = f"{n} to {node} gave up on the handshake ({what})."
        cause = (
            f"{node} did not complete the QUIC handshake in time: it is down, not listening at that address, "
            "too busy to answer, or its packets are lost on the way."
        )
        _add(ctx, kind, severity, node, items, summary, cause, f"check that {node} is running and reachable")
    elif kind == "idle_timeout":
        summary = f"{n} of {node} ended by idle timeout: no packet for the idle period its peer and it agreed."
        cause = "An idle connection is closed by its idle timeout; harmless unless requests were waiting on it."
        _add(ctx, kind, severity, node, items, summary, cause, "nothing to fix for an idle connection")
    elif kind == "stateless_reset":
        summary = (
            f"{n} ended by a stateless reset from {node}: it no longer knew the connection "
            f"(seen by {', '.join(sorted({it.receiver for it in items}))})."
        )
        cause = (
            f"{node} lost the connection's state (it restarted or crashed, or a load balancer sent the packets "
            "to another server) and answered with a stateless reset."
        )
        _add(ctx, kind, severity, node, items, summary, cause, f"find out why {node} lost its connection state")
    elif kind == "version_negotiation_failed":
        summary = f"{n} failed version negotiation: the server supports none of the QUIC versions the client offers."
        cause = "No common QUIC version: the client and server were built for different versions."
        _add(ctx, kind, severity, node, items, summary, cause, "offer a QUIC version both ends support (version 1)")
    elif kind == "version_negotiation":
        summary = f"{n} needed a Version Negotiation round trip before the handshake could start."
        cause = "The client's first version was not the server's; negotiation cost one round trip."
        _add(ctx, kind, severity, node, items, summary, cause, "offer the server's version first")


def find_zero_rtt_rejected(ctx: Context) -> None:
    by_server: dict[str, list[tuple[Joined, int, int, list[Evidence]]]] = defaultdict(list)
    for conn in ctx.conns:
        c, s = conn.client, conn.server
        if c is not None and c.zero_rtt_sent:
            acked = c.peer_acked.get("app")
            if c.handshake_ms is None or (acked is not None and any(pn in acked for pn, _, _ in c.zero_rtt_sent)):
                continue
            size = sum(c.sent_pkts.get(("app", pn), (0, 0, 0))[2] for pn, _, _ in c.zero_rtt_sent)
            ev = [c.evidence((rec, t, "quic:packet_sent", "")) for _, t, rec in c.zero_rtt_sent[:4]]
            server = s.node if s is not None else ctx.peer_of(conn, c)
            by_server[server].append((conn, len(c.zero_rtt_sent), size, ev))
        elif c is None and s is not None and s.zero_rtt_dropped and not s.zero_rtt_received:
            by_server[s.node].append((conn, s.zero_rtt_dropped, 0, []))
    for server, items in by_server.items():
        conns = tuple(dict.fromkeys(c.id for c, _, _, _ in items))
        packets = sum(n for _, n, _, _ in items)
        size = sum(b for _, _, b, _ in items)
        ctx.add(
            kind="zero_rtt_rejected",
            severity=WARNING,
            node=server,
            peer=None,
            connections=conns,
            streams=(),
            summary=(
                f"{server} rejected 0-RTT on {plural(len(conns), 'connection')}: {plural(packets, 'packet')} of "
                f"early data{f' ({size:,} bytes)' if size else ''} had to be sent again after the handshake."
            ),
            cause=(
                f"{server} refused the session ticket or early data (a restart, a ticket from another server, or "
                "0-RTT switched off), so every resumed connection pays a round trip."
            ),
            fix=f"keep {server}'s session ticket keys across restarts and servers, or stop offering 0-RTT",
            evidence=[e for _, _, _, ev in items for e in ev],
        )
