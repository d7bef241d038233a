"""Gradient statistics of every training step: norms per parameter group, clipping and the
update-to-weight ratio, averaged per epoch (the gradient columns of metrics.jsonl).

Groups: ``embedding``; ``ih.<chunk>`` and ``hh.<chunk>`` (the input and recurrent weight rows of
one gate block of the cell, all layers and directions together; plain ``ih``/``hh`` for a cell
with one block); ``bias``; ``peephole`` (any cell vector); then one group per other top-level
module of the model, named after it: ``classifier`` for a classifier, ``projection`` and ``head``
for a language model (:mod:`lstmcli.nn.language_model`); ``other``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


class ParameterGroups:
    """Maps every parameter of a model with an ``embedding`` and an ``encoder`` (a classifier, a
    language model), or the blocks of its rows, onto named groups, so that one
    ``squared_norms(tensors)`` call gives each group's squared norm.

    The groups are listed in the module docstring.
    """

    def __init__(self, model: nn.Module) -> None:
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
                groups = [f"{kind}.{c}" if c else kind for c in cell.spec.chunks]
                add(getattr(cell, attribute), cell.num_chunks, groups)
        for recurrence in recurrences:
            add(recurrence.cell.bias_ih, 1, ["bias"])
            add(recurrence.cell.bias_hh, 1, ["bias"])
        for recurrence in recurrences:
            for vector in recurrence.cell.spec.vectors:
                # peephole_input, peephole_forget ... -> one "peephole" group
                add(getattr(recurrence.cell, vector), 1, [vector.split("_")[0]])
        for name, child in model.named_children():  # the classifier, or an LM's output layer
            if name not in ("embedding", "encoder"):
                for parameter in child.parameters():
                    add(parameter, 1, [name])
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


def norm_summary(norms: list[float], clip_norm: float) -> dict[str, Any]:
    """grad_norm_{mean,median,max}, clipped_fraction and steps of one epoch's global norms."""
    values = np.asarray(norms, dtype=np.float64)
    steps = len(values)
    return {
        "grad_norm_mean": float(values.mean()) if steps else 0.0,
        "grad_norm_median": float(np.median(values)) if steps else 0.0,
        "grad_norm_max": float(values.max()) if steps else 0.0,
        "clipped_fraction": float((values > clip_norm).mean()) if steps and clip_norm > 0
        else 0.0,
        "steps": steps,
    }


class NormMonitor:
    """The light monitor of ``--no-diagnostics``: the global norm (which clipping and the
    divergence guard need anyway) and clipping, nothing per group, no copy of the weights."""

    def __init__(self, model: nn.Module, clip_norm: float) -> None:
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.clip_norm = clip_norm
        self.start_epoch()

    def start_epoch(self) -> None:
        self.norms: list[float] = []

    def measure_and_clip(self) -> float:
        limit = self.clip_norm if self.clip_norm > 0 else math.inf
        norm = float(nn.utils.clip_grad_norm_(self.parameters, limit))
        if math.isfinite(norm):
            self.norms.append(norm)
        return norm

    def before_update(self) -> None:
        pass

    def after_update(self) -> None:
        pass

    def epoch_summary(self) -> dict[str, Any]:
        return norm_summary(self.norms, self.clip_norm)

    def epoch_state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """The epoch's sums so far (JSON values, tensors), for an exact resume."""
        return {"norms": list(self.norms)}, {}

    def load_epoch_state(self, values: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        self.norms = [float(norm) for norm in values["norms"]]


class GradientMonitor:
    """Measures, clips and records the gradient of every training step; ``epoch_summary`` gives
    the epoch's statistics. Per step: one norm per parameter, one host sync (the global norm,
    which the divergence guard needs anyway) and, for the update ratio, one copy of the weights."""

    def __init__(self, model: nn.Module, clip_norm: float) -> None:
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

    def epoch_state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """The epoch's sums so far (JSON values, tensors), for an exact resume."""
        tensors = {"group_norm_sum": self._group_norm_sum, "ratio_sum": self._ratio_sum,
                   "global_ratio_sum": self._global_ratio_sum}
        return {"norms": list(self.norms), "updates": self._updates}, tensors

    def load_epoch_state(self, values: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        device = self.groups.parameters[0].device
        self.norms = [float(norm) for norm in values["norms"]]
        self._updates = int(values["updates"])
        self._group_norm_sum = tensors["group_norm_sum"].to(device)
        self._ratio_sum = tensors["ratio_sum"].to(device)
        self._global_ratio_sum = tensors["global_ratio_sum"].to(device)

    def epoch_summary(self) -> dict[str, Any]:
        """grad_norm_{mean,median,max}, clipped_fraction, steps, grad_norm_groups (mean norm per
        group), update_ratio (mean ||dW||/||W||) and update_ratio_groups."""
        steps = len(self.norms)
        updates = max(self._updates, 1)
        group_norms = (self._group_norm_sum / max(steps, 1)).tolist()
        ratios = (self._ratio_sum / updates).tolist()
        return {
            **norm_summary(self.norms, self.clip_norm),
            "grad_norm_groups": dict(zip(self.groups.names, group_norms, strict=True)),
            "update_ratio": float(self._global_ratio_sum) / updates,
            "update_ratio_groups": dict(zip(self.groups.names, ratios, strict=True)),
        }
