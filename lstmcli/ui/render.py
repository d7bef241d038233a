"""Rich renderings for people at a terminal: the training display, eval tables, cell panels, the
gradient diagnostics (`lstm diagnose`) and the per-token strip of `lstm explain`."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from lstmcli.diagnostics.gates import SATURATION_HIGH, SATURATION_LOW
from lstmcli.nn.cells import DEFAULT_CELL, get_cell
from lstmcli.training.callbacks import Callbacks
from lstmcli.ui.plots import terminal_plot
from lstmcli.ui.text import printable


class TrainDisplay(Callbacks):
    """A progress bar per epoch above two tables that grow by one row per epoch: the training
    metrics and the gradient diagnostics.

    When stderr is not a terminal (a CI log, a pipe) the live display is transient and would
    show nothing until training ends, so each epoch is instead one plain line, written as soon as
    the epoch ends."""

    def __init__(self, out: Console, err: Console, quiet: bool = False) -> None:
        self.out = out
        self.err = err
        self.quiet = quiet
        self.plain = not err.is_terminal
        self.epochs: int | None = None
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(),
            console=err, transient=True,
        )
        self.table = epoch_table()
        self.cell = DEFAULT_CELL
        self.gradients = gradient_table(self.cell)
        self.live: Live | None = None
        self.task: Any = None

    def __enter__(self) -> TrainDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def make_tables(self) -> None:
        """The epoch and gradient tables for this run's cell (``self.cell``)."""
        self.gradients = gradient_table(self.cell)

    def headline(self, info: dict[str, Any]) -> str:
        """The first line printed: what is trained on what."""
        sizes = f"{info['train_size']:,} train / {info['validation_size']:,} validation"
        if info["test_size"]:
            sizes += f" / {info['test_size']:,} test"
        return (
            f"[bold]{escape(info['cell'])}[/] on [bold]{escape(printable(info['dataset']))}[/] "
            f"({sizes}), labels {escape(printable(', '.join(info['label_names'])))}, vocabulary "
            f"{info['vocab_size']:,}, {info['parameters']:,} parameters, {escape(info['device'])} "
            f"{info.get('precision', 'fp32')}" + processes(info)
        )

    def on_start(self, info: dict[str, Any]) -> None:
        self.cell = info["cell"]
        self.make_tables()
        if self.quiet:
            return
        self.err.print(self.headline(info))
        for note in info["notes"]:
            self.err.print(f"[yellow]note:[/] {escape(printable(note))}")
        self.err.print(f"run directory: {escape(info['run_dir'])}")
        self.epochs = info.get("epochs")
        if self.plain:
            return
        self.diagnostics = info.get("diagnostics", True)
        shown = (self.table, self.gradients) if self.diagnostics else (self.table,)
        self.live = Live(Group(*shown, self.progress), console=self.err,
                         refresh_per_second=8, transient=True)
        self.live.start()

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        if self.quiet or self.plain:
            return
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("train", total=steps, epoch=epoch, loss=0.0)

    def on_step(self, step: int, loss: float) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=step, loss=loss)

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        add_epoch_row(self.table, row)
        add_gradient_row(self.gradients, row, self.cell)
        if self.plain and not self.quiet:
            self.err.print(epoch_line(row, self.epochs), markup=False, highlight=False)
            self.err.file.flush()  # a CI log shows the line now, not when the buffer fills

    def summary(self, summary: dict[str, Any]) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        table = epoch_table()
        gradients = gradient_table(self.cell)
        for row in summary["epochs"]:
            add_epoch_row(table, row)
            add_gradient_row(gradients, row, self.cell)
        self.out.print(table)
        last = summary["epochs"][-1] if summary["epochs"] else {}
        if "update_ratio" in last:  # not with --no-diagnostics
            self.out.print(gradients)
            self.out.print(group_table(last))
        line = (f"best epoch {summary['best_epoch']}: validation accuracy "
                f"{summary['best_val_accuracy']:.4f}")
        if summary["test_accuracy"] is not None:
            line += f", test accuracy {summary['test_accuracy']:.4f}"
        self.out.print(line)
        if summary.get("stopped_early"):
            self.out.print(f"stopped early after epoch {summary['stopped_epoch']}: no "
                           "validation improvement for --patience epochs")
        self.out.print(f"saved {escape(summary['run_dir'])}")


def processes(info: dict[str, Any]) -> str:
    """The headline's end under torchrun: ", 2 processes (gloo)"."""
    return f", {info['processes']}" if info.get("processes") else ""


def epoch_table() -> Table:
    table = Table(title="Training", title_justify="left")
    # Short headers: the table must fit an 80-column terminal or CI log.
    for column in ("epoch", "loss", "acc", "val loss", "val acc", "‖g‖ mean", "‖g‖ max",
                   "clip", "tok/s"):
        table.add_column(column, justify="right")
    return table


