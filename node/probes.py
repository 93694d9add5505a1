"""The probes a node can run on request (CLI, control endpoint, TUI): their names and arguments.

Plain data, no QUIC, so the TUI builds its probe form from it without loading the node.
`run_probe` (node/control.py) carries them out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


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
    "ping": ProbeSpec(("HOST:PORT or node id",)),
    "find_node": ProbeSpec(("an id or name",)),
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
