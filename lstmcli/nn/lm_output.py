"""The output layers of a language model (`lstm pretrain --softmax`): from projected features
(N, P) to the probability of each predicted word. Both give the exact log-likelihood for
validation perplexity; they differ in what a training step pays.

* ``sampled`` (the default): a full softmax whose word vectors are the input embedding's (tied:
  Press & Wolf 2017, Inan et al. 2017; P = E), plus a bias per word, trained with a sampled
  softmax. A full softmax costs V x P multiply-adds per predicted token, 30 times an LSTM step at
  V = 30,000 and P = H = 128; a step here scores each token against its own word and K words
  drawn for the whole batch from a log-uniform (Zipf) proposal q over the ids, which the
  tokenizer numbers by falling frequency. With logits s, the loss of a token whose word is t is

      -s_t + log(exp(s_t) + sum_j [w_j != t] exp(s_{w_j}) / (K q_{w_j}))

  The sum over the K draws is an importance-sampled estimate of the partition function without
  t, so as K grows the loss and its gradient tend to the full softmax's; the target stays in the
  denominator, so the loss is never negative and no logit is pushed up without bound when its
  word is not drawn (Bengio & Senecal 2008; the form of Blanc & Rendle 2018). The training loss
  is thus an estimate of the exact one (a little low: the log of an unbiased estimate); the
  validation perplexity is always exact.
* ``adaptive``: ``torch.nn.AdaptiveLogSoftmaxWithLoss`` (Grave et al. 2017): the 2,000 most
  frequent words in the head, two tail clusters (2,000-10,000 and the rest) behind smaller
  projections. Exact, but on IMDB it took 78-81% of a training step (benchmarks/bench_lm_head.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstmcli.data.tokenizer import Tokenizer

ADAPTIVE_CUTOFFS = (2000, 10000)  # word ids: the head's shortlist, then the first tail cluster
DIV_VALUE = 4.0  # each tail cluster's projection is this much smaller than the last
CHUNK = 1024  # rows of full (N, V) logits at a time: 120 MB at V = 30,000


class SampledSoftmax(nn.Module):
    """Tied full softmax, trained by sampling: ``loss`` samples, ``nll``/``log_probs`` are exact.
    The word vectors are passed in (the embedding's weight), never owned: a checkpoint holds them
    once."""

    def __init__(self, vocab_size: int, samples: int) -> None:
        super().__init__()
        self.vocab_size, self.samples = vocab_size, samples
        self.bias = nn.Parameter(torch.zeros(vocab_size))  # (V,)
        ids = torch.arange(vocab_size, dtype=torch.float64)
        # Log-uniform over the ids from 1 on: P(k) = log((k + 1) / k) / log(V); [PAD] never.
        proposal = torch.log1p(1.0 / ids.clamp(min=1)) / math.log(vocab_size)
        proposal[Tokenizer.PAD_ID] = 0.0
        self.register_buffer("proposal", (proposal / proposal.sum()).float(), persistent=False)

    def loss(self, features: Tensor, targets: Tensor, weight: Tensor) -> Tensor:
        """The mean sampled-softmax loss (nats per predicted token); the exact mean negative
        log-likelihood where K draws would not be fewer than the words."""
        if self.samples >= self.vocab_size - 1:
            return self.nll(features, targets, weight).mean()
        return self.sampled_loss(features, targets, weight)

    def sampled_loss(self, features: Tensor, targets: Tensor, weight: Tensor) -> Tensor:
        """The mean sampled-softmax loss over ``self.samples`` draws, whatever the vocabulary."""
        drawn = torch.multinomial(self.proposal, self.samples, replacement=True)  # (K,)
        true = (features * weight[targets]).sum(1) + self.bias[targets]  # (N,)
        correction = torch.log(self.samples * self.proposal[drawn])  # (K,)
        sampled = features @ weight[drawn].T + (self.bias[drawn] - correction)  # (N, K)
        # A draw of the target's own word is its exact term already: not counted twice.
        sampled = sampled.masked_fill(drawn[None, :] == targets[:, None], -math.inf)  # (N, K)
        logits = torch.cat([true[:, None], sampled], dim=1)  # (N, 1 + K)
        return F.cross_entropy(logits, targets.new_zeros(targets.shape))

    def nll(self, features: Tensor, targets: Tensor, weight: Tensor) -> Tensor:
        """The exact negative log-likelihood of each target (N,), in chunks of CHUNK rows."""
        pieces = []
        for start in range(0, features.shape[0], CHUNK):
            log_probs = self.log_probs(features[start:start + CHUNK], weight)  # (n, V)
            chosen = targets[start:start + CHUNK, None]  # (n, 1)
            pieces.append(-log_probs.gather(1, chosen).squeeze(1))  # (n,)
        return torch.cat(pieces) if pieces else features.new_zeros(0)

    def log_probs(self, features: Tensor, weight: Tensor) -> Tensor:
        """The full distribution over the vocabulary (N, V); [PAD] has probability 0."""
        logits = features @ weight.T + self.bias  # (N, V)
        logits[:, Tokenizer.PAD_ID] = -math.inf
        return torch.log_softmax(logits, dim=1)


class AdaptiveSoftmax(nn.AdaptiveLogSoftmaxWithLoss):
    """torch's adaptive softmax with SampledSoftmax's methods (the word vectors its own); its
    state-dict names are torch's, as in the runs written before --softmax existed."""

    def __init__(self, features: int, vocab_size: int) -> None:
        cutoffs = adaptive_cutoffs(vocab_size)
        super().__init__(features, vocab_size, cutoffs,
                         div_value=_div_value(features, len(cutoffs)))

    def loss(self, features: Tensor, targets: Tensor, weight: Tensor | None = None) -> Tensor:
        return self(features, targets).loss

    def nll(self, features: Tensor, targets: Tensor, weight: Tensor | None = None) -> Tensor:
        return -self(features, targets).output

    def log_probs(self, features: Tensor, weight: Tensor | None = None) -> Tensor:
        return self.log_prob(features)


def adaptive_cutoffs(vocab_size: int) -> list[int]:
    """ADAPTIVE_CUTOFFS clipped below ``vocab_size`` (at least one, as torch requires). They are
    word counts rather than shares of the vocabulary because what the head buys is coverage of
    running text, which the most frequent few thousand words give at any vocabulary size."""
    cutoffs = [cutoff for cutoff in ADAPTIVE_CUTOFFS if cutoff < vocab_size]
    return cutoffs or [vocab_size - 1]


def _div_value(features: int, clusters: int) -> float:
    """DIV_VALUE, or less where the last cluster's projection would have no dimension left
    (features // div**clusters == 0: a tiny --embed-dim)."""
    for div in (DIV_VALUE, 2.0, 1.0):
        if features // div**clusters >= 1:
            return div
    return 1.0


def make_output(softmax: str, features: int, vocab_size: int,
                samples: int) -> SampledSoftmax | AdaptiveSoftmax:
    """The output layer ``softmax`` names (SOFTMAX_CHOICES)."""
    if softmax == "adaptive":
        return AdaptiveSoftmax(features, vocab_size)
    return SampledSoftmax(vocab_size, samples)
