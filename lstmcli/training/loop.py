"""The epochs of a run, whatever it trains: the classifier of `lstm train`
(:mod:`lstmcli.training.run`) and the language model of `lstm pretrain`
(:mod:`lstmcli.training.pretrain`) differ only in what an :class:`EpochTask` says.

Shared here: the optimiser (Adam or AdamW, with the task's parameter groups, each at its own
share of the lr), the lr schedule (per epoch, or per step for ``slanted``), gradient clipping and
statistics (:mod:`lstmcli.training.monitor`), the weights' moving average
(:mod:`lstmcli.training.average`), length-bucketed batches, the epoch's row of
metrics.jsonl, the best checkpoint, early stopping, and SIGINT/SIGTERM: the step in progress ends,
the resumable state is saved (:mod:`lstmcli.training.resume`) and a resumed run continues exactly.

Under torchrun (:mod:`lstmcli.distributed`) ``batch_size`` is the global batch: every process
draws the same global batches (the same seed) and trains on its contiguous part of each, so all
take the same number of steps and, with the losses weighted by the parts' shares, the averaged
gradient is the one a single process computes on the whole batch. Only rank 0 writes files;
the decisions (best epoch, early stopping, an interrupt) rest on figures summed over the
processes, identical on each."""

from __future__ import annotations

import contextlib
import gc
import math
import shlex
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lstmcli.atomic import atomic_write
from lstmcli.config import Config
from lstmcli.data.batching import bucket_batches
from lstmcli.distributed import Group, current
from lstmcli.errors import TrainingDiverged, TrainingInterrupted
from lstmcli.jsonout import dumps
from lstmcli.pretrain_config import PretrainConfig
from lstmcli.rundir import append_line
from lstmcli.runs import METRICS_FILE
from lstmcli.training.average import WeightAverage
from lstmcli.training.callbacks import Callbacks
from lstmcli.training.monitor import GradientMonitor, NormMonitor
from lstmcli.training.optim import make_optimizer
from lstmcli.training.precision import Precision
from lstmcli.training.resume import ResumeState, StopFlag, restore, save_resume
from lstmcli.training.schedule import Schedule
from lstmcli.training.trainer import Batch, Diverged, EpochProgress, EpochStats, Stopped, Trainer


