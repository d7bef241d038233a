"""Gate statistics: how open each gate is and how often it saturates.

A saturated sigmoid (below SATURATION_LOW or above SATURATION_HIGH) passes almost no gradient to
its inputs, so the shares of saturated values say how trainable a gate still is. Which of a cell's
activations are gates (and not tanh candidates) is the cell's own knowledge (``Cell.gates``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SATURATION_LOW = 0.1
SATURATION_HIGH = 0.9


def gate_statistics(
    gates_by_step: Sequence[dict[str, Any]], mask: Any, names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per gate in ``names``: mean, and shares below SATURATION_LOW and above SATURATION_HIGH,
    over every unit of every real step (``gates_by_step``: per step, gate name -> (B, H) tensor;
    mask (B, T) True on real steps)."""
    import torch

    stats: dict[str, dict[str, float]] = {}
    if not gates_by_step:
        return stats
    for name in (g for g in names if g in gates_by_step[0]):
        values = torch.stack([gates[name].detach() for gates in gates_by_step], dim=1)  # (B,T,H)
        real = values[mask]  # (real steps, H)
        if real.numel() == 0:
            continue
        stats[name] = {
            "mean": float(real.mean()),
            "saturated_low": float((real < SATURATION_LOW).double().mean()),
            "saturated_high": float((real > SATURATION_HIGH).double().mean()),
        }
    return stats
