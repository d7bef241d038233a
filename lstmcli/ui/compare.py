"""What `lstm compare` shows: a line per run while it works, the table of variants (mean ± sd
over seeds, the difference from the baseline with Welch's p), its notes, and the ``--plot``
figure of every seed's accuracy.

Reads the report of :func:`lstmcli.training.compare.report`; computes nothing of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lstmcli.atomic import atomic_write
from lstmcli.training.compare import CompareCallbacks
from lstmcli.ui.plots import check_plot_target, colour, terminal_colour
from lstmcli.ui.render import epoch_line

ACCURACIES = (("val_accuracy", "validation accuracy (best epoch)"),
              ("test_accuracy", "test accuracy (best checkpoint)"))


class CompareDisplay(CompareCallbacks):
    """A line as each run starts and ends, on stderr, and between them the epoch's progress bar
    on a terminal (a plain line per epoch in a CI log, as `lstm train` does)."""

    def __init__(self, err: Console, quiet: bool = False) -> None:
        self.err = err
        self.quiet = quiet
        self.plain = not err.is_terminal
        self.label = ""
        self.epochs: int | None = None
        self.progress: Progress | None = None
        self.task: Any = None

    def __enter__(self) -> CompareDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = self.task = None

    def on_run_start(self, variant: str, seed: int, index: int, total: int) -> None:
        self.label = f"[{index}/{total}] {variant} seed {seed}"
        if not self.quiet:
            self.err.print(f"{escape(self.label)}: training")

    def on_start(self, info: dict[str, Any]) -> None:
        self.epochs = info.get("epochs")
        if self.quiet or self.plain:
            return
        self.progress = Progress(
            TextColumn(f"{escape(self.label)} epoch {{task.fields[epoch]}}/{self.epochs}"),
            BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(), console=self.err, transient=True)
        self.progress.start()

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        if self.progress is not None:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task("train", total=steps, epoch=epoch, loss=0.0)

    def on_step(self, step: int, loss: float) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=step, loss=loss)

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        if self.plain and not self.quiet:
            self.err.print("  " + epoch_line(row, self.epochs), markup=False, highlight=False)
            self.err.file.flush()

    def on_run_end(self, row: dict[str, Any], index: int, total: int) -> None:
        self._stop()
        if self.quiet:
            return
        label = escape(f"[{index}/{total}] {row['variant']} seed {row['seed']}")
        if row["status"] == "failed":
            self.err.print(f"{label}: [bold red]failed:[/] {escape(row['error'])}")
            return
        figures = f"validation {row['val_accuracy']:.4f}"
        if row["test_accuracy"] is not None:
            figures += f", test {row['test_accuracy']:.4f}"
        figures += f", {row['train_seconds']:.1f} s training"
        reused = " (reused: finished earlier)" if row["status"] == "reused" else ""
        self.err.print(f"{label}: {figures}{reused}")
        self.err.file.flush()


def _spread(summary: dict[str, Any] | None, digits: int, between: str) -> str:
    if summary is None or summary["mean"] is None:
        return "-"
    text = f"{summary['mean']:,.{digits}f}"
    return text if summary["sd"] is None else f"{text}{between}± {summary['sd']:,.{digits}f}"


def _delta(test: dict[str, Any] | None) -> tuple[str, str]:
    """The difference from the baseline (with * when significant) and its p."""
    if test is None or test["difference"] is None:
        return "-", "-"
    shown = f"{test['difference']:+.3f}" + (" [bold]*[/]" if test["significant"] else "")
    return shown, "n/a" if test["p"] is None else f"{test['p']:.3f}"


def compare_table(payload: dict[str, Any], width: int | None = None) -> Table:
    """One row per variant: runs, validation and test accuracy (mean ± sd over seeds), their
    differences from the baseline with Welch's p, training time (mean ± sd) and tokens/s. When
    that is wider than ``width``, each figure's sd and p go on a second line instead."""
    table = _table(payload, stacked=False)
    if width is not None and Console(width=1000).measure(table).maximum > width:
        table = _table(payload, stacked=True)
    return table


