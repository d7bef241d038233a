"""The `lstm diagnose` and `lstm explain` commands (registered on the app in cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from lstmcli.cli.common import (
    JsonOpt,
    ModelDirOpt,
    QuietOpt,
    app,
    choice_option,
    device_option,
    err,
    handles_errors,
    out,
    print_json,
    undecodable_byte,
)
from lstmcli.errors import ConfigError, DataError
from lstmcli.nn.cells import cell_names, get_cell
from lstmcli.ui.text import printable


def _default_cells() -> list[str]:
    return [name for name in cell_names() if get_cell(name).diagnose_by_default]


@app.command()
@handles_errors
def diagnose(
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="A run directory: diagnose that trained model on a batch of its own "
        "validation data instead of the synthetic task.")] = None,
    cell: Annotated[list[str] | None, choice_option(
        "--cell", choices=cell_names, help="A cell for the synthetic long-range task; repeat "
        f"for several. \\[default: {', '.join(_default_cells())}]", show_default=False)] = None,
    seq_len: Annotated[int | None, typer.Option(
        "--seq-len", help="Tokens per synthetic example. \\[default: 200]")] = None,
    train_steps: Annotated[int | None, typer.Option(
        "--train-steps", help="Training steps per cell on the task; 0 measures the cells at "
        "initialisation. \\[default: 300]")] = None,
    hidden_size: Annotated[int | None, typer.Option(
        "--hidden-size", help="Hidden units of the synthetic-task models. \\[default: 32]")] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Seed of the synthetic task and models. \\[default: 0]")] = None,
    gate_bias: Annotated[float | None, typer.Option(
        "--gate-bias", help="Initial bias of the synthetic-task models' memory gate: the forget "
        "gate of lstm, peephole and coupled, the update gate of gru (rnn has none). "
        "\\[default: 4.0]")] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also draw the curves into this .png, .svg or .pdf file (needs "
        "matplotlib: pip install lstmcli\\[plot]).")] = None,
    device: Annotated[str, device_option(" With --model.")] = "cpu",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Gradient flow through time and gate statistics, on a synthetic task or a trained run.

    Without --model: rnn, lstm and gru (or the --cell list) on a bundled long-range task, at
    initialisation and after a short training. With --model: a trained run on its own data.
    """
    from lstmcli.ui.plots import check_plot_target

    if plot is not None:
        check_plot_target(plot)  # before minutes of work, not after
    synthetic_flags = {"--cell": cell, "--seq-len": seq_len, "--train-steps": train_steps,
                       "--hidden-size": hidden_size, "--seed": seed, "--gate-bias": gate_bias}
    if model is not None:
        given = [flag for flag, value in synthetic_flags.items() if value is not None]
        if given:
            raise ConfigError(f"{given[0]} sets up the synthetic task; it does not apply to "
                              "--model RUN_DIR (drop one of them)")
        payload = _diagnose_run(model, device)
        title = f"{Path(payload['run_dir']).name}: {payload['dataset']} validation batch"
    else:
        payload = _diagnose_synthetic(cell, seq_len, train_steps, hidden_size, seed, gate_bias,
                                      as_json or quiet)
        task = payload["task"]
        title = (f"long-range task, {task['seq_len']} tokens, gate bias {task['gate_bias']:g}: "
                 f"at init" + (f" and after {task['train_steps']} steps (dashed)"
                               if task["train_steps"] else ""))
    if plot is not None:
        from lstmcli.ui.plots import write_figure

        cells = payload["cells"]
        trained = {name: (entry.get("trained") or {}).get("grad_norm_by_step")
                   for name, entry in cells.items()}
        write_figure(plot, {name: entry["grad_norm_by_step"] for name, entry in cells.items()},
                     {name: entry["accuracy"] for name, entry in cells.items()}, title, trained)
    if as_json:
        print_json(payload)
        return
    if quiet:
        return
    from lstmcli.ui.render import diagnose_renderables

    if payload["mode"] == "synthetic":
        task = payload["task"]
        out.print(f"synthetic long-range task: a sentiment word in the first "
                  f"{task['signal_positions']} positions, neutral filler up to {task['seq_len']} "
                  f"tokens; {task['train_steps']} training steps per cell, hidden size "
                  f"{task['hidden_size']}, memory-gate bias {task['gate_bias']:g}, seed "
                  f"{task['seed']}; accuracy on "
                  f"{task['eval_examples']} held-out examples", soft_wrap=False)
    else:
        dataset = escape(printable(payload["dataset"]))
        out.print(f"{escape(payload['run_dir'])} on a {dataset} validation batch")
    for renderable in diagnose_renderables(payload):
        out.print(renderable)
    if plot is not None:
        out.print(f"wrote {escape(str(plot))}")


