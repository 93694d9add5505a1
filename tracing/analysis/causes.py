"""Root causes first: each finding's stable id, and the root it is a consequence of.

A finding is linked to a cause only where the traces show the link: the same streams, the
same peer and connections, a cause that began before the consequence ended. Chains are
folded so every consequence names its root; what cannot be linked stays a root.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable

from .values import ERROR, INFO, SEVERITY_RANK, Finding

# How fundamental a kind is when several could explain one consequence (lower comes first).
KIND_RANK = {
    "alpn_mismatch": 0,
    "handshake_failed": 0,
    "version_negotiation_failed": 0,
    "stateless_reset": 0,
    "connection_error": 0,
    "stream_not_delivered": 1,
    "stream_not_answered": 1,
    "no_response": 1,
    "stream_limit_exhausted": 1,
    "peer_unresponsive": 1,
    "flow_control_blocked": 1,
    "application_close": 1,
    "packet_loss": 2,
    "connection_stalled": 3,
    "handshake_timeout": 3,
    "stream_credit_low": 3,
    "zero_rtt_rejected": 4,
    "rpc_timeout": 5,
}
# Findings about a node's place in the DHT: consequences of whatever stopped its requests.
DHT_CONSEQUENCES = frozenset(
    {"isolated", "bootstrap_only", "stale_contacts", "store_under_replicated", "lookup_missed"}
)
# What a request timing out can be caused by when it shares no stream with the cause.
TIMEOUT_CAUSES = frozenset(
    {
        "stream_not_delivered",
        "stream_not_answered",
        "no_response",
        "stream_limit_exhausted",
        "flow_control_blocked",
        "peer_unresponsive",
        "connection_stalled",
        "packet_loss",
        "alpn_mismatch",
        "handshake_failed",
        "handshake_timeout",
        "connection_error",
        "stateless_reset",
    }
)


def _names(f: Finding) -> set[str]:
    out = {f.node} if f.node else set()
    if f.peer:
        out.update(p.strip() for p in f.peer.split(","))
    return out


def _peers(f: Finding) -> set[str]:
    return {p.strip() for p in f.peer.split(",")} if f.peer else set()


def _conns(f: Finding) -> set[str]:
    return set(f.connections) | ({f.connection} if f.connection else set())


def _before(cause: Finding, f: Finding) -> bool:
    """A cause cannot begin after its consequence ended."""
    return cause.first_ms is None or f.last_ms is None or cause.first_ms <= f.last_ms


def _overlap(a: Finding, b: Finding) -> bool:
    """Time windows overlap (unknown windows are taken to)."""
    if None in (a.first_ms, a.last_ms, b.first_ms, b.last_ms):
        return True
    return a.first_ms <= b.last_ms and b.first_ms <= a.last_ms  # type: ignore[operator]


def assign_ids(findings: list[Finding]) -> list[Finding]:
    """`kind/node`, numbered when a kind repeats on a node; stable for the same traces."""
    seen: Counter[str] = Counter()
    out = []
    for f in findings:
        base = f"{f.kind}/{f.node or '-'}"
        seen[base] += 1
        out.append(dataclasses.replace(f, id=base if seen[base] == 1 else f"{base}#{seen[base]}"))
    return out


def _best(candidates: list[Finding], score: Callable[[Finding], int] = lambda c: 0) -> Finding | None:
    if not candidates:
        return None
    return min(
        candidates,
        key=lambda c: (
            SEVERITY_RANK.get(c.severity, 9),
            KIND_RANK.get(c.kind, 6),
            -score(c),
            c.first_ms if c.first_ms is not None else float("inf"),
        ),
    )


def _cause_of(f: Finding, findings: list[Finding], links: dict[str, str]) -> Finding | None:
    others = [c for c in findings if c is not f and c.severity != INFO and _before(c, f)]
    if f.kind == "rpc_timeout":
        refs = set(f.stream_refs)
        shared = [c for c in others if c.kind != "rpc_timeout" and refs & set(c.stream_refs)]
        if shared:
            return _best(shared, lambda c: len(refs & set(c.stream_refs)))
        peer = f.peer or ""
        near = [
            c
            for c in others
            if c.kind in TIMEOUT_CAUSES
            and (
                (c.node == peer and (not _conns(c) or not _conns(f) or _conns(c) & _conns(f) or peer in _names(c)))
                or (c.node == f.node and peer in _peers(c) and (_conns(c) & _conns(f) or not _conns(f)))
            )
        ]
        return _best(near)
    if f.kind in DHT_CONSEQUENCES:
        node = f.node or ""
        # Its own requests failed: their cause is its cause.
        mine = [c for c in findings if c.kind == "rpc_timeout" and c.node == node and c.id in links]
        roots = [c for c in others if c.id in {links[m.id] for m in mine}]
        if roots:
            return _best(roots)
        named = _peers(f) if f.kind in ("stale_contacts", "lookup_missed") else set()
        causes = [c for c in others if c.kind in TIMEOUT_CAUSES or c.kind in KIND_RANK]
        same = [c for c in causes if c.kind != "rpc_timeout" and c.node == node]
        if same:
            return _best(same)
        related = [c for c in causes if c.kind != "rpc_timeout" and (node in _peers(c) or c.node in named)]
        return _best(related)
    if f.kind == "packet_loss":
        return _best([c for c in others if c.kind == "peer_unresponsive" and f.node in _names(c) and _overlap(c, f)])
    if f.kind in ("connection_stalled", "handshake_timeout"):
        conns = _conns(f)
        loss_or_stop = [
            c
            for c in others
            if c.kind in ("packet_loss", "peer_unresponsive") and c is not f and (_conns(c) & conns or c.node == f.node)
        ]
        if f.kind == "connection_stalled":
            loss_or_stop = [c for c in loss_or_stop if c.kind == "packet_loss"]
        return _best(loss_or_stop)
    if f.kind == "stream_credit_low":
        return _best([c for c in others if c.kind == "stream_limit_exhausted" and _conns(c) & _conns(f)])
    return None


def link(findings: list[Finding]) -> list[Finding]:
    """Give every finding above info whose cause the traces show a `caused_by` naming its root."""
    links: dict[str, str] = {}
    # Request timeouts first: the DHT consequences follow the cause of a node's own timeouts.
    order = sorted(findings, key=lambda f: (f.kind != "rpc_timeout", f.kind in DHT_CONSEQUENCES))
    for f in order:
        if f.severity == INFO:
            continue
        cause = _cause_of(f, findings, links)
        if cause is not None and cause.id != f.id:
            links[f.id] = cause.id
    roots: dict[str, str] = {}
    for fid in links:
        seen = {fid}
        at = links[fid]
        while at in links and at not in seen:
            seen.add(at)
            at = links[at]
        if at in seen:  # a cycle: the link back to where it began is dropped
            continue
        roots[fid] = at
    linked = [dataclasses.replace(f, caused_by=roots.get(f.id)) for f in findings]
    return [_escalated(f, linked) for f in linked]


def _escalated(f: Finding, findings: list[Finding]) -> Finding:
    """Loss that made a connection or a request fail is an error, whichever finding shows the failure."""
    if f.kind != "packet_loss" or f.severity == ERROR or f.caused_by is not None:
        return f
    failed = [c for c in findings if c.caused_by == f.id and c.severity == ERROR]
    if not failed:
        return f
    summary = f.summary.rstrip(".") + f"; it made connections or requests fail ({', '.join(c.id for c in failed)})."
    return dataclasses.replace(f, severity=ERROR, summary=summary)


def root_first(findings: list[Finding]) -> list[Finding]:
    """Roots in severity order (a root ranks by its worst consequence), each followed by its consequences."""
    by_root: dict[str, list[Finding]] = {}
    for f in findings:
        if f.caused_by is not None:
            by_root.setdefault(f.caused_by, []).append(f)

    def rank(f: Finding) -> tuple[int, int, float]:
        own = SEVERITY_RANK.get(f.severity, 9)
        worst = min([own] + [SEVERITY_RANK.get(c.severity, 9) for c in by_root.get(f.id, [])])
        return worst, own, f.first_ms if f.first_ms is not None else float("inf")

    out: list[Finding] = []
    for root in sorted((f for f in findings if f.caused_by is None), key=rank):
        out.append(root)
        out.extend(sorted(by_root.get(root.id, []), key=rank))
    return out
