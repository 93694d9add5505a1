"""The probes a node can run on request (CLI, control endpoint, TUI): their names and arguments,
how a node is named in them, and how their results read.

Plain data, no QUIC, so the TUI builds its probe form from it without loading the node.
`run_probe` (node/control.py) carries them out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ID_HEX_DIGITS = 64  # a node id in full: SHA-256, in hex
MIN_ID_PREFIX_DIGITS = 4  # a shorter prefix matches too many ids to name one node
MAX_LISTED_MATCHES = 8  # an ambiguous prefix's error lists at most this many nodes


@dataclass(frozen=True)
class ProbeSpec:
    """A probe's arguments, by what each one means."""

    args: tuple[str, ...]

    @property
    def arity(self) -> int:
        return len(self.args)

    def usage(self) -> str:
        return " and ".join(self.args)


PROBES: dict[str, ProbeSpec] = {
    "ping": ProbeSpec(("HOST:PORT, or a node's name, id or id prefix",)),
    "find_node": ProbeSpec(("a node's name, id or id prefix (anything else is hashed as a name)",)),
    "find_value": ProbeSpec(("a key or name",)),
    "store": ProbeSpec(("KEY", "VALUE")),
    "advertise": ProbeSpec(("SERVICE", "ENDPOINT")),
    "discover": ProbeSpec(("a service name",)),
}
PROBE_KINDS = tuple(PROBES)


class ProbeError(ValueError):
    """A probe that cannot run as asked: unknown kind, wrong arguments."""


def check_probe_args(kind: str, args: list[str]) -> list[str]:
    """The probe's arguments, checked before anything is sent; ProbeError says what is wrong."""
    spec = PROBES.get(kind)
    if spec is None:
        raise ProbeError(f"unknown probe {kind!r}; choose one of {', '.join(PROBE_KINDS)}")
    if not all(isinstance(a, str) for a in args):
        raise ProbeError("probe arguments must be strings")
    given = [a for a in args if a]
    if len(given) != spec.arity:
        raise ProbeError(f"{kind} needs {spec.usage()} ({spec.arity} argument(s), got {len(given)})")
    if kind == "advertise":
        from .endpoints import EndpointError, check_endpoint

        try:
            check_endpoint(given[1])
        except EndpointError as exc:
            raise ProbeError(str(exc)) from None
    return given


# -- naming a node: one way everywhere one is asked for


@dataclass(frozen=True)
class KnownNode:
    """A node the asker knows of: its id, and its name and address where known."""

    node_id: str  # 64 hex digits
    name: str | None = None
    address: str | None = None

    def label(self) -> str:
        where = f" at {self.address}" if self.address else ""
        return f"{self.name + ' ' if self.name else ''}{self.node_id[:8]}…{where}"


@dataclass(frozen=True)
class NodeRef:
    """What an argument naming a node resolved to, and how."""

    given: str
    node_id: str  # 64 hex digits
    how: str  # "id" | "name" | "prefix" | "hashed"
    node: KnownNode | None = None

    def note(self) -> str:
        """One line for the output: how the argument was read."""
        if self.how == "hashed":
            return (
                f"{self.given!r} is no known node's name, id or id prefix: hashed as a name "
                f"(SHA-256) to {self.node_id[:16]}…"
            )
        if self.how == "id":
            return f"{self.given[:16]}… is {self.node.label()}" if self.node else f"node id {self.given[:16]}…"
        assert self.node is not None
        kind = "the name of" if self.how == "name" else "the id prefix of"
        return f"{self.given} is {kind} {self.node.label()}"


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdef" for c in text)


