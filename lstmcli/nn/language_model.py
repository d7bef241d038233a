"""The language model of `lstm pretrain`: the classifier's embedding and recurrent encoder, under
the same state-dict names (``embedding.*``, ``encoder.*``), so that fine-tuning copies them by
name; then a projection and an output layer over the vocabulary.

The forward direction's output at step t has read tokens 1..t and predicts token t+1; a
bidirectional encoder's backward direction at step t has read tokens t..T and predicts token t-1.
Neither ever reads the token it predicts (``tests/test_pretrain.py`` changes the tokens on the
far side and checks that no prediction moves). The loss is the mean over every predicted token of
both directions: each window of T tokens gives T-1 predictions per direction, so it is the mean of
the two directions' means. With more than one layer a bidirectional encoder feeds both
directions to the layer above, whose forward direction would then see the future: refused.

The output layer (:mod:`lstmcli.nn.lm_output`) is by default a softmax tied to the embedding and
trained by sampling (``--softmax sampled``), or torch's adaptive softmax (``--softmax adaptive``):
either way the exact log-likelihood for validation, and a training step that a 30,000-word
softmax does not dominate.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

from lstmcli.errors import ConfigError
from lstmcli.nn.lm_output import make_output
from lstmcli.nn.recurrent import autocast_dtype, length_mask
from lstmcli.nn.text_encoder import TextEncoder
from lstmcli.pretrain_config import LanguageModelConfig


class LanguageModel(TextEncoder):
    """Embedding -> recurrent encoder -> projection -> output layer (``softmax``: sampled, tied
    to the embedding; or adaptive).

    ``forward(ids, lengths)`` takes right-padded windows (B, T) and their lengths (B,) and returns
    the projected features (N, P) of every position that predicts a token, in the order of
    ``targets(ids, lengths)`` (N,); ``loss(features, targets)`` is the training loss. Padding is
    never predicted nor predicts.
    """

    def __init__(self, config: LanguageModelConfig) -> None:
        if config.bidirectional and config.layers > 1:
            raise ConfigError("a bidirectional language model with more than one layer would let "
                              "the forward direction of layer 2 see the future; pass --layers 1 "
                              "or --unidirectional")
        super().__init__(config)
        # To the embedding's size: the sampled softmax's word vectors are the embedding's.
        self.projection = nn.Linear(config.hidden_size, config.embed_dim)
        self.head = make_output(config.softmax, config.embed_dim, config.vocab_size,
                                config.samples)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """Features (N, P) of the predicting positions: forward direction first, then backward."""
        hidden = self.config.hidden_size
        outputs, _ = self.encode(ids, lengths)  # (B, T, D*H)
        outputs = self.dropout(outputs)
        predicts = _predicts(ids, lengths)  # (B, T-1): position t+1 is a real token
        # Forward: the output at t (tokens up to t read) predicts token t+1.
        features = [outputs[:, :-1, :hidden][predicts]]  # (N_f, H)
        if self.config.bidirectional:
            # Backward: the output at t+1 (tokens from t+1 on read) predicts token t.
            features.append(outputs[:, 1:, hidden:][predicts])  # (N_b, H)
        return self.projection(torch.cat(features))  # (N, P)

    def targets(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """The token each of forward's features predicts (N,), in the same order."""
        predicts = _predicts(ids, lengths)
        targets = [ids[:, 1:][predicts]]  # (N_f,)
        if self.config.bidirectional:
            targets.append(ids[:, :-1][predicts])  # (N_b,)
        return torch.cat(targets)

    def loss(self, features: Tensor, targets: Tensor) -> Tensor:
        """The training loss: the mean negative log-likelihood in nats per predicted token, or
        the sampled softmax's estimate of it."""
        with _float32(features):
            return self.head.loss(features.float(), targets, self.embedding.weight)

    def nll(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """The negative log-likelihood of every predicted token (N,)."""
        features, targets = self(ids, lengths), self.targets(ids, lengths)
        with _float32(features):
            return self.head.nll(features.float(), targets, self.embedding.weight)

    def log_probs(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """The full distribution over the vocabulary at every predicting position (N, V)."""
        features = self(ids, lengths)
        with _float32(features):
            return self.head.log_probs(features.float(), self.embedding.weight)


def _float32(features: Tensor) -> contextlib.AbstractContextManager[Any]:
    """Autocast off for the output layer: the adaptive softmax writes each cluster's
    log-probabilities into a buffer of its input's dtype, which under autocast is float32 for
    some and 16-bit for others (an error), or 16-bit for all (a loss rounded to three digits);
    the sampled one's log of a sum of exponentials wants float32 as much."""
    if autocast_dtype(features.device.type) is None:
        return contextlib.nullcontext()
    return torch.autocast(features.device.type, enabled=False)


def _predicts(ids: Tensor, lengths: Tensor) -> Tensor:
    """(B, T-1) bool: True where a transition between two real tokens is (t, t+1)."""
    return length_mask(lengths, ids.shape[1])[:, 1:]
