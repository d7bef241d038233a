"""Gradient flow through time and gate statistics, shared by `lstm train` (every epoch, into
metrics.jsonl) and `lstm diagnose`:

* ``measure_flow``: on a fixed batch, ``||dL/dh_t||`` (and ``||dL/dc_t||`` for the LSTM family)
  for every time step t of one layer and direction, through the cells' step-wise reference path
  (the fused kernels keep their per-step states to themselves).
* gate statistics from the same pass: the mean of every gate and the share of its values below
  0.1 and above 0.9 (saturated: a saturated sigmoid passes almost no gradient to its inputs).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lstmcli.data.batching import pad_batch
from lstmcli.diagnostics.gates import gate_statistics
from lstmcli.nn.classifier import SentimentClassifier
from lstmcli.nn.recurrent import length_mask

DIAGNOSTIC_BATCH = 32


@dataclass
class FlowReport:
    """The gradient through time of one layer and direction, and its gates, on one batch.

    The headline curve is the gradient with respect to the whole recurrent state s_t: h_t for
    the RNN and GRU, (h_t, c_t) for the LSTM family, so ||dL/ds_t||^2 = ||dL/dh_t||^2 +
    ||dL/dc_t||^2. That is the quantity back-propagation carries from step to step (dL/ds_{t-1}
    = J_t^T dL/ds_t plus what step t-1's output receives directly); an LSTM carries its
    long-range gradient in c, through the forget gate, while ||dL/dh_t|| alone can be small.
    """

    cell: str
    layer: int  # 0-based
    direction: int  # 0 forward, 1 backward (steps then count in processing order)
    examples: int
    h_norms: list[float]  # ||dL/dh_t||, index 0 = first step
    c_norms: list[float] | None  # ||dL/dc_t|| (LSTM family), else None
    gates: dict[str, dict[str, float]] = field(default_factory=dict)
    loss: float = float("nan")

    @property
    def steps(self) -> int:
        return len(self.h_norms)

    @property
    def state_norms(self) -> list[float]:
        if self.c_norms is None:
            return list(self.h_norms)
        return [math.hypot(h, c) for h, c in zip(self.h_norms, self.c_norms, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON schema of one cell's flow (metrics.jsonl "flow", diagnose --json)."""
        state = flow_summary(self.state_norms)
        h = flow_summary(self.h_norms)
        return {
            "cell": self.cell,
            "layer": self.layer + 1,
            "direction": "backward" if self.direction else "forward",
            "steps": self.steps,
            "examples": self.examples,
            "loss": _finite_or_none(self.loss),
            "grad_norm_by_step": _floats(self.state_norms),
            "first": state["first"],
            "last": state["last"],
            "first_last_ratio": state["first_last_ratio"],
            "decay_per_step": state["decay_per_step"],
            "h_grad_norm_by_step": _floats(self.h_norms),
            "h_first_last_ratio": h["first_last_ratio"],
            # No ratio for c: its last value is 0 by construction (nothing reads c_T).
            "c_grad_norm_by_step": None if self.c_norms is None else _floats(self.c_norms),
            "gates": self.gates,
        }


def _floats(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values]


def flow_summary(norms: Sequence[float]) -> dict[str, float | None]:
    """first and last norms, ``first_last_ratio = norm[0] / norm[-1]`` and ``decay_per_step =
    ratio ** (1 / (T - 1))``, the geometric-mean factor by which the norm shrinks (< 1) or grows
    (> 1) per step back in time. None where undefined (T < 2, a zero or non-finite last norm)."""
    if len(norms) == 0:
        return {"first": None, "last": None, "first_last_ratio": None, "decay_per_step": None}
    first, last = float(norms[0]), float(norms[-1])
    ratio = first / last if last > 0 and math.isfinite(last) and math.isfinite(first) else None
    decay = None
    if ratio is not None and len(norms) > 1:
        decay = ratio ** (1.0 / (len(norms) - 1))
    return {"first": _finite_or_none(first), "last": _finite_or_none(last),
            "first_last_ratio": ratio, "decay_per_step": decay}


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def diagnostic_batch(
    sequences: Sequence[np.ndarray],
    labels: np.ndarray,
    size: int = DIAGNOSTIC_BATCH,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """A fixed batch for the per-step curves: the ``size`` longest sequences (at most the longer
    half of a small set; ties broken by a seeded shuffle), all cut to the shortest of them, so
    that every step is a real token of every example and ``||dL/dh_t||`` compares like with like.

    Returns ids (B, T), lengths (B,) (all T) and labels (B,)."""
    if len(sequences) == 0:
        raise ValueError("no sequences to build a diagnostic batch from")
    order = np.random.default_rng([seed, 4]).permutation(len(sequences))
    lengths = np.array([len(sequences[i]) for i in order])
    count = min(size, max(1, math.ceil(len(sequences) / 2)))
    chosen = order[np.argsort(-lengths, kind="stable")[:count]]
    common = min(len(sequences[i]) for i in chosen)
    ids, lengths_t = pad_batch([np.asarray(sequences[i])[:common] for i in chosen])
    return ids, lengths_t, torch.as_tensor(np.asarray(labels)[chosen], dtype=torch.long)


def measure_flow(
    model: SentimentClassifier,
    ids: Tensor,
    lengths: Tensor,
    labels: Tensor,
    layer: int = 0,
    direction: int = 0,
) -> FlowReport:
    """||dL/dh_t|| (and ||dL/dc_t||) for every step t of one recurrence, L the mean
    cross-entropy of the batch, plus gate statistics over its real steps.

    h_t and c_t are the state as the step-wise runner carries it from step t to step t+1, taken
    as independent coordinates: dL/dc_t is the gradient that flows back along the memory (it is
    zero at the last step, whose c nothing reads), dL/dh_t everything through h_t.

    Runs on a float64 copy of the model in eval mode (no dropout), step-wise (an observer forces
    that path): float32 would round an RNN's gradient 200 steps back (about 1e-54) to zero, and the
    copy leaves the model, its gradients and the random streams untouched. The gradient comes
    from torch.autograd.grad on the observed states; no parameter's .grad is written.
    """
    # Every parameter of the copy in the graph: the flow is the network's, whatever training
    # has frozen (gradual unfreezing), and an all-frozen path would have no gradient at all.
    work = copy.deepcopy(model).double().eval().requires_grad_(True)
    states: list[tuple[Tensor, ...]] = []
    gates_by_step: list[dict[str, Tensor]] = []

    def observer(at_layer: int, at_direction: int, t: int, state: tuple[Tensor, ...],
                 gates: dict[str, Tensor], mask: Tensor) -> None:
        if at_layer == layer and at_direction == direction:
            states.append(state)
            gates_by_step.append({name: gate.detach() for name, gate in gates.items()})

    device = next(work.parameters()).device
    ids, lengths, labels = ids.to(device), lengths.to(device), labels.to(device)
    cell = work.encoder.layers[layer][direction].cell
    has_cell_state = cell.has_cell_state
    with torch.enable_grad():
        logits = work(ids, lengths, observer=observer)  # (B, C)
        loss = nn.functional.cross_entropy(logits, labels)
        hs = [state[0] for state in states]  # T x (B, H)
        cs = [state[1] for state in states] if has_cell_state else []
        grads = torch.autograd.grad(loss, hs + cs, allow_unused=True)
    norms = [0.0 if g is None else float(torch.linalg.vector_norm(g)) for g in grads]
    steps = len(hs)
    return FlowReport(
        cell=work.config.cell, layer=layer, direction=direction, examples=int(ids.shape[0]),
        h_norms=norms[:steps],
        c_norms=norms[steps:] if has_cell_state else None,
        gates=gate_statistics(gates_by_step, length_mask(lengths, steps), cell.spec.gates()),
        loss=float(loss.detach()),
    )


# ---------------------------------------------------------------------------------------------
# `lstm diagnose --model RUN_DIR`


def diagnose_run(run: Any, batch_size: int = DIAGNOSTIC_BATCH) -> dict[str, Any]:
    """Gradient flow and gates of a trained run (a runload.LoadedRun) on a diagnostic batch
    of its own validation data (the rows training validated on: same data settings and seed)."""
    from lstmcli.data.splits import load_splits

    config = run.config
    splits = load_splits(config.data, seed=config.train.seed)
    sequences = run.tokenizer.encode(splits.validation.texts, config.data.max_len,
                                     config.data.truncation)
    ids, lengths, labels = diagnostic_batch(sequences, splits.validation.labels, batch_size,
                                            seed=config.train.seed)
    # The run's label ids are positions in its own label names; the data's may differ in order.
    mapping = [run.label_names.index(name) if name in run.label_names else -1
               for name in splits.label_names]
    labels = torch.as_tensor([mapping[i] for i in labels.tolist()], dtype=torch.long)
    if (labels < 0).any():
        from lstmcli.errors import DataError

        raise DataError(f"the validation data of {splits.name} has labels the model does not know "
                        f"(it knows: {', '.join(run.label_names)})")
    flow = measure_flow(run.model, ids, lengths, labels)
    return {
        "mode": "model",
        "run_dir": str(run.path),
        "dataset": splits.name,
        "split": "validation",
        "cells": {config.model.cell: {**flow.to_dict(), "accuracy": None, "train_seconds": None}},
    }
