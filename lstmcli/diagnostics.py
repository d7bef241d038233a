"""Gradient diagnostics: what the gradient does per parameter group, through time and at the gates.

Three measurements, shared by `lstm train` (every epoch, into metrics.jsonl) and `lstm diagnose`:

* ``GradientMonitor``: per optimiser step, the global gradient norm before clipping, the norm of
  every parameter group (embedding, input and recurrent weights split per gate, biases,
  peepholes, classifier) and the update-to-weight ratio ``||dW|| / ||W||``; averaged per epoch.
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

from lstmcli.cells import RecurrentCell
from lstmcli.model import SentimentClassifier, pad_batch

SATURATION_LOW = 0.1
SATURATION_HIGH = 0.9
# The gates whose statistics are reported; "cell" and "new" are tanh candidates, not gates.
GATE_STATS = ("input", "forget", "output", "reset", "update")
DIAGNOSTIC_BATCH = 32

# Names of the G row blocks of weight_ih / weight_hh, in torch's chunk order. The coupled cell
# stores no input-gate rows (its input gate is 1 - forget), so its blocks are not its gate names.
CHUNK_NAMES: dict[str, tuple[str, ...]] = {
    "rnn": ("",),
    "lstm": ("input", "forget", "cell", "output"),
    "gru": ("reset", "update", "new"),
    "peephole": ("input", "forget", "cell", "output"),
    "coupled": ("forget", "cell", "output"),
}


def chunk_names(cell: RecurrentCell) -> tuple[str, ...]:
    names = CHUNK_NAMES.get(cell.name)
    if names is None or len(names) != cell.num_chunks:
        names = tuple(f"chunk{i}" for i in range(cell.num_chunks))
    return names


def memory_gate(cell_name: str) -> str | None:
    """The gate that decides how much of the state survives a step: forget (LSTM family) or
    update (GRU, where h_t = (1 - z) * n + z * h_{t-1}); the plain RNN has none."""
    return {"rnn": None, "gru": "update"}.get(cell_name, "forget")


# ---------------------------------------------------------------------------------------------
# Per-step gradient statistics during training


class ParameterGroups:
    """Maps every parameter of a classifier (or the blocks of its rows) onto named groups, so
    that one ``squared_norms(tensors)`` call gives each group's squared norm.

    Groups: ``embedding``; ``ih.<gate>`` and ``hh.<gate>`` (the input and recurrent weight rows of
    one gate, all layers and directions together; plain ``ih``/``hh`` for the RNN); ``bias``;
    ``peephole``; ``classifier``; ``other`` for anything else.
    """

    def __init__(self, model: SentimentClassifier) -> None:
        names: list[str] = []
        plan: list[tuple[nn.Parameter, int, list[str]]] = []
        seen: set[int] = set()

        def add(parameter: nn.Parameter, blocks: int, groups: list[str]) -> None:
            if id(parameter) in seen or not parameter.requires_grad:
                return
            seen.add(id(parameter))
            plan.append((parameter, blocks, groups))
            names.extend(g for g in groups if g not in names)

        add(model.embedding.weight, 1, ["embedding"])
        recurrences = model.encoder.recurrences()
        for kind, attribute in (("ih", "weight_ih"), ("hh", "weight_hh")):
            for recurrence in recurrences:
                cell = recurrence.cell
                groups = [f"{kind}.{c}" if c else kind for c in chunk_names(cell)]
                add(getattr(cell, attribute), cell.num_chunks, groups)
        for recurrence in recurrences:
            add(recurrence.cell.bias_ih, 1, ["bias"])
            add(recurrence.cell.bias_hh, 1, ["bias"])
        for recurrence in recurrences:
            for name, parameter in recurrence.cell.named_parameters():
                if name.startswith("peephole"):
                    add(parameter, 1, ["peephole"])
        for parameter in model.classifier.parameters():
            add(parameter, 1, ["classifier"])
        for parameter in model.parameters():
            add(parameter, 1, ["other"])

        self.names = names
        self.parameters = [parameter for parameter, _, _ in plan]
        self.blocks = [blocks for _, blocks, _ in plan]
        index = [names.index(g) for _, _, groups in plan for g in groups]
        device = self.parameters[0].device
        self._index = torch.tensor(index, dtype=torch.long, device=device)
        self._zero = torch.zeros(1, device=device)

    def squared_norms(self, tensors: Sequence[Tensor | None]) -> Tensor:
        """(groups,) sum of squares of ``tensors`` (one per parameter, None counts as zero) per
        group, in four kernel launches and no host sync: this runs three times per training step.
        """
        pieces: list[Tensor] = []
        for tensor, blocks in zip(tensors, self.blocks, strict=True):
            if tensor is None:
                pieces.extend([self._zero] * blocks)
            else:
                pieces.extend(tensor.detach().chunk(blocks))  # gate blocks of the rows (views)
        # The fused multi-tensor norm that clip_grad_norm_ itself uses.
        norms = torch._foreach_norm(pieces)
        squares = torch.stack(norms).float() ** 2  # (blocks in all,)
        return squares.new_zeros(len(self.names)).index_add_(0, self._index, squares)


class GradientMonitor:
    """Measures, clips and records the gradient of every training step; ``epoch_summary`` gives
    the epoch's statistics. Per step: one norm per parameter, one host sync (the global norm,
    which the divergence guard needs anyway) and, for the update ratio, one copy of the weights."""

    def __init__(self, model: SentimentClassifier, clip_norm: float) -> None:
        self.groups = ParameterGroups(model)
        self.clip_norm = clip_norm
        self._weights: list[Tensor] = []
        self._weight_squares: Tensor | None = None
        self.start_epoch()

    def start_epoch(self) -> None:
        self.norms: list[float] = []
        size = len(self.groups.names)
        device = self.groups.parameters[0].device
        self._group_norm_sum = torch.zeros(size, device=device)
        self._ratio_sum = torch.zeros(size, device=device)
        self._global_ratio_sum = torch.zeros((), device=device)
        self._updates = 0

    def measure_and_clip(self) -> float:
        """The global gradient norm before clipping; clips the gradients in place when
        ``clip_norm`` > 0. The caller checks the norm for NaN/Inf before stepping."""
        parameters = self.groups.parameters
        squares = self.groups.squared_norms([p.grad for p in parameters])  # (groups,)
        total = squares.sum().sqrt()
        norm = float(total)
        if not math.isfinite(norm):
            return norm
        self.norms.append(norm)
        self._group_norm_sum += squares.sqrt()
        if self.clip_norm > 0:
            grads = [p for p in parameters if p.grad is not None]
            nn.utils.clip_grads_with_norm_(grads, self.clip_norm, total)
        return norm

    def before_update(self) -> None:
        """Remember the weights, so that after_update can measure the step's size."""
        parameters = [p.detach() for p in self.groups.parameters]
        if not self._weights:
            self._weights = [p.clone() for p in parameters]
        else:
            torch._foreach_copy_(self._weights, parameters)
        self._weight_squares = self.groups.squared_norms(self._weights)  # (groups,)

    def after_update(self) -> None:
        torch._foreach_sub_(self._weights, [p.detach() for p in self.groups.parameters])
        # self._weights now holds W_old - W_new
        update_squares = self.groups.squared_norms(self._weights)  # (groups,)
        weight_squares = self._weight_squares
        tiny = torch.finfo(torch.float32).tiny
        self._ratio_sum += (update_squares / weight_squares.clamp_min(tiny)).sqrt()
        total = update_squares.sum() / weight_squares.sum().clamp_min(tiny)
        self._global_ratio_sum += total.sqrt()
        self._updates += 1

    def epoch_summary(self) -> dict[str, Any]:
        """grad_norm_{mean,median,max}, clipped_fraction, steps, grad_norm_groups (mean norm per
        group), update_ratio (mean ||dW||/||W||) and update_ratio_groups."""
        norms = np.asarray(self.norms, dtype=np.float64)
        steps = len(norms)
        updates = max(self._updates, 1)
        group_norms = (self._group_norm_sum / max(steps, 1)).tolist()
        ratios = (self._ratio_sum / updates).tolist()
        return {
            "grad_norm_mean": float(norms.mean()) if steps else 0.0,
            "grad_norm_median": float(np.median(norms)) if steps else 0.0,
            "grad_norm_max": float(norms.max()) if steps else 0.0,
            "clipped_fraction": float((norms > self.clip_norm).mean())
            if steps and self.clip_norm > 0 else 0.0,
            "steps": steps,
            "grad_norm_groups": dict(zip(self.groups.names, group_norms, strict=True)),
            "update_ratio": float(self._global_ratio_sum) / updates,
            "update_ratio_groups": dict(zip(self.groups.names, ratios, strict=True)),
        }


