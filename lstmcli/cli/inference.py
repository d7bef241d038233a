"""`lstm eval` and `lstm predict`: a trained run on labelled data or on new texts."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from lstmcli.cli.common import (
    DataDirOpt,
    DatasetOpt,
    JsonOpt,
    LabelColumnOpt,
    ModelDirOpt,
    QuietOpt,
    TextColumnOpt,
    ThresholdOpt,
    app,
    choice_option,
    device_option,
    err,
    handles_errors,
    out,
    print_json,
    undecodable_byte,
)
from lstmcli.config import ENGINE_CHOICES, NUMPY_MAX_TEXTS, DataConfig, apply_overrides
from lstmcli.data.registry import SPLITS
from lstmcli.errors import DataError
from lstmcli.ui.text import printable


def eval_data_config(
    run_data: DataConfig, dataset: str | None, overrides: dict[str, Any]
) -> DataConfig:
    """The run's own data settings, or fresh ones for another dataset, then the flags."""
    if dataset is not None and dataset != run_data.dataset:
        data = DataConfig(dataset=dataset, max_len=run_data.max_len,
                          truncation=run_data.truncation, val_fraction=run_data.val_fraction)
    else:
        data = DataConfig(**vars(run_data))
    # The run's cap was for training's speed: eval scores every row unless told otherwise.
    data.max_eval_samples = None
    apply_overrides(data, overrides)
    data.validate()
    return data


