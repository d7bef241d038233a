"""Dropout with structure, as strong recurrent text classifiers use it (AWD-LSTM, Merity et al.
2017; the ULMFiT classifier, Howard & Ruder 2018).

- :class:`EmbeddingDropout` ("dropoute", Gal & Ghahramani 2016): whole word types of the
  vocabulary are dropped for a batch, every occurrence of a dropped word at once, and the kept
  ones scaled by 1/(1-p).
- :class:`LockedDropout` (variational dropout, Gal & Ghahramani 2016): one mask per sequence and
  feature, the same at every time step, so a unit is either there for a whole text or absent.
- :func:`drop_connect` (DropConnect, Wan et al. 2013): entries of a weight matrix dropped, here
  the recurrent W_hh once per forward pass; :class:`ParamsView` hands the dropped tensor to the
  code that reads a cell's parameters by name.

Each is the identity in eval mode and at p = 0, and then draws nothing from torch's random
generator: a model that does not use them trains exactly as it did before they existed.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class EmbeddingDropout(nn.Module):
    """Drop word types: embedded (B, T, E) of ids (B, T) -> the same with every occurrence of a
    dropped id zeroed, the rest scaled by 1/(1-p). One draw per vocabulary entry per call."""

    def __init__(self, p: float, vocab_size: int) -> None:
        super().__init__()
        self.p = p
        self.vocab_size = vocab_size

    def forward(self, ids: Tensor, embedded: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return embedded
        # Equal to masking rows of the embedding matrix, as AWD-LSTM does, without rebuilding
        # the (V, E) matrix every batch.
        keep = embedded.new_empty(self.vocab_size).bernoulli_(1 - self.p).div_(1 - self.p)  # (V,)
        return embedded * keep[ids].unsqueeze(-1)  # (B, T, E)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LockedDropout(nn.Module):
    """Variational dropout on a sequence x (B, T, F): one mask (B, 1, F) shared by every step."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - self.p).div_(1 - self.p)
        return x * mask  # (B, T, F)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_connect(weight: Tensor, p: float) -> Tensor:
    """A fresh DropConnect mask on ``weight``: entries zeroed with probability p, the kept ones
    scaled by 1/(1-p); the gradient reaches only the kept entries."""
    return nn.functional.dropout(weight, p, training=True)


class ParamsView:
    """A module's parameters by name, some replaced for one forward pass: cells read
    ``params.weight_hh`` and the rest, and get the replacement where one is given."""

    def __init__(self, base: nn.Module, **replaced: Tensor) -> None:
        self._base = base
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not replaced: those live in __dict__.
        return getattr(self._base, name)

