"""RTT samples as bars over a scale that starts at zero, with the scale written beside them."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

EIGHTHS = " ▁▂▃▄▅▆▇█"


def scale_top(values: list[float]) -> float:
    """The top of the scale: the largest sample rounded up to a round number of milliseconds, so
    a spread of 2.1 to 2.2 ms draws as nearly level bars, not as bottom-to-top swings."""
    high = max(values, default=0.0)
    if high <= 0:
        return 1.0
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000):
        if high <= step * 10:
            return round(-(-high // step) * step, 6)
    return high


class RttChart(Widget):
    """`data` is the samples in ms, oldest first; the newest fill the right edge."""

    DEFAULT_CSS = """
    RttChart { height: 3; color: $accent; }
    """

    data: reactive[list[float]] = reactive(list, always_update=True)

    def render(self) -> Text:
        width, height = self.size.width, max(self.size.height, 1)
        values = [v for v in self.data if v >= 0]
        top = scale_top(values)
        labels = [f"{top:g} ms", *[""] * (height - 2), "0 ms"] if height >= 2 else [f"{top:g} ms"]
        pad = max(len(label) for label in labels) + 1
        columns = values[-max(width - pad, 0) :] if width > pad else []
        levels = [round(v / top * height * 8) for v in columns]
        text = Text(no_wrap=True)
        for row in range(height):
            floor = (height - 1 - row) * 8  # eighths below this row
            text.append(labels[row].rjust(pad - 1) + " ", style="dim")
            text.append("".join(EIGHTHS[max(0, min(8, level - floor))] for level in levels))
            if row < height - 1:
                text.append("\n")
        return text
