"""The numpy engine: the torch engine's probabilities within 1e-5 for every cell and architecture,
loaded from the project's own checkpoints, and `lstm predict` on it never imports torch."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import lstmcli
from lstmcli.cli import app
from lstmcli.config import NUMPY_MAX_TEXTS, Config, ModelConfig
from lstmcli.data.tokenizer import Tokenizer
from lstmcli.errors import CheckpointError, ConfigError
from lstmcli.inference.numpy_model import expected_shapes
from lstmcli.inference.predictor import Predictor, choose_engine
from lstmcli.nn.cells import Cell, Ops, State, cell_names, register_cell, unregister_cell
from lstmcli.nn.classifier import SentimentClassifier
from lstmcli.nn.numpy_ops import NUMPY_OPS, softmax
from lstmcli.runload import load_run
from lstmcli.runs import TOKENIZER_FILE, WEIGHTS_FILE, save_checkpoint

from helpers import make_reviews, write_jsonl

TOLERANCE = 1e-5
LABELS = ["negative", "neutral", "positive"]  # three classes: softmax, not just a sigmoid
CORPUS = [row["text"] for row in make_reviews(60)]
# Variable lengths (1 to 40 tokens), unknown words, and punctuation as tokens.
TEXTS = ["great", "the plot was awful and the staff quite boring", "it", "superb!!!",
         " ".join(CORPUS[:5]), "zyzzyva movie", "loved it " * 4, "a " * 3 + "dreadful"]


def save_random_run(run_dir: Path, seed: int = 0, **model: Any) -> Path:
    """A classifier with every parameter drawn at random (peepholes, biases, the embedding's
    padding row included: nothing trivially zero), saved by the project's own save path."""
    tokenizer = Tokenizer.train(CORPUS, vocab_size=200, min_freq=1)
    config = Config()
    config.model = ModelConfig(vocab_size=tokenizer.vocab_size, num_classes=len(LABELS),
                               embed_dim=7, hidden_size=5, **model)
    torch.manual_seed(seed)
    network = SentimentClassifier(config.model)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.normal_(0.0, 0.7)
        # Confident outputs, so that probabilities move with every upstream number.
        network.classifier.weight.mul_(4.0)
    run_dir.mkdir(parents=True)
    save_checkpoint(run_dir, network, config, LABELS)
    tokenizer.save(run_dir / TOKENIZER_FILE)
    return run_dir


