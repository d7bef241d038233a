"""`lstm eval` and `lstm predict`: a trained run on labelled data or on new texts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from lstmcli.cli.common import (
    DataDirOpt,
    DatasetOpt,
    JsonOpt,
    LabelColumnOpt,
    MaxEvalOpt,
    ModelDirOpt,
    TextColumnOpt,
    ThresholdOpt,
    app,
    handles_errors,
    out,
    print_json,
)
from lstmcli.config import NUMPY_MAX_TEXTS, DataConfig, apply_overrides
from lstmcli.errors import DataError


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
    from lstmcli.data.splits import load_eval_split
    from lstmcli.device import resolve_device
    from lstmcli.inference.predictor import Predictor, evaluate
    from lstmcli.ui.render import eval_tables

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
    engine: Annotated[str, typer.Option(
        "--engine", help="auto|numpy|torch. numpy runs on the CPU without loading torch; auto "
        f"picks it on the CPU for up to {NUMPY_MAX_TEXTS} texts, torch otherwise.")] = "auto",
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

    from lstmcli.device import resolve_device_name
    from lstmcli.inference.predictor import Predictor, choose_engine

    device = resolve_device_name(device)
    predictor = Predictor.from_run(model, device, choose_engine(engine, device, len(texts)))
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

