"""Findings from the DHT's own events: joining, routing tables, stores and lookups."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .context import Context, plural, short_id
from .facts import as_float, as_int
from .values import WARNING, Evidence

K = 20  # Kademlia replication factor; tracing may not import dhtscope.node's constant

# A routing table that held <= 1 contact only means something if the node ran this long.
BOOTSTRAP_ONLY_MIN_MS = 5000.0
# Failures this close to a node's last event may simply not have been acted on yet.
STALE_GRACE_MS = 500.0


class _NodeDht:
    __slots__ = ("name", "events", "started_ms", "node_id", "role", "last_ms", "failures", "successes")

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[tuple[float, str, dict[str, Any], Evidence]] = []
        self.started_ms: float | None = None
        self.node_id: str | None = None
        self.role: str | None = None
        self.last_ms: float | None = None
        self.failures: list[tuple[float, str, Evidence]] = []
        self.successes: list[tuple[float, str]] = []


def _dht_nodes(ctx: Context) -> dict[str, _NodeDht]:
    nodes: dict[str, _NodeDht] = {}
    for f in ctx.facts:
        if f.node_events or f.rpc_timeouts or f.rpc_ok:
            nd = nodes.get(f.node) or nodes.setdefault(f.node, _NodeDht(f.node))
        else:
            continue
        for t, name, d, ref in f.node_events:
            nd.events.append((t, name, d, f.evidence(ref)))
        for ref, d in f.rpc_timeouts:
            if isinstance(d.get("peer_id"), str):
                nd.failures.append((ref[1], d["peer_id"].lower(), f.evidence(ref)))
        for t, pid in f.rpc_ok:
            nd.successes.append((t, pid))
        if f.last_ms is not None and (nd.last_ms is None or f.last_ms > nd.last_ms):
            nd.last_ms = f.last_ms
    for nd in nodes.values():
        nd.events.sort(key=lambda x: x[0])
        for t, name, d, ev in nd.events:
            if name == "dht:node_started" and nd.started_ms is None:
                nd.started_ms = t
                nd.node_id = d.get("node_id") if isinstance(d.get("node_id"), str) else None
                nd.role = d.get("role") if isinstance(d.get("role"), str) else None
            elif name == "dht:lookup_round":
                peer = d.get("peer_id")
                if not isinstance(peer, str):
                    continue
                if d.get("rtt_ms") is None and d.get("error"):
                    nd.failures.append((t, peer.lower(), ev))
                elif d.get("rtt_ms") is not None:
                    nd.successes.append((t, peer.lower()))
    return nodes


def _refusals(refused: list[Any]) -> str:
    """' (reason; reason)' for the first refusals of a STORE, or '' when there were none."""
    reasons = [str(r[1]) for r in refused[:3] if isinstance(r, list) and len(r) > 1]
    return f" ({'; '.join(reasons)})" if reasons else ""


def find_dht(ctx: Context) -> None:
    nodes = _dht_nodes(ctx)
    if not nodes:
        return
    dht_names = {n for n, nd in nodes.items() if nd.started_ms is not None}
    n_nodes = len({n.name for n in ctx.rec.nodes} | dht_names)
    joined: dict[str, float] = {}
    for name, nd in nodes.items():
        added = [t for t, ev, d, _ in nd.events if ev == "dht:routing_updated" and d.get("action") == "added"]
        if added:
            joined[name] = min(added)
        elif nd.started_ms is not None:
            joined[name] = nd.started_ms

    for name, nd in nodes.items():
        table: dict[str, float] = {}  # peer id -> when (last) added
        max_size = 0
        add_evidence: list[Evidence] = []
        for t, ev, d, e in nd.events:
            if ev != "dht:routing_updated":
                continue
            pid = d.get("peer_id")
            if not isinstance(pid, str):
                continue
            pid = pid.lower()
            action = d.get("action")
            if action == "added":
                table[pid] = t
                add_evidence.append(e)
            elif action in ("evicted", "removed"):
                table.pop(pid, None)
            max_size = max(max_size, len(table))

        # bootstrap_only
        span = (ctx.last_ms - nd.started_ms) if (ctx.last_ms is not None and nd.started_ms is not None) else 0.0
        if nd.started_ms is not None and n_nodes > 2 and span >= BOOTSTRAP_ONLY_MIN_MS and max_size == 0:
            start_ev = next(e for _, ev, _, e in nd.events if ev == "dht:node_started")
            ctx.add(
                kind="isolated",
                severity=WARNING,
                node=name,
                connection=None,
                streams=(),
                first_ms=nd.started_ms,
                last_ms=ctx.last_ms,  # a state over the node's whole run, not a moment
                summary=(
                    f"{name}'s routing table stayed empty over {span / 1000:.1f} s while the recording "
                    f"has {n_nodes} nodes: it never joined."
                ),
                cause=(
                    "No peer ever answered it (or it never answered a peer): every STORE and FIND_VALUE "
                    "from it goes nowhere; look at its bootstrap node's findings."
                ),
                fix=f"look at the findings of {name}'s bootstrap node and at why no peer answered it",
                evidence=[start_ev],
            )
        elif nd.started_ms is not None and n_nodes > 2 and span >= BOOTSTRAP_ONLY_MIN_MS and max_size == 1:
            known = ", ".join(ctx.peer_name(p) for p in table) or "none"
            start_ev = next(e for _, ev, _, e in nd.events if ev == "dht:node_started")
            ctx.add(
                kind="bootstrap_only",
                severity=WARNING,
                node=name,
                connection=None,
                streams=(),
                first_ms=nd.started_ms,
                last_ms=ctx.last_ms,
                summary=(
                    f"{name}'s routing table never held more than {max_size} "
                    f"{'contact' if max_size == 1 else 'contacts'} (now: {known}) over {span / 1000:.1f} s "
                    f"while the recording has {n_nodes} nodes."
                ),
                cause=(
                    "The node only knows its bootstrap contact: after joining it must look up its own id "
                    "(and refresh its buckets) so the closest nodes learn of it and it learns of them."
                ),
                fix=f"make {name} look up its own id after joining and refresh its buckets",
                evidence=[start_ev, *add_evidence[:5]],
            )

        # stale_contacts: failed to answer, still in the table at the end, never evicted
        if nd.last_ms is not None:
            last_fail: dict[str, tuple[float, Evidence]] = {}
            for t, pid, e in nd.failures:
                if t <= nd.last_ms - STALE_GRACE_MS and (pid not in last_fail or t > last_fail[pid][0]):
                    last_fail[pid] = (t, e)
            last_ok: dict[str, float] = {}
            for t, pid in nd.successes:
                last_ok[pid] = max(t, last_ok.get(pid, t))
            stale = [
                (pid, t, e)
                for pid, (t, e) in last_fail.items()
                if pid in table and t > table[pid] and t > last_ok.get(pid, float("-inf"))
            ]
            if stale:
                stale.sort(key=lambda x: x[1])
                names = ", ".join(ctx.peer_name(p) for p, _, _ in stale[:6])
                fails = sum(1 for _, pid, _ in nd.failures if pid in {p for p, _, _ in stale})
                ctx.add(
                    kind="stale_contacts",
                    severity=WARNING,
                    node=name,
                    connection=None,
                    streams=(),
                    peer=names,
                    summary=(
                        f"{name} kept {plural(len(stale), 'contact')} ({names}) in its routing table after "
                        f"they failed to answer ({plural(fails, 'failure')}); they were never evicted."
                    ),
                    cause=(
                        "Contacts that fail to answer must be evicted (or replaced from the replacement cache); "
                        "otherwise lookups keep asking dead peers and time out."
                    ),
                    fix=f"make {name} evict contacts that fail to answer",
                    evidence=[e for _, _, e in stale],
                )

    # store_under_replicated
    for name, nd in nodes.items():
        last_lookup: dict[str, float] = {}
        bad: list[tuple[dict[str, Any], Evidence, int]] = []
        for t, ev, d, e in nd.events:
            if ev == "dht:lookup_started" and d.get("kind") == "find_node" and isinstance(d.get("target"), str):
                last_lookup[d["target"].lower()] = t
            elif ev == "dht:store_result":
                key = str(d.get("key") or "").lower()
                began = last_lookup.get(key, t)
                if joined:
                    others = sum(1 for n, jt in joined.items() if n != name and jt <= began)
                else:
                    others = max(0, n_nodes - 1)
                expected = min(K, others)
                replicas = as_int(d.get("replicas")) or 0
                if replicas < expected:
                    bad.append((d, e, expected))
        if not bad:
            continue
        d0, _, expected0 = bad[0]
        label = d0.get("name") or short_id(str(d0.get("key")))
        targets = as_int(d0.get("targets")) or 0
        replicas = as_int(d0.get("replicas")) or 0
        refused = d0.get("refused") or []
        if targets < expected0:
            cause = (
                f"The STORE's lookup found only {targets} of the {expected0} other nodes: the routing table "
                "is too small (no self-lookup after joining?) or nodes did not answer the lookup."
            )
        else:
            cause = (
                f"{targets - replicas} of the closest nodes refused or did not answer the STORE"
                f"{_refusals(refused)}"
                ": check their records limits and the STORE streams' steps."
            )
        ctx.add(
            kind="store_under_replicated",
            severity=WARNING,
            node=name,
            connection=None,
            streams=(),
            summary=(
                f"{name} stored {label!s} on {replicas} of {expected0} reachable nodes (k={K}, "
                f"targets found: {targets})"
                + (f"; {len(bad) - 1} more STOREs were short too." if len(bad) > 1 else ".")
            ),
            cause=cause,
            fix=f"check why {name}'s STORE reached so few of the closest nodes (lookups, refusals)",
            evidence=[e for _, e, _ in bad],
        )

    # lookup_missed
    stored: dict[str, list[tuple[float, str, str, float | None, Evidence, str | None]]] = defaultdict(list)
    expired: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for name, nd in nodes.items():
        for t, ev, d, e in nd.events:
            if ev == "dht:record_stored" and isinstance(d.get("key"), str):
                stored[d["key"].lower()].append(
                    (t, name, str(d.get("publisher") or ""), as_float(d.get("expires_at_ms")), e, d.get("name"))
                )
            elif ev == "dht:record_expired" and isinstance(d.get("key"), str):
                expired[(name, d["key"].lower(), str(d.get("publisher") or ""))].append(t)
    for name, nd in nodes.items():
        started: dict[Any, tuple[float, str, str]] = {}
        misses: dict[str, list[tuple[Evidence, list[tuple[str, Evidence]], str | None, str | None]]] = defaultdict(list)
        for t, ev, d, e in nd.events:
            if ev == "dht:lookup_started":
                started[d.get("lookup_id")] = (t, str(d.get("kind") or ""), str(d.get("target") or "").lower())
            elif ev == "dht:lookup_finished":
                t0, kind, target = started.get(d.get("lookup_id"), (t, str(d.get("kind") or ""), ""))
                if (d.get("kind") or kind) != "find_value" or (as_int(d.get("values")) or 0) != 0 or not target:
                    continue
                holders = []
                svc = None
                for ts, holder, pub, exp, se, rname in stored.get(target, ()):
                    if holder == name or ts > t0 or (exp is not None and exp <= t):
                        continue
                    if any(ts < te <= t for te in expired.get((holder, target, pub), ())):
                        continue
                    holders.append((holder, se))
                    svc = svc or rname
                if holders:
                    misses[target].append((e, holders, svc, d.get("error")))
        for target, items in misses.items():
            holder_names = sorted({h for _, hs, _, _ in items for h, _ in hs})
            svc = next((s for _, _, s, _ in items if s), None)
            label = f"{svc!r} ({short_id(target)})" if svc else short_id(target)
            error = next((x for _, _, _, x in items if x), None)
            cause = (
                "The routing table was empty when the lookup ran: bootstrap first."
                if error and "empty" in str(error)
                else "The lookup never reached the nodes holding the record: they were not among the closest "
                "it found or did not answer (stale or bootstrap-only routing tables, too few replicas); "
                "check the lookup's rounds."
            )
            evidence = [e for e, _, _, _ in items[:4]] + [se for _, hs, _, _ in items[:1] for _, se in hs[:4]]
            ctx.add(
                kind="lookup_missed",
                severity=WARNING,
                node=name,
                connection=None,
                streams=(),
                peer=", ".join(holder_names),
                summary=(
                    f"{name}'s FIND_VALUE for {label} found no value ({plural(len(items), 'lookup')}) while "
                    f"{', '.join(holder_names)} held an unexpired record for that key"
                    f"{f' ({error})' if error else ''}."
                ),
                cause=cause,
                fix=f"check the rounds of {name}'s lookups and the routing tables of the record holders",
                evidence=evidence,
            )
