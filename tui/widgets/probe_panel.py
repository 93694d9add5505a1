"""Choose an operation and its arguments, run it on the selected node, see every lookup round."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import Button, Input, Select, Static

from dhtscope.node.probes import lookup_summary, store_result_summary

from ..export import ViewExport
from ..format import countdown, ms, short
from ..messages import ProbeFinished, ProbeRequested
from ..source import PROBES
from .vtable import Column, Row, VirtualTable, cell_text

LABELS = {
    "ping": "PING",
    "store": "STORE",
    "find_node": "FIND_NODE",
    "find_value": "FIND_VALUE",
    "advertise": "advertise",
    "discover": "discover",
}
HINTS = {
    "ping": ("HOST:PORT, or a node's name, id or id prefix", ""),
    "find_node": ("a node's name, id or id prefix", ""),
    "find_value": ("key (64 hex) or name, e.g. calculator", ""),
    "discover": ("service, e.g. calculator", ""),
    "store": ("key or name", "value"),
    "advertise": ("service", "endpoint, e.g. 127.0.0.1:9009"),
}


def round_rows(result: dict[str, Any]) -> list[Row]:
    """Each lookup round: how many were asked and answered, then one row per node asked."""
    by_round: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for hop in result.get("hops", []):
        by_round[int(hop.get("round", 0))].append(hop)
    rows: list[Row] = []
    for number in sorted(by_round):
        hops = by_round[number]
        answered = sum(1 for h in hops if h.get("rtt_ms") is not None)
        values = sum(int(h.get("values") or 0) for h in hops)
        summary = f"asked {len(hops)}, answered {answered}" + (f", {values} value(s)" if values else "")
        rows.append(Row([f"round {number}: {summary}"], tone="accent"))
        for h in hops:
            failed = h.get("rtt_ms") is None
            rows.append(
                Row(
                    [
                        "",
                        short(h.get("node"), 16),
                        str(h.get("address")),
                        ("failed", "error") if failed else ms(h.get("rtt_ms"), 2),
                        str(h.get("returned", 0)),
                        (h.get("error") or "", "error")
                        if h.get("error")
                        else ((f"{h.get('values')} record(s)", "ok") if h.get("values") else "-"),
                    ]
                )
            )
    return rows


def result_rows(result: dict[str, Any]) -> list[Row]:
    """What the operation found: records, closest nodes, or where a STORE landed."""
    rows: list[Row] = []
    if "records" in result:
        for r in result["records"]:
            sig = str(r.get("signature"))
            rows.append(
                Row(
                    [
                        ("record", "ok"),
                        str(r.get("value")),
                        f"publisher {short(r.get('publisher'))}",
                        f"seq {r.get('seq')}",
                        f"expires in {countdown(r.get('expires_in_s'))}",
                        (f"signature {sig}", "ok" if sig == "valid" else "error"),
                    ]
                )
            )
    elif "replicas" in result:
        rows.append(Row([(store_result_summary(result), "ok" if result.get("ok") else "error")]))
        for r in result.get("refused", []):
            rows.append(Row([("refused", "error"), short(r.get("node")), str(r.get("reason")), "", "", ""]))
    elif "rtt_ms" in result and "hops" not in result:
        rows.append(Row([("pong", "ok"), str(result.get("to")), f"rtt {ms(result.get('rtt_ms'), 2)} ms", "", "", ""]))
    else:
        for c in result.get("closest", []):
            rows.append(Row(["closest", short(c.get("node"), 16), str(c.get("address")), "", "", ""]))
    return rows


class ProbePanel(Vertical):
    """Form on top, lookup rounds and the result below; the app runs the probe in a worker."""

    DEFAULT_CSS = """
    ProbePanel { height: 1fr; }
    ProbePanel #probe-form { height: 3; }
    ProbePanel #probe-kind { width: 18; }
    ProbePanel #probe-arg1 { width: 2fr; }
    ProbePanel #probe-arg2 { width: 1fr; }
    ProbePanel #probe-run { min-width: 8; width: 8; }
    ProbePanel #probe-status { height: auto; max-height: 3; padding: 0 1; }
    ProbePanel #probe-rounds { height: 2fr; }
    ProbePanel #probe-result { height: 1fr; border-top: solid $primary; }
    """

    node: reactive[str] = reactive("")
    running: reactive[bool] = reactive(False)

    def __init__(self, live: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.live = live
        self.last: ProbeFinished | None = None

    def export(self, context: dict[str, str]) -> Callable[[], ViewExport]:
        """The last probe: its summary, each lookup round, and what it found (JSON: the result)."""
        last = self.last
        rounds = self.query_one("#probe-rounds", VirtualTable)
        results = self.query_one("#probe-result", VirtualTable)
        status = str(self.query_one("#probe-status", Static).render())
        columns = [c.label for c in rounds.columns]
        rows = [[cell_text(c) for c in rounds.get_row(i).cells] for i in range(rounds.row_count())]
        found = "\n".join(
            "- " + " · ".join(t for t in (cell_text(c) for c in results.get_row(i).cells) if t)
            for i in range(results.row_count())
        )
        title = f"dhtscope probe {LABELS.get(last.kind, last.kind)} on {last.node}" if last else "dhtscope probe"
        record: dict[str, Any] = (
            {"node": last.node, "kind": last.kind, "error": last.error, "result": last.result} if last else {}
        )
        sections = [("summary", status)] + ([("result", found)] if found else [])
        return lambda: ViewExport("probe", title, context, columns, rows, [record], sections)

    def compose(self) -> ComposeResult:
        with Horizontal(id="probe-form"):
            yield Select([(LABELS[k], k) for k in LABELS], value="find_value", allow_blank=False, id="probe-kind")
            yield Input(placeholder=HINTS["find_value"][0], id="probe-arg1")
            yield Input(placeholder="", id="probe-arg2", disabled=True)
            yield Button("Run", id="probe-run", variant="primary")
        yield Static(
            Text(
                "enter opens the operations; tab moves to its arguments; enter runs. "
                "In a text field every key is text: escape leaves it.",
                style="dim",
            )
            if self.live
            else Text(
                "Probes run on live nodes: use `dhtscope tui`, `attach` or `demo`. A recording can only be replayed.",
                style="bold yellow",
            ),
            id="probe-status",
        )
        yield VirtualTable(
            [
                Column("round", 8),
                Column("node", 16),
                Column("address", 21),
                Column("rtt ms", 8, "right"),
                Column("closer", 6, "right"),
                Column("value / error"),
            ],
            empty="lookup rounds appear here",
            id="probe-rounds",
        )
        yield VirtualTable(
            [
                Column("result", 8),
                Column("value", 21),
                Column("from", 18),
                Column("seq", 18),
                Column("expiry", 18),
                Column("check"),
            ],
            empty="the result appears here",
            id="probe-result",
        )

    @property
    def kind(self) -> str:
        return str(self.query_one("#probe-kind", Select).value)

    def set_kind(self, kind: str) -> None:
        self.query_one("#probe-kind", Select).value = kind

    def on_select_changed(self, event: Select.Changed) -> None:
        kind = str(event.value)
        first, second = HINTS.get(kind, ("", ""))
        self.query_one("#probe-arg1", Input).placeholder = first
        arg2 = self.query_one("#probe-arg2", Input)
        arg2.placeholder = second
        arg2.disabled = (PROBES[kind].arity if kind in PROBES else 1) < 2

    def on_mount(self) -> None:
        if not self.live:
            self.query_one("#probe-form").disabled = True

    def run(self) -> None:
        if not self.live:
            return
        if self.running:
            self.notify("a probe is already running", severity="warning")
            return
        args = [self.query_one("#probe-arg1", Input).value.strip()]
        if (PROBES[self.kind].arity if self.kind in PROBES else 1) > 1:
            args.append(self.query_one("#probe-arg2", Input).value.strip())
        self.post_message(ProbeRequested(self.kind, args))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.run()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.run()

    def watch_running(self, running: bool) -> None:
        self.query_one("#probe-run", Button).disabled = running
        if running:
            self.query_one("#probe-status", Static).update(
                Text(f"running {LABELS.get(self.kind, self.kind)} on {self.node}…", style="bold")
            )

    def show(self, message: ProbeFinished) -> None:
        """Fill the tables from a finished probe."""
        self.running = False
        self.last = message
        status = self.query_one("#probe-status", Static)
        rounds = self.query_one("#probe-rounds", VirtualTable)
        result_table = self.query_one("#probe-result", VirtualTable)
        label = LABELS.get(message.kind, message.kind)
        if message.error is not None or message.result is None:
            status.update(Text(f"{label} on {message.node} failed: {message.error}", style="bold red"))
            rounds.set_rows([])
            result_table.set_rows([])
            return
        result = message.result
        text = Text()
        if result.get("target_note"):
            text.append(f"{result['target_note']}\n", style="dim")
        text.append(f"{label} on {message.node}: ", style="bold")
        if "hops" in result:
            text.append(lookup_summary(result.get("rounds", 0), result["hops"], result.get("messages", 0)))
        if "records" in result:
            n = len(result["records"])
            text.append(
                f", {n} record(s) under {result.get('name') or short(result.get('key'), 16)}",
                style="bold green" if n else "bold red",
            )
        elif "replicas" in result:
            text.append(f", {store_result_summary(result)}", style="bold green" if result.get("ok") else "bold red")
        elif "rtt_ms" in result and "hops" not in result:
            text.append(f"rtt {ms(result.get('rtt_ms'), 2)} ms", style="bold green")
        text.append(f"  ({message.elapsed_s * 1000:.0f} ms)", style="dim")
        status.update(text)
        rounds.set_rows(round_rows(result))
        result_table.set_rows(result_rows(result))