def engine_probabilities(run_dir: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    numpy = Predictor.from_run(run_dir, engine="numpy").probabilities(texts)
    torch_ = Predictor.from_run(run_dir, engine="torch").probabilities(texts)
    return numpy, torch_


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "concat"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", cell_names())
def test_numpy_equals_torch(cell, bidirectional, layers, pooling, tmp_path):
    run = save_random_run(tmp_path / "run", cell=cell, bidirectional=bidirectional,
                          layers=layers, pooling=pooling)
    numpy, torch_ = engine_probabilities(run, TEXTS)
    assert numpy.shape == torch_.shape == (len(TEXTS), len(LABELS))
    assert numpy.dtype == np.float32
    assert np.abs(numpy - torch_).max() < TOLERANCE
    assert np.abs(numpy.sum(axis=1) - 1).max() < 1e-6


def test_the_random_models_are_far_from_uniform(tmp_path):
    # Parity on near-uniform outputs would prove little.
    run = save_random_run(tmp_path / "run", cell="peephole", bidirectional=True, layers=2)
    numpy, _ = engine_probabilities(run, TEXTS)
    assert numpy.max() > 0.6 and numpy.std(axis=0).max() > 0.1


@pytest.mark.parametrize("cell", cell_names())
def test_numpy_reads_every_key_of_the_torch_state_dict(cell):
    config = ModelConfig(cell=cell, vocab_size=11, embed_dim=4, hidden_size=3, layers=2,
                         bidirectional=True)
    state = SentimentClassifier(config).state_dict()
    assert {key: tuple(value.shape) for key, value in state.items()} == expected_shapes(config)


class MinimalGatedUnit(Cell):
    """Minimal gated unit (Zhou et al. 2016), a cell defined outside lstmcli.

        f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf + p * h_{t-1})   forget gate
        n_t = tanh(W_in x_t + b_in + f_t * (W_hn h_{t-1} + b_hn))             candidate
        h_t = (1 - f_t) * h_{t-1} + f_t * n_t
    """

    name = "mgu_test"
    chunks = ("forget", "new")
    gate_names = ("forget", "new")
    candidates = ("new",)
    memory_gate = "forget"
    vectors: ClassVar[tuple[str, ...]] = ("peep",)

    @staticmethod
    def step(ops: Ops, params: Any, x_projected: Any, state: State) -> tuple[State, dict]:
        (h_prev,) = state
        x_forget, x_new = ops.split(x_projected, 2)
        h_forget, h_new = ops.split(ops.linear(h_prev, params.weight_hh, params.bias_hh), 2)
        forget = ops.sigmoid(x_forget + h_forget + params.peep * h_prev)
        candidate = ops.tanh(x_new + forget * h_new)
        return ((1.0 - forget) * h_prev + forget * candidate,), {"forget": forget,
                                                                 "new": candidate}


def test_a_newly_registered_cell_runs_on_numpy_unchanged(tmp_path):
    register_cell(MinimalGatedUnit)
    try:
        run = save_random_run(tmp_path / "run", cell="mgu_test", bidirectional=True, layers=2,
                              pooling="max")
        numpy, torch_ = engine_probabilities(run, TEXTS)
    finally:
        unregister_cell("mgu_test")
    assert np.abs(numpy - torch_).max() < TOLERANCE


def test_ops_are_stable_and_torch_like():
    x = np.array([[-1000.0, -20.0, 0.0, 20.0, 1000.0]], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        sigmoid = NUMPY_OPS.sigmoid(x)
    assert sigmoid.dtype == np.float32
    assert np.allclose(sigmoid, torch.sigmoid(torch.from_numpy(x)).numpy(), atol=1e-7)
    parts = NUMPY_OPS.split(np.arange(12.0).reshape(2, 6), 3)
    assert [part.tolist() for part in parts] == [[[0, 1], [6, 7]], [[2, 3], [8, 9]],
                                                 [[4, 5], [10, 11]]]
    logits = np.array([[1000.0, 0.0], [-3.0, 2.0]], dtype=np.float32)
    assert np.allclose(softmax(logits), torch.softmax(torch.from_numpy(logits), 1).numpy())


def test_choose_engine():
    assert choose_engine("auto", "cpu", 1) == "numpy"
    assert choose_engine("auto", "cpu", NUMPY_MAX_TEXTS) == "numpy"
    assert choose_engine("auto", "cpu", NUMPY_MAX_TEXTS + 1) == "torch"
    assert choose_engine("auto", "cuda", 1) == "torch"
    assert choose_engine("torch", "cpu", 1) == "torch"
    assert choose_engine("numpy", "cpu", 10_000) == "numpy"
    with pytest.raises(ConfigError, match="CPU only"):
        choose_engine("numpy", "cuda", 1)
    with pytest.raises(ConfigError, match="unknown engine"):
        choose_engine("jax", "cpu", 1)


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_weights_that_do_not_match_the_config(engine, tmp_path):
    from safetensors.numpy import load_file, save_file

    run = save_random_run(tmp_path / "run", cell="gru")
    state = load_file(str(run / WEIGHTS_FILE))
    del state["classifier.bias"]
    save_file(state, str(run / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match="does not match its config.json"):
        load_run(run, engine=engine)


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_corrupt_weights(engine, tmp_path):
    run = save_random_run(tmp_path / "run", cell="rnn")
    (run / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_run(run, engine=engine)


def test_device_names_that_need_no_torch(monkeypatch):
    from lstmcli import device

    assert device.resolve_device_name("cpu") == "cpu"
    monkeypatch.setattr(device, "_may_have_accelerator", lambda: False)
    assert device.resolve_device_name("auto") == "cpu"


# ---------------------------------------------------------------------------------------------
# The command line, in fresh interpreters

CHILD = """
import json, runpy, sys
sys.argv = ["lstm", *json.loads(sys.argv[1])]
try:
    runpy.run_module("lstmcli", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code or 0
else:
    code = 0
finally:
    sys.stderr.write("\\nIMPORTED " + json.dumps(sorted(m for m in ("torch", "pyarrow", "datasets")
                                                       if m in sys.modules)) + "\\n")
sys.exit(code)
"""


def run_lstm(*args: str) -> tuple[str, list[str]]:
    """Run `lstm ARGS` in a fresh interpreter: its stdout and which heavy modules it imported."""
    # This checkout first, whatever lstmcli the interpreter has installed.
    path = [str(Path(lstmcli.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(list(args))],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    imported = json.loads(result.stderr.rsplit("IMPORTED ", 1)[1])
    return result.stdout, imported


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("trained")
    data = write_jsonl(folder / "tiny.jsonl", make_reviews(120))
    run = folder / "run"
    with pytest.MonkeyPatch.context() as patch:  # set up before conftest's per-test isolation
        for variable in ("LSTM_RUNS_DIR", "LSTM_STATE_DIR", "LSTM_CACHE_DIR"):
            patch.setenv(variable, str(folder / variable.lower()))
        result = CliRunner().invoke(app, [
            "train", "--dataset", str(data), "--output", str(run), "--epochs", "2", "--cell",
            "peephole", "--bidirectional", "--layers", "2", "--pooling", "mean",
            "--hidden-size", "8", "--embed-dim", "8"])
    assert result.exit_code == 0, result.output
    return run


@pytest.mark.parametrize("args", [["--help"], ["cells"], ["datasets"]])
def test_catalog_commands_never_import_torch(args):
    output, imported = run_lstm(*args)
    assert output.strip()
    assert "torch" not in imported


def test_predict_never_imports_torch_and_matches_the_torch_engine(trained_run):
    output, imported = run_lstm("predict", "--model", str(trained_run), "great movie")
    assert imported == []
    torch_output, imported = run_lstm("predict", "--model", str(trained_run), "--engine",
                                      "torch", "great movie")
    assert "torch" in imported
    assert output == torch_output
    label, probability, text = output.rstrip("\n").split("\t")
    assert text == "great movie"
    assert label in {"positive", "negative"} and 0.5 <= float(probability) <= 1


def test_predict_json_matches_the_torch_engine(trained_run):
    texts = ["great movie", "the food was awful", "zyzzyva", "loved it, really loved it"]
    lines = {}
    for engine in ("numpy", "torch"):
        result = CliRunner().invoke(app, ["predict", "--model", str(trained_run), "--json",
                                          "--engine", engine, *texts])
        assert result.exit_code == 0, result.output
        lines[engine] = [json.loads(line) for line in result.output.splitlines()]
    for numpy, torch_ in zip(lines["numpy"], lines["torch"], strict=True):
        assert numpy.keys() == torch_.keys()
        assert (numpy["text"], numpy["label"]) == (torch_["text"], torch_["label"])
        assert abs(numpy["probability"] - torch_["probability"]) < TOLERANCE
        for name, p in numpy["probabilities"].items():
            assert abs(p - torch_["probabilities"][name]) < TOLERANCE


def test_predict_rejects_an_unknown_engine(trained_run):
    result = CliRunner().invoke(app, ["predict", "--model", str(trained_run), "--engine", "jax",
                                      "great movie"])
    assert result.exit_code == 2
    assert result.output.startswith("error: unknown engine 'jax'")


def test_predictions_stream_chunk_by_chunk_in_order(tmp_path):
    """The first chunk's results come out before the input is read to its end."""
    run = save_random_run(tmp_path / "run")
    predictor = Predictor.from_run(run, "cpu", "numpy")
    pulled: list[int] = []

    def texts():
        for index in range(5):
            pulled.append(index)
            yield f"superb food {index}"
        raise RuntimeError("the input broke after five texts")

    stream = predictor.predict_stream(texts(), chunk=2)
    first = next(stream)
    assert first.text == "superb food 0" and pulled == [0, 1]
    assert [p.text for p in itertools.islice(stream, 3)] == [f"superb food {i}" for i in (1, 2, 3)]
    with pytest.raises(RuntimeError, match="after five texts"):
        list(stream)


def test_predict_file_gives_one_line_per_text_in_order(tmp_path):
    run = save_random_run(tmp_path / "run")
    lines = [f"{'superb' if i % 2 else 'dreadful'} plot number {i}" for i in range(150)]
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(lines[:70]) + "\n\n" + "\n".join(lines[70:]) + "\n")
    result = CliRunner().invoke(app, ["predict", "--model", str(run), "--file", str(path),
                                      "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [row["text"] for row in rows] == lines
