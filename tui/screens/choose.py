"""Small modal questions: a scenario to switch to, a replay time to jump to, whether to quit."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option


class ChooseScreen(ModalScreen[str | None]):
    """Pick one of a few options; returns its id, or None on escape."""

    DEFAULT_CSS = """
    ChooseScreen { align: center middle; }
    ChooseScreen > Vertical { width: 90%; max-width: 120; height: auto; max-height: 24; border: thick $primary;
                              background: $surface; }
    ChooseScreen OptionList { height: auto; max-height: 20; }
    """

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel")]

    def __init__(self, title: str, options: list[tuple[str, str | Text]], highlighted: str | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.options = options
        self.highlighted = highlighted

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text)
            yield OptionList(*(Option(label, id=key) for key, label in self.options))

    def on_mount(self) -> None:
        keys = [key for key, _ in self.options]
        if self.highlighted in keys:
            self.query_one(OptionList).highlighted = keys.index(self.highlighted)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class AskScreen(ModalScreen[str | None]):
    """One line of input; returns the text, or None on escape."""

    DEFAULT_CSS = """
    AskScreen { align: center middle; }
    AskScreen > Vertical { width: 60; height: auto; border: thick $primary; background: $surface; }
    """

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel")]

    def __init__(self, title: str, placeholder: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text)
            yield Input(placeholder=self.placeholder)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class QuitScreen(ModalScreen[bool]):
    """Quit? `q`, `y` or enter: yes; escape or `n`: no. Every other key is swallowed, so a word
    typed where a text field was expected (a filter starting with q) never quits the app."""

    DEFAULT_CSS = """
    QuitScreen { align: center middle; }
    QuitScreen > Vertical { width: 64; height: auto; border: thick $warning; background: $surface; padding: 0 1; }
    QuitScreen #quit-question { width: 1fr; }
    QuitScreen #quit-keys { color: $text-muted; }
    """

    BINDINGS = [
        Binding("q,y,enter", "answer(True)", "Quit"),
        Binding("escape,n", "answer(False)", "Stay"),
    ]

    def __init__(self, note: str = "") -> None:
        super().__init__()
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical():
            # A Static wraps: a Label cut the demo's note off at the dialog's edge.
            yield Static("Quit dhtscope?" + (f" {self.note}" if self.note else ""), id="quit-question")
            yield Static("q, y or enter: quit    escape or n: stay", id="quit-keys")

    def action_answer(self, quit_: bool) -> None:
        self.dismiss(quit_)