@app.command("eval")
@handles_errors
def eval_command(
    model: ModelDirOpt = None,
    dataset: DatasetOpt = None,
    split: Annotated[str | None, choice_option(
        "--split", choices=lambda: (*SPLITS, "all"), help="\\[default: test]; a data file given "
        "with --dataset is scored whole (all) unless --split names a part.",
        show_default=False)] = None,
    data_dir: DataDirOpt = None,
    text_column: TextColumnOpt = None,
    label_column: LabelColumnOpt = None,
    positive_threshold: ThresholdOpt = None,
    max_eval_samples: Annotated[int | None, typer.Option(
        "--max-eval-samples", help="Score a seeded, stratified subset of this many rows; 0 or "
        "absent: every row (the run's own cap is not reused).")] = None,
    device: Annotated[str, device_option()] = "cpu",
    min_accuracy: Annotated[float | None, typer.Option(
        "--min-accuracy", help="Exit 1 (after the report) when accuracy is below this fraction.")]
    = None,
    min_f1: Annotated[float | None, typer.Option(
        "--min-f1", help="Exit 1 (after the report) when macro F1 is below this fraction.")]
    = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix of a trained run;
    --min-accuracy / --min-f1 make it a quality gate."""
    from lstmcli.data.splits import eval_split_for, load_eval_rows
    from lstmcli.device import resolve_device
    from lstmcli.inference.metrics import enforce_checks, evaluate, quality_checks, validate_bars
    from lstmcli.inference.predictor import Predictor
    from lstmcli.ui.render import eval_tables

    bars = {"min_accuracy": min_accuracy, "min_f1": min_f1}
    validate_bars(bars)  # a bad bar is a usage error before the model is even loaded
    split = eval_split_for(dataset, split)
    predictor = Predictor.from_run(model, str(resolve_device(device)))
    run_config = predictor.run.config
    data = eval_data_config(run_config.data, dataset, dict(
        data_dir=data_dir, text_column=text_column, label_column=label_column,
        positive_threshold=positive_threshold, max_eval_samples=max_eval_samples))
    loaded = load_eval_rows(data, split, predictor.label_names, seed=run_config.train.seed)
    rows = loaded.rows
    report = evaluate(predictor, rows.texts, rows.labels)
    payload = {"run_dir": str(predictor.run_dir), "dataset": data.dataset, "split": split,
               **report.to_dict(), "split_rows": loaded.available}
    checks = quality_checks(payload, bars)
    if checks:
        payload["checks"] = checks
    if as_json:
        print_json(payload)
    elif not quiet:
        for note in loaded.notes:
            err.print(f"[yellow]note:[/] {escape(printable(note))}")
        for renderable in eval_tables(payload):
            out.print(renderable)
    enforce_checks(checks)  # after the report, so that a failed gate still shows the figures


def read_lines(stream: Iterable[str], source: str) -> Iterator[str]:
    """The non-blank lines of a text stream, one at a time, without their line ends."""
    number = 0
    try:
        for number, line in enumerate(stream, start=1):  # noqa: B007  (read in except)
            if line.strip():
                # stdin decodes with surrogateescape in a POSIX locale: a bad byte arrives as
                # a lone surrogate instead of an error.
                if undecodable_byte(line) is not None:
                    raise DataError(f"{source} line {number} is not valid UTF-8 "
                                    f"(byte 0x{undecodable_byte(line):02x}); save it as UTF-8")
                yield line.rstrip("\r\n")
    except UnicodeDecodeError as error:
        raise DataError(f"{source} line {number + 1} is not valid UTF-8 ({error.reason}); save it "
                        "as UTF-8") from None


def _decoded(text: str, number: int) -> str:
    """An argument as given, or one line naming the argument that is not UTF-8 (Python decodes
    the command line with surrogateescape)."""
    byte = undecodable_byte(text)
    if byte is not None:
        raise DataError(f"TEXT argument {number} is not valid UTF-8 (byte 0x{byte:02x}); pass "
                        "UTF-8 text, or put the texts in a UTF-8 file and use --file")
    return text


STDIN = "-"  # as a TEXT argument or as --file: the lines of standard input


def input_texts(arguments: list[str], file: Path | None) -> Iterator[str]:
    """The TEXT arguments ('-' replaced by the lines of stdin, read once), then --file's lines
    (--file - is stdin too)."""
    stdin_read = False
    for number, text in enumerate(arguments, start=1):
        if text != STDIN:
            yield _decoded(text, number)
        elif not stdin_read:
            stdin_read = True
            yield from read_lines(sys.stdin, "standard input")
    if file is not None and str(file) == STDIN:
        if not stdin_read:
            yield from read_lines(sys.stdin, "standard input")
    elif file is not None:
        with open(file, encoding="utf-8") as handle:
            yield from read_lines(handle, str(file))


def write_line(line: str) -> None:
    """One result, flushed at once: the next stage of a pipeline sees it without waiting."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@app.command()
@handles_errors
def predict(
    texts: Annotated[list[str] | None, typer.Argument(
        help="Texts to classify; '-' reads one text per line from stdin.", show_default=False)]
    = None,
    model: ModelDirOpt = None,
    file: Annotated[Path | None, typer.Option(
        "--file", "-f", help="Read one text per line from this file; '-' is stdin.")] = None,
    device: Annotated[str, device_option()] = "cpu",
    engine: Annotated[str, choice_option(
        "--engine", choices=lambda: ENGINE_CHOICES, help="numpy runs on the CPU without loading "
        f"torch; auto picks it on the CPU for up to {NUMPY_MAX_TEXTS} texts or stdin, torch "
        "otherwise.")] = "auto",
    int8: Annotated[bool, typer.Option(
        "--int8", help="Int8 weight matrices, CPU only: onnxruntime's int8 graph with the export "
        "extra installed, else torch's; probabilities a little off (see the README).")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per text (text, label, probabilities).")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Classify texts: label, probability and text per line, tab-separated."""
    arguments = list(texts or [])
    from_stdin = STDIN in arguments or (file is not None and str(file) == STDIN)
    if file is not None and not from_stdin and not file.is_file():
        raise DataError(f"--file {file} does not exist; pass a text file, one text per line")
    stream = input_texts(arguments, file)
    if from_stdin:
        # A pipeline may write its next line only after reading our answer to the last one:
        # no read-ahead, one text at a time, the engine chosen without counting.
        head, count, chunk = [], None, 1
    else:
        # Enough of the input to choose the engine: numpy for a few texts, torch for bulk.
        head = list(itertools.islice(stream, NUMPY_MAX_TEXTS + 1))
        if not head:
            raise DataError("no text to classify; pass TEXT arguments, '-' for stdin or --file F")
        count, chunk = len(head), None

    from lstmcli.device import resolve_device_name
    from lstmcli.inference.predictor import STREAM_CHUNK, Predictor, choose_engine

    device = resolve_device_name(device)
    predictor = Predictor.from_run(model, device, choose_engine(engine, device, count, int8),
                                   int8=int8)
    results = predictor.predict_stream(itertools.chain(head, stream), chunk or STREAM_CHUNK)
    written = 0
    for result in results:
        written += 1
        if as_json:
            print_json(result.to_dict())
        elif not quiet:
            # One shape for one text or many, so that `cut -f1` works whatever the count.
            write_line(f"{result.label}\t{result.probability:.2f}\t{printable(result.text)}")
    if not written:
        raise DataError("no text to classify; pass TEXT arguments, '-' for stdin or --file F")
