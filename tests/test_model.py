"""The classifier: padding never changes a result; every cell can fit a tiny dataset."""

from __future__ import annotations

import pytest
import torch

from lstmcli.config import ModelConfig
from lstmcli.data.batching import pad_batch
from lstmcli.nn.cells import cell_names
from lstmcli.nn.classifier import SentimentClassifier

SEQUENCES = [[3, 4, 5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15], [16]]

CELL_NAMES = cell_names()


def build(cell: str, **overrides) -> SentimentClassifier:
    torch.manual_seed(0)
    config = ModelConfig(cell=cell, vocab_size=20, embed_dim=8, hidden_size=6, **overrides)
    return SentimentClassifier(config).eval()


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("pooling", ["last", "mean", "max", "concat"])
def test_a_text_scores_the_same_alone_or_in_a_padded_batch(cell, bidirectional, pooling):
    model = build(cell, bidirectional=bidirectional, pooling=pooling, layers=2)
    with torch.no_grad():
        batched = model(*pad_batch(SEQUENCES))
        alone = torch.cat([model(*pad_batch([s])) for s in SEQUENCES])
    assert (batched - alone).abs().max() < 1e-6


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_fused_and_stepwise_paths_agree(cell):
    model = build(cell, bidirectional=True, pooling="mean", layers=2)
    ids, lengths = pad_batch(SEQUENCES)
    with torch.no_grad():
        fused = model(ids, lengths)
        model.encoder.set_stepwise(True)
        stepwise = model(ids, lengths)
    assert (fused - stepwise).abs().max() < 1e-5


def test_extra_padding_columns_change_nothing():
    model = build("lstm", bidirectional=True)
    ids, lengths = pad_batch(SEQUENCES)
    wider = torch.cat([ids, torch.zeros(ids.shape[0], 5, dtype=torch.long)], dim=1)
    with torch.no_grad():
        assert (model(ids, lengths) - model(wider, lengths)).abs().max() < 1e-6


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_every_cell_overfits_a_tiny_dataset(cell):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    sequences = [torch.randint(2, 30, (int(n),), generator=generator).tolist()
                 for n in torch.randint(2, 9, (24,), generator=generator)]
    labels = torch.arange(24) % 2  # arbitrary: only memorising can fit them
    config = ModelConfig(cell=cell, vocab_size=30, embed_dim=16, hidden_size=24)
    model = SentimentClassifier(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    ids, lengths = pad_batch(sequences)
    for _ in range(150):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(ids, lengths), labels)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(ids, lengths).argmax(dim=1) == labels).float().mean().item()
    assert accuracy == 1.0


def test_unknown_cell_lists_the_valid_ones():
    from lstmcli.errors import ConfigError

    with pytest.raises(ConfigError, match="rnn, lstm, gru, peephole, coupled"):
        SentimentClassifier(ModelConfig(cell="transformer", vocab_size=10))
