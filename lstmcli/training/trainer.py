"""A training loop that knows no model: batches in, optimiser steps out, callbacks in between.

The trainer sees a module, an optimiser, a loss function and batches of ``(inputs, targets)``; it
knows nothing of cells, tokenizers, run directories or validation. What happens to the gradient
between ``backward`` and the optimiser step (measuring, clipping, recording) is a
:class:`GradientHook`; what a front end shows is :class:`~lstmcli.training.callbacks.Callbacks`.
`lstm train` (:mod:`lstmcli.training.run`), `lstm pretrain` (:mod:`lstmcli.training.pretrain`)
and the long-range task of `lstm diagnose` all train through it.

Distributed training (:mod:`lstmcli.distributed`) needs three things of it beyond wrapping the
model: the model and its loss are called as one module (:class:`WithLoss`), so that
DistributedDataParallel sees every parameter the loss uses; each process's loss is weighted by its
share of the global batch (:attr:`Batch.weight`), so that the averaged gradient is the mean over
the global batch even when the shares differ; and the step's figures, with the request to stop,
are summed over the processes (``reduce``), so that every process reports the same figures and
stops after the same step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from lstmcli.errors import TrainingDiverged
from lstmcli.training.callbacks import Callbacks
from lstmcli.training.precision import Precision

LossFunction = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Batch:
    """One training batch: the model is called as ``model(*inputs)``."""

    inputs: tuple[Tensor, ...]
    targets: Tensor  # class ids, (B,) or (B, T)
    tokens: int  # real (unpadded) tokens, for the throughput figure
    # The factor on the loss before backward: 1 for a whole batch. For one process's part of a
    # global batch, its share of the global batch's loss terms times the number of processes
    # (DistributedDataParallel divides the summed gradients by that number). 0: a stand-in for an
    # empty part, which only keeps the process in step; its figures are not counted.
    weight: float = 1.0


@dataclass
class EpochProgress:
    """The running sums of an epoch so far: what a resumed epoch continues from."""

    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    targets_seen: int = 0
    tokens: int = 0
    step: int = 0  # optimiser steps done in this epoch
    seconds: float = 0.0
    skipped: int = 0  # of those, steps fp16's gradient scaler skipped on an overflow


class Stopped(Exception):  # noqa: N818 (a request honoured, not an error)
    """``should_stop`` said so after a completed step; ``progress`` is the epoch so far."""

    def __init__(self, epoch: int, progress: EpochProgress) -> None:
        self.epoch, self.progress = epoch, progress
        super().__init__(f"stopped at epoch {epoch}, step {progress.step}")


@dataclass
class EpochStats:
    """What one pass over the training batches measured (validation is not the trainer's)."""

    loss: float  # mean over examples
    accuracy: float  # share of targets whose argmax is right
    examples: int
    tokens: int
    steps: int
    seconds: float  # wall time of the training steps alone
    skipped: int = 0  # steps skipped on an fp16 gradient overflow (lstmcli.training.precision)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class GradientHook(Protocol):
    """Called around every optimiser step (lstmcli.training.monitor.GradientMonitor is one)."""

    def measure_and_clip(self) -> float:
        """The global gradient norm before clipping (clipping in place where asked)."""
        ...

    def before_update(self) -> None: ...

    def after_update(self) -> None: ...


class ClipGradients:
    """The plain hook: clip the global gradient norm to ``clip_norm`` (0: measure only)."""

    def __init__(self, parameters: Iterable[nn.Parameter], clip_norm: float) -> None:
        self.parameters = [p for p in parameters if p.requires_grad]
        self.clip_norm = clip_norm

    def measure_and_clip(self) -> float:
        limit = self.clip_norm if self.clip_norm > 0 else math.inf
        return float(nn.utils.clip_grad_norm_(self.parameters, limit))

    def before_update(self) -> None:
        pass

    def after_update(self) -> None:
        pass


class Diverged(TrainingDiverged):
    """The loss or the gradient norm became NaN or infinite; nothing was stepped with it."""

    def __init__(self, epoch: int, step: int, what: str, value: float) -> None:
        self.epoch, self.step, self.what, self.value = epoch, step, what, value
        super().__init__(f"training diverged at epoch {epoch}, step {step}: the {what} is {value}")


class WithLoss(nn.Module):
    """A model and its loss as one module: ``forward(inputs, targets) -> (output, loss)``."""

    def __init__(self, model: nn.Module, loss_fn: LossFunction) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, inputs: tuple[Tensor, ...], targets: Tensor) -> tuple[Tensor, Tensor]:
        output = self.model(*inputs)  # (B, C) or (B, T, C)
        return output, self.loss_fn(output, targets)


