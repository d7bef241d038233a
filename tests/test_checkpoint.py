"""Checkpoints: a round trip gives identical predictions; broken runs give clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from lstmcli.config import Config, ModelConfig
from lstmcli.data.tokenizer import Tokenizer
from lstmcli.errors import CheckpointError
from lstmcli.inference.predictor import Predictor
from lstmcli.nn.cells import cell_names
from lstmcli.nn.classifier import SentimentClassifier, predict_logits
from lstmcli.runs import load_run, save_checkpoint
from lstmcli.training.run import train

from helpers import make_reviews


@pytest.fixture
def run_dir(tiny_file, tmp_path):
    config = Config()
    config.data.dataset = str(tiny_file)
    config.model.cell = "peephole"  # the custom cells' parameters must survive the trip too
    config.model.hidden_size = 12
    config.model.bidirectional = True
    config.train.epochs = 2
    config.train.output = str(tmp_path / "run")
    return train(config).run_dir


@pytest.mark.parametrize("cell", cell_names())
def test_a_saved_run_predicts_exactly_as_the_model_in_memory(cell, tmp_path):
    """Save a freshly initialised model (random weights, not a trained one: nothing in the trip
    may depend on training) and compare the loaded run with the model as it was in memory."""
    texts = [row["text"] for row in make_reviews(40)]
    config = Config()
    config.model = ModelConfig(cell=cell, embed_dim=8, hidden_size=6, layers=2,
                               bidirectional=True, pooling="max")
    tokenizer = Tokenizer.train(texts, vocab_size=50, min_freq=1)
    config.model.vocab_size = tokenizer.vocab_size
    torch.manual_seed(0)
    model = SentimentClassifier(config.model).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.3)  # peepholes and biases too, not their zero/constant init
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_checkpoint(run_dir, model, config, ["negative", "positive"])
    tokenizer.save(run_dir / "tokenizer.json")

    probe = ["wonderful food", "awful movie and bland service", "it", texts[0]]
    expected = torch.softmax(
        predict_logits(model, tokenizer.encode(probe, config.data.max_len)), dim=1).numpy()
    loaded = Predictor.from_run(run_dir).probabilities(probe)
    assert np.abs(loaded - expected).max() < 1e-6
    for name, tensor in load_run(run_dir).model.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def test_config_json_describes_the_run(run_dir):
    meta = json.loads((run_dir / "config.json").read_text())
    assert meta["model"]["cell"] == "peephole"
    assert meta["model"]["vocab_size"] == meta["vocab_size"] > 2
    assert meta["label_names"] == ["negative", "positive"]
    assert {"format_version", "lstmcli_version", "best", "data", "train"} <= set(meta)


def test_newer_format_is_refused_clearly(run_dir):
    meta = json.loads((run_dir / "config.json").read_text())
    meta["format_version"] = 99
    (run_dir / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format 99"):
        load_run(run_dir)


def test_weights_that_do_not_match_the_config(run_dir):
    state = load_file(str(run_dir / "model.safetensors"))
    del state["classifier.bias"]
    save_file(state, str(run_dir / "model.safetensors"))
    with pytest.raises(CheckpointError, match="does not match its config.json"):
        load_run(run_dir)


def test_corrupt_weights(run_dir):
    (run_dir / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_run(run_dir)