def _table(payload: dict[str, Any], stacked: bool) -> Table:
    with_test = any(entry["test_accuracy"] for entry in payload["variants"].values())
    table = Table(title=f"Comparison over seeds {', '.join(map(str, payload['seeds']))}",
                  title_justify="left", show_lines=stacked)
    between = "\n" if stacked else " "
    columns = ["variant", "n", "val acc", "Δ val"] + ([] if stacked else ["p"])
    columns += ["test acc", "Δ test"] + ([] if stacked else ["p"]) if with_test else []
    columns += ["train s", "tok/s"]
    for name in columns:
        table.add_column(name, justify="left" if name == "variant" else "right", no_wrap=True)

    def delta(test: dict[str, Any] | None) -> list[str]:
        shown, p = _delta(test)
        return [f"{shown}\np {p}"] if stacked else [shown, p]

    for name, entry in payload["variants"].items():
        vs = entry["vs_baseline"]
        baseline = ["[dim]baseline[/]"] + ([] if stacked else [""])
        # n of the runs asked for when some failed (listed under the table).
        count = (f"[red]{entry['n']}/{entry['n'] + entry['failed']}[/]" if entry["failed"]
                 else str(entry["n"]))
        cells = [f"[{terminal_colour(entry['cell'])}]{escape(name)}[/]", count,
                 _spread(entry["val_accuracy"], 3, between),
                 *(baseline if vs is None else delta(vs["val_accuracy"]))]
        if with_test:
            cells += [_spread(entry["test_accuracy"], 3, between),
                      *(baseline if vs is None else delta(vs["test_accuracy"]))]
        speed = entry["tokens_per_second"]
        cells += [_spread(entry["train_seconds"], 1, between),
                  "-" if speed is None else f"{speed['mean']:,.0f}"]
        table.add_row(*cells)
    return table


def compare_notes(payload: dict[str, Any]) -> list[str]:
    """The lines under the table (rich markup): the test and alpha, why a p is missing, and the
    failed runs."""
    lines = [f"Δ: difference of means from the baseline {escape(payload['baseline'])}; "
             f"* marks p < {payload['alpha']:g} in {escape(payload['test'])} over the seeds",
             "n: finished runs; train s: wall time of a run's training steps; tok/s: training "
             "tokens per second"]
    for name, entry in payload["variants"].items():
        for key, label in (("val_accuracy", "validation"), ("test_accuracy", "test")):
            test = (entry["vs_baseline"] or {}).get(key)
            if test is not None and test["reason"]:
                lines.append(f"no p for {escape(name)} ({label}): {escape(test['reason'])}")
    for row in payload["runs"]:
        if row["status"] == "failed":
            lines.append(f"[red]failed:[/] {escape(row['variant'])} seed {row['seed']}: "
                         f"{escape(row['error'])}")
    lines.append(f"runs and compare.json in {escape(payload['output'])}")
    return lines


def write_compare_figure(path: Path, payload: dict[str, Any]) -> None:
    """A strip plot per accuracy (validation, and test where the data has it): every seed's
    value as a dot beside its variant's mean ± sd bar, in the cell's colour; a * over the
    variants whose difference from the baseline is significant. Written atomically."""
    check_plot_target(path)
    from matplotlib.figure import Figure  # no pyplot: no global backend, no GUI

    variants = payload["variants"]
    panels = [(key, title) for key, title in ACCURACIES
              if any(entry[key] for entry in variants.values())]
    figure = Figure(figsize=(max(6.0, 1.2 + 1.1 * len(variants) * len(panels)), 4.0), dpi=110,
                    layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, title) in zip(axes, panels, strict=True):
        for x, (name, entry) in enumerate(variants.items()):
            values = [row[key] for row in payload["runs"] if row["variant"] == name
                      and row["status"] != "failed" and row.get(key) is not None]
            # The seeds side by side left of centre (no random jitter: the figure is
            # reproducible), the mean ± sd bar right of it.
            offsets = [-0.3 + 0.25 * (i + 0.5) / len(values) for i in range(len(values))]
            ax.scatter([x + o for o in offsets], values, s=18, color=colour(entry["cell"]),
                       alpha=0.8, zorder=3)
            summary = entry[key]
            if summary is None:
                continue
            ax.errorbar([x + 0.12], [summary["mean"]], yerr=[summary["sd"] or 0.0], fmt="o",
                        color=colour(entry["cell"]), capsize=4, markersize=5, zorder=3)
            test = (entry["vs_baseline"] or {}).get(key)
            if test is not None and test["significant"]:
                top = max([*values, summary["mean"] + (summary["sd"] or 0.0)])
                ax.annotate("*", (x, top), textcoords="offset points", xytext=(0, 4),
                            ha="center", fontsize=13)
        ax.set_xticks(range(len(variants)))
        ax.set_xticklabels([name + (" (baseline)" if name == payload["baseline"] else "")
                            for name in variants], rotation=30 if len(variants) > 4 else 0,
                           ha="right" if len(variants) > 4 else "center", fontsize=8)
        ax.set_xlim(-0.6, len(variants) - 0.4)
        ax.set_title(title, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    figure.suptitle(f"dots: one per seed; bars: mean ± sd over {len(payload['seeds'])} seeds; "
                    f"*: Welch p < {payload['alpha']:g} against the baseline", fontsize=9)
    suffix = path.suffix.lower().lstrip(".")
    atomic_write(path, lambda handle: figure.savefig(handle, format=suffix))
