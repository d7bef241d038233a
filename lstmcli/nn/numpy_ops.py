"""The array operations of :class:`lstmcli.nn.cells.Ops` on numpy arrays.

With these, every registry cell's own ``step`` runs on numpy: the numpy inference path has no
copy of any cell's equations, so it cannot drift from the torch path. Free of torch.
"""

from __future__ import annotations

import numpy as np


class NumpyOps:
    """sigmoid, tanh, linear and split on numpy arrays, keeping the inputs' dtype."""

    @staticmethod
    def sigmoid(x: np.ndarray) -> np.ndarray:
        # 1 / (1 + exp(-x)) overflows exp for x << 0; exp(-|x|) is in (0, 1] for every x, and
        # 1 / (1 + e) and e / (1 + e) are the same function written for each sign.
        e = np.exp(-np.abs(x))
        r = 1.0 / (1.0 + e)
        return np.where(x >= 0, r, e * r).astype(x.dtype, copy=False)

    @staticmethod
    def tanh(x: np.ndarray) -> np.ndarray:
        return np.tanh(x)

    @staticmethod
    def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        """x (..., I) @ weight.T (I, O) + bias (O,) -> (..., O), as torch.nn.functional.linear."""
        y = x @ weight.T  # (..., O)
        return y if bias is None else y + bias

    @staticmethod
    def split(x: np.ndarray, chunks: int) -> tuple[np.ndarray, ...]:
        """Equal blocks of the last axis, as torch's x.chunk(chunks, dim=-1) for divisible sizes."""
        if x.shape[-1] % chunks:
            raise ValueError(f"cannot split {x.shape[-1]} columns into {chunks} equal blocks")
        return tuple(np.split(x, chunks, axis=-1))


NUMPY_OPS = NumpyOps()


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) logits, shifted by the row maximum so exp never overflows."""
    shifted = logits - logits.max(axis=-1, keepdims=True)  # (N, C)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
