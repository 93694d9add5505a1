"""The simulation curve: rounds and messages per lookup against log2(N), in the terminal and as SVG."""

from __future__ import annotations

import math
from typing import Any
from xml.sax.saxutils import escape


def _series(runs: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    ok = sorted((r for r in runs if "median_rounds" in r), key=lambda r: r["nodes"])
    xs = [math.log2(r["nodes"]) for r in ok]
    return {
        "median rounds": list(zip(xs, [float(r["median_rounds"]) for r in ok], strict=True)),
        "p95 rounds": list(zip(xs, [float(r["p95_rounds"]) for r in ok], strict=True)),
        "log2(N)/3 (target bound)": list(zip(xs, [x / 3 for x in xs], strict=True)),
        "median messages": list(zip(xs, [float(r["median_messages"]) for r in ok], strict=True)),
    }


def terminal_chart(runs: list[dict[str, Any]], width: int = 72, height: int = 18) -> str:
    """A plotext chart as plain text (no colour codes); a small table if plotext is not there."""
    series = _series(runs)
    if not series["median rounds"]:
        return "(no simulation results)"
    try:
        import plotext as plt
    except ImportError:
        return _text_table(series)
    markers = {"median rounds": "o", "p95 rounds": "x", "log2(N)/3 (target bound)": ".", "median messages": "+"}
    legend = "   ".join(f"{m} {name}" for name, m in markers.items())
    try:
        if hasattr(plt, "plot"):  # plotext 5.x
            plt.clear_figure()
            plt.plotsize(width, height)
            for name, pts in series.items():
                plt.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers[name])
            plt.title("per lookup vs log2(N), simulated network")
            plt.xlabel("log2(N)")
            return plt.uncolorize(plt.build()) + "\n" + legend
        fig = plt.figure  # plotext 6.x
        if hasattr(fig, "_set_size"):
            fig._set_size(width, height)
        for name, pts in series.items():
            fig.draw(fig.signal([p[0] for p in pts], [p[1] for p in pts], marker=markers[name]).lines())
        fig.title("per lookup vs log2(N), simulated network")
        fig.label("log2(N)", axis="x")
        return plt.uncolorize(fig.build().string()) + "\n" + legend
    except Exception as exc:  # a plotext API change must not cost the results
        return _text_table(series) + f"\n(plotext could not draw: {exc})"


def _text_table(series: dict[str, list[tuple[float, float]]]) -> str:
    names = list(series)
    lines = ["log2(N)  " + "  ".join(f"{n:>16}" for n in names)]
    for i, (x, _) in enumerate(series[names[0]]):
        lines.append(f"{x:7.2f}  " + "  ".join(f"{series[n][i][1]:16.2f}" for n in names))
    return "\n".join(lines)


def svg_chart(runs: list[dict[str, Any]], path: str) -> None:
    """A small self-contained SVG line chart of the same series."""
    series = _series(runs)
    if not series["median rounds"]:
        return
    w, h, left, right, top, bottom = 720, 410, 60, 220, 40, 60
    xs = [p[0] for p in series["median rounds"]]
    x0, x1 = math.floor(min(xs)), math.ceil(max(xs))
    if x1 == x0:
        x1 = x0 + 1
    ymax = max(p[1] for pts in series.values() for p in pts)
    ymax = math.ceil(ymax + 0.5)

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (w - left - right)

    def py(y: float) -> float:
        return h - bottom - y / ymax * (h - top - bottom)

    colors = {
        "median rounds": "#1f77b4",
        "p95 rounds": "#9ecae1",
        "log2(N)/3 (target bound)": "#d62728",
        "median messages": "#2ca02c",
    }
    dashes = {"log2(N)/3 (target bound)": "6,4"}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14">dhtscope simulation: rounds and messages per lookup vs log2(N)</text>',
    ]
    for yt in range(0, ymax + 1, max(1, ymax // 8)):
        out.append(f'<line x1="{left}" y1="{py(yt):.1f}" x2="{w - right}" y2="{py(yt):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 8}" y="{py(yt) + 4:.1f}" text-anchor="end">{yt}</text>')
    for xt in range(x0, x1 + 1):
        out.append(
            f'<line x1="{px(xt):.1f}" y1="{h - bottom}" x2="{px(xt):.1f}" y2="{h - bottom + 5}" stroke="black"/>'
        )
        out.append(f'<text x="{px(xt):.1f}" y="{h - bottom + 18}" text-anchor="middle">{xt}</text>')
    for r in runs:
        if "median_rounds" in r:
            x = math.log2(r["nodes"])
            out.append(
                f'<text x="{px(x):.1f}" y="{h - bottom + 32}" text-anchor="middle" fill="#666" '
                f'font-size="10">{r["nodes"]:,}</text>'
            )
    out.append(f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="black"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="black"/>')
    out.append(
        f'<text x="{(left + w - right) / 2:.1f}" y="{h - 4}" text-anchor="middle">log2(N) (N = simulated nodes)</text>'
    )
    for i, (name, pts) in enumerate(series.items()):
        color = colors[name]
        d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        dash = f' stroke-dasharray="{dashes[name]}"' if name in dashes else ""
        out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>')
        ly = top + 20 + i * 20
        out.append(
            f'<line x1="{w - right + 15}" y1="{ly}" x2="{w - right + 40}" y2="{ly}" stroke="{color}" '
            f'stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{w - right + 46}" y="{ly + 4}">{escape(name)}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
