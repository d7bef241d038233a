"""`lstm explain`: per-token running probabilities and memory gates, checked against predict and
against the classifier applied to h_t."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_cli import assert_clean_error
from typer.testing import CliRunner

from lstmcli.cli import app
from lstmcli.config import Config
from lstmcli.data.batching import pad_batch
from lstmcli.inference.explain import explain
from lstmcli.runload import load_run
from lstmcli.training.run import train

from helpers import make_reviews, write_jsonl

runner = CliRunner()
TEXT = "the plot was boring but the acting is superb"


def train_run(root: Path, cell: str, **model: object) -> Path:
    """A small trained run, with every lstmcli path pointed into ``root``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LSTM_STATE_DIR", str(root / "state"))
        patch.setenv("LSTM_CACHE_DIR", str(root / "cache"))
        config = Config()
        config.data.dataset = str(write_jsonl(root / "tiny.jsonl", make_reviews(120)))
        config.data.max_len = 12
        config.model.cell = cell
        config.model.hidden_size = 12
        config.model.embed_dim = 12
        for key, value in model.items():
            setattr(config.model, key, value)
        config.train.epochs = 4
        config.train.lr = 0.01
        config.train.batch_size = 16
        config.train.output = str(root / "run")
        return train(config).run_dir


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("lstm"), "lstm")


@pytest.fixture(scope="module")
def bidirectional_gru_run(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("gru"), "gru", bidirectional=True, pooling="mean")


def invoke(*args: str):
    return runner.invoke(app, list(args))


def explain_json(run: Path, text: str) -> dict:
    result = invoke("explain", "--model", str(run), "--json", text)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("which", ["lstm_run", "bidirectional_gru_run"])
def test_running_probabilities_equal_predict_on_every_prefix(which, request):
    run = request.getfixturevalue(which)
    payload = explain_json(run, TEXT)
    tokens = [step["token"] for step in payload["tokens"]]
    assert tokens == TEXT.split()
    prefixes = [" ".join(tokens[: k + 1]) for k in range(len(tokens))]
    predicted = invoke("predict", "--model", str(run), "--json", *prefixes)
    rows = [json.loads(line) for line in predicted.output.splitlines()]
    for step, row in zip(payload["tokens"], rows, strict=True):
        for name, p in row["probabilities"].items():
            assert step["probabilities"][name] == pytest.approx(p, abs=1e-5)
    assert payload["probabilities"] == payload["tokens"][-1]["probabilities"]
    assert payload["label"] == rows[-1]["label"]


def test_last_pooling_probabilities_are_the_classifier_on_each_hidden_state(lstm_run):
    """Another computation of the same numbers: one pass, the classifier on every h_t."""
    run = load_run(lstm_run)
    result = explain(run, TEXT)
    ids, lengths = pad_batch(run.tokenizer.encode([TEXT], run.config.data.max_len))
    with torch.no_grad():
        outputs, _ = run.model.encoder(run.model.embedding(ids), lengths)  # (1, T, H)
        expected = torch.softmax(run.model.classifier(outputs[0]), dim=1)  # (T, C)
    got = torch.tensor([[step.probabilities[n] for n in run.label_names]
                        for step in result.tokens])
    assert torch.allclose(got, expected, atol=1e-6)


def test_gate_is_the_forget_gate_for_lstm_and_update_gate_for_gru(lstm_run,
                                                                   bidirectional_gru_run):
    lstm = explain_json(lstm_run, TEXT)
    gru = explain_json(bidirectional_gru_run, TEXT)
    assert (lstm["gate"], gru["gate"]) == ("forget", "update")
    for payload in (lstm, gru):
        gates = [step["gate"] for step in payload["tokens"]]
        assert all(0.0 < g < 1.0 for g in gates)
        assert len(set(gates)) > 1  # it moves with the tokens


def test_rnn_has_no_gate_and_says_so(tmp_path):
    run = train_run(tmp_path, "rnn")
    payload = explain_json(run, TEXT)
    assert payload["gate"] is None
    assert all(step["gate"] is None for step in payload["tokens"])
    human = invoke("explain", "--model", str(run), TEXT)
    assert "rnn has no gate" in human.output


def test_unknown_words_and_truncation_are_marked(lstm_run):
    text = "zzyzx " + " ".join(["great"] * 20)  # max_len is 12
    payload = explain_json(lstm_run, text)
    assert payload["truncated"] is True
    assert len(payload["tokens"]) == 12
    assert payload["tokens"][0] == {**payload["tokens"][0], "token": "zzyzx", "known": False}
    human = invoke("explain", "--model", str(lstm_run), text)
    assert "zzyzx?" in human.output and "not in the vocabulary" in human.output


def test_human_output_is_a_strip_with_the_verdict(lstm_run):
    result = invoke("explain", "--model", str(lstm_run), TEXT)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.split()[:3] == ["the", "plot", "was"] for line in lines)
    assert any(line.startswith("P(positive)") for line in lines)
    assert any(line.startswith("forget") for line in lines)
    payload = explain_json(lstm_run, TEXT)
    assert f"prediction: {payload['label']} (" in result.output
    assert max(len(line) for line in lines[:-3]) <= 80


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_text_is_an_error(text, lstm_run):
    assert_clean_error(invoke("explain", "--model", str(lstm_run), text), "the text is empty")


def test_missing_text_and_missing_run(tmp_path):
    assert_clean_error(invoke("explain"), "the text is empty")
    assert_clean_error(invoke("explain", "--model", str(tmp_path / "nope"), "hi"),
                       "does not exist")
