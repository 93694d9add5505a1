"""Join the two ends of each QUIC connection, follow every stream step by step, name what broke.

`analyse(recording)` reads each trace exactly once. That pass keeps only facts (per stream:
the events that realise each step; per trace: packet numbers, ACK coverage, closes, limits,
DHT events), so everything afterwards costs time in streams and packets, never a re-read.

Steps of a bidirectional stream, in order:

    sent -> acked -> received -> delivered -> answered

`sent` and `acked` are seen in the opener's trace, `received`, `delivered` and `answered`
in the peer's. A step is "done", "missing", "unknown" (that end's trace is absent) or
"not visible" (the trace exists but its stack does not log delivery to the application).
This module knows nothing of dhtscope.node: it must work on any stack's qlog.
The package holds one concept a module; `analyse` is its one entry point.
"""

from __future__ import annotations

from .entry import analyse
from .values import (
    ALPN_MISMATCH_CODE,
    DONE,
    ERROR,
    INFO,
    MISSING,
    NOT_VISIBLE,
    STEPS,
    UNKNOWN,
    WARNING,
    Analysis,
    ConnectionEnd,
    ConnectionView,
    Evidence,
    Finding,
    Step,
    StreamCredit,
    StreamView,
    TimelineEntry,
)

__all__ = [
    "ALPN_MISMATCH_CODE",
    "DONE",
    "ERROR",
    "INFO",
    "MISSING",
    "NOT_VISIBLE",
    "STEPS",
    "UNKNOWN",
    "WARNING",
    "Analysis",
    "ConnectionEnd",
    "ConnectionView",
    "Evidence",
    "Finding",
    "Step",
    "StreamCredit",
    "StreamView",
    "TimelineEntry",
    "analyse",
]
