"""Int8 inference in torch: dynamic quantization of every weight matrix a prediction multiplies.

Weights are stored as int8 (one scale per matrix); each product quantizes its input on the fly
(``torch.ao.quantization.quantize_dynamic``, qint8) and accumulates in int32. The embedding, the
biases, the cells' vectors and every elementwise operation stay float32.

quantize_dynamic swaps whole modules, and only some kinds: ``nn.Linear``, and of the recurrent
kernels ``nn.LSTM`` and ``nn.GRU`` (not ``nn.RNN``). So the model is first rebuilt as a
:class:`~lstmcli.nn.portable.PortableClassifier`: a cell whose kernel is one of those runs on it
(a cell that builds its kernel's rows from its own, such as an input gate tied to the forget gate,
gets a kernel holding the built rows); every other cell runs step-wise through its own equations,
with its input projection (all steps in one product) and its recurrent product in ``nn.Linear``
modules, which are quantized. Every cell thus gets int8 matrix products.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from lstmcli.nn.classifier import SentimentClassifier
from lstmcli.nn.portable import PortableClassifier

# The module kinds quantize_dynamic swaps for int8 versions (torch.ao's default dynamic mapping).
QUANTIZED_MODULES = (nn.Linear, nn.LSTM, nn.GRU)


def int8_kernels() -> tuple[str, ...]:
    """The torch.nn recurrent kernels that have a dynamically quantized version."""
    return tuple(module.__name__ for module in QUANTIZED_MODULES if module is not nn.Linear)


def quantize(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every module of QUANTIZED_MODULES int8."""
    with warnings.catch_warnings():
        # torch.ao's eager quantization and its quantized tensors are deprecated in favour of
        # torchao, whose int8 API does not quantize recurrent kernels; this one still works and
        # ships with torch.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor", category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(
            model.eval(), set(QUANTIZED_MODULES), dtype=torch.qint8)


def int8_classifier(model: SentimentClassifier) -> nn.Module:
    """The trained classifier with int8 weight matrices, for CPU inference:
    ``forward(ids (B, T), lengths (B,)) -> logits (B, C)``, as the classifier."""
    return quantize(PortableClassifier(model, kernels=int8_kernels()))
