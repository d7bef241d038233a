"""`lstm compare`: several cells or configs, several seeds each, one table of mean ± sd and of
the differences from a baseline that exceed the seed noise (registered on the app in cli.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lstmcli.cli.common import (
    BatchSizeOpt,
    ConfigFileOpt,
    DataDirOpt,
    DatasetOpt,
    DiagnosticsOpt,
    EmbedDimOpt,
    EpochsOpt,
    HiddenSizeOpt,
    JsonOpt,
    LrOpt,
    MaxEvalOpt,
    MaxTrainOpt,
    QuietOpt,
    ThreadsOpt,
    app,
    err,
    handles_errors,
    out,
    print_json,
)
from lstmcli.nn.cells import DEFAULT_CELL, cell_names


@app.command()
@handles_errors
def compare(
    cells: Annotated[str | None, typer.Option(
        "--cells", metavar="CELL,CELL", help="Cells to compare, comma-separated: any of "
        f"{', '.join(cell_names())}. \\[default: every cell; with --configs, each file's own]")]
    = None,
    config_file: ConfigFileOpt = None,
    configs: Annotated[list[str] | None, typer.Option(
        "--configs", metavar="FILE,FILE", help="TOML files, one variant each, named by its file "
        "stem and layered over --config; comma-separated or repeated. With --cells: every file "
        "with every cell, named STEM-CELL.")] = None,
    seeds: Annotated[int | None, typer.Option(
        "--seeds", help="Train every variant with the seeds 0..N-1. \\[default: 3]")] = None,
    seed_list: Annotated[str | None, typer.Option(
        "--seed-list", metavar="S,S", help="These seeds instead, comma-separated (e.g. 0,1,2).")]
    = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    max_train_samples: MaxTrainOpt = None,
    max_eval_samples: MaxEvalOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchSizeOpt = None,
    lr: LrOpt = None,
    hidden_size: HiddenSizeOpt = None,
    embed_dim: EmbedDimOpt = None,
    threads: ThreadsOpt = None,
    diagnostics: DiagnosticsOpt = None,
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="Directory of the comparison: VARIANT/seed-S runs and "
        "compare.json; give an existing one to continue it. \\[default: runs/compare-<time>]")]
    = None,
    baseline: Annotated[str | None, typer.Option(
        "--baseline", metavar="VARIANT", help="The variant the others are tested against. "
        f"\\[default: {DEFAULT_CELL} if compared, else the first]")] = None,
    alpha: Annotated[float, typer.Option(
        "--alpha", help="Significance level of the two-sided Welch t-test.")] = 0.05,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also draw every seed's accuracy per variant into this .png, .svg or "
        ".pdf file (needs matplotlib: pip install lstmcli\\[plot]).")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Retrain every run, replacing those already in --output.")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train several cells (or configs) with several seeds on the same data and budget; report
    mean ± sd per variant and which differences from a baseline exceed the seed noise (Welch's
    t-test).

    Runs one after another, into OUTPUT/VARIANT/seed-S. Run the same command again with the same
    --output to continue an interrupted comparison: finished runs are reused. Exit 1 when a run
    diverged (the others are still trained and reported)."""
    from lstmcli.training.compare import RunsFailed, run_comparison
    from lstmcli.training.compare_plan import parse_seeds, plan_comparison
    from lstmcli.ui.compare import CompareDisplay, compare_notes, compare_table
    from lstmcli.ui.plots import check_plot_target

    if plot is not None:
        check_plot_target(plot)  # before hours of training, not after
    plan = plan_comparison(
        cells=cells, base=config_file, configs=configs, seeds=parse_seeds(seeds, seed_list),
        overrides={
            "model": dict(hidden_size=hidden_size, embed_dim=embed_dim),
            "data": dict(dataset=dataset, data_dir=data_dir, max_train_samples=max_train_samples,
                         max_eval_samples=max_eval_samples),
            "train": dict(epochs=epochs, batch_size=batch_size, lr=lr, threads=threads,
                          diagnostics=diagnostics)},
        output=output, baseline=baseline, alpha=alpha, overwrite=overwrite)
    with CompareDisplay(err, quiet=as_json or quiet) as display:
        payload = run_comparison(plan, display, sys.argv)
    if plot is not None:
        from lstmcli.ui.compare import write_compare_figure

        write_compare_figure(plot, payload)
    if as_json:
        print_json(payload)
    elif not quiet:
        out.print(compare_table(payload, out.width))
        for line in compare_notes(payload):
            out.print(line)
        if plot is not None:
            out.print(f"wrote {plot}", markup=False)
    failed = [row for row in payload["runs"] if row["status"] == "failed"]
    if failed:
        raise RunsFailed(f"{len(failed)} of {len(payload['runs'])} runs failed (first: "
                         f"{failed[0]['variant']} seed {failed[0]['seed']}: {failed[0]['error']}); "
                         f"the others are reported and kept in {payload['output']}")
