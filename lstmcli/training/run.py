"""The assembly of a training run: data -> tokenizer -> model -> trainer -> run directory.

Adam or AdamW (:mod:`lstmcli.training.optim`), gradient clipping by global norm, the best model
by validation accuracy. Every epoch also records gradient diagnostics: norms per parameter group
and the update-to-weight ratio (:mod:`lstmcli.training.monitor`), the gradient flow through time
and the gate statistics on a fixed validation batch (:mod:`lstmcli.diagnostics.flow`).

Batches are sharded by rank (all ranks get the same number) and only rank 0 writes files.

SIGINT and SIGTERM stop a run after the step in progress and save its resumable state
(:mod:`lstmcli.training.resume`); :func:`resume` continues it exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shlex
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lstmcli.atomic import atomic_write
from lstmcli.config import Config
from lstmcli.data.batching import bucket_batches, iterate_batches, shard
from lstmcli.data.registry import absolute_data_paths
from lstmcli.data.splits import DatasetSplits, load_splits
from lstmcli.data.tokenizer import Tokenizer, encode_cached
from lstmcli.device import process_rank, resolve_device
from lstmcli.diagnostics.flow import diagnostic_batch, measure_flow
from lstmcli.errors import CheckpointError, TrainingDiverged, TrainingInterrupted
from lstmcli.jsonout import dumps
from lstmcli.nn.classifier import SentimentClassifier, predict_logits
from lstmcli.rundir import append_line, claim
from lstmcli.runs import (
    CONFIG_FILE,
    METRICS_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    new_run_dir,
    remember_latest,
    save_checkpoint,
    write_json_atomic,
)
from lstmcli.training.callbacks import Callbacks
from lstmcli.training.monitor import GradientMonitor, NormMonitor
from lstmcli.training.optim import make_optimizer, training_loss
from lstmcli.training.resume import (
    ResumeState,
    StopFlag,
    clear_resume,
    load_resume,
    restore,
    save_resume,
    stop_on_signals,
)
from lstmcli.training.schedule import Schedule
from lstmcli.training.trainer import Batch, Diverged, EpochProgress, Stopped, Trainer


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_val_accuracy: float
    test_accuracy: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False  # --patience ended the run before --epochs
    stopped_epoch: int | None = None


def seed_everything(seed: int) -> np.random.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def accuracy(logits: torch.Tensor, labels: np.ndarray) -> float:
    return float((logits.argmax(dim=1).numpy() == labels).mean()) if len(labels) else float("nan")


def train(
    config: Config, callbacks: Callbacks | None = None, overwrite: bool = False
) -> TrainResult:
    """Train a classifier as ``config`` says and write its run directory; returns the summary."""
    callbacks = callbacks or Callbacks()
    config.validate()
    rank, world_size = process_rank()
    device = resolve_device(config.train.device, config.train.threads)
    rng = seed_everything(config.train.seed)
    run_dir = new_run_dir(config.train.output, config.model.cell, overwrite)

    absolute_data_paths(config.data)  # config.json must find the data from any directory
    splits = load_splits(config.data, seed=config.train.seed)
    tokenizer = Tokenizer.train(splits.train.texts, config.data.vocab_size, config.data.min_freq)
    encoded = _encode(tokenizer, splits, config)
    config.model.vocab_size = tokenizer.vocab_size
    config.model.num_classes = len(splits.label_names)
    config.train.output = str(run_dir)
    # Only now, with the data read, is the directory created and locked: bad data leaves nothing.
    # SIGINT and SIGTERM are caught while the epochs run: the step in progress ends and the
    # resumable state is saved.
    with (claim(run_dir, overwrite) if rank == 0 else contextlib.nullcontext(),
          stop_on_signals() as stop):
        return _epochs(config, callbacks, splits, tokenizer, encoded, run_dir, device, rng, None,
                       stop)


def resume(
    run_dir: Path, callbacks: Callbacks | None = None, epochs: int | None = None
) -> TrainResult:
    """Continue the interrupted run in ``run_dir`` from its resumable state, exactly as if it had
    never stopped: its config, its tokenizer (not retrained), the data read again. ``epochs``
    extends (or shortens) the run; it cannot end before the interrupted epoch."""
    callbacks = callbacks or Callbacks()
    run_dir = Path(run_dir)
    state = load_resume(run_dir)
    try:
        config = Config.from_dict(state.config, source=str(run_dir / "resume.json"))
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"the resumable state in {run_dir} lacks {error}") from None
    if epochs is not None:
        if epochs < state.epoch:
            raise CheckpointError(f"--epochs {epochs} ends before epoch {state.epoch}, where "
                                  f"{run_dir} was interrupted; pass --epochs {state.epoch} or more")
        config.train.epochs = epochs
    config.validate()
    device = resolve_device(config.train.device, config.train.threads)
    rng = seed_everything(config.train.seed)
    splits = load_splits(config.data, seed=config.train.seed)
    tokenizer = Tokenizer.load(run_dir / TOKENIZER_FILE)
    if (tokenizer.vocab_size != config.model.vocab_size
            or len(splits.label_names) != config.model.num_classes):
        raise CheckpointError(f"the data or {run_dir / TOKENIZER_FILE} changed since {run_dir} "
                              "was interrupted; it cannot be resumed exactly: train a new run")
    encoded = _encode(tokenizer, splits, config)
    rank, _ = process_rank()
    with (claim(run_dir, False, resume=True) if rank == 0 else contextlib.nullcontext(),
          stop_on_signals() as stop):
        return _epochs(config, callbacks, splits, tokenizer, encoded, run_dir, device, rng, state,
                       stop)


def _encode(
    tokenizer: Tokenizer, splits: DatasetSplits, config: Config
) -> dict[str, list[np.ndarray]]:
    return {
        name: encode_cached(tokenizer, split.texts, config.data.max_len,
                            truncation=config.data.truncation)
        for name, split in (("train", splits.train), ("validation", splits.validation),
                            ("test", splits.test)) if split is not None
    }


def _epochs(
    config: Config,
    callbacks: Callbacks,
    splits: DatasetSplits,
    tokenizer: Tokenizer,
    encoded: dict[str, list[np.ndarray]],
    run_dir: Path,
    device: torch.device,
    rng: np.random.Generator,
    start: ResumeState | None,
    stop: StopFlag,
) -> TrainResult:
    """The epochs of a run whose directory is claimed (from ``start`` when resuming); writes the
    run as it goes and stops cleanly when ``stop`` is raised."""
    rank, world_size = process_rank()
    model = SentimentClassifier(config.model).to(device)
    optimizer = make_optimizer(model, config.train)
    diagnostics = config.train.diagnostics
    monitor = (GradientMonitor if diagnostics else NormMonitor)(model, config.train.clip_norm)
    train_cfg = config.train
    schedule = Schedule(train_cfg.lr_schedule, train_cfg.lr, train_cfg.epochs,
                        train_cfg.warmup_epochs, train_cfg.patience)
    if start:
        schedule.load_state(start.schedule)
    stopped_epoch: int | None = None
    trainer = Trainer(model, optimizer, training_loss(config.train), monitor, callbacks, stop)
    # Fixed for the whole run, so that the per-epoch curves compare like with like.
    flow_batch = diagnostic_batch(encoded["validation"], splits.validation.labels,
                                  seed=config.train.seed)
    best: dict[str, Any] = {"epoch": 0, "val_accuracy": -1.0, "val_loss": math.inf}
    history: list[dict[str, Any]] = []
    first_epoch = start.epoch if start else 1
    if start:
        best, history = dict(start.best), [dict(row) for row in start.history]
    if rank == 0:
        if not start:
            tokenizer.save(run_dir / TOKENIZER_FILE)
        # The history so far (none for a fresh run), so that every epoch is in it once; the
        # rename replaces a link planted there instead of following it.
        lines = "".join(dumps(row) + "\n" for row in history).encode("utf-8")
        atomic_write(run_dir / METRICS_FILE, lambda handle: handle.write(lines))
    callbacks.on_start(_start_info(config, splits, run_dir, device, model))

    train_labels = splits.train.labels
    train_lengths = np.array([len(ids) for ids in encoded["train"]])
    if start:
        restore(start, model, optimizer, monitor)  # last: building the model drew from torch's RNG
    for epoch in range(first_epoch, config.train.epochs + 1):
        started = time.perf_counter()
        resumed = start is not None and epoch == start.epoch
        if resumed:
            rng.bit_generator.state = start.epoch_rng  # the same batch order as before the stop
        epoch_rng = rng.bit_generator.state
        if not resumed:
            monitor.start_epoch()
        progress = start.progress if start and resumed else EpochProgress()
        lr = schedule.lr(epoch)  # set even on resume: optimizer.param_groups are not restored
        for group in optimizer.param_groups:
            group["lr"] = lr
        if stop():  # a signal between epochs (during validation): stop before drawing batches
            _interrupt(run_dir, model, optimizer, monitor, stop, rank, ResumeState(
                epoch, progress, epoch_rng, best, history, config.to_dict(), None, {}, {},
                schedule.state()))
        batches = shard(bucket_batches(train_lengths, config.train.batch_size, rng),
                        rank, world_size)
        try:
            stats = trainer.train_epoch(
                _batches(encoded["train"], batches[progress.step:], train_labels, train_lengths,
                         device),
                epoch, len(batches), progress)
        except Stopped as stopped:
            _interrupt(run_dir, model, optimizer, monitor, stop, rank, ResumeState(
                epoch, stopped.progress, epoch_rng, best, history, config.to_dict(), None, {}, {},
                schedule.state()))
        except Diverged as error:
            kept = (f"the best checkpoint so far (epoch {best['epoch']}) in {run_dir} is intact"
                    if best["epoch"] else "no checkpoint was written yet")
            raise TrainingDiverged(f"{error}; {kept}; lower --lr or set --clip-norm") from None

        val_logits = predict_logits(model, encoded["validation"], 256, device)
        val_labels = torch.as_tensor(splits.validation.labels)
        gradients = monitor.epoch_summary()
        row = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": stats.loss,
            "train_accuracy": stats.accuracy,
            "val_loss": float(nn.functional.cross_entropy(val_logits, val_labels)),
            "val_accuracy": accuracy(val_logits, splits.validation.labels),
            "grad_norm_mean": gradients.pop("grad_norm_mean"),
            "grad_norm_max": gradients.pop("grad_norm_max"),
            "clipped_fraction": gradients.pop("clipped_fraction"),
            "steps": gradients.pop("steps"),
            "train_seconds": stats.seconds,
            # Training steps only: validation and the flow measurement are not throughput.
            "tokens_per_second": stats.tokens_per_second,
            **gradients,
        }
        if diagnostics:
            row.update(_flow_columns(measure_flow(model, *flow_batch).to_dict()))
        row["seconds"] = time.perf_counter() - started
        improved = (row["val_accuracy"], -row["val_loss"]) > (best["val_accuracy"],
                                                              -best["val_loss"])
        row["best"] = improved
        if schedule.end_epoch(row["val_loss"], improved):
            stopped_epoch = epoch
        if improved:
            best = {key: row[key] for key in ("epoch", "val_accuracy", "val_loss")}
            if rank == 0:
                save_checkpoint(run_dir, model, config, splits.label_names, {"best": best})
        history.append(row)
        if rank == 0:
            append_line(run_dir / METRICS_FILE, dumps(row))
        callbacks.on_epoch_end(row)
        if stopped_epoch is not None:
            break

    test_accuracy = None
    if rank == 0:
        test_accuracy = _final_test(run_dir, model, config, splits, encoded, device)
        clear_resume(run_dir)
        remember_latest(run_dir)
    return TrainResult(run_dir, best["epoch"], best["val_accuracy"], test_accuracy, history,
                       stopped_epoch is not None, stopped_epoch)


def _interrupt(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    monitor: GradientMonitor | NormMonitor,
    stop: StopFlag,
    rank: int,
    state: ResumeState,
) -> None:
    """Save the resumable state and raise the interrupt, naming the command that resumes."""
    if rank == 0:
        save_resume(run_dir, model, optimizer, monitor, state)
    number = stop.signal_number or signal.SIGINT
    raise TrainingInterrupted(
        f"interrupted at epoch {state.epoch}, step {state.progress.step}; resume with: "
        f"lstm train --resume {shlex.quote(str(run_dir))}", int(number))


def _batches(
    sequences: list[np.ndarray],
    batches: list[np.ndarray],
    labels: np.ndarray,
    lengths: np.ndarray,
    device: torch.device,
) -> Iterator[Batch]:
    for index, ids, lengths_t, targets in iterate_batches(sequences, batches, device, labels):
        yield Batch((ids, lengths_t), targets, int(lengths[index].sum()))  # (B, T), (B,)


def _flow_columns(flow: dict[str, Any]) -> dict[str, Any]:
    """The flow record as metrics.jsonl columns: the two summaries flat (easy to plot), the
    per-step curves under "flow" and the gate statistics under "gates"."""
    gates = flow.pop("gates")
    return {"flow_first_last_ratio": flow["first_last_ratio"],
            "flow_decay_per_step": flow["decay_per_step"], "flow": flow, "gates": gates}


def _final_test(
    run_dir: Path,
    model: SentimentClassifier,
    config: Config,
    splits: DatasetSplits,
    encoded: dict[str, list[np.ndarray]],
    device: torch.device,
) -> float | None:
    """Test accuracy of the best checkpoint, reported only: never used to choose a model."""
    if splits.test is None:
        return None
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(run_dir / WEIGHTS_FILE), device=str(device)))
    test_accuracy = accuracy(predict_logits(model, encoded["test"], 256, device),
                             splits.test.labels)
    meta = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    meta["test_accuracy"] = test_accuracy
    write_json_atomic(run_dir / CONFIG_FILE, meta)
    return test_accuracy


def _start_info(
    config: Config,
    splits: DatasetSplits,
    run_dir: Path,
    device: torch.device,
    model: nn.Module,
) -> dict[str, Any]:
    return {
        "run_dir": str(run_dir),
        "device": str(device),
        "dataset": splits.name,
        "label_names": splits.label_names,
        "train_size": len(splits.train),
        "validation_size": len(splits.validation),
        "test_size": len(splits.test) if splits.test is not None else 0,
        "vocab_size": config.model.vocab_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "cell": config.model.cell,
        "epochs": config.train.epochs,
        "diagnostics": config.train.diagnostics,
        "notes": list(splits.notes),
    }
