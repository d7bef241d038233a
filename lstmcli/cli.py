"""The `lstm` command line: parses options, loads the config, calls the library, prints with rich.

No maths here, and no torch import at module level: `lstm --help` and `lstm predict` must not pay
for importing what they do not use.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lstmcli import __version__
from lstmcli.config import (
    CELL_NAMES,
    DEVICE_CHOICES,
    POOLING_CHOICES,
    DataConfig,
    apply_overrides,
    load_config,
)
from lstmcli.errors import DataError, LstmError

app = typer.Typer(
    name="lstm",
    help="Train, evaluate, diagnose and serve recurrent-network sentiment classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def handles_errors(command: F) -> F:
    """Turn the library's errors into one line on stderr and an exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except LstmError as error:
            err.print(f"[bold red]error:[/] {escape(str(error))}")
            raise typer.Exit(error.exit_code) from None
        except OSError as error:
            where = f" {error.filename}" if error.filename else ""
            err.print(f"[bold red]error:[/] cannot access{escape(where)}: "
                      f"{escape(error.strerror or str(error))}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def version_callback(value: bool) -> None:
    if value:
        out.print(f"lstmcli {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option(
        "--version", callback=version_callback, is_eager=True, help="Show the version and exit.")]
    = False,
) -> None:
    """Train, evaluate, diagnose and serve recurrent-network sentiment classifiers."""


# Options shared by the commands that read data ----------------------------------------------
DatasetOpt = Annotated[str | None, typer.Option(
    "--dataset", help="A registered dataset (see `lstm datasets`) or a .csv/.tsv/.jsonl/.parquet "
    "file. Default: sample (bundled).")]
DataDirOpt = Annotated[str | None, typer.Option(
    "--data-dir", help="Local copies laid out as DIR/NAME/SPLIT.parquet (env LSTM_DATA_DIR).")]
TextColumnOpt = Annotated[str | None, typer.Option(
    "--text-column", help="Text column of a local file (default: text/sentence/review).")]
LabelColumnOpt = Annotated[str | None, typer.Option(
    "--label-column", help="Label column of a local file (default: label/sentiment/rating).")]
ThresholdOpt = Annotated[float | None, typer.Option(
    "--positive-threshold", help="Star ratings: a rating >= this is positive.")]
MaxEvalOpt = Annotated[int | None, typer.Option(
    "--max-eval-samples", help="Cap validation/test examples (seeded subsample).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object for machines.")]
ModelDirOpt = Annotated[str | None, typer.Option(
    "--model", "-m", help="Run directory written by `lstm train` (default: the latest run).")]


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


