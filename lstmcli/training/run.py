"""The assembly of a training run: data -> tokenizer -> model -> epochs -> run directory.

Adam or AdamW (:mod:`lstmcli.training.optim`), gradient clipping by global norm, the best model
by validation accuracy. Every epoch also records gradient diagnostics: norms per parameter group
and the update-to-weight ratio (:mod:`lstmcli.training.monitor`), the gradient flow through time
and the gate statistics on a fixed validation batch (:mod:`lstmcli.diagnostics.flow`). The epochs
themselves, with the schedule, the checkpoints and the interrupts, are
:mod:`lstmcli.training.loop`'s; starting from a pretrained language model is
:mod:`lstmcli.training.finetune`'s.

SIGINT and SIGTERM stop a run after the step in progress and save its resumable state
(:mod:`lstmcli.training.resume`); :func:`resume` continues it exactly.

Under torchrun every process reads the data and builds the same model (the same seed); rank 0
alone names, claims and writes the run directory and reads a resumable state, and sends what it
found to the others (:mod:`lstmcli.distributed`). Validation is sharded: each process scores a
share of the texts and the sums are added up, so the figures are the single process's at a
fraction of the time; the final test runs once, on rank 0."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lstmcli import distributed
from lstmcli.config import Config
from lstmcli.data.batching import iterate_batches
from lstmcli.data.registry import absolute_data_paths
from lstmcli.data.splits import DatasetSplits, load_splits
from lstmcli.data.tokenizer import Tokenizer, encode_cached
from lstmcli.device import describe_device, resolve_device
from lstmcli.diagnostics.flow import diagnostic_batch, measure_flow
from lstmcli.errors import CheckpointError
from lstmcli.nn.classifier import SentimentClassifier, predict_logits
from lstmcli.rundir import claim
from lstmcli.runs import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    new_run_dir,
    remember_latest,
    save_checkpoint,
    write_json_atomic,
)
from lstmcli.training import finetune
from lstmcli.training.callbacks import Callbacks
from lstmcli.training.loop import EpochTask, run_epochs
from lstmcli.training.optim import training_loss
from lstmcli.training.precision import Precision, check_precision
from lstmcli.training.resume import (
    ResumeState,
    StopFlag,
    clear_resume,
    load_resume,
    stop_on_signals,
)
from lstmcli.training.trainer import Batch, EpochStats


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


@distributed.entry
def train(
    config: Config, callbacks: Callbacks | None = None, overwrite: bool = False
) -> TrainResult:
    """Train a classifier as ``config`` says and write its run directory; returns the summary.
    With ``config.train.init_from``, start from that language model (its tokenizer, embedding
    and encoder: :mod:`lstmcli.training.finetune`)."""
    callbacks = callbacks or Callbacks()
    config.validate()
    device = resolve_device(config.train.device, config.train.threads)
    check_precision(config.train.precision, device)  # before anything is read or written
    processes = distributed.start()
    device = processes.place(device, config.train.threads)
    rng = seed_everything(config.train.seed)
    run_dir = processes.from_rank0(
        lambda: new_run_dir(config.train.output, config.model.cell, overwrite))
    pretrained = None
    if config.train.init_from is not None:
        pretrained = finetune.open_pretrained(config.train.init_from)
        finetune.check_architecture(config, pretrained)
        config.train.init_from = str(pretrained.run_dir)

    absolute_data_paths(config.data)  # config.json must find the data from any directory
    splits = load_splits(config.data, seed=config.train.seed)
    tokenizer = (pretrained.tokenizer if pretrained is not None else
                 Tokenizer.train(splits.train.texts, config.data.vocab_size, config.data.min_freq))
    encoded = _encode(tokenizer, splits, config)
    config.model.vocab_size = tokenizer.vocab_size
    config.model.num_classes = len(splits.label_names)
    config.train.output = str(run_dir)
    # Only now, with the data read, is the directory created and locked: bad data leaves nothing.
    # SIGINT and SIGTERM are caught while the epochs run: the step in progress ends and the
    # resumable state is saved.
    with processes.on_rank0(claim(run_dir, overwrite)), stop_on_signals() as stop:
        task = ClassifierTask(config, splits, encoded, device)
        if pretrained is not None:  # before any file: unreadable weights leave no directory
            finetune.copy_pretrained(task.model, pretrained.run_dir)
        processes.from_rank0(lambda: tokenizer.save(run_dir / TOKENIZER_FILE))
        return _finish(task, config, callbacks, run_dir, rng, None, stop)


@distributed.entry
def resume(
    run_dir: Path, callbacks: Callbacks | None = None, epochs: int | None = None
) -> TrainResult:
    """Continue the interrupted run in ``run_dir`` from its resumable state, exactly as if it had
    never stopped: its config, its tokenizer (not retrained), the data read again. ``epochs``
    extends (or shortens) the run; it cannot end before the interrupted epoch."""
    callbacks = callbacks or Callbacks()
    run_dir = Path(run_dir)
    processes = distributed.start()
    # Rank 0's files: the other processes (on other machines, maybe) hear them from it.
    state, config, tokenizer = processes.from_rank0(lambda: (
        *open_resume(run_dir, "train", Config, epochs), Tokenizer.load(run_dir / TOKENIZER_FILE)))
    device = resolve_device(config.train.device, config.train.threads)
    check_precision(config.train.precision, device)
    device = processes.place(device, config.train.threads)
    rng = seed_everything(config.train.seed)
    splits = load_splits(config.data, seed=config.train.seed)
    if (tokenizer.vocab_size != config.model.vocab_size
            or len(splits.label_names) != config.model.num_classes):
        raise CheckpointError(f"the data or {run_dir / TOKENIZER_FILE} changed since {run_dir} "
                              "was interrupted; it cannot be resumed exactly: train a new run")
    encoded = _encode(tokenizer, splits, config)
    with processes.on_rank0(claim(run_dir, False, resume=True)), stop_on_signals() as stop:
        task = ClassifierTask(config, splits, encoded, device)
        return _finish(task, config, callbacks, run_dir, rng, state, stop)


def open_resume(
    run_dir: Path, command: str, kind: type[Any], epochs: int | None
) -> tuple[ResumeState, Any]:
    """The resumable state of ``command``'s interrupted run in ``run_dir`` and its config (a
    ``kind``: Config or PretrainConfig), checked. ``epochs`` (--epochs with --resume) extends or
    shortens the run, never to before the interrupted epoch."""
    state = load_resume(run_dir, command)
    try:
        config = kind.from_run(state.config, source=str(run_dir / "resume.json"))
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"the resumable state in {run_dir} lacks {error}") from None
    if epochs is not None:
        if epochs < state.epoch:
            raise CheckpointError(f"--epochs {epochs} ends before epoch {state.epoch}, where "
                                  f"{run_dir} was interrupted; pass --epochs {state.epoch} or more")
        config.train.epochs = epochs
    config.validate()
    if config.train.ema_decay > 0 and not state.average:
        raise CheckpointError(f"the resumable state in {run_dir} holds no weight average although "
                              "its config asks for one (ema_decay); train a new run")
    return state, config


def _encode(
    tokenizer: Tokenizer, splits: DatasetSplits, config: Config
) -> dict[str, list[np.ndarray]]:
    return {
        name: encode_cached(tokenizer, split.texts, config.data.max_len,
                            truncation=config.data.truncation)
        for name, split in (("train", splits.train), ("validation", splits.validation),
                            ("test", splits.test)) if split is not None
    }


class ClassifierTask(EpochTask):
    """The classifier's epochs: cross-entropy on labelled texts, the best model by validation
    accuracy (ties: lower validation loss), the gradient flow as a diagnostic; with fine-tuning
    settings, discriminative lrs and gradual unfreezing (:mod:`lstmcli.training.finetune`)."""

    best_keys = ("epoch", "val_accuracy", "val_loss")
    initial_best = {"epoch": 0, "val_accuracy": -1.0, "val_loss": math.inf}

    def __init__(self, config: Config, splits: DatasetSplits,
                 encoded: dict[str, list[np.ndarray]], device: torch.device) -> None:
        super().__init__(SentimentClassifier(config.model).to(device),
                         np.array([len(ids) for ids in encoded["train"]]),
                         Precision(config.train.precision, device))
        self.config, self.splits, self.encoded, self.device = config, splits, encoded, device
        self.groups = finetune.layer_groups(self.model)
        self.train_loss = training_loss(config.train)
        # Fixed for the whole run, so that the per-epoch curves compare like with like.
        self.flow_batch = diagnostic_batch(encoded["validation"], splits.validation.labels,
                                           seed=config.train.seed)

    def optimizer_groups(self) -> list[dict[str, Any]]:
        return finetune.optimizer_groups(self.model, self.config.train.discriminative_lr)

    def start_epoch(self, epoch: int) -> dict[str, Any]:
        if not self.config.train.gradual_unfreeze:
            return {}
        return {"unfrozen": finetune.unfreeze(self.groups, epoch)}

    def batches(self, index_batches: list[np.ndarray]) -> Iterator[Batch]:
        labels = self.splits.train.labels
        for index, ids, lengths, targets in iterate_batches(self.encoded["train"], index_batches,
                                                            self.device, labels):
            yield Batch((ids, lengths), targets, int(self.lengths[index].sum()))  # (B, T), (B,)

    def loss(self, output: Tensor, targets: Tensor) -> Tensor:
        # Training only: validation (measure) stays plain cross-entropy.
        return self.train_loss(output, targets)

    def measure(self, stats: EpochStats) -> dict[str, Any]:
        # Each process scores every world_size-th text (all of them, alone); the sums of the
        # per-text losses and hits, added up over the processes, are the whole set's.
        processes = distributed.current()
        texts = self.encoded["validation"]
        share = np.arange(len(texts))[processes.rank::processes.world_size]
        loss_sum = hits = 0.0
        if len(share):
            logits = predict_logits(self.model, [texts[i] for i in share], 256,
                                    self.device)  # (n, C)
            labels = np.asarray(self.splits.validation.labels)[share]
            losses = nn.functional.cross_entropy(logits, torch.as_tensor(labels),
                                                 reduction="none")  # (n,)
            loss_sum = float(losses.double().sum())
            hits = float((logits.argmax(dim=1).numpy() == labels).sum())
        loss_sum, hits, count = processes.sums([loss_sum, hits, len(share)])
        return {
            "train_loss": stats.loss,
            "train_accuracy": stats.accuracy,
            "val_loss": loss_sum / count if count else float("nan"),
            "val_accuracy": hits / count if count else float("nan"),
        }

    def diagnose(self) -> dict[str, Any]:
        return _flow_columns(measure_flow(self.model, *self.flow_batch).to_dict())

    def improved(self, row: dict[str, Any], best: dict[str, Any]) -> bool:
        return (row["val_accuracy"], -row["val_loss"]) > (best["val_accuracy"],
                                                          -best["val_loss"])

    def save(self, run_dir: Path, best: dict[str, Any]) -> None:
        save_checkpoint(run_dir, self.model, self.config, self.splits.label_names,
                        {"best": best, "device": describe_device(self.device),
                         **distributed.current().record()})


def _finish(
    task: ClassifierTask,
    config: Config,
    callbacks: Callbacks,
    run_dir: Path,
    rng: np.random.Generator,
    start: ResumeState | None,
    stop: StopFlag,
) -> TrainResult:
    """The epochs, then the test accuracy of the best checkpoint, once."""
    info = _start_info(config, task.splits, run_dir, task.device, task.model)
    epochs = run_epochs(task, config, callbacks, run_dir, rng, start, stop, info)

    def last_writes() -> float | None:  # rank 0's; the others wait for them, once
        with task.precision.autocast():  # measured as validation was
            test_accuracy = _final_test(run_dir, task.model, config, task.splits, task.encoded,
                                        task.device)
        clear_resume(run_dir)
        remember_latest(run_dir)
        return test_accuracy

    test_accuracy = distributed.current().from_rank0(last_writes)
    return TrainResult(run_dir, epochs.best["epoch"], epochs.best["val_accuracy"], test_accuracy,
                       epochs.history, epochs.stopped_epoch is not None, epochs.stopped_epoch)


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
        "device": describe_device(device),
        "precision": config.train.precision,
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
        "processes": distributed.current().describe(),
        "notes": list(splits.notes),
    }
