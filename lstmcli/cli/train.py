"""`lstm train`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from lstmcli.cli.common import (
    BatchSizeOpt,
    ClipNormOpt,
    ConfigFileOpt,
    DataDirOpt,
    DatasetOpt,
    DiagnosticsOpt,
    EmaDecayOpt,
    EmbedDimOpt,
    EmbedDropoutOpt,
    EmbedInitOpt,
    EpochsOpt,
    HiddenDropoutOpt,
    HiddenSizeOpt,
    InputDropoutOpt,
    JsonOpt,
    LabelColumnOpt,
    LrOpt,
    MaxEvalOpt,
    MaxTrainOpt,
    OptimizerOpt,
    OverwriteOpt,
    PrecisionOpt,
    ProcessesOpt,
    QuietOpt,
    SeedOpt,
    TextColumnOpt,
    ThreadsOpt,
    ThresholdOpt,
    WeightDecayOpt,
    WeightDropoutOpt,
    app,
    choice_option,
    device_option,
    err,
    handles_errors,
    out,
    print_json,
    refuse_with_resume,
    start_processes,
)
from lstmcli.config import (
    LR_SCHEDULES,
    POOLING_CHOICES,
    TRUNCATION_CHOICES,
    apply_overrides,
    config_keys,
    load_config,
)
from lstmcli.nn.cells import cell_names


@app.command()
@handles_errors
def train(
    context: typer.Context,
    config_file: ConfigFileOpt = None,
    cell: Annotated[str | None, choice_option(
        "--cell", choices=cell_names, help="Recurrent cell (see `lstm cells`). "
        "\\[default: lstm]")] = None,
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
    max_train_samples: MaxTrainOpt = None,
    max_eval_samples: MaxEvalOpt = None,
    max_len: Annotated[int | None, typer.Option(
        "--max-len", help="Tokens kept per text. \\[default: 400]")] = None,
    truncation: Annotated[str | None, choice_option(
        "--truncation", choices=lambda: TRUNCATION_CHOICES, help="Which --max-len tokens a "
        "longer text keeps: its first, its last, or half of each; predict and eval of the run "
        "cut the same way. \\[default: head]")] = None,
    vocab_size: Annotated[int | None, typer.Option(
        "--vocab-size", help="Largest vocabulary, special tokens included. \\[default: 20000]")]
    = None,
    min_freq: Annotated[int | None, typer.Option(
        "--min-freq", help="Fewest occurrences for a word to enter the vocabulary. \\[default: 1]")]
    = None,
    embed_dim: EmbedDimOpt = None,
    hidden_size: HiddenSizeOpt = None,
    layers: Annotated[int | None, typer.Option(
        "--layers", help="Stacked recurrent layers. \\[default: 1]")] = None,
    bidirectional: Annotated[bool | None, typer.Option(
        "--bidirectional/--unidirectional", help="Read each text in both directions. "
        "\\[default: unidirectional]")] = None,
    dropout: Annotated[float | None, typer.Option(
        "--dropout", help="Dropout on embeddings, between layers and before the classifier. "
        "\\[default: 0.0]")] = None,
    gate_bias: Annotated[float | None, typer.Option(
        "--gate-bias", "--forget-bias", help="Initial bias of the memory gate: the forget gate "
        "of the LSTM family, the update gate of the GRU (see `lstm cells`). \\[default: the "
        "cell's own: 1.0 for forget gates, torch's initialisation otherwise]")] = None,
    embed_init: EmbedInitOpt = None,
    embed_dropout: EmbedDropoutOpt = None,
    input_dropout: InputDropoutOpt = None,
    hidden_dropout: HiddenDropoutOpt = None,
    weight_dropout: WeightDropoutOpt = None,
    pooling: Annotated[str | None, choice_option(
        "--pooling", choices=lambda: POOLING_CHOICES, help="How outputs become one vector; "
        "concat joins last, max and mean. \\[default: last]")] = None,
    epochs: EpochsOpt = None,
    batch_size: BatchSizeOpt = None,
    lr: LrOpt = None,
    optimizer: OptimizerOpt = None,
    weight_decay: WeightDecayOpt = None,
    ema_decay: EmaDecayOpt = None,
    label_smoothing: Annotated[float | None, typer.Option(
        "--label-smoothing", help="Label smoothing of the training loss; validation loss stays "
        "plain cross-entropy. \\[default: 0.0]")] = None,
    clip_norm: ClipNormOpt = None,
    lr_schedule: Annotated[str | None, typer.Option(
        "--lr-schedule", help=f"{'|'.join(LR_SCHEDULES)}: the lr of each epoch (slanted: of "
        "each step; see README). \\[default: constant]")] = None,
    warmup_epochs: Annotated[int | None, typer.Option(
        "--warmup-epochs", help="Linear warmup epochs (onecycle: its rising phase). "
        "\\[default: 0]")] = None,
    patience: Annotated[int | None, typer.Option(
        "--patience", help="Stop after N epochs without validation improvement; 0 never. "
        "\\[default: 0]")] = None,
    seed: SeedOpt = None,
    device: Annotated[str | None, device_option(" \\[default: auto]")] = None,
    precision: PrecisionOpt = None,
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="Run directory to write (default: runs/<time>-<cell>, or "
        "$LSTM_RUNS_DIR).")] = None,
    overwrite: OverwriteOpt = False,
    threads: ThreadsOpt = None,
    processes: ProcessesOpt = None,
    diagnostics: DiagnosticsOpt = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="Continue the interrupted run in RUN_DIR exactly where it stopped (its "
        "config and tokenizer; only --epochs may change).", metavar="RUN_DIR")] = None,
    init_from: Annotated[str | None, typer.Option(
        "--init-from", help="Fine-tune the language model that `lstm pretrain` wrote in RUN_DIR: "
        "its tokenizer, architecture, embedding and encoder; a new classifier head.",
        metavar="RUN_DIR")] = None,
    discriminative_lr: Annotated[float | None, typer.Option(
        "--discriminative-lr", help="Divide the lr by FACTOR for each layer group below the "
        "head (encoder layers top to bottom, then the embedding; ULMFiT: 2.6). \\[default: 1]",
        metavar="FACTOR")] = None,
    gradual_unfreeze: Annotated[bool | None, typer.Option(
        "--gradual-unfreeze/--no-gradual-unfreeze", help="Epoch 1 trains the head alone, each "
        "later epoch one more layer group from the top. \\[default: off]")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a classifier and write a run directory (weights, config, tokenizer, metrics).

    Ctrl-C or SIGTERM ends the step in progress, saves a resumable state and prints the
    `lstm train --resume RUN_DIR` that continues it (exit 130 / 143)."""
    # Every flag as given, before any other name exists here (the context is not a flag).
    options = {name: value for name, value in locals().items() if name != "context"}
    from lstmcli.distributed import first_process
    from lstmcli.training.run import resume as resume_training
    from lstmcli.training.run import train as run_training
    from lstmcli.ui.render import TrainDisplay

    # Under torchrun rank 0 alone shows and reports the run.
    quiet, as_json = (quiet, as_json) if first_process() else (True, False)
    if resume is not None:
        refuse_with_resume(options)
        start_processes(context, processes, resume)
        display = TrainDisplay(out, err, quiet=as_json or quiet)
        with display:
            result = resume_training(resume, display, epochs)
        _finish(result, display, as_json, quiet)
        return

    config = load_config(config_file)
    apply_overrides(config.model, dict(
        cell=cell, embed_dim=embed_dim, hidden_size=hidden_size, layers=layers,
        bidirectional=bidirectional, dropout=dropout, embed_dropout=embed_dropout,
        input_dropout=input_dropout, hidden_dropout=hidden_dropout, weight_dropout=weight_dropout,
        gate_bias=gate_bias, embed_init=embed_init, pooling=pooling))
    apply_overrides(config.data, dict(
        dataset=dataset, data_dir=data_dir, text_column=text_column, label_column=label_column,
        train_file=train_file, validation_file=validation_file, test_file=test_file,
        positive_threshold=positive_threshold, val_fraction=val_fraction,
        max_train_samples=max_train_samples, max_eval_samples=max_eval_samples, max_len=max_len,
        truncation=truncation, vocab_size=vocab_size, min_freq=min_freq))
    apply_overrides(config.train, dict(
        epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
        weight_decay=weight_decay, label_smoothing=label_smoothing, clip_norm=clip_norm,
        ema_decay=ema_decay, seed=seed, device=device, precision=precision, output=output,
        threads=threads, processes=processes,
        diagnostics=diagnostics, lr_schedule=lr_schedule, warmup_epochs=warmup_epochs,
        patience=patience, init_from=init_from, discriminative_lr=discriminative_lr,
        gradual_unfreeze=gradual_unfreeze))
    if config.train.init_from is not None:
        from lstmcli.training.finetune import INHERITED, inherit_architecture

        # What the user asked for (a flag or a config key), as opposed to a default: only that
        # can conflict with the pretrained architecture; the rest is taken from it.
        flags = {f"{section}.{name}" for section, names in INHERITED.items() for name in names
                 if options[name] is not None}
        inherit_architecture(config, flags | config_keys(config_file))
    config.validate()
    start_processes(context, config.train.processes)
    display = TrainDisplay(out, err, quiet=as_json or quiet)
    with display:
        result = run_training(config, display, overwrite=overwrite)
    _finish(result, display, as_json, quiet)


def _finish(result: Any, display: Any, as_json: bool, quiet: bool) -> None:
    """The model card (once training has returned: an interrupted run gets none), then the
    report."""
    from lstmcli.distributed import first_process
    from lstmcli.modelcard import write_model_card

    if first_process():  # one writer, the rank that wrote the checkpoints
        write_model_card(result.run_dir, sys.argv)
    if as_json or not quiet:
        _report(result, display, as_json)


def _report(result: Any, display: Any, as_json: bool) -> None:
    summary = {
        "run_dir": str(result.run_dir),
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy,
        "test_accuracy": result.test_accuracy,
        "stopped_early": result.stopped_early,
        "stopped_epoch": result.stopped_epoch,  # the last epoch run when it stopped early
        "epochs": result.history,
    }
    if as_json:
        print_json(summary)
    else:
        display.summary(summary)

