"""Checkpoints: a round trip gives identical predictions; broken runs give clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lstmcli.config import Config
from lstmcli.errors import CheckpointError
from lstmcli.inference.predictor import Predictor
from lstmcli.runs import load_run
from lstmcli.training.run import train


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


def test_round_trip_gives_identical_predictions(run_dir):
    texts = ["wonderful food", "awful movie and bland service", "it"]
    first = Predictor.from_run(run_dir).probabilities(texts)
    again = Predictor.from_run(run_dir).probabilities(texts)
    assert (first == again).all()
    run = load_run(run_dir)
    saved = load_file(str(run_dir / "model.safetensors"))
    for name, tensor in run.model.state_dict().items():
        assert torch.equal(tensor, saved[name])


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
