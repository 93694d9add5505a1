"""Messages that flow up from widgets and workers to the screen and the app."""

from __future__ import annotations

from typing import Any

from textual.message import Message

from dhtscope.tracing.analysis import Analysis, Evidence

from .source import EventRow


class AnalysisReady(Message):
    """A worker finished analysing (None: nothing to analyse yet, `error` if it failed)."""

    def __init__(self, analysis: Analysis | None, error: str | None = None, elapsed_s: float = 0.0) -> None:
        super().__init__()
        self.analysis = analysis
        self.error = error
        self.elapsed_s = elapsed_s


class NodeChosen(Message):
    """The user picked a node (enter on the Nodes view, or a command)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


class StreamChosen(Message):
    """Open the timeline of one stream, optionally at the event that is a finding's evidence."""

    def __init__(self, connection: str, stream_id: int, evidence: Evidence | None = None, finding: Any = None) -> None:
        super().__init__()
        self.connection = connection
        self.stream_id = stream_id
        self.evidence = evidence
        self.finding = finding


class EventChosen(Message):
    """Show one event in full."""

    def __init__(self, row: EventRow) -> None:
        super().__init__()
        self.row = row


class ProbeRequested(Message):
    """Run a probe on the selected node."""

    def __init__(self, kind: str, args: list[str]) -> None:
        super().__init__()
        self.kind = kind
        self.args = args


class ProbeFinished(Message):
    """A probe's result (the `dhtscope probe --json` shape) or why it failed."""

    def __init__(
        self, node: str, kind: str, result: dict[str, Any] | None, error: str | None, elapsed_s: float
    ) -> None:
        super().__init__()
        self.node = node
        self.kind = kind
        self.result = result
        self.error = error
        self.elapsed_s = elapsed_s


class ScenarioChosen(Message):
    """Switch a node's fault scenario."""

    def __init__(self, node: str, name: str) -> None:
        super().__init__()
        self.node = node
        self.name = name