def epoch_line(row: dict[str, Any], epochs: int | None = None) -> str:
    """An epoch as one plain log line: `epoch 3/10  loss 0.4123  acc 0.8120  ...  *`."""
    of = f"/{epochs}" if epochs else ""
    line = (f"epoch {row['epoch']}{of}  loss {row['train_loss']:.4f}  "
            f"acc {row['train_accuracy']:.4f}  val_loss {row['val_loss']:.4f}  "
            f"val_acc {row['val_accuracy']:.4f}  grad_norm {row['grad_norm_mean']:.3f}  "
            f"tok/s {row['tokens_per_second']:,.0f}")
    return line + ("  *" if row["best"] else "")


def add_epoch_row(table: Table, row: dict[str, Any]) -> None:
    mark = " *" if row["best"] else ""
    table.add_row(
        f"{row['epoch']}{mark}", f"{row['train_loss']:.4f}", f"{row['train_accuracy']:.4f}",
        f"{row['val_loss']:.4f}", f"{row['val_accuracy']:.4f}", f"{row['grad_norm_mean']:.3f}",
        f"{row['grad_norm_max']:.3f}", f"{row['clipped_fraction']:.0%}",
        _compact(row["tokens_per_second"]),
    )


def _compact(value: float) -> str:
    """At most 5 characters (27.6k, 1.2M), so that the values never get cut at 80 columns."""
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= 10 * limit:
            return f"{value / limit:.1f}{suffix}" if value < 100 * limit else (
                f"{value / limit:.0f}{suffix}")
    return f"{value:,.0f}"


