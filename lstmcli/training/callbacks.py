"""What a front end (the CLI's progress bar and tables) hears from a training run.

Kept free of torch and of the training code, so that a renderer can implement it without
importing either.
"""

from __future__ import annotations

from typing import Any


class Callbacks:
    """Hooks called by the run and its trainer; every one is optional."""

    def on_start(self, info: dict[str, Any]) -> None:
        """Once, before the first epoch: data sizes, model size, device, notes."""

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        """Before each epoch's first training step."""

    def on_step(self, step: int, loss: float) -> None:
        """After every optimiser step."""

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        """After validation: the epoch's row of metrics.jsonl."""