def _diagnose_run(model: str, device: str) -> dict[str, Any]:
    from lstmcli.device import resolve_device
    from lstmcli.diagnostics.flow import diagnose_run
    from lstmcli.runload import load_run

    return diagnose_run(load_run(model, str(resolve_device(device))))


def _diagnose_synthetic(
    cells: list[str] | None,
    seq_len: int | None,
    train_steps: int | None,
    hidden_size: int | None,
    seed: int | None,
    gate_bias: float | None,
    quiet: bool,
) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from lstmcli.diagnostics import longrange

    settings = longrange.TaskSettings(
        seq_len=longrange.DEFAULT_SEQ_LEN if seq_len is None else seq_len,
        train_steps=longrange.DEFAULT_TRAIN_STEPS if train_steps is None else train_steps,
        hidden_size=longrange.DEFAULT_HIDDEN_SIZE if hidden_size is None else hidden_size,
        seed=0 if seed is None else seed,
        gate_bias=longrange.DEFAULT_GATE_BIAS if gate_bias is None else gate_bias,
    )
    names = cells or _default_cells()
    progress = Progress(TextColumn("training {task.fields[cell]}"), BarColumn(),
                        MofNCompleteColumn(), console=err, transient=True, disable=quiet)
    tasks: dict[str, Any] = {}

    def on_step(cell: str, step: int, steps: int) -> None:
        if cell not in tasks:
            tasks[cell] = progress.add_task("train", total=steps, cell=cell)
        progress.update(tasks[cell], completed=step)

    with progress:
        results = longrange.compare_cells(names, settings, on_step)
    return {"mode": "synthetic", "task": settings.to_dict(),
            "cells": {result.cell: result.to_dict() for result in results}}


@app.command()
@handles_errors
def explain(
    text: Annotated[str | None, typer.Argument(
        help="The text to explain.", show_default=False)] = None,
    model: ModelDirOpt = None,
    device: Annotated[str, device_option()] = "cpu",
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object: per token its probabilities and gate value.")] = False,
) -> None:
    """Read one text token by token: running class probabilities and the memory gate.

    The gate is the mean forget gate (LSTM family) or update gate (GRU) of the first layer.
    """
    if text is None or not text.strip():
        raise DataError('the text is empty; pass one, e.g. lstm explain "the plot was dull"')
    if (byte := undecodable_byte(text)) is not None:
        raise DataError(f"the text is not valid UTF-8 (byte 0x{byte:02x}); pass UTF-8 text")
    from lstmcli.device import resolve_device
    from lstmcli.inference.explain import explain as explain_text
    from lstmcli.runload import load_run

    run = load_run(model, str(resolve_device(device)))
    explanation = explain_text(run, text)
    payload = {"run_dir": str(run.path), **explanation.to_dict()}
    if as_json:
        print_json(payload)
        return
    from lstmcli.ui.explain import explain_renderables

    for renderable in explain_renderables(payload, width=out.width):
        # soft_wrap off: rich wraps the notes at word boundaries, where a terminal would cut a
        # word in two.
        out.print(renderable, soft_wrap=False)
