"""Learning-rate schedules and early stopping, decided once per epoch.

The lr of epoch ``e`` (1-based, of ``E``) is set before its first step:

- a linear warmup over the first ``W`` epochs: ``lr * e / W`` (constant, cosine, plateau);
- ``constant``: ``lr``;
- ``cosine``: ``lr * (1 + cos(pi * (e - W - 1) / (E - W))) / 2``, from ``lr`` after the warmup
  towards 0 at the end of the run;
- ``onecycle``: torch's ``OneCycleLR`` (cosine annealing, ``div_factor`` 25,
  ``final_div_factor`` 1e4, no momentum cycling) stepped once per epoch over ``E`` steps, its
  rise lasting ``W`` epochs (30% of the run when ``W`` is 0);
- ``plateau``: ``lr``, halved after every epoch whose validation loss is no lower than the best
  so far (a patience of 1 epoch);
- ``slanted``: the slanted triangular lr of ULMFiT (Howard & Ruder 2018, eq. 3), set before every
  optimiser step rather than every epoch: over ``T`` steps in all, ``cut = floor(T * cut_frac)``,
  ``p = t / cut`` while ``t < cut``, else ``1 - (t - cut) / (cut * (1 / cut_frac - 1))``, and
  ``lr_t = lr * (1 + p * (ratio - 1)) / ratio``, with ``cut_frac`` 0.1, ``ratio`` 32 and ``t``
  the steps done before this one (0 for the first). A short rise to ``lr``, then a long linear
  decay to ``lr / ratio``. It is a function of the step alone, so a resumed run sets the same lr.

Everything that changes during a run (the plateau's best loss and scale, the epochs without
improvement that early stopping counts) is in :meth:`Schedule.state`, which the resumable state
saves, so that a resumed run sets exactly the lr it would have set.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from lstmcli.config import LR_SCHEDULES

__all__ = ["LR_SCHEDULES", "Schedule", "ScheduleState"]

ONECYCLE_DIV, ONECYCLE_FINAL_DIV, ONECYCLE_PCT = 25.0, 1e4, 0.3
PLATEAU_FACTOR = 0.5
SLANTED_CUT_FRAC, SLANTED_RATIO = 0.1, 32.0


@dataclass
class ScheduleState:
    plateau_best: float = math.inf  # lowest validation loss so far (plateau)
    plateau_scale: float = 1.0  # product of the halvings so far (plateau)
    bad_epochs: int = 0  # epochs since validation last improved (early stopping)


class Schedule:
    """The lr of each epoch (or step: ``per_step``) and the early-stopping count of one run."""

    def __init__(
        self, name: str, lr: float, epochs: int, warmup: int, patience: int,
        steps_per_epoch: int = 1,
    ) -> None:
        self.name, self.base, self.epochs, self.warmup = name, lr, epochs, warmup
        self.patience = patience  # 0: never stop early
        self.steps_per_epoch = max(steps_per_epoch, 1)
        self.current = ScheduleState()

    @property
    def per_step(self) -> bool:
        """Whether the lr changes at every optimiser step (``step_lr``), not once per epoch."""
        return self.name == "slanted"

    def step_lr(self, epoch: int, step: int) -> float:
        """The lr of optimiser step ``step`` (1-based) of epoch ``epoch`` (1-based)."""
        if not self.per_step:
            return self.lr(epoch)
        total = self.epochs * self.steps_per_epoch
        t = (epoch - 1) * self.steps_per_epoch + step - 1
        cut = max(math.floor(total * SLANTED_CUT_FRAC), 1)
        p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / SLANTED_CUT_FRAC - 1))
        # Clamped: with few steps in all, flooring cut makes the decay reach 0 before the last
        # step and go on below it; and --resume --epochs can shorten a run past its own end.
        p = min(max(p, 0.0), 1.0)
        return self.base * (1 + p * (SLANTED_RATIO - 1)) / SLANTED_RATIO

    def lr(self, epoch: int) -> float:
        if self.per_step:
            return self.step_lr(epoch, 1)  # the lr the epoch starts with
        if self.name == "onecycle":
            return self._onecycle(epoch - 1)
        warm = min(1.0, epoch / self.warmup) if self.warmup else 1.0
        if self.name == "cosine":
            span = max(self.epochs - self.warmup, 1)
            progress = max(epoch - self.warmup - 1, 0) / span
            return self.base * warm * (1 + math.cos(math.pi * progress)) / 2
        if self.name == "plateau":
            return self.base * warm * self.current.plateau_scale
        return self.base * warm

    def _onecycle(self, step: int) -> float:
        """OneCycleLR's closed form (its ``_anneal_func`` "cos") at step ``step``."""
        initial = self.base / ONECYCLE_DIV
        final = initial / ONECYCLE_FINAL_DIV
        pct = self.warmup / self.epochs if self.warmup else ONECYCLE_PCT
        phases = ((pct * self.epochs - 1, initial, self.base),
                  (self.epochs - 1, self.base, final))
        start_step = 0.0
        for index, (end_step, start, end) in enumerate(phases):
            if step <= end_step or index == len(phases) - 1:
                share = ((step - start_step) / (end_step - start_step)
                         if end_step != start_step else 1.0)
                return end + (start - end) / 2.0 * (math.cos(math.pi * share) + 1)
            start_step = end_step
        raise AssertionError("unreachable")

    def end_epoch(self, val_loss: float, improved: bool) -> bool:
        """Record an epoch's validation; True when early stopping ends the run here."""
        state = self.current
        if self.name == "plateau":
            if val_loss < state.plateau_best:
                state.plateau_best = val_loss
            else:
                state.plateau_scale *= PLATEAU_FACTOR
        state.bad_epochs = 0 if improved else state.bad_epochs + 1
        return bool(self.patience) and state.bad_epochs >= self.patience

    def state(self) -> dict[str, Any]:
        values = asdict(self.current)
        if math.isinf(values["plateau_best"]):  # strict JSON has no infinity: null, "none yet"
            values["plateau_best"] = None
        return values

    def load_state(self, values: dict[str, Any]) -> None:
        if not values:  # a resumable state written before schedules: a fresh one
            return
        best = values.get("plateau_best")
        self.current = ScheduleState(math.inf if best is None else float(best),
                                     float(values["plateau_scale"]), int(values["bad_epochs"]))