def _sci(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def _gate_cell(stats: dict[str, float] | None) -> str:
    """mean, then the saturated shares low/high: '0.74 0%/4%'."""
    if not stats:
        return "-"
    return (f"{stats['mean']:.2f} {stats['saturated_low']:.0%}/"
            f"{stats['saturated_high']:.0%}")


def gradient_table(cell: str) -> Table:
    """Per epoch: median gradient norm, update/weight ratio, the flow summaries and the memory
    gate (mean, share below 0.1 / above 0.9)."""
    table = Table(title="Gradients (flow: layer 1 forward, fixed validation batch)",
                  title_justify="left")
    for column in ("epoch", "‖g‖ med", "Δw/w", "∂s first/last", "decay/step"):
        table.add_column(column, justify="right")
    gate = get_cell(cell).memory_gate
    if gate is not None:
        table.add_column(f"{gate} lo/hi", justify="right")
    return table


def add_gradient_row(table: Table, row: dict[str, Any], cell: str) -> None:
    if "update_ratio" not in row:
        return  # trained with --no-diagnostics
    cells = [str(row["epoch"]), f"{row['grad_norm_median']:.3f}", f"{row['update_ratio']:.1e}",
             _sci(row["flow_first_last_ratio"]),
             "-" if row["flow_decay_per_step"] is None else f"{row['flow_decay_per_step']:.3f}"]
    gate = get_cell(cell).memory_gate
    if gate is not None:
        cells.append(_gate_cell(row["gates"].get(gate)))
    table.add_row(*cells)


def group_table(row: dict[str, Any]) -> Table:
    """The epoch's mean gradient norm and update/weight ratio per parameter group."""
    table = Table(title=f"Parameter groups, epoch {row['epoch']} (means over its steps)",
                  title_justify="left")
    for column in ("group", "‖g‖", "Δw/w"):
        table.add_column(column, justify="right")
    for group, norm in row["grad_norm_groups"].items():
        table.add_row(escape(group), f"{norm:.2e}", f"{row['update_ratio_groups'][group]:.1e}")
    return table


def diagnose_renderables(payload: dict[str, Any]) -> list[RenderableType]:
    """The flow table, the terminal curves and the gate table of `lstm diagnose`. On the
    synthetic task the headline flow is at initialisation; cells trained there also have a
    ``trained`` flow, shown beside it with the accuracy after training."""
    cells = payload["cells"]
    first = next(iter(cells.values()))
    with_accuracy = any(entry.get("accuracy") is not None for entry in cells.values())
    with_trained = any(entry.get("trained") is not None for entry in cells.values())
    synthetic = payload.get("mode") == "synthetic"
    where = (f"layer {first['layer']} {first['direction']}, {first['examples']} examples × "
             f"{first['steps']} steps")
    if with_trained:
        title = (f"Gradient through time w.r.t. the state s_t (h_t; h_t and c_t for the LSTM "
                 f"family), {where}: at initialisation, and after "
                 f"{payload['task']['train_steps']} training steps (trained; acc: held-out "
                 f"accuracy after training)")
        # Short headers: the table must fit an 80-column terminal.
        columns = ("cell", "first/last", "decay", "h only", "trained f/l", "tr. decay", "acc")
    else:
        at = " at initialisation" if synthetic else ""
        title = (f"Gradient through time w.r.t. the state s_t (h_t; h_t and c_t for the LSTM "
                 f"family){at}, {where}")
        columns = ("cell", "‖∂L/∂s_1‖", "‖∂L/∂s_T‖", "first/last", "decay", "h only",
                   *(("acc",) if with_accuracy else ()))
    flow = Table(title=title, title_justify="left")
    for column in columns:
        flow.add_column(column, justify="right")
    for name, entry in cells.items():
        accuracy = entry.get("accuracy")
        row = [escape(name)]
        if not with_trained:
            row += [_sci(entry["first"]), _sci(entry["last"])]
        row += [_sci(entry["first_last_ratio"]), _decay(entry["decay_per_step"]),
                _sci(entry["h_first_last_ratio"])]
        if with_trained:
            trained = entry.get("trained") or {}
            row += [_sci(trained.get("first_last_ratio")),
                    _decay(trained.get("decay_per_step"))]
        if with_trained or with_accuracy:
            row.append("-" if accuracy is None else f"{accuracy:.3f}")
        flow.add_row(*row)
    curves = terminal_plot({name: entry["grad_norm_by_step"] for name, entry in cells.items()})
    at = " at initialisation" if synthetic else ""
    title_text = Text(f"‖∂L/∂s_t‖ / ‖∂L/∂s_T‖{at}, log scale (letters: ", style="bold")
    title_text.append(", ".join(f"{name[:1].upper()} {name}" for name in cells), style="bold")
    title_text.append(")", style="bold")
    gates = Table(title=f"Gates (share below {SATURATION_LOW} / above {SATURATION_HIGH}: "
                        "saturated)", title_justify="left")
    gate_columns = ("cell", *(("when",) if with_trained else ()), "gate", "mean",
                    f"< {SATURATION_LOW}", f"> {SATURATION_HIGH}")
    for column in gate_columns:
        gates.add_column(column, justify="right")
    for name, entry in cells.items():
        measured = [("init", entry)]
        if with_trained and entry.get("trained") is not None:
            measured.append(("trained", entry["trained"]))
        for when, flow_entry in measured:
            label = (when,) if with_trained else ()
            if not flow_entry["gates"]:
                gates.add_row(escape(name), *label, "(none)", "-", "-", "-")
            for gate, stats in flow_entry["gates"].items():
                gates.add_row(escape(name), *label, gate, f"{stats['mean']:.3f}",
                              f"{stats['saturated_low']:.1%}", f"{stats['saturated_high']:.1%}")
    return [flow, title_text, curves, gates]


def _decay(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def eval_tables(payload: dict[str, Any]) -> list[RenderableType]:
    names = payload["label_names"]
    # The first line says what was scored: which rows, and how many of how many.
    where = escape(printable(payload["dataset"])) + ("" if payload["split"] == "all" else
                                          f" {payload['split']}")
    scored, available = payload["examples"], payload.get("split_rows", payload["examples"])
    rows = (f"all {scored:,} rows" if scored == available else
            f"{scored:,} of {available:,} rows (--max-eval-samples)")
    head = (f"{where}: {rows} scored, accuracy [bold]{payload['accuracy']:.4f}[/], "
            f"macro F1 {payload['macro_f1']:.4f}")
    per_class = Table(title="Per class", title_justify="left")
    for column in ("label", "precision", "recall", "F1", "support"):
        per_class.add_column(column, justify="right")
    for name in names:
        stats = payload["per_class"][name]
        per_class.add_row(escape(name), f"{stats['precision']:.4f}", f"{stats['recall']:.4f}",
                          f"{stats['f1']:.4f}", f"{stats['support']:,}")
    confusion = Table(title="Confusion matrix (rows: true, columns: predicted)",
                      title_justify="left")
    confusion.add_column("")
    for name in names:
        confusion.add_column(escape(name), justify="right")
    for name, counts in zip(names, payload["confusion_matrix"], strict=True):
        confusion.add_row(escape(name), *(f"{count:,}" for count in counts))
    checks = [f"{name.replace('_', '-')} {check['bar']:g} "
              f"{'[green]passed[/]' if check['passed'] else '[bold red]failed[/]'}"
              for name, check in payload.get("checks", {}).items()]
    return [head, per_class, confusion, *(["checks: " + ", ".join(checks)] if checks else [])]


def cell_panels(rows: list[dict[str, Any]]) -> list[RenderableType]:
    panels = []
    for row in rows:
        gates = ", ".join(row["gates"]) or "none"
        kernel = f"trains on {row['fast_path']}" if row.get("fast_path") else "lstmcli step-wise"
        title = (f"[bold]{row['name']}[/]  state {', '.join(row['state'])} · gates {gates} · "
                 f"W_hh {row['weight_blocks']}H x H · {kernel}")
        panels.append(Panel(escape(row["equations"]), title=title, title_align="left"))
    return panels
