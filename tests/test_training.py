"""The trainer knows no model; the run reports throughput of training steps alone."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from lstmcli.config import Config
from lstmcli.data.splits import load_splits
from lstmcli.data.tokenizer import Tokenizer
from lstmcli.errors import TrainingDiverged
from lstmcli.nn.classifier import SentimentClassifier
from lstmcli.training import run as run_module
from lstmcli.training.callbacks import Callbacks
from lstmcli.training.run import train
from lstmcli.training.trainer import Batch, ClipGradients, Trainer


def test_trainer_fits_any_module_and_calls_back():
    """A bare linear model on separable points: no embedding, no cells, no lengths."""
    torch.manual_seed(0)
    points = torch.randn(256, 2)
    labels = (points[:, 0] + points[:, 1] > 0).long()
    model = nn.Linear(2, 2)
    seen: list[tuple[str, int]] = []

    class Record(Callbacks):
        def on_epoch_start(self, epoch: int, steps: int) -> None:
            seen.append(("start", steps))

        def on_step(self, step: int, loss: float) -> None:
            seen.append(("step", step))

    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.5),
                      gradients=ClipGradients(model.parameters(), 1.0), callbacks=Record())
    batches = [Batch((points[i:i + 32],), labels[i:i + 32], 32) for i in range(0, 256, 32)]
    for epoch in range(1, 6):
        stats = trainer.train_epoch(batches, epoch, len(batches))
    assert stats.accuracy > 0.95 and stats.examples == 256 and stats.steps == 8
    assert stats.tokens == 256 and stats.tokens_per_second > 0
    assert seen[:3] == [("start", 8), ("step", 1), ("step", 2)]


def test_trainer_stops_before_stepping_on_a_non_finite_loss():
    model = nn.Linear(2, 2)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1))
    bad = Batch((torch.tensor([[float("nan"), 0.0]]),), torch.tensor([0]), 1)
    with pytest.raises(TrainingDiverged, match="epoch 3, step 1: the loss is nan"):
        trainer.train_epoch([bad], 3, 1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def tiny_config(data, output) -> Config:
    config = Config()
    config.data.dataset = str(data)
    config.model.hidden_size = config.model.embed_dim = 8
    config.train.epochs = 2
    config.train.batch_size = 16
    config.train.output = str(output)
    return config


def test_tokens_per_second_counts_training_steps_only(tiny_file, tmp_path, monkeypatch):
    """Make the per-epoch flow measurement slow: the epoch takes longer, the throughput of the
    training steps must not change with it."""
    measure = run_module.measure_flow

    def slow_flow(*args, **kwargs):
        time.sleep(0.4)
        return measure(*args, **kwargs)

    monkeypatch.setattr(run_module, "measure_flow", slow_flow)
    config = tiny_config(tiny_file, tmp_path / "run")
    result = train(config)
    splits = load_splits(config.data, seed=0)
    tokenizer = Tokenizer.train(splits.train.texts, config.data.vocab_size, 1)
    tokens = sum(len(ids) for ids in tokenizer.encode(splits.train.texts, config.data.max_len))
    for row in result.history:
        assert row["seconds"] >= row["train_seconds"] + 0.4
        assert row["tokens_per_second"] * row["train_seconds"] == pytest.approx(tokens)


def test_divergence_in_the_first_epoch_says_no_checkpoint_exists(tiny_file, tmp_path,
                                                                 monkeypatch):
    original = SentimentClassifier.forward

    def poisoned(self, ids, lengths, observer=None):
        return original(self, ids, lengths, observer) * float("nan")

    monkeypatch.setattr(SentimentClassifier, "forward", poisoned)
    config = tiny_config(tiny_file, tmp_path / "run")
    with pytest.raises(TrainingDiverged) as caught:
        train(config)
    message = str(caught.value)
    assert "no checkpoint was written yet" in message and "is intact" not in message
    assert not (tmp_path / "run" / "model.safetensors").exists()



def test_identical_seeded_runs_write_identical_weight_bytes(tiny_file, tmp_path):
    """The header's metadata order is fixed, so a SHA-256 of model.safetensors verifies a model;
    the file still loads with safetensors' own reader."""
    import hashlib

    from safetensors.torch import load_file

    files = []
    for name in ("first", "second"):
        config = tiny_config(tiny_file, tmp_path / name)
        config.train.threads = 1
        files.append(train(config).run_dir / "model.safetensors")
    first, second = (path.read_bytes() for path in files)
    assert first == second
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()
    weights = load_file(str(files[0]))
    assert weights and all(tensor.dtype == torch.float32 for tensor in weights.values())
