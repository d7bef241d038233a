"""The table of `lstm runs`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from lstmcli.ui.text import printable


def _accuracy(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


def runs_table(rows: list[dict[str, Any]]) -> Table:
    """One row per run, in the order given, named by its directory (the listing says where); a
    run whose config cannot be read says so. A language model (`lstm pretrain`) is marked "LM"
    beside its cell and shows its validation perplexity ("ppl 85.2") for an accuracy."""
    table = Table()
    for name, justify in (("run", "left"), ("cell", "left"), ("dataset", "left"),
                          ("best epoch", "right"), ("val acc", "right"), ("test acc", "right"),
                          ("date", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        if "error" in row:
            table.add_row(escape(printable(Path(row["run_dir"]).name)), f"[red]{row['error']}[/]",
                          *[""] * 5)
            continue
        language_model = row.get("kind") == "language_model"
        cell = str(row["cell"]) + (" LM" if language_model else "")
        perplexity = row.get("val_perplexity")
        validation = ((f"ppl {perplexity:.1f}" if isinstance(perplexity, float) else "ppl -")
                      if language_model else _accuracy(row["val_accuracy"]))
        table.add_row(escape(printable(Path(row["run_dir"]).name)), escape(cell),
                      escape(printable(str(row["dataset"]))), str(row["best_epoch"] or "-"),
                      validation, _accuracy(row["test_accuracy"]), str(row["date"] or "-"))
    return table