@app.command()
@handles_errors
def train(
    config_file: Annotated[Path | None, typer.Option(
        "--config", "-c", help="TOML file with \\[model], \\[data], \\[train] sections; flags "
        "override it.")] = None,
    cell: Annotated[str | None, typer.Option(
        "--cell", help=f"Recurrent cell: {', '.join(CELL_NAMES)}.")] = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    text_column: TextColumnOpt = None,
    label_column: LabelColumnOpt = None,
    train_file: Annotated[str | None, typer.Option(
        "--train-file", help="Training split as its own file.")] = None,
    validation_file: Annotated[str | None, typer.Option(
        "--validation-file", help="Validation split as its own file.")] = None,
    test_file: Annotated[str | None, typer.Option(
        "--test-file", help="Test split as its own file.")] = None,
    positive_threshold: ThresholdOpt = None,
    val_fraction: Annotated[float | None, typer.Option(
        "--val-fraction", help="Share of train carved out for validation when the data has no "
        "validation split. \\[default: 0.1]")] = None,
    max_train_samples: Annotated[int | None, typer.Option(
        "--max-train-samples", help="Cap training examples (seeded, stratified).")] = None,
    max_eval_samples: MaxEvalOpt = None,
    max_len: Annotated[int | None, typer.Option(
        "--max-len", help="Tokens kept per text. \\[default: 400]")] = None,
    vocab_size: Annotated[int | None, typer.Option(
        "--vocab-size", help="Largest vocabulary, special tokens included. \\[default: 20000]")]
    = None,
    min_freq: Annotated[int | None, typer.Option(
        "--min-freq", help="Fewest occurrences for a word to enter the vocabulary. \\[default: 1]")]
    = None,
    embed_dim: Annotated[int | None, typer.Option(
        "--embed-dim", help="Embedding size. \\[default: 64]")] = None,
    hidden_size: Annotated[int | None, typer.Option(
        "--hidden-size", help="Hidden units per direction. \\[default: 64]")] = None,
    layers: Annotated[int | None, typer.Option(
        "--layers", help="Stacked recurrent layers. \\[default: 1]")] = None,
    bidirectional: Annotated[bool | None, typer.Option(
        "--bidirectional/--unidirectional", help="Read each text in both directions. "
        "\\[default: unidirectional]")] = None,
    dropout: Annotated[float | None, typer.Option(
        "--dropout", help="Dropout on embeddings, between layers and before the classifier. "
        "\\[default: 0.0]")] = None,
    forget_bias: Annotated[float | None, typer.Option(
        "--forget-bias", help="Initial forget-gate bias for lstm, peephole and coupled. "
        "\\[default: 1.0]")] = None,
    pooling: Annotated[str | None, typer.Option(
        "--pooling", help=f"How outputs become one vector: {', '.join(POOLING_CHOICES)}. "
        "\\[default: last]")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="\\[default: 10]")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="\\[default: 32]")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Adam learning rate. \\[default: 0.003]")]
    = None,
    weight_decay: Annotated[float | None, typer.Option(
        "--weight-decay", help="Adam weight decay. \\[default: 0.0]")] = None,
    clip_norm: Annotated[float | None, typer.Option(
        "--clip-norm", help="Clip the global gradient norm to this; 0 disables. \\[default: 5.0]")]
    = None,
    seed: Annotated[int | None, typer.Option("--seed", help="\\[default: 0]")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help=f"{'|'.join(DEVICE_CHOICES)}. \\[default: auto]")] = None,
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="Run directory to write (default: runs/<time>-<cell>, or "
        "$LSTM_RUNS_DIR).")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing --output run directory.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a classifier and write a run directory (weights, config, tokenizer, metrics)."""
    from lstmcli.render import TrainDisplay
    from lstmcli.train import train as run_training

    config = load_config(config_file)
    apply_overrides(config.model, dict(
        cell=cell, embed_dim=embed_dim, hidden_size=hidden_size, layers=layers,
        bidirectional=bidirectional, dropout=dropout, forget_bias=forget_bias, pooling=pooling))
    apply_overrides(config.data, dict(
        dataset=dataset, data_dir=data_dir, text_column=text_column, label_column=label_column,
        train_file=train_file, validation_file=validation_file, test_file=test_file,
        positive_threshold=positive_threshold, val_fraction=val_fraction,
        max_train_samples=max_train_samples, max_eval_samples=max_eval_samples, max_len=max_len,
        vocab_size=vocab_size, min_freq=min_freq))
    apply_overrides(config.train, dict(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        clip_norm=clip_norm, seed=seed, device=device, output=output))
    config.validate()
    display = TrainDisplay(out, err, quiet=as_json)
    with display:
        result = run_training(config, display, overwrite=overwrite)
    summary = {
        "run_dir": str(result.run_dir),
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy,
        "test_accuracy": result.test_accuracy,
        "epochs": result.history,
    }
    if as_json:
        print_json(summary)
    else:
        display.summary(summary)


def eval_data_config(
    run_data: DataConfig, dataset: str | None, overrides: dict[str, Any]
) -> DataConfig:
    """The run's own data settings, or fresh ones for another dataset, then the flags."""
    if dataset is not None and dataset != run_data.dataset:
        data = DataConfig(dataset=dataset, max_len=run_data.max_len,
                          val_fraction=run_data.val_fraction)
    else:
        data = DataConfig(**vars(run_data))
    apply_overrides(data, overrides)
    data.validate()
    return data


