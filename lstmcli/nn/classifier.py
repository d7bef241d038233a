"""The classifier: token ids -> embedding -> recurrent encoder -> pooling -> linear -> logits,
and its batched, order-preserving evaluation (``predict_logits``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from lstmcli.config import ModelConfig
from lstmcli.data.batching import bucket_batches, iterate_batches
from lstmcli.nn.layout import feature_size
from lstmcli.nn.recurrent import length_mask
from lstmcli.nn.text_encoder import TextEncoder

PAD_MULTIPLE = 16  # inference batches' steps, see predict_logits


class SentimentClassifier(TextEncoder):
    """A recurrent text classifier whose output for a text never depends on its batch-mates.

    ``forward(ids, lengths)`` takes right-padded ids (B, T) with PAD_ID = 0 and the true lengths
    (B,), and returns logits (B, C). Pooling over the top layer's outputs:

        last:   [h_fwd(T_b), h_bwd(1)]       the final state of each direction
        mean:   sum_{t <= T_b} h_t / T_b     over real steps only
        max:    max_{t <= T_b} h_t           over real steps only
        concat: [last, max, mean]            ULMFiT's concat pooling (Howard & Ruder 2018)

    The embedding, the encoder and their dropouts are
    :class:`~lstmcli.nn.text_encoder.TextEncoder`'s; ``dropout`` applies once more to the pooled
    features.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.classifier = nn.Linear(feature_size(config), config.num_classes)

    def features(
        self, ids: Tensor, lengths: Tensor, observer: Callable[..., None] | None = None
    ) -> Tensor:
        """The pooled representation (B, D*H), (B, 3*D*H) for concat, that the classifier reads."""
        outputs, finals = self.encode(ids, lengths, observer)  # (B, T, D*H), (B, D*H)
        pooling = self.config.pooling
        if pooling == "last":
            return finals
        if pooling == "mean":
            return _mean(outputs, lengths)
        if pooling == "max":
            return _max(outputs, lengths)
        return torch.cat([finals, _max(outputs, lengths), _mean(outputs, lengths)], dim=-1)

    def forward(
        self, ids: Tensor, lengths: Tensor, observer: Callable[..., None] | None = None
    ) -> Tensor:
        return self.classifier(self.dropout(self.features(ids, lengths, observer)))  # (B, C)


def _mean(outputs: Tensor, lengths: Tensor) -> Tensor:
    """Mean of (B, T, F) over each row's real steps (outputs are zero at padding) -> (B, F)."""
    return outputs.sum(dim=1) / lengths.unsqueeze(1).to(outputs.dtype)


def _max(outputs: Tensor, lengths: Tensor) -> Tensor:
    """Max of (B, T, F) over each row's real steps -> (B, F)."""
    mask = length_mask(lengths, outputs.shape[1]).unsqueeze(-1)  # (B, T, 1)
    return outputs.masked_fill(~mask, float("-inf")).amax(dim=1)


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    sequences: Sequence[np.ndarray],
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Logits (N, C) in input order, computed in length-sorted batches in eval mode.

    Batches are padded to a multiple of PAD_MULTIPLE steps (exact: padding never changes a
    result): the CPU kernels build and cache a primitive per input shape, so a stream of texts
    with every length up to max_len would otherwise keep adding shapes, and memory, until it had
    seen them all."""
    was_training = model.training
    model.eval()
    logits = torch.empty(0)
    batches = bucket_batches([len(s) for s in sequences], batch_size)
    for index, ids, lengths, _ in iterate_batches(sequences, batches, device,
                                                  multiple=PAD_MULTIPLE):
        out = model(ids, lengths).float().cpu()  # (B, C)
        if logits.numel() == 0:
            logits = torch.empty(len(sequences), out.shape[1])
        logits[torch.as_tensor(index)] = out
    model.train(was_training)
    return logits
