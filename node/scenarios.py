"""Fault scenarios: what each one switches on, and the one function every mode calls to switch.

A plain module with no QUIC in it, so the TUI can list scenarios without loading aioquic.
The transport and the RPC layer hold a node's `Faults` object and read it live; switching
a scenario changes that object in place (`apply_scenario`), whether the switch comes from
the command line, the control endpoint or a node embedded in the TUI.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

SCENARIOS = (
    "healthy",
    "no-accept",
    "stream-limit",
    "loss",
    "alpn-mismatch",
    "stall",
    "bad-certificate",
    "flow-control",
    "blackhole",
    "one-way-loss",
)

SCENARIO_HELP = {
    "healthy": "no fault",
    "no-accept": "peer-opened streams never reach the application; the transport still acknowledges them",
    "stream-limit": "grants 128 streams per connection and never sends FIN, so the peer's credit runs out",
    "loss": "drops a fraction of datagrams on send and receive (--loss, default 0.3)",
    "alpn-mismatch": "offers another ALPN, so every handshake fails",
    "stall": "reads requests and never answers them",
    "bad-certificate": "presents an expired certificate, which its peers refuse in the TLS handshake",
    "flow-control": "grants little flow-control credit and reads its streams slowly, so requests wait for credit",
    "blackhole": "stops answering anything mid-run, as a frozen process does: drops every datagram in and out",
    "one-way-loss": "drops a fraction of the datagrams it sends only (--loss, default 0.3); what it receives arrives",
}

DEFAULT_LOSS = 0.3  # the loss scenario's drop fraction unless told otherwise
# The stream-limit scenario's registry grants this many streams per connection: aioquic's own
# default, close to other stacks' (quic-go: 100), so a leak exhausts it within seconds.
STREAM_LIMIT_SCENARIO_STREAMS = 128
MISMATCHED_ALPN = "dhtscope/0-mismatch"
# The certificates a bad-certificate node can present: expired (TLS alert 45 at its peers), or
# with a key that is not Ed25519, from which no node id can be derived (alert 43).
BAD_CERTIFICATES = ("expired", "not-ed25519")
# The flow-control scenario's node grants this much credit beyond what its application has read,
# per stream (a PING or a lookup fits; a STORE, about 290 bytes, waits twice) and per connection...
FLOW_CONTROL_STREAM_WINDOW_BYTES = 128
FLOW_CONTROL_CONNECTION_WINDOW_BYTES = 4 * FLOW_CONTROL_STREAM_WINDOW_BYTES
# ...and its application takes what arrives on a peer's stream this long after it arrived: each
# wait for credit lasts longer than the half second the analysis calls starvation.
FLOW_CONTROL_READ_DELAY_S = 0.75
# The blackhole scenario's node goes silent this long after its first datagram: time for its
# peers to join through it and store their records at it first.
BLACKHOLE_AFTER_S = 5.0


@dataclass
class Faults:
    """Failure modes switched on per node, for teaching and tests; all off by default."""

    loss: float = 0.0  # fraction of datagrams dropped, on send and on receive
    no_accept: bool = False  # never hand peer-opened streams to the application
    never_fin: bool = False  # never send FIN on our side of a stream
    stall: bool = False  # read requests and never answer (applied by the RPC layer)
    alpn: str | None = None  # offer this ALPN instead of ours
    stream_credit: int | None = None  # grant new connections this many streams, not MAX_STREAMS_PER_CONNECTION
    certificate: str | None = None  # present this bad certificate (one of BAD_CERTIFICATES) instead of ours
    flow_control: bool = False  # grant little flow-control credit and read peer-opened streams slowly
    blackhole: bool = False  # drop every datagram in and out, blackhole_after_s after the switch
    blackhole_after_s: float = BLACKHOLE_AFTER_S
    send_loss: float = 0.0  # fraction of datagrams dropped on send only
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
            "bad-certificate": cls(certificate="expired"),
            "flow-control": cls(flow_control=True),
            "blackhole": cls(blackhole=True),
            "one-way-loss": cls(send_loss=loss),
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
        if self.certificate:
            out.append(f"bad-certificate={self.certificate}")
        if self.flow_control:
            out.append("flow-control")
        if self.blackhole:
            out.append("blackhole")
        if self.send_loss:
            out.append(f"one-way-loss={self.send_loss:g}")
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
            elif name.startswith("bad-certificate="):
                faults.certificate = name.split("=", 1)[1]
            elif name == "flow-control":
                faults.flow_control = True
            elif name == "blackhole":
                faults.blackhole = True
            elif name.startswith("one-way-loss="):
                try:
                    faults.send_loss = float(name.split("=", 1)[1])
                except ValueError:
                    faults.send_loss = DEFAULT_LOSS
        return faults

    def active_scenario(self) -> str:
        """The scenario these faults are, or 'custom' when they match none exactly."""
        for name in SCENARIOS:
            wanted = Faults.for_scenario(name, loss=self.loss or self.send_loss or DEFAULT_LOSS)
            wanted.seed = self.seed
            wanted.blackhole_after_s = self.blackhole_after_s
            if wanted == self:
                return name
        return "custom"


# Settings applied when a connection is made: a live switch reaches new connections only.
_PER_CONNECTION = {
    "alpn": "ALPN",
    "stream_credit": "stream credit",
    "certificate": "the certificate",
    "flow_control": "flow-control credit",
}


def apply_scenario(faults: Faults, name: str, loss: float = DEFAULT_LOSS) -> list[str]:
    """Switch `faults` in place to scenario `name`; returns notes on what applies to new connections only."""
    wanted = Faults.for_scenario(name, loss=loss)
    notes = []
    for f in dataclasses.fields(Faults):
        if f.name in ("seed", "blackhole_after_s"):
            continue  # how a fault is set up, not which fault is on
        old, new = getattr(faults, f.name), getattr(wanted, f.name)
        if old != new and f.name in _PER_CONNECTION:
            notes.append(
                f"{_PER_CONNECTION[f.name]} applies to new connections only: open connections keep what "
                "they negotiated in their handshake; peers already connected are unaffected until they reconnect"
            )
        setattr(faults, f.name, new)
    return notes
