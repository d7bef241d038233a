"""The optimiser and the training loss a ``[train]`` config asks for.

Adam (today's default) or AdamW; cross-entropy, with label smoothing where asked. The loss here
is the training loss only: validation loss stays plain cross-entropy (:mod:`lstmcli.training.run`),
so that it compares across runs and breaks ties in model selection the same way for all.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from lstmcli.config import TrainConfig
from lstmcli.training.trainer import LossFunction


def make_optimizer(
    params: nn.Module | Iterable[Any], train_config: TrainConfig
) -> torch.optim.Optimizer:
    """Adam, whose weight decay is added to the gradient (L2, then scaled by the adaptive step),
    or AdamW, whose decay shrinks the weights apart from it (Loshchilov & Hutter 2019), the
    decay recipes pair with a large weight_decay. ``params``: a module's parameters, or parameter
    groups (fine-tuning gives each layer group its own lr)."""
    kind = torch.optim.AdamW if train_config.optimizer == "adamw" else torch.optim.Adam
    if isinstance(params, nn.Module):
        params = params.parameters()
    return kind(params, lr=train_config.lr, weight_decay=train_config.weight_decay)


def training_loss(train_config: TrainConfig) -> LossFunction:
    """Cross-entropy; with label_smoothing e > 0 the target is 1 - e on the true class plus e/C
    spread over all C classes (Szegedy et al. 2016), so the model is not pushed to infinite
    logits."""
    if train_config.label_smoothing == 0:
        return nn.functional.cross_entropy
    return functools.partial(nn.functional.cross_entropy,
                             label_smoothing=train_config.label_smoothing)
