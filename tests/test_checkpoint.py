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
from lstmcli.runload import load_run
from lstmcli.runs import save_checkpoint
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


# ---------------------------------------------------------------------------------------------
# Hostile and mixed-up runs: one clear error, before any memory is allocated for the model


def rewrite_config(run_dir, change) -> None:
    meta = json.loads((run_dir / "config.json").read_text())
    change(meta)
    (run_dir / "config.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("engine", ["torch", "numpy"])
def test_an_absurd_vocabulary_is_refused_before_allocating(run_dir, engine):
    rewrite_config(run_dir, lambda meta: (meta["model"].update(vocab_size=10**12),
                                          meta.update(vocab_size=10**12)))
    with pytest.raises(CheckpointError, match="different runs"):
        load_run(run_dir, engine=engine)


def test_a_config_that_is_not_an_object(run_dir):
    (run_dir / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(CheckpointError, match="must hold a JSON object, not a list"):
        load_run(run_dir)


def test_another_runs_tokenizer_is_refused(run_dir, tmp_path):
    bigger = Tokenizer.train([row["text"] for row in make_reviews(400, seed=3)] + ["zebra yak"],
                             vocab_size=5000, min_freq=1)
    bigger.save(run_dir / "tokenizer.json")
    with pytest.raises(CheckpointError, match="tokenizer.json has .* entries but the model's"):
        load_run(run_dir)


def test_label_names_must_match_the_classifier(run_dir):
    rewrite_config(run_dir, lambda meta: meta.update(label_names=["only"]))
    with pytest.raises(CheckpointError, match="names 1 labels for a model of 2 classes"):
        load_run(run_dir)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_weights_of_another_dtype_are_refused(run_dir, dtype):
    state = {k: v.to(dtype) for k, v in load_file(str(run_dir / "model.safetensors")).items()}
    save_file(state, str(run_dir / "model.safetensors"))
    with pytest.raises(CheckpointError, match="lstmcli reads float32"):
        load_run(run_dir)


@pytest.mark.parametrize("engine", ["torch", "numpy"])
def test_non_finite_weights_are_refused(run_dir, engine):
    state = load_file(str(run_dir / "model.safetensors"))
    state["classifier.bias"][0] = float("nan")
    save_file(state, str(run_dir / "model.safetensors"))
    with pytest.raises(CheckpointError, match="NaN or infinite values in classifier.bias"):
        load_run(run_dir, engine=engine)
