"""What the classifier and the language model share: token ids -> embedding -> recurrent encoder,
with AWD-LSTM's regularisers on the way (:mod:`lstmcli.nn.dropout`).

Both models keep these modules under the same names (``embedding``, ``encoder``), so that
`lstm train --init-from` copies a pretrained ``embedding.*`` and ``encoder.*`` by name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lstmcli.config import ModelConfig
from lstmcli.data.batching import PAD_ID
from lstmcli.nn.dropout import EmbeddingDropout, LockedDropout
from lstmcli.nn.recurrent import RecurrentEncoder


class TextEncoder(nn.Module):
    """``encode(ids, lengths)``: right-padded ids (B, T) -> the top layer's outputs (B, T, D*H),
    zero at padding, and its final states (B, D*H).

    In training mode the embedded text goes through embed_dropout (word types), input_dropout
    (locked), then ``dropout``; the encoder applies ``dropout`` and hidden_dropout between layers
    and weight_dropout on W_hh."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=PAD_ID)
        if config.embed_init is not None:  # only then: a run without it draws as it always did
            with torch.no_grad():
                self.embedding.weight.uniform_(-config.embed_init, config.embed_init)
                self.embedding.weight[PAD_ID].zero_()
        self.encoder = RecurrentEncoder(
            config.cell,
            config.embed_dim,
            config.hidden_size,
            layers=config.layers,
            bidirectional=config.bidirectional,
            dropout=config.dropout,
            gate_bias=config.gate_bias,
            hidden_dropout=config.hidden_dropout,
            weight_dropout=config.weight_dropout,
        )
        self.embed_dropout = EmbeddingDropout(config.embed_dropout, config.vocab_size)
        self.input_dropout = LockedDropout(config.input_dropout)
        self.dropout = nn.Dropout(config.dropout)

    def encode(
        self, ids: Tensor, lengths: Tensor, observer: Callable[..., None] | None = None
    ) -> tuple[Tensor, Tensor]:
        embedded = self.embed_dropout(ids, self.embedding(ids))  # (B, T, E)
        embedded = self.dropout(self.input_dropout(embedded))
        return self.encoder(embedded, lengths, observer)  # (B, T, D*H), (B, D*H)