class EpochTask:
    """What one kind of run trains and how an epoch of it is judged; :func:`run_epochs` does the
    rest. ``model`` is built (on its device) before the task is, ``lengths`` (N,) are the
    training sequences' lengths, which the batches are bucketed by, and ``precision`` the
    arithmetic of the steps and of ``measure`` (default: float32)."""

    command = "train"  # the command whose --resume continues the run
    # The parameters (names in the model) that a step may leave without a gradient: averaged
    # over the processes apart from DistributedDataParallel, which expects a gradient of each.
    sometimes_unused: tuple[str, ...] = ()
    measure_accuracy = True  # whether the trainer counts argmax hits (logits) or not
    best_keys: tuple[str, ...] = ("epoch", "val_loss")
    initial_best: dict[str, Any] = {"epoch": 0, "val_loss": math.inf}

    def __init__(self, model: nn.Module, lengths: np.ndarray,
                 precision: Precision | None = None) -> None:
        self.model = model
        self.lengths = lengths
        self.precision = precision or Precision()

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """The optimiser's parameter groups, each with an ``lr_scale`` (its share of the lr)."""
        return [{"params": list(self.model.parameters()), "name": "all", "lr_scale": 1.0}]

    def start_epoch(self, epoch: int) -> dict[str, Any]:
        """Before the epoch's batches (also when resuming into it); returns extra row columns."""
        return {}

    def batches(self, index_batches: list[np.ndarray]) -> Iterator[Batch]:
        raise NotImplementedError

    def loss_terms(self, index: np.ndarray) -> int:
        """How many terms the training loss of these examples is the mean of."""
        return len(index)

    def loss(self, output: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError

    def measure(self, stats: EpochStats) -> dict[str, Any]:
        """The epoch's training and validation figures (train_loss and val_loss among them);
        called under the run's autocast."""
        raise NotImplementedError

    def diagnose(self) -> dict[str, Any]:
        """Diagnostics measured after the epoch when --diagnostics is on (beyond the gradients)."""
        return {}

    def improved(self, row: dict[str, Any], best: dict[str, Any]) -> bool:
        return row["val_loss"] < best["val_loss"]

    def save(self, run_dir: Path, best: dict[str, Any]) -> None:
        """Write the checkpoint of the model as it is now, the best so far."""
        raise NotImplementedError


@dataclass
class Epochs:
    """What the epochs of a run came to."""

    best: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_epoch: int | None = None  # where --patience ended the run


def run_epochs(
    task: EpochTask,
    config: Config | PretrainConfig,
    callbacks: Callbacks,
    run_dir: Path,
    rng: np.random.Generator,
    start: ResumeState | None,
    stop: StopFlag,
    info: dict[str, Any],
) -> Epochs:
    """The epochs of a run whose directory is claimed (from ``start`` when resuming); writes the
    run as it goes and stops cleanly when ``stop`` is raised. ``info`` is what the front end
    hears before the first epoch."""
    processes = current()
    rank = processes.rank
    if rank != 0:  # rank 0 alone reports
        callbacks = Callbacks()
    model, train_cfg = task.model, config.train
    optimizer = make_optimizer(task.optimizer_groups(), train_cfg)
    # Before any freezing: the monitor keeps every parameter (a frozen one's gradient is zero).
    monitor = (GradientMonitor if train_cfg.diagnostics else NormMonitor)(model,
                                                                        train_cfg.clip_norm)
    average = WeightAverage(model, train_cfg.ema_decay) if train_cfg.ema_decay > 0 else None
    # Deterministic: the shuffled bucketing gives every epoch the same number of batches.
    steps = len(bucket_batches(task.lengths, train_cfg.batch_size))
    schedule = Schedule(train_cfg.lr_schedule, train_cfg.lr, train_cfg.epochs,
                        train_cfg.warmup_epochs, train_cfg.patience, steps)
    if start:
        schedule.load_state(start.schedule)

    def set_lr(lr: float) -> None:
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]

    per_step = (lambda epoch, step: set_lr(schedule.step_lr(epoch, step))) \
        if schedule.per_step else None
    precision = task.precision
    trainer = Trainer(model, optimizer, task.loss, _Averaged(monitor, task, processes, average),
                      callbacks, stop, per_step, task.measure_accuracy, precision,
                      processes.sums if processes.world_size > 1 else None)
    trainable: list[bool] = []
    best, history = dict(task.initial_best), []
    first_epoch = start.epoch if start else 1
    if start:
        best, history = dict(start.best), [dict(row) for row in start.history]
    if rank == 0:
        # The history so far (none for a fresh run), so that every epoch is in it once; the
        # rename replaces a link planted there instead of following it.
        lines = "".join(dumps(row) + "\n" for row in history).encode("utf-8")
        atomic_write(run_dir / METRICS_FILE, lambda handle: handle.write(lines))
    callbacks.on_start(info)
    if start:
        # Last: building the model drew from torch's RNG.
        restore(start, model, optimizer, monitor, average)
        precision.load_state(start.scaler)

    stopped_epoch: int | None = None
    for epoch in range(first_epoch, train_cfg.epochs + 1):
        started = time.perf_counter()
        resumed = start is not None and epoch == start.epoch
        if resumed:
            rng.bit_generator.state = start.epoch_rng  # the same batch order as before the stop
        epoch_rng = rng.bit_generator.state
        if not resumed:
            monitor.start_epoch()
        progress = start.progress if start and resumed else EpochProgress()
        lr = schedule.lr(epoch)  # set even on resume: optimizer.param_groups are not restored
        set_lr(lr)
        extra = task.start_epoch(epoch)
        trainable = _distribute(trainer, task, processes, trainable)
        # A signal between epochs (during validation): stop before drawing batches; every
        # process stops if any heard one (one process's sum is its own flag).
        if processes.sums([float(stop())])[0] > 0:
            _interrupt(run_dir, model, optimizer, monitor, average, stop, processes, ResumeState(
                epoch, progress, epoch_rng, best, history, config.to_dict(), None, {}, {},
                schedule.state(), task.command, precision.state()))
        batches = bucket_batches(task.lengths, train_cfg.batch_size, rng)
        parts, weights = process_parts(task, batches, processes)
        try:
            stats = trainer.train_epoch(
                _weighted(task.batches(parts[progress.step:]), weights[progress.step:]), epoch,
                len(batches), progress)
        except Stopped as stopped:
            _interrupt(run_dir, model, optimizer, monitor, average, stop, processes, ResumeState(
                epoch, stopped.progress, epoch_rng, best, history, config.to_dict(), None, {}, {},
                schedule.state(), task.command, precision.state()))
        except Diverged as error:
            kept = (f"the best checkpoint so far (epoch {best['epoch']}) in {run_dir} is intact"
                    if best["epoch"] else "no checkpoint was written yet")
            fix = "lower --lr or set --clip-norm"
            if precision.name == "fp16":  # float16 overflows at 65504, bfloat16 as float32 does
                fix += ", or train with --precision bf16 or fp32"
            raise TrainingDiverged(f"{error}; {kept}; {fix}") from None

        if schedule.per_step:  # the lr the epoch ended with
            lr = schedule.step_lr(epoch, len(batches))
        gradients = monitor.epoch_summary()
        # Validation, the diagnostics and the checkpoint see the averaged weights, if any.
        applied = average.applied() if average is not None else contextlib.nullcontext()
        with applied:
            with precision.autocast():  # validation computes as training does
                measured = task.measure(stats)
            row = {
                "epoch": epoch,
                "lr": lr,
                **measured,
                "grad_norm_mean": gradients.pop("grad_norm_mean"),
                "grad_norm_max": gradients.pop("grad_norm_max"),
                "clipped_fraction": gradients.pop("clipped_fraction"),
                "steps": gradients.pop("steps"),
                "train_seconds": stats.seconds,
                # Training steps only: validation and the diagnostics are not throughput.
                "tokens_per_second": stats.tokens_per_second,
                **gradients,
                **extra,
            }
            if precision.scaler is not None:
                row["skipped_steps"] = stats.skipped  # fp16 overflows: steps without an update
            if len(optimizer.param_groups) > 1:
                row["lr_groups"] = {group["name"]: lr * group["lr_scale"]
                                    for group in optimizer.param_groups}
            if train_cfg.diagnostics and rank == 0:  # written by rank 0 alone, measured there
                row.update(task.diagnose())
            row["seconds"] = time.perf_counter() - started
            improved = task.improved(row, best)
            row["best"] = improved
            if schedule.end_epoch(row["val_loss"], improved):
                stopped_epoch = epoch
            if improved:
                best = {key: row[key] for key in task.best_keys}
                if rank == 0:
                    task.save(run_dir, best)
        history.append(row)
        if rank == 0:
            append_line(run_dir / METRICS_FILE, dumps(row))
        callbacks.on_epoch_end(row)
        if stopped_epoch is not None:
            break
    return Epochs(best, history, stopped_epoch)