def resolve_node(text: str, known: Iterable[KnownNode]) -> NodeRef:
    """A node named by its name, its full id, or a unique prefix of its id, among `known`.

    A full id resolves even to a node not known. Anything that matches no known node is
    hashed as a name, as keys are (`NodeRef.how == "hashed"`; its note says so).
    ProbeError when a name or prefix fits several nodes, listing them.
    """
    given = text.strip()
    if not given:
        raise ProbeError("no node given: write a node's name, id or id prefix")
    nodes: dict[str, KnownNode] = {}
    for k in known:  # one entry per id: what one source lacks (a name) another may give
        had = nodes.get(k.node_id)
        nodes[k.node_id] = k if had is None else KnownNode(k.node_id, had.name or k.name, had.address or k.address)
    lowered = given.lower()
    if len(given) == ID_HEX_DIGITS and _is_hex(lowered):
        return NodeRef(given, lowered, "id", nodes.get(lowered))
    named = [k for k in nodes.values() if k.name == given]
    if len(named) == 1:
        return NodeRef(given, named[0].node_id, "name", named[0])
    if len(named) > 1:
        raise ProbeError(_ambiguous(f"{len(named)} nodes are named {given!r}", named))
    if len(lowered) >= MIN_ID_PREFIX_DIGITS and _is_hex(lowered):
        matches = [k for k in nodes.values() if k.node_id.startswith(lowered)]
        if len(matches) == 1:
            return NodeRef(given, matches[0].node_id, "prefix", matches[0])
        if len(matches) > 1:
            raise ProbeError(_ambiguous(f"id prefix {given} matches {len(matches)} nodes", matches))
    return NodeRef(given, hashlib.sha256(given.encode("utf-8")).hexdigest(), "hashed")


def name_probe_target(kind: str, args: list[str], known: Iterable[KnownNode]) -> tuple[list[str], str | None]:
    """A probe's arguments with the node it names resolved among `known` (what a viewer knows:
    names included), and a note saying how; the node that runs the probe needs no names then.
    A ping goes to the node's address where known. ProbeError for a ping nobody answers to."""
    if kind not in ("ping", "find_node") or not args or (kind == "ping" and ":" in args[0]):
        return args, None
    ref = resolve_node(args[0], known)
    if kind == "find_node":
        return [ref.node_id, *args[1:]], ref.note()
    if ref.how == "hashed":
        raise ProbeError(
            f"ping target {args[0]!r} is no known node's name, id or id prefix; give HOST:PORT or one of those"
        )
    target = ref.node.address if ref.node is not None and ref.node.address else ref.node_id
    return [target, *args[1:]], ref.note()


def _ambiguous(head: str, nodes: list[KnownNode]) -> str:
    shown = sorted(nodes, key=lambda k: k.node_id)[:MAX_LISTED_MATCHES]
    more = f" and {len(nodes) - len(shown)} more" if len(nodes) > len(shown) else ""
    return f"{head}: {'; '.join(k.label() for k in shown)}{more}; give more of the id"


# -- what a probe found, in words every front end prints the same way


def store_summary(accepted: int, closest: int, stored_locally: bool) -> str:
    """Where a STORE landed. The closest nodes found never include this node, so it is
    counted apart: never "stored on 5 of 4"."""
    text = f"stored on {accepted} of the {closest} closest node{'s' if closest != 1 else ''} found"
    if stored_locally:
        text += ", and on this node itself"
    return text


def store_result_summary(result: Mapping[str, Any]) -> str:
    """`store_summary` of a store or advertise probe's result (the `probe --json` shape)."""
    closest = int(result.get("targets") or 0)
    if "accepted" in result:
        return store_summary(int(result["accepted"]), closest, bool(result.get("stored_locally")))
    # A node from before "accepted" was reported: replicas may include the node itself.
    return f"{int(result.get('replicas') or 0)} copies stored; {closest} closest nodes found"


def lookup_summary(rounds: int, hops: Sequence[Mapping[str, Any]], messages: int) -> str:
    """ "2 rounds, 7 messages", counting every round a query was sent in (the rounds a table of
    hops shows), and saying which of them got no answer."""
    sent = sorted({int(h.get("round") or 0) for h in hops}) or ([rounds] if rounds else [])
    shown = max(sent[-1] if sent else 0, rounds)
    text = f"{shown} round{'s' if shown != 1 else ''}"
    silent = [r for r in sent if all(h.get("rtt_ms") is None for h in hops if int(h.get("round") or 0) == r)]
    if silent:
        text += f" (no answer in round {', '.join(map(str, silent))})"
    return f"{text}, {messages} message{'s' if messages != 1 else ''}"
