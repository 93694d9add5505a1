"""Fault scenarios: what each one switches on, and the one function every mode calls to switch.

A plain module with no QUIC in it, so the TUI can list scenarios without loading aioquic.
The transport and the RPC layer hold a node's `Faults` object and read it live; switching
a scenario changes that object in place (`apply_scenario`), whether the switch comes from
the command line, the control endpoint or a node embedded in the TUI.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

SCENARIOS = ("healthy", "no-accept", "stream-limit", "loss", "alpn-mismatch", "stall")

SCENARIO_HELP = {
    "healthy": "no fault",
    "no-accept": "peer-opened streams never reach the application; the transport still acknowledges them",
    "stream-limit": "grants 128 streams per connection and never sends FIN, so the peer's credit runs out",
    "loss": "drops a fraction of datagrams on send and receive (--loss, default 0.3)",
    "alpn-mismatch": "offers another ALPN, so every handshake fails",
    "stall": "reads requests and never answers them",
}

DEFAULT_LOSS = 0.3  # the loss scenario's drop fraction unless told otherwise
# The stream-limit scenario's registry grants this many streams per connection: aioquic's own
# default, close to other stacks' (quic-go: 100), so a leak exhausts it within seconds.
STREAM_LIMIT_SCENARIO_STREAMS = 128
MISMATCHED_ALPN = "dhtscope/0-mismatch"


@dataclass
class Faults:
    """Failure modes switched on per node, for teaching and tests; all off by default."""

    loss: float = 0.0  # fraction of datagrams dropped, on send and on receive
    no_accept: bool = False  # never hand peer-opened streams to the application
    never_fin: bool = False  # never send FIN on our side of a stream
    stall: bool = False  # read requests and never answer (applied by the RPC layer)
    alpn: str | None = None  # offer this ALPN instead of ours
    stream_credit: int | None = None  # grant new connections this many streams, not MAX_STREAMS_PER_CONNECTION
    seed: int | None = None

    @classmethod
    def for_scenario(cls, name: str, loss: float = DEFAULT_LOSS) -> Faults:
        """The faults a named scenario (one of SCENARIOS) switches on; ValueError for an unknown name."""
        table = {
            "healthy": cls(),
            "no-accept": cls(no_accept=True),
            "stream-limit": cls(never_fin=True, stream_credit=STREAM_LIMIT_SCENARIO_STREAMS),
            "loss": cls(loss=loss),
            "alpn-mismatch": cls(alpn=MISMATCHED_ALPN),
            "stall": cls(stall=True),
        }
        if name not in table:
            raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(table)}")
        return table[name]

    def names(self) -> list[str]:
        out = []
        if self.no_accept:
            out.append("no-accept")
        if self.never_fin:
            out.append("stream-limit")
        if self.loss:
            out.append(f"loss={self.loss:g}")
        if self.alpn:
            out.append("alpn-mismatch")
        if self.stall:
            out.append("stall")
        return out

    @classmethod
    def from_names(cls, names: list[str] | tuple[str, ...]) -> Faults:
        """The faults `names()` describes (what snapshots and hello carry), for `active_scenario()`."""
        faults = cls()
        for name in names:
            if name.startswith("loss="):
                try:
                    faults.loss = float(name.split("=", 1)[1])
                except ValueError:
                    faults.loss = DEFAULT_LOSS
            elif name == "no-accept":
                faults.no_accept = True
            elif name == "stream-limit":
                faults.never_fin = True
                faults.stream_credit = STREAM_LIMIT_SCENARIO_STREAMS
            elif name == "alpn-mismatch":
                faults.alpn = MISMATCHED_ALPN
            elif name == "stall":
                faults.stall = True
        return faults

    def active_scenario(self) -> str:
        """The scenario these faults are, or 'custom' when they match none exactly."""
        for name in SCENARIOS:
            wanted = Faults.for_scenario(name, loss=self.loss or DEFAULT_LOSS)
            wanted.seed = self.seed
            if wanted == self:
                return name
        return "custom"


# Settings applied when a connection is made: a live switch reaches new connections only.
_PER_CONNECTION = {"alpn": "ALPN", "stream_credit": "stream credit"}


def apply_scenario(faults: Faults, name: str, loss: float = DEFAULT_LOSS) -> list[str]:
    """Switch `faults` in place to scenario `name`; returns notes on what applies to new connections only."""
    wanted = Faults.for_scenario(name, loss=loss)
    notes = []
    for f in dataclasses.fields(Faults):
        if f.name == "seed":
            continue
        old, new = getattr(faults, f.name), getattr(wanted, f.name)
        if old != new and f.name in _PER_CONNECTION:
            notes.append(
                f"{_PER_CONNECTION[f.name]} applies to new connections only: open connections keep what "
                "they negotiated in their handshake; peers already connected are unaffected until they reconnect"
            )
        setattr(faults, f.name, new)
    return notes
