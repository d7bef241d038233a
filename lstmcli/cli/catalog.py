"""`lstm cells` and `lstm datasets`: what the tool offers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from lstmcli.cli.common import (
    DataDirOpt,
    JsonOpt,
    app,
    handles_errors,
    out,
    print_json,
)


@app.command()
@handles_errors
def cells(as_json: JsonOpt = False) -> None:
    """List the recurrent cells with their equations."""
    from lstmcli.nn.cells import cell_names, get_cell
    from lstmcli.ui.render import cell_panels

    rows = []
    for name in cell_names():
        cell = get_cell(name)
        rows.append({
            "name": name,
            "class": cell.__name__,
            "state": list(cell.state_names),
            "gates": list(cell.gate_names),
            "memory_gate": cell.memory_gate,
            "fused_kernel": cell.kernel is not None,
            "fast_path": cell.fast_path(),
            "weight_blocks": cell.num_chunks(),
            "equations": cell.equations(),
        })
    if as_json:
        print_json({"cells": rows})
        return
    for panel in cell_panels(rows):
        out.print(panel, soft_wrap=False)  # wrap long equations inside the panel, never crop


@app.command()
@handles_errors
def datasets(
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the registered datasets, their hub ids, columns, labels and splits."""
    # Not via data.splits, which imports pyarrow: listing needs none of it.
    from lstmcli.data.registry import dataset_registry, local_copy_dir

    rows = []
    for info in dataset_registry().values():
        local = local_copy_dir(info.name, data_dir)
        rows.append({
            "name": info.name, "hub_id": info.hub_id, "text_column": info.text_column,
            "label_column": info.label_column, "label_names": list(info.label_names),
            "splits": list(info.splits), "unlabelled_splits": list(info.unlabelled_splits),
            "description": info.description,
            "local_copy": str(local) if local is not None else None,
        })
    if as_json:
        print_json({"datasets": rows})
        return
    from rich.table import Table  # not at import: every `lstm` command would pay for it

    table = Table(title="Datasets", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("hub id", overflow="fold")
    for column in ("columns", "labels", "splits", "local"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["hub_id"] or "(bundled)",
                      f"{row['text_column']}\n{row['label_column']}",
                      "\n".join(row["label_names"]),
                      "\n".join(row["splits"] + [f"{s} (unlabelled)"
                                                 for s in row["unlabelled_splits"]]),
                      "yes" if row["local_copy"] else "-")
    out.print(table)




@app.command("runs")
@handles_errors
def runs_command(
    directory: Annotated[Path | None, typer.Argument(
        help="Where to look (default: the runs root, $LSTM_RUNS_DIR or ./runs).",
        show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """List trained runs: cell, dataset, best epoch, validation and test accuracy, date."""
    from lstmcli.errors import DataError
    from lstmcli.modelcard import list_runs
    from lstmcli.runs import runs_root
    from lstmcli.ui.listing import runs_table
    from lstmcli.ui.text import printable

    root = runs_root() if directory is None else directory
    if not root.is_dir():
        raise DataError(f"{root} is not a directory; pass the directory that holds the runs")
    rows = list_runs(root)
    if as_json:
        print_json({"root": str(root), "runs": rows})
    elif not rows:
        out.print(f"no runs under {escape(printable(str(root)))}")
    else:
        out.print(f"runs under {escape(printable(str(root)))}")
        out.print(runs_table(rows))
