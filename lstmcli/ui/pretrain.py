"""The display of `lstm pretrain`: the training display of `lstm train`
(:class:`lstmcli.ui.render.TrainDisplay`: a progress bar per epoch, live tables, one plain line per
epoch when stderr is no terminal) with a language model's figures: loss and perplexity instead of
accuracy, and no gradient-flow columns (pretraining does not measure them)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from lstmcli.ui.render import TrainDisplay, _compact, group_table, processes
from lstmcli.ui.text import printable


class PretrainDisplay(TrainDisplay):
    """TrainDisplay's progress and layout, a language model's columns."""

    def make_tables(self) -> None:
        self.table, self.gradients = epoch_table(), gradient_table()

    def headline(self, info: dict[str, Any]) -> str:
        return (
            f"[bold]{escape(info['cell'])}[/] language model on "
            f"[bold]{escape(printable(info['dataset']))}[/] ({info['train_size']:,} train / "
            f"{info['validation_size']:,} validation documents; {info['train_windows']:,} "
            f"windows of at most {info['bptt']} tokens, {info['train_tokens']:,} tokens), "
            f"vocabulary {info['vocab_size']:,}, {info['parameters']:,} parameters, "
            f"{escape(info['device'])} {info.get('precision', 'fp32')}" + processes(info))

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        add_epoch_row(self.table, row)
        add_gradient_row(self.gradients, row)
        if self.plain and not self.quiet:
            self.err.print(epoch_line(row, self.epochs), markup=False, highlight=False)
            self.err.file.flush()  # a CI log shows the line now, not when the buffer fills

    def summary(self, summary: dict[str, Any]) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        table, gradients = epoch_table(), gradient_table()
        for row in summary["epochs"]:
            add_epoch_row(table, row)
            add_gradient_row(gradients, row)
        self.out.print(table)
        last = summary["epochs"][-1] if summary["epochs"] else {}
        if "update_ratio" in last:  # not with --no-diagnostics
            self.out.print(gradients)
            self.out.print(group_table(last))
        best = summary["best_val_perplexity"]
        self.out.print(f"best epoch {summary['best_epoch']}: validation perplexity "
                       f"{_figure(best)}")
        if summary.get("stopped_early"):
            self.out.print(f"stopped early after epoch {summary['stopped_epoch']}: no "
                           "validation improvement for --patience epochs")
        self.out.print(f"saved {escape(summary['run_dir'])}; fine-tune it with: lstm train "
                       f"--init-from {escape(summary['run_dir'])}")


def _figure(value: float | None) -> str:
    """A perplexity in at most 6 characters (12.34, 487.9, 1,531, 27.6k): never cut at 80
    columns."""
    if value is None or value != value or value == float("inf"):
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.1f}" if value < 1000 else _compact(value)


def epoch_table() -> Table:
    table = Table(title="Pretraining", title_justify="left")
    for column in ("epoch", "loss", "ppl", "val loss", "val ppl", "‖g‖ mean", "‖g‖ max", "clip",
                   "tok/s"):
        table.add_column(column, justify="right")
    return table


def add_epoch_row(table: Table, row: dict[str, Any]) -> None:
    mark = " *" if row["best"] else ""
    table.add_row(
        f"{row['epoch']}{mark}", f"{row['train_loss']:.4f}", _figure(row["train_perplexity"]),
        f"{row['val_loss']:.4f}", _figure(row["val_perplexity"]), f"{row['grad_norm_mean']:.3f}",
        f"{row['grad_norm_max']:.3f}", f"{row['clipped_fraction']:.0%}",
        _compact(row["tokens_per_second"]))


def epoch_line(row: dict[str, Any], epochs: int | None = None) -> str:
    """An epoch as one plain log line: `epoch 2/5  loss 4.9123  val_loss 5.0012  val_ppl ...`."""
    of = f"/{epochs}" if epochs else ""
    line = (f"epoch {row['epoch']}{of}  loss {row['train_loss']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  val_ppl {_figure(row['val_perplexity'])}  "
            f"grad_norm {row['grad_norm_mean']:.3f}  tok/s {row['tokens_per_second']:,.0f}")
    return line + ("  *" if row["best"] else "")


def gradient_table() -> Table:
    table = Table(title="Gradients", title_justify="left")
    for column in ("epoch", "‖g‖ med", "Δw/w"):
        table.add_column(column, justify="right")
    return table


def add_gradient_row(table: Table, row: dict[str, Any]) -> None:
    if "update_ratio" in row:  # not with --no-diagnostics
        table.add_row(str(row["epoch"]), f"{row['grad_norm_median']:.3f}",
                      f"{row['update_ratio']:.1e}")