@app.command("eval")
@handles_errors
def eval_command(
    model: ModelDirOpt = None,
    dataset: DatasetOpt = None,
    split: Annotated[str, typer.Option(
        "--split", help="train, validation or test.")] = "test",
    data_dir: DataDirOpt = None,
    text_column: TextColumnOpt = None,
    label_column: LabelColumnOpt = None,
    positive_threshold: ThresholdOpt = None,
    max_eval_samples: MaxEvalOpt = None,
    device: Annotated[str, typer.Option("--device", help="auto|cpu|cuda")] = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix of a trained run."""
    from lstmcli.data import load_eval_split
    from lstmcli.predict import Predictor, evaluate
    from lstmcli.render import eval_tables
    from lstmcli.train import resolve_device

    if split not in ("train", "validation", "test"):
        raise DataError(f"unknown split {split!r}; choose train, validation or test")
    predictor = Predictor.from_run(model, str(resolve_device(device)))
    run_config = predictor.run.config
    data = eval_data_config(run_config.data, dataset, dict(
        data_dir=data_dir, text_column=text_column, label_column=label_column,
        positive_threshold=positive_threshold, max_eval_samples=max_eval_samples))
    texts = load_eval_split(data, split, predictor.label_names, seed=run_config.train.seed)
    report = evaluate(predictor, texts.texts, texts.labels)
    payload = {"run_dir": str(predictor.run_dir), "dataset": data.dataset, "split": split,
               **report.to_dict()}
    if as_json:
        print_json(payload)
    else:
        for renderable in eval_tables(payload):
            out.print(renderable)


def read_lines(stream: Any, source: str) -> list[str]:
    try:
        lines = [line.rstrip("\r\n") for line in stream]
    except UnicodeDecodeError as error:
        raise DataError(f"{source} is not valid UTF-8 ({error.reason}); save it as UTF-8") from None
    return [line for line in lines if line.strip()]


@app.command()
@handles_errors
def predict(
    texts: Annotated[list[str] | None, typer.Argument(
        help="Texts to classify; '-' reads one text per line from stdin.", show_default=False)]
    = None,
    model: ModelDirOpt = None,
    file: Annotated[Path | None, typer.Option(
        "--file", "-f", help="Read one text per line from this file.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto|cpu|cuda")] = "cpu",
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per text (text, label, probabilities).")] = False,
) -> None:
    """Classify texts: a label and its probability per text, one line each."""
    texts = list(texts or [])
    if file is not None:
        if not file.is_file():
            raise DataError(f"--file {file} does not exist; pass a text file, one text per line")
        with open(file, encoding="utf-8") as handle:
            texts += read_lines(handle, str(file))
    if "-" in texts:
        stdin = read_lines(sys.stdin, "standard input")
        at = texts.index("-")
        texts = texts[:at] + stdin + [t for t in texts[at + 1:] if t != "-"]
    if not texts:
        raise DataError("no text to classify; pass TEXT arguments, '-' for stdin or --file F")

    from lstmcli.predict import Predictor
    from lstmcli.train import resolve_device

    predictor = Predictor.from_run(model, str(resolve_device(device)))
    results = predictor.predict(texts)
    if as_json:
        for result in results:
            print_json(result.to_dict())
        return
    colours = {0: "red", 1: "green"} if len(predictor.label_names) == 2 else {}
    for result in results:
        colour = colours.get(predictor.label_names.index(result.label), "cyan")
        line = f"[{colour}]{escape(result.label)}[/] {result.probability:.2f}"
        if len(results) > 1:
            line += f"  {escape(result.text)}"
        out.print(line)


@app.command()
@handles_errors
def cells(as_json: JsonOpt = False) -> None:
    """List the recurrent cells with their equations."""
    from lstmcli.cells import CELLS
    from lstmcli.render import cell_panels

    rows = []
    for name, cell_class in CELLS.items():
        rows.append({
            "name": name,
            "class": cell_class.__name__,
            "state": ["h", "c"] if cell_class.has_cell_state else ["h"],
            "gates": list(cell_class.gate_names),
            "fused_kernel": cell_class.fused,
            "weight_blocks": cell_class.num_chunks,
            "equations": (cell_class.__doc__ or "").strip(),
        })
    if as_json:
        print_json({"cells": rows})
        return
    for panel in cell_panels(rows):
        out.print(panel)


@app.command()
@handles_errors
def datasets(
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the registered datasets, their hub ids, columns, labels and splits."""
    from lstmcli.data import dataset_registry
    from lstmcli.registry import local_copy_dir

    rows = []
    for info in dataset_registry().values():
        local = local_copy_dir(info.name, data_dir)
        rows.append({
            "name": info.name, "hub_id": info.hub_id, "text_column": info.text_column,
            "label_column": info.label_column, "label_names": list(info.label_names),
            "splits": list(info.splits), "description": info.description,
            "local_copy": str(local) if local is not None else None,
        })
    if as_json:
        print_json({"datasets": rows})
        return
    table = Table(title="Datasets", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("hub id", overflow="fold")
    for column in ("columns", "labels", "splits", "local"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["hub_id"] or "(bundled)",
                      f"{row['text_column']}\n{row['label_column']}",
                      "\n".join(row["label_names"]), "\n".join(row["splits"]),
                      "yes" if row["local_copy"] else "-")
    out.print(table)


# Registers `diagnose` and `explain` on `app`; imported last because it imports from this module.
from lstmcli import cli_diagnose  # noqa: E402, F401


def main() -> None:
    app()


if __name__ == "__main__":
    main()
