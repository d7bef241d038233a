"""Pictures of the gradient flow: a log-scale character plot for the terminal and, with
``--plot``, a matplotlib figure (the optional ``plot`` extra).

Both draw ``||dL/ds_t|| / ||dL/ds_T||`` (s_t the recurrent state, see diagnostics.FlowReport):
each curve divided by its own last-step norm, so every cell ends at 1 on the right and its left
end reads directly as the first/last ratio.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.text import Text

from lstmcli.atomic import atomic_write
from lstmcli.errors import ConfigError
from lstmcli.nn.cells import cell_names

PLOT_FORMATS = ("png", "svg", "pdf")
# Colours go to cells by registry order, so a new cell gets the next one.
PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")
TERMINAL_PALETTE = ("red", "blue", "green", "magenta", "yellow", "cyan", "bright_red",
                    "bright_blue", "bright_green", "bright_magenta")


def _slot(name: str) -> int | None:
    names = cell_names()
    return names.index(name) if name in names else None


def colour(name: str) -> str:
    """The figure colour of a cell (grey for anything not in the registry)."""
    slot = _slot(name)
    return "grey" if slot is None else PALETTE[slot % len(PALETTE)]


def terminal_colour(name: str) -> str:
    slot = _slot(name)
    return "cyan" if slot is None else TERMINAL_PALETTE[slot % len(TERMINAL_PALETTE)]


def relative_log10(norms: Sequence[float]) -> list[float | None]:
    """log10(norm_t / norm_last) per step; None where the norm is zero or not finite."""
    if not norms or not norms[-1] > 0 or not math.isfinite(norms[-1]):
        return [None] * len(norms)
    last = norms[-1]
    return [math.log10(v / last) if v > 0 and math.isfinite(v) else None for v in norms]


def terminal_plot(
    series: Mapping[str, Sequence[float]], width: int = 60, height: int = 12
) -> Text:
    """A character plot of every curve on a shared log10 y axis: one marker per column (the
    first letter of the series' name, in its colour), steps left to right."""
    logs = {name: relative_log10(values) for name, values in series.items()}
    finite = [v for values in logs.values() for v in values if v is not None]
    text = Text()
    if not finite:
        text.append("(no finite gradient to plot)\n")
        return text
    top = math.ceil(max(finite))
    bottom = math.floor(min(finite))
    if top == bottom:
        top, bottom = top + 1, bottom - 1
    steps = max(len(values) for values in logs.values())
    width = max(2, min(width, steps))
    grid: list[list[tuple[str, str] | None]] = [[None] * width for _ in range(height)]
    for name, values in logs.items():
        marker = (name[:1] or "*").upper() if _slot(name) is not None else name[:1] or "*"
        style = terminal_colour(name)
        count = len(values)
        for column in range(width):
            # The step at the column's centre; the right edge is always the last step.
            t = count - 1 if column == width - 1 else int((column + 0.5) * count / width)
            value = values[t]
            if value is None:
                continue
            row = round((top - value) / (top - bottom) * (height - 1))
            grid[row][column] = (marker, style)
    label_width = 7
    # Axis labels at whole powers of ten only: the top, the bottom and one near the middle.
    labels = {0: top, height - 1: bottom}
    middle = round((top + bottom) / 2)
    middle_row = round((top - middle) / (top - bottom) * (height - 1))
    if 1 < middle_row < height - 2:
        labels[middle_row] = middle
    for row in range(height):
        label = f"1e{labels[row]:+d}" if row in labels else ""
        text.append(f"{label:>{label_width}} ┤", style="dim")
        for cell in grid[row]:
            if cell is None:
                text.append(" ")
            else:
                text.append(cell[0], style=f"bold {cell[1]}")
        text.append("\n")
    last = f"t={steps}"
    axis = "t=1".ljust(width - len(last)) + last if width > len(last) + 3 else f"t=1..{steps}"
    text.append(" " * (label_width + 2) + axis + "\n", style="dim")
    return text


def check_plot_target(path: Path) -> None:
    """Fail early, before any work, on a --plot file that cannot be written."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        raise ConfigError(
            f"--plot {path}: unknown image type {path.suffix or '(no extension)'}; "
            f"use one of: {', '.join('.' + f for f in PLOT_FORMATS)}"
        )
    if not path.parent.is_dir():
        raise ConfigError(f"--plot {path}: directory {path.parent} does not exist")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install lstmcli[plot]") from None


def write_figure(
    path: Path,
    curves: Mapping[str, Sequence[float]],
    accuracies: Mapping[str, float | None],
    title: str,
    trained: Mapping[str, Sequence[float] | None] | None = None,
) -> None:
    """The gradient-flow curves (log y; solid), the ``trained`` curves where given (dashed, same
    colour) and, when any cell has one, the accuracy bars; written atomically in the format the
    extension names."""
    check_plot_target(path)
    from matplotlib.figure import Figure  # no pyplot: no global backend, no GUI

    with_accuracy = any(a is not None for a in accuracies.values())
    figure = Figure(figsize=(9.0, 3.8) if with_accuracy else (6.5, 3.8), dpi=110,
                    layout="constrained")
    axes = figure.subplots(1, 2, width_ratios=[3, 1]) if with_accuracy else [figure.subplots()]
    flow = axes[0]
    with_trained = any(norms is not None for norms in (trained or {}).values())
    for name, norms in curves.items():
        _plot_curve(flow, norms, f"{name} at init" if with_trained else name,
                    color=colour(name), linewidth=1.8)
    for name, norms in (trained or {}).items():
        _plot_curve(flow, norms or [], f"{name} trained", color=colour(name),
                    linewidth=1.4, linestyle="--")
    flow.set_yscale("log")
    flow.set_xlabel("time step t")
    flow.set_ylabel("‖∂L/∂s_t‖ / ‖∂L/∂s_T‖")
    flow.set_title(title, fontsize=10)
    flow.grid(True, which="major", alpha=0.3)
    flow.legend(frameon=False, fontsize=8, ncol=2 if with_trained else 1)
    if with_accuracy:
        bars = axes[1]
        names = [n for n, a in accuracies.items() if a is not None]
        values = [accuracies[n] for n in names]
        bars.bar(names, values, color=[colour(n) for n in names])
        bars.axhline(0.5, color="black", linestyle=":", linewidth=1)
        bars.text(len(names) - 0.5, 0.51, "chance", ha="right", va="bottom", fontsize=8)
        bars.set_ylim(0, 1.12)  # room for the value labels above a bar at 1.0
        bars.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
        bars.set_title("accuracy after training" if with_trained else "held-out accuracy",
                       fontsize=10)
        for x, value in enumerate(values):
            bars.text(x, value + 0.02, f"{value:.2f}", ha="center", fontsize=9)
    suffix = path.suffix.lower().lstrip(".")
    atomic_write(path, lambda handle: figure.savefig(handle, format=suffix))


def _plot_curve(axes: Any, norms: Sequence[float], label: str, **style: Any) -> None:
    """One relative flow curve (steps with a zero norm left out: log scale)."""
    logs = relative_log10(norms)
    steps = [t + 1 for t, v in enumerate(logs) if v is not None]
    values = [10.0 ** v for v in logs if v is not None]
    if steps:
        axes.plot(steps, values, label=label, **style)