# ---------------------------------------------------------------------------------------------
# Gradient flow through time and gate statistics


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
    work = copy.deepcopy(model).double().eval()
    states: list[tuple[Tensor, ...]] = []
    gates_by_step: list[dict[str, Tensor]] = []

    def observer(at_layer: int, at_direction: int, t: int, state: tuple[Tensor, ...],
                 gates: dict[str, Tensor], mask: Tensor) -> None:
        if at_layer == layer and at_direction == direction:
            states.append(state)
            gates_by_step.append({name: gate.detach() for name, gate in gates.items()})

    device = next(work.parameters()).device
    ids, lengths, labels = ids.to(device), lengths.to(device), labels.to(device)
    has_cell_state = work.encoder.layers[layer][direction].cell.has_cell_state
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
        gates=gate_statistics(gates_by_step, _step_mask(lengths, steps)),
        loss=float(loss.detach()),
    )


def _step_mask(lengths: Tensor, steps: int) -> Tensor:
    return torch.arange(steps, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def gate_statistics(
    gates_by_step: Sequence[dict[str, Tensor]], mask: Tensor
) -> dict[str, dict[str, float]]:
    """Per gate: mean, and shares below SATURATION_LOW and above SATURATION_HIGH, over every unit
    of every real step (mask (B, T) True on real steps)."""
    stats: dict[str, dict[str, float]] = {}
    if not gates_by_step:
        return stats
    for name in (g for g in GATE_STATS if g in gates_by_step[0]):
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


# ---------------------------------------------------------------------------------------------
# `lstm diagnose --model RUN_DIR`


def diagnose_run(run: Any, batch_size: int = DIAGNOSTIC_BATCH) -> dict[str, Any]:
    """Gradient flow and gates of a trained run (a checkpoint.LoadedRun) on a diagnostic batch
    of its own validation data (the rows training validated on: same data settings and seed)."""
    from lstmcli.data import load_splits

    config = run.config
    splits = load_splits(config.data, seed=config.train.seed)
    sequences = run.tokenizer.encode(splits.validation.texts, config.data.max_len)
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
