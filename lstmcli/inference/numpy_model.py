"""The trained classifier on numpy, for inference without torch: same weights, same numbers.

:class:`NumpyClassifier` rebuilds :class:`lstmcli.nn.classifier.SentimentClassifier` from a run's
model config and its state dict as numpy arrays (``safetensors.numpy``), and computes the same
function in eval mode: embedding -> stacked, optionally bidirectional recurrences -> pooling
(last / mean / max / concat) -> linear. Every step is the registry cell's own ``step`` run with
:data:`lstmcli.nn.numpy_ops.NUMPY_OPS`, so each cell's equations exist once and a new registered
cell runs here unchanged; nothing below names a cell.

As in :mod:`lstmcli.nn.recurrent`: padding sits at the end of each row, a sequence's state is
frozen after its last real step, outputs are zero at padding, and the backward direction reads
each sequence reversed within its own length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace

import numpy as np

from lstmcli.config import ModelConfig
from lstmcli.data.batching import bucket_batches, pad_arrays
from lstmcli.nn.cells import Cell, get_cell
from lstmcli.nn.layout import cell_keys, check_state, expected_shapes  # noqa: F401
from lstmcli.nn.numpy_ops import NUMPY_OPS, softmax


def length_mask(lengths: np.ndarray, steps: int) -> np.ndarray:
    """(B,) lengths -> (B, T) bool, True on real steps."""
    return np.arange(steps)[None, :] < lengths[:, None]


def reverse_padded(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Reverse each row of (B, T, ...) within its length; padding stays at the end."""
    steps = x.shape[1]
    t = np.arange(steps)[None, :]  # (1, T)
    last = (lengths - 1)[:, None]  # (B, 1)
    index = np.where(t <= last, last - t, t)  # (B, T)
    index = index.reshape(index.shape + (1,) * (x.ndim - 2))  # (B, T, 1...)
    return np.take_along_axis(x, index, axis=1)


class NumpyRecurrence:
    """One registry cell run over a padded batch in one direction, as recurrent.Recurrence."""

    def __init__(self, spec: type[Cell], params: SimpleNamespace, reverse: bool) -> None:
        self.spec = spec
        self.params = params  # weight_ih, weight_hh, bias_ih, bias_hh and the cell's vectors
        self.reverse = reverse

    def __call__(self, x: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x (B, T, I) -> outputs (B, T, H) aligned with x and zero at padding, and the final
        hidden state (B, H): after the last real token (forward) or the first (reverse)."""
        if self.reverse:
            x = reverse_padded(x, lengths)
        batch, steps = x.shape[:2]
        params = self.params
        projected = NUMPY_OPS.linear(x, params.weight_ih, params.bias_ih)  # (B, T, G*H)
        hidden = params.weight_hh.shape[1]
        mask = length_mask(lengths, steps)[:, :, None]  # (B, T, 1)
        state = tuple(np.zeros((batch, hidden), dtype=x.dtype) for _ in self.spec.state_names)
        outputs = np.zeros((batch, steps, hidden), dtype=x.dtype)  # (B, T, H)
        shortest = int(lengths.min())
        for t in range(steps):
            new_state, _ = self.spec.step(NUMPY_OPS, params, projected[:, t], state)
            if t < shortest:
                state = new_state  # every row is still real: nothing to freeze
            else:
                real = mask[:, t]  # (B, 1)
                # A finished sequence keeps its final state through the padding.
                state = tuple(np.where(real, new, old)
                              for new, old in zip(new_state, state, strict=True))
            outputs[:, t] = state[0] * mask[:, t]  # (B, H)
        final = outputs[np.arange(batch), lengths - 1]  # (B, H)
        if self.reverse:
            outputs = reverse_padded(outputs, lengths)
        return outputs, final


class NumpyClassifier:
    """SentimentClassifier in eval mode on numpy (dropout is the identity at inference).

    ``dtype`` is the compute precision: float32, as torch computes, by default.
    """

    def __init__(
        self, config: ModelConfig, state: Mapping[str, np.ndarray], dtype: type = np.float32
    ) -> None:
        config.validate()
        check_state(config, state)
        self.config = config
        spec = get_cell(config.cell)
        directions = 2 if config.bidirectional else 1

        def array(key: str) -> np.ndarray:
            return np.ascontiguousarray(state[key], dtype=dtype)

        self.embedding = array("embedding.weight")  # (V, E)
        self.layers: list[list[NumpyRecurrence]] = []
        for layer in range(config.layers):
            recurrences = []
            for direction in range(directions):
                keys = cell_keys(spec, f"encoder.layers.{layer}.{direction}.cell")
                params = SimpleNamespace(**{name: array(key) for name, key in keys.items()})
                recurrences.append(NumpyRecurrence(spec, params, reverse=direction == 1))
            self.layers.append(recurrences)
        self.classifier_weight = array("classifier.weight")  # (C, D*H)
        self.classifier_bias = array("classifier.bias")  # (C,)

    def features(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Right-padded ids (B, T) and true lengths (B,) -> the pooled features (B, D*H), or
        (B, 3*D*H) for concat: [last, max, mean]."""
        x = self.embedding[ids]  # (B, T, E)
        finals: list[np.ndarray] = []
        for layer in self.layers:
            outputs, finals = [], []
            for recurrence in layer:
                out, final = recurrence(x, lengths)  # (B, T, H), (B, H)
                outputs.append(out)
                finals.append(final)
            x = np.concatenate(outputs, axis=-1)  # (B, T, D*H)
        pooling = self.config.pooling
        last = np.concatenate(finals, axis=-1)  # (B, D*H)
        if pooling == "last":
            return last
        mean = x.sum(axis=1) / lengths[:, None].astype(x.dtype)  # (B, D*H)
        if pooling == "mean":
            return mean
        mask = length_mask(lengths, ids.shape[1])[:, :, None]  # (B, T, 1)
        most = np.where(mask, x, -np.inf).max(axis=1).astype(x.dtype)  # (B, D*H)
        if pooling == "max":
            return most
        return np.concatenate([last, most, mean], axis=-1)  # (B, 3*D*H)

    def logits(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Right-padded ids (B, T) and lengths (B,) -> logits (B, C)."""
        return NUMPY_OPS.linear(self.features(ids, lengths), self.classifier_weight,
                                self.classifier_bias)

    def predict_logits(self, sequences: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Logits (N, C) float32 in input order, computed in length-sorted batches (as
        classifier.predict_logits), so short texts do not run through long ones' padding."""
        logits = np.empty((len(sequences), self.config.num_classes), dtype=np.float32)  # (N, C)
        for index in bucket_batches([len(s) for s in sequences], batch_size):
            ids, lengths = pad_arrays([sequences[i] for i in index])  # (B, T), (B,)
            logits[index] = self.logits(ids, lengths)
        return logits

    def probabilities(self, sequences: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Class probabilities (N, C) float32 in input order."""
        return softmax(self.predict_logits(sequences, batch_size))
