"""The language model of `lstm pretrain`: the classifier's embedding and recurrent encoder, under
the same state-dict names (``embedding.*``, ``encoder.*``), so that fine-tuning copies them by
name; then a projection and an adaptive softmax over the vocabulary.

The forward direction's output at step t has read tokens 1..t and predicts token t+1; a
bidirectional encoder's backward direction at step t has read tokens t..T and predicts token t-1.
Neither ever reads the token it predicts (``tests/test_pretrain.py`` changes the tokens on the
far side and checks that no prediction moves). The loss is the mean over every predicted token of
both directions: each window of T tokens gives T-1 predictions per direction, so it is the mean of
the two directions' means. With more than one layer a bidirectional encoder feeds both
directions to the layer above, whose forward direction would then see the future: refused.

The output layer is ``torch.nn.AdaptiveLogSoftmaxWithLoss`` (Grave et al. 2017), not a full
softmax. A full softmax costs P x V multiply-adds per token: at P = H = 128 and a 30,000-word
vocabulary that is 3.8M, about 30 times the LSTM step itself (4H x (E + H) = 131k at E = 128).
The tokenizer numbers words by frequency, so the head holds the 2,000 most frequent and two tail
clusters, 2,000-10,000 and the rest, each behind a smaller projection (``div_value`` 4); the
clusters are computed only for the tokens that fall in them. On held-out IMDB reviews (a
30,000-word vocabulary) the head covers 87% of the running tokens, the first cluster 10%. The
cutoffs are fixed word counts rather than shares of the vocabulary because what the head's cost
buys is coverage of running text, which the most frequent few thousand words give at any
vocabulary size; they are clipped below the vocabulary size (a vocabulary of at most 2,000 words
is one shortlist and a one-word cluster, the least a torch adaptive softmax allows).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

from lstmcli.config import ModelConfig
from lstmcli.errors import ConfigError
from lstmcli.nn.recurrent import autocast_dtype, length_mask
from lstmcli.nn.text_encoder import TextEncoder

CUTOFFS = (2000, 10000)  # word ids: the head's shortlist, then the first tail cluster
DIV_VALUE = 4.0  # each tail cluster's projection is this much smaller than the last


def adaptive_cutoffs(vocab_size: int) -> list[int]:
    """CUTOFFS clipped below ``vocab_size`` (at least one, as torch requires)."""
    cutoffs = [cutoff for cutoff in CUTOFFS if cutoff < vocab_size]
    return cutoffs or [vocab_size - 1]


def _div_value(features: int, clusters: int) -> float:
    """DIV_VALUE, or less where the last cluster's projection would have no dimension left
    (features // div**clusters == 0: a tiny --embed-dim)."""
    for div in (DIV_VALUE, 2.0, 1.0):
        if features // div**clusters >= 1:
            return div
    return 1.0


class LanguageModel(TextEncoder):
    """Embedding -> recurrent encoder -> projection -> adaptive softmax.

    ``forward(ids, lengths)`` takes right-padded windows (B, T) and their lengths (B,) and returns
    the projected features (N, P) of every position that predicts a token, in the order of
    ``targets(ids, lengths)`` (N,); ``self.head(features, targets)`` gives their log-probabilities
    and the mean loss. Padding is never predicted nor predicts.
    """

    def __init__(self, config: ModelConfig) -> None:
        if config.bidirectional and config.layers > 1:
            raise ConfigError("a bidirectional language model with more than one layer would let "
                              "the forward direction of layer 2 see the future; pass --layers 1 "
                              "or --unidirectional")
        super().__init__(config)
        # The embedding's size: the output layer then costs what a tied one would.
        self.projection = nn.Linear(config.hidden_size, config.embed_dim)
        cutoffs = adaptive_cutoffs(config.vocab_size)
        self.head = nn.AdaptiveLogSoftmaxWithLoss(
            config.embed_dim, config.vocab_size, cutoffs,
            div_value=_div_value(config.embed_dim, len(cutoffs)))

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
        """Mean negative log-likelihood (nats per predicted token): the training loss."""
        with _float32(features):
            return self.head(features.float(), targets).loss

    def nll(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """The negative log-likelihood of every predicted token (N,)."""
        features = self(ids, lengths)
        with _float32(features):
            return -self.head(features.float(), self.targets(ids, lengths)).output

    def log_probs(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """The full distribution over the vocabulary at every predicting position (N, V)."""
        features = self(ids, lengths)
        with _float32(features):
            return self.head.log_prob(features.float())


def _float32(features: Tensor) -> contextlib.AbstractContextManager[Any]:
    """Autocast off for the adaptive softmax: it writes each cluster's log-probabilities into a
    buffer of its input's dtype, which under autocast is float32 for some and 16-bit for others
    (an error), or 16-bit for all (a loss rounded to three digits)."""
    if autocast_dtype(features.device.type) is None:
        return contextlib.nullcontext()
    return torch.autocast(features.device.type, enabled=False)


def _predicts(ids: Tensor, lengths: Tensor) -> Tensor:
    """(B, T-1) bool: True where a transition between two real tokens is (t, t+1)."""
    return length_mask(lengths, ids.shape[1])[:, 1:]
