"""`e`: where to save the view, and as what; the file's name stays on screen once it is written."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from ..export import FORMATS, default_path


class ExportScreen(ModalScreen[tuple[str, str] | None]):
    """Returns (path, format) or None. Enter saves in the chosen format; the buttons pick one."""

    DEFAULT_CSS = """
    ExportScreen { align: center middle; }
    ExportScreen > Vertical { width: 90%; max-width: 100; height: auto; border: thick $primary;
                              background: $surface; padding: 0 1; }
    ExportScreen Horizontal { height: auto; }
    ExportScreen Button { margin: 0 1 0 0; }
    ExportScreen #export-keys { color: $text-muted; }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, what: str, view: str, fmt: str = "markdown") -> None:
        super().__init__()
        self.what = what
        self.view = view
        self.fmt = fmt
        self.path = default_path(view, fmt).name  # in the current directory

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Save {self.what} to a file in {Path.cwd()} (or give another path):")
            yield Input(value=self.path, id="export-path")
            with Horizontal():
                yield Button("Save as Markdown", id="export-markdown", variant="primary")
                yield Button("Save as JSON", id="export-json")
            other = "JSON" if self.fmt == "markdown" else "Markdown"
            yield Static(
                f"enter: save as {'Markdown' if self.fmt == 'markdown' else 'JSON'}   "
                f"tab: the buttons ({other})   escape: cancel",
                id="export-keys",
            )

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def _save(self, fmt: str) -> None:
        path = self.query_one(Input).value.strip()
        if not path:
            self.notify("give a file name", severity="error")
            return
        for other, suffix in FORMATS.items():  # the name follows the format chosen by button
            if other != fmt and path.endswith(suffix):
                path = path[: -len(suffix)] + FORMATS[fmt]
        self.dismiss((path, fmt))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._save(self.fmt)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self._save("json" if event.button.id == "export-json" else "markdown")

    def action_cancel(self) -> None:
        self.dismiss(None)
