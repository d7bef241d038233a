"""An exponential moving average of the weights (Polyak & Juditsky 1992), what validation, the
best checkpoint and the final test see when ``[train] ema_decay`` is set.

After every optimiser step ``average <- decay * average + (1 - decay) * weights``, started from
zeros and divided by ``1 - decay**steps`` when read (Adam's bias correction), so the average is a
true weighted mean of the weights after each step so far, however few: nothing of the random
initialisation is left in it. With ``decay`` 0.99 the last ~100 steps carry 63% of the weight.
Averaging damps the noise of the last steps, which on small data is much of what separates one
seed's best epoch from another's.

Training itself never sees the average: the optimiser keeps stepping the model's own weights,
and :meth:`WeightAverage.applied` swaps the average in only around validation, the diagnostics
and the checkpoint."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn


class WeightAverage:
    """The bias-corrected exponential moving average of ``model``'s parameters."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.steps = 0
        named = list(model.named_parameters())
        self.names = [name for name, _ in named]
        self.parameters = [parameter for _, parameter in named]
        self.sums = [torch.zeros_like(parameter, dtype=torch.float32)
                     for parameter in self.parameters]

    def update(self) -> None:
        """Fold in the weights as they are after an optimiser step."""
        self.steps += 1
        with torch.no_grad():
            for total, parameter in zip(self.sums, self.parameters, strict=True):
                total.lerp_(parameter.float(), 1.0 - self.decay)

    def averaged(self) -> list[Tensor]:
        """The average of the weights so far, in the parameters' order (the weights themselves
        before the first step)."""
        if self.steps == 0:
            return [parameter.detach().clone() for parameter in self.parameters]
        correction = 1.0 - self.decay ** self.steps
        return [(total / correction).to(parameter.dtype)
                for total, parameter in zip(self.sums, self.parameters, strict=True)]

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own weights after it."""
        own = [parameter.detach().clone() for parameter in self.parameters]
        with torch.no_grad():
            for parameter, value in zip(self.parameters, self.averaged(), strict=True):
                parameter.copy_(value)
        try:
            yield
        finally:
            with torch.no_grad():
                for parameter, value in zip(self.parameters, own, strict=True):
                    parameter.copy_(value)

    def state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """What the resumable state keeps: the step count and the running sums by name (the
        decay is the run's config)."""
        return ({"steps": self.steps},
                dict(zip(self.names, self.sums, strict=True)))

    def load_state(self, values: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        self.steps = int(values["steps"])
        with torch.no_grad():
            for name, total in zip(self.names, self.sums, strict=True):
                total.copy_(tensors[name])
