"""`lstm pretrain`: a language model on unlabelled text, for `lstm train --init-from`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from lstmcli.cli.common import (
    ClipNormOpt,
    DataDirOpt,
    EmaDecayOpt,
    EmbedDropoutOpt,
    EmbedInitOpt,
    HiddenDropoutOpt,
    InputDropoutOpt,
    JsonOpt,
    LrOpt,
    OptimizerOpt,
    OverwriteOpt,
    PrecisionOpt,
    ProcessesOpt,
    QuietOpt,
    SeedOpt,
    TextColumnOpt,
    ThreadsOpt,
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
from lstmcli.config import LR_SCHEDULES, apply_overrides, load_config
from lstmcli.nn.cells import cell_names
from lstmcli.pretrain_config import SOFTMAX_CHOICES, PretrainConfig


@app.command()
@handles_errors
def pretrain(
    context: typer.Context,
    config_file: Annotated[Path | None, typer.Option(
        "--config", "-c", help="TOML file with \\[model], \\[data], \\[train] sections; flags "
        "override it.")] = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="A registered dataset (see `lstm datasets`) whose splits to read. "
        "Default: sample, unless --text-file is given.")] = None,
    data_dir: DataDirOpt = None,
    splits: Annotated[str | None, typer.Option(
        "--splits", help="Comma-separated splits of --dataset, e.g. train,unsupervised; never "
        "validation or test. \\[default: train]")] = None,
    text_files: Annotated[list[str] | None, typer.Option(
        "--text-file", help="More texts: a .txt file (one document per line) or a "
        ".csv/.tsv/.jsonl/.json/.parquet file (its text column; labels ignored). Repeatable.",
        metavar="PATH")] = None,
    text_column: TextColumnOpt = None,
    max_texts: Annotated[int | None, typer.Option(
        "--max-texts", help="Pretrain on a seeded sample of this many documents (quick runs).")]
    = None,
    val_fraction: Annotated[float | None, typer.Option(
        "--val-fraction", help="Share of documents held out for validation perplexity. "
        "\\[default: 0.05]")] = None,
    bptt: Annotated[int | None, typer.Option(
        "--bptt", help="Tokens per training window. \\[default: 70]")] = None,
    vocab_size: Annotated[int | None, typer.Option(
        "--vocab-size", help="Largest vocabulary, special tokens included. \\[default: 20000]")]
    = None,
    min_freq: Annotated[int | None, typer.Option(
        "--min-freq", help="Fewest occurrences for a word to enter the vocabulary. \\[default: 1]")]
    = None,
    cell: Annotated[str | None, choice_option(
        "--cell", choices=cell_names, help="Recurrent cell (see `lstm cells`). "
        "\\[default: lstm]")] = None,
    embed_dim: Annotated[int | None, typer.Option(
        "--embed-dim", help="Embedding size (and the output layer's). \\[default: 64]")] = None,
    hidden_size: Annotated[int | None, typer.Option(
        "--hidden-size", help="Hidden units per direction. \\[default: 64]")] = None,
    layers: Annotated[int | None, typer.Option(
        "--layers", help="Stacked recurrent layers (1 when bidirectional). \\[default: 1]")]
    = None,
    bidirectional: Annotated[bool | None, typer.Option(
        "--bidirectional/--unidirectional", help="A backward language model beside the forward "
        "one. \\[default: unidirectional]")] = None,
    dropout: Annotated[float | None, typer.Option(
        "--dropout", help="Dropout on embeddings, between layers and on the outputs. "
        "\\[default: 0.0]")] = None,
    gate_bias: Annotated[float | None, typer.Option(
        "--gate-bias", help="Initial bias of the memory gate (see `lstm train`). \\[default: "
        "the cell's own]")] = None,
    embed_init: EmbedInitOpt = None,
    embed_dropout: EmbedDropoutOpt = None,
    input_dropout: InputDropoutOpt = None,
    hidden_dropout: HiddenDropoutOpt = None,
    weight_dropout: WeightDropoutOpt = None,
    softmax: Annotated[str | None, choice_option(
        "--softmax", choices=lambda: SOFTMAX_CHOICES, help="Output layer: sampled (tied to the "
        "embedding, trained on --samples drawn words per step; exact for validation) or "
        "adaptive (torch's adaptive softmax). \\[default: sampled]")] = None,
    samples: Annotated[int | None, typer.Option(
        "--samples", help="Words drawn per step by --softmax sampled; more is closer to the "
        "full softmax and slower. \\[default: 256]")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="\\[default: 10]")] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", help="Windows per batch. \\[default: 32]")] = None,
    lr: LrOpt = None,
    optimizer: OptimizerOpt = None,
    weight_decay: WeightDecayOpt = None,
    ema_decay: EmaDecayOpt = None,
    clip_norm: ClipNormOpt = None,
    lr_schedule: Annotated[str | None, typer.Option(
        "--lr-schedule", help=f"{'|'.join(LR_SCHEDULES)}, as for `lstm train`. "
        "\\[default: constant]")] = None,
    warmup_epochs: Annotated[int | None, typer.Option(
        "--warmup-epochs", help="Linear warmup epochs. \\[default: 0]")] = None,
    patience: Annotated[int | None, typer.Option(
        "--patience", help="Stop after N epochs without a lower validation perplexity; 0 never. "
        "\\[default: 0]")] = None,
    seed: SeedOpt = None,
    device: Annotated[str | None, device_option(" \\[default: auto]")] = None,
    precision: PrecisionOpt = None,
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="Run directory to write (default: runs/<time>-<cell>-lm, or "
        "$LSTM_RUNS_DIR).")] = None,
    overwrite: OverwriteOpt = False,
    threads: ThreadsOpt = None,
    processes: ProcessesOpt = None,
    diagnostics: Annotated[bool | None, typer.Option(
        "--diagnostics/--no-diagnostics", help="Per-step gradient statistics per parameter "
        "group; off for raw speed. \\[default: on]")] = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="Continue the interrupted pretraining in RUN_DIR exactly where it "
        "stopped (only --epochs may change).", metavar="RUN_DIR")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Pretrain a language model (embedding + recurrent encoder) on unlabelled text; fine-tune
    it with `lstm train --init-from RUN_DIR`.

    Ctrl-C or SIGTERM ends the step in progress, saves a resumable state and prints the
    `lstm pretrain --resume RUN_DIR` that continues it (exit 130 / 143)."""
    # Every flag as given, before any other name exists here (the context is not a flag).
    options = {name: value for name, value in locals().items() if name != "context"}
    from lstmcli.distributed import first_process
    from lstmcli.training.pretrain import pretrain as run_pretraining
    from lstmcli.training.pretrain import resume_pretrain
    from lstmcli.ui.pretrain import PretrainDisplay

    # Under torchrun rank 0 alone shows and reports the run.
    quiet, as_json = (quiet, as_json) if first_process() else (True, False)
    display = PretrainDisplay(out, err, quiet=as_json or quiet)
    if resume is not None:
        refuse_with_resume(options)
        start_processes(context, processes, resume)
        with display:
            result = resume_pretrain(resume, display, epochs)
        _finish(result, display, as_json, quiet)
        return

    config: PretrainConfig = load_config(config_file, PretrainConfig)
    apply_overrides(config.model, dict(
        cell=cell, embed_dim=embed_dim, hidden_size=hidden_size, layers=layers,
        bidirectional=bidirectional, dropout=dropout, gate_bias=gate_bias, embed_init=embed_init,
        embed_dropout=embed_dropout, input_dropout=input_dropout, hidden_dropout=hidden_dropout,
        weight_dropout=weight_dropout, softmax=softmax, samples=samples))
    split_names = None if splits is None else [s.strip() for s in splits.split(",") if s.strip()]
    apply_overrides(config.data, dict(
        dataset=dataset, data_dir=data_dir, splits=split_names, text_files=text_files,
        text_column=text_column, max_texts=max_texts, val_fraction=val_fraction, bptt=bptt,
        vocab_size=vocab_size, min_freq=min_freq))
    apply_overrides(config.train, dict(
        epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
        clip_norm=clip_norm, ema_decay=ema_decay, seed=seed, device=device, precision=precision,
        output=output, threads=threads, processes=processes, diagnostics=diagnostics,
        lr_schedule=lr_schedule, warmup_epochs=warmup_epochs, patience=patience))
    config.validate()
    start_processes(context, config.train.processes)
    with display:
        result = run_pretraining(config, display, overwrite=overwrite)
    _finish(result, display, as_json, quiet)


def _finish(result: Any, display: Any, as_json: bool, quiet: bool) -> None:
    """The model card, then the report (an interrupted run gets neither)."""
    from lstmcli.distributed import first_process
    from lstmcli.modelcard import write_model_card
    from lstmcli.runs import LANGUAGE_MODEL

    if not first_process():  # rank 0 writes and reports the run
        return
    write_model_card(result.run_dir, sys.argv)
    summary = {
        "run_dir": str(result.run_dir),
        "kind": LANGUAGE_MODEL,
        "best_epoch": result.best_epoch,
        "best_val_perplexity": result.best_val_perplexity,
        "stopped_early": result.stopped_early,
        "stopped_epoch": result.stopped_epoch,
        "epochs": result.history,
    }
    if as_json:
        print_json(summary)
    elif not quiet:
        display.summary(summary)
