"""The probes a node can run on request (CLI, control endpoint, TUI): their names and arguments.

Plain data, no QUIC, so the TUI builds its probe form from it without loading the node.
`run_probe` (node/control.py) carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass


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