class Trainer:
    """Runs epochs of optimiser steps over whatever batches it is given. ``forward`` is
    :class:`WithLoss` of the model, or a wrapper of it (DistributedDataParallel)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: LossFunction = nn.functional.cross_entropy,
        gradients: GradientHook | None = None,
        callbacks: Callbacks | None = None,
        should_stop: Callable[[], bool] | None = None,
        before_step: Callable[[int, int], None] | None = None,
        measure_accuracy: bool = True,
        precision: Precision | None = None,
        reduce: Callable[[list[float]], list[float]] | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.network = WithLoss(model, loss_fn)
        self.forward: nn.Module = self.network
        self.gradients = gradients or ClipGradients(model.parameters(), 0.0)
        self.callbacks = callbacks or Callbacks()
        # Asked after every optimiser step, so that an interrupt never splits one.
        self.should_stop = should_stop or (lambda: False)
        # before_step(epoch, step) before each step's forward pass: a per-step lr schedule.
        self.before_step = before_step
        # False where the model's output is no logits to take an argmax of (a language model's
        # features for its adaptive softmax): the accuracy stays 0.
        self.measure_accuracy = measure_accuracy
        # Autocast around the forward pass; fp16's loss scaling around backward and the step.
        self.precision = precision or Precision()
        # Sums a step's figures over the processes of a distributed run (None: one process).
        self.reduce = reduce

    def train_epoch(
        self,
        batches: Iterable[Batch],
        epoch: int,
        steps: int,
        progress: EpochProgress | None = None,
    ) -> EpochStats:
        """One pass: forward, loss, backward, the gradient hook, the optimiser step. Raises
        Diverged (before stepping) when the loss or the gradient norm is not finite (but for an
        overflow that fp16's gradient scaler skips), and Stopped
        (after stepping) when ``should_stop`` says so. ``progress`` continues an epoch whose first
        ``progress.step`` batches were done already (``batches`` then holds the rest)."""
        self.callbacks.on_epoch_start(epoch, steps)
        self.forward.train()
        done = progress or EpochProgress()
        started = time.perf_counter() - done.seconds
        for step, batch in enumerate(batches, start=done.step + 1):
            if self.before_step is not None:
                self.before_step(epoch, step)
            with self.precision.autocast():
                logits, loss = self.forward(batch.inputs, batch.targets)  # (B, C) or (B, T, C)
            self.optimizer.zero_grad(set_to_none=True)
            self.precision.backward(loss if batch.weight == 1.0 else loss * batch.weight)
            self.precision.unscale(self.optimizer)  # the monitor and clipping see true norms
            norm = self.gradients.measure_and_clip()
            value = loss.item()
            # With processes, a loss is judged once summed (below), so that all of them stop at
            # the same step; meanwhile the averaged gradient is not finite on every process.
            if self.reduce is None and not math.isfinite(value):
                raise Diverged(epoch, step, "loss", value)
            if math.isfinite(norm):
                self.gradients.before_update()
                self.precision.step(self.optimizer)
                self.gradients.after_update()
            elif self.precision.skip():  # an fp16 overflow: no update, a lower loss scale
                done.skipped += 1
            else:
                raise Diverged(epoch, step, "gradient norm", norm)
            counted = batch.weight > 0
            size = batch.targets.shape[0] if counted else 0
            correct = 0
            if self.measure_accuracy and counted:
                correct = int((logits.argmax(dim=-1) == batch.targets).sum())
            figures = [value * size if counted else 0.0, correct, size,
                       batch.targets.numel() if counted else 0, batch.tokens if counted else 0]
            if self.reduce is not None:
                *figures, stop = self.reduce([*figures, float(self.should_stop())])
                value = figures[0] / max(figures[2], 1)  # the global batch's mean loss
                if not math.isfinite(value):
                    raise Diverged(epoch, step, "loss", value)
            done.loss_sum += figures[0]
            done.correct += int(figures[1])
            done.seen += int(figures[2])
            done.targets_seen += int(figures[3])
            done.tokens += int(figures[4])
            done.step = step
            self.callbacks.on_step(step, value)
            # With processes, the request as they all heard it when summing; alone, now.
            if stop if self.reduce is not None else self.should_stop():
                done.seconds = time.perf_counter() - started
                raise Stopped(epoch, done)
        done.seconds = time.perf_counter() - started
        return EpochStats(
            loss=done.loss_sum / max(done.seen, 1),
            accuracy=done.correct / max(done.targets_seen, 1),
            examples=done.seen,
            tokens=done.tokens,
            steps=done.step,
            seconds=done.seconds,
            skipped=done.skipped,
        )