def process_parts(
    task: EpochTask, batches: list[np.ndarray], group: Group
) -> tuple[list[np.ndarray], list[float]]:
    """This process's part of each global batch and the weight of its loss (Batch.weight).
    Contiguous parts: a batch is sorted by length, so each part pads little. A part left empty (a
    global batch smaller than the processes) is a stand-in, the batch's first example, at weight
    0: every process must take part in every step's gradient sum."""
    if group.world_size == 1:
        return batches, [1.0] * len(batches)
    parts, weights = [], []
    for batch in batches:
        part = np.array_split(batch, group.world_size)[group.rank]
        if len(part) == 0:
            parts.append(batch[:1])
            weights.append(0.0)
        else:
            parts.append(part)
            weights.append(task.loss_terms(part) * group.world_size / task.loss_terms(batch))
    return parts, weights


def _weighted(batches: Iterator[Batch], weights: list[float]) -> Iterator[Batch]:
    for batch, weight in zip(batches, weights, strict=True):
        batch.weight = weight
        yield batch


def _distribute(trainer: Trainer, task: EpochTask, group: Group, trainable: list[bool]
                ) -> list[bool]:
    """Put the trainer's model under DistributedDataParallel, again whenever the set of trained
    parameters changed (gradual unfreezing): DDP sums the gradients of those it was given.
    Returns the set now trained."""
    now = [parameter.requires_grad for parameter in task.model.parameters()]
    if group.world_size > 1 and now != trainable:
        # The old wrapper's gradient hooks must be gone before the next backward pass.
        trainer.forward = trainer.network
        gc.collect()
        trainer.forward = group.wrap(trainer.network,
                                     [f"model.{name}" for name in task.sometimes_unused])
    return now


class _Averaged:
    """The gradient monitor, once the gradients DistributedDataParallel leaves alone (the task's
    sometimes_unused) are averaged too; after each update, the weights' moving average."""

    def __init__(self, monitor: GradientMonitor | NormMonitor, task: EpochTask,
                 group: Group, average: WeightAverage | None) -> None:
        named = dict(task.model.named_parameters())
        self.monitor, self.group, self.average = monitor, group, average
        self.apart = [named[name] for name in task.sometimes_unused] \
            if group.world_size > 1 else []

    def measure_and_clip(self) -> float:
        self.group.average_gradients(self.apart)
        return self.monitor.measure_and_clip()

    def before_update(self) -> None:
        self.monitor.before_update()

    def after_update(self) -> None:
        self.monitor.after_update()
        if self.average is not None:
            self.average.update()


def _interrupt(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    monitor: GradientMonitor | NormMonitor,
    average: WeightAverage | None,
    stop: StopFlag,
    group: Group,
    state: ResumeState,
) -> None:
    """Save the resumable state (rank 0; the others wait for it) and raise the interrupt,
    naming the command that resumes."""
    group.from_rank0(lambda: save_resume(run_dir, model, optimizer, monitor, state, average))
    number = stop.signal_number or signal.SIGINT
    raise TrainingInterrupted(
        f"interrupted at epoch {state.epoch}, step {state.progress.step}; resume with: "
        f"lstm {state.command} --resume {shlex.quote(str(run_dir))}", int(number))
