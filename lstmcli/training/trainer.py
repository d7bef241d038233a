"""A training loop that knows no model: batches in, optimiser steps out, callbacks in between.

The trainer sees a module, an optimiser, a loss function and batches of ``(inputs, targets)``; it
knows nothing of cells, tokenizers, run directories or validation. What happens to the gradient
between ``backward`` and the optimiser step (measuring, clipping, recording) is a
:class:`GradientHook`; what a front end shows is :class:`~lstmcli.training.callbacks.Callbacks`.
`lstm train` (:mod:`lstmcli.training.run`) and the long-range task of `lstm diagnose` both train
through it.
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

LossFunction = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Batch:
    """One training batch: the model is called as ``model(*inputs)``."""

    inputs: tuple[Tensor, ...]
    targets: Tensor  # class ids, (B,) or (B, T)
    tokens: int  # real (unpadded) tokens, for the throughput figure


@dataclass
class EpochStats:
    """What one pass over the training batches measured (validation is not the trainer's)."""

    loss: float  # mean over examples
    accuracy: float  # share of targets whose argmax is right
    examples: int
    tokens: int
    steps: int
    seconds: float  # wall time of the training steps alone

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


class Trainer:
    """Runs epochs of optimiser steps over whatever batches it is given."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: LossFunction = nn.functional.cross_entropy,
        gradients: GradientHook | None = None,
        callbacks: Callbacks | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.gradients = gradients or ClipGradients(model.parameters(), 0.0)
        self.callbacks = callbacks or Callbacks()

    def train_epoch(self, batches: Iterable[Batch], epoch: int, steps: int) -> EpochStats:
        """One pass: forward, loss, backward, the gradient hook, the optimiser step. Raises
        Diverged (before stepping) when the loss or the gradient norm is not finite."""
        self.callbacks.on_epoch_start(epoch, steps)
        self.model.train()
        loss_sum, correct, seen, targets_seen, tokens, step = 0.0, 0, 0, 0, 0, 0
        started = time.perf_counter()
        for step, batch in enumerate(batches, start=1):
            logits = self.model(*batch.inputs)  # (B, C) or (B, T, C)
            loss = self.loss_fn(logits, batch.targets)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = self.gradients.measure_and_clip()
            value = loss.item()
            if not math.isfinite(value):
                raise Diverged(epoch, step, "loss", value)
            if not math.isfinite(norm):
                raise Diverged(epoch, step, "gradient norm", norm)
            self.gradients.before_update()
            self.optimizer.step()
            self.gradients.after_update()
            size = batch.targets.shape[0]
            loss_sum += value * size
            correct += int((logits.argmax(dim=-1) == batch.targets).sum())
            seen += size
            targets_seen += batch.targets.numel()
            tokens += batch.tokens
            self.callbacks.on_step(step, value)
        seconds = time.perf_counter() - started
        return EpochStats(
            loss=loss_sum / max(seen, 1),
            accuracy=correct / max(targets_seen, 1),
            examples=seen,
            tokens=tokens,
            steps=step,
            seconds=seconds,
        )
