"""`lstm pretrain`: the language model learns, never reads the token it predicts, refuses what
would leak (a bidirectional stack, test texts), writes a run like `lstm train` does, resumes
bitwise, and is refused where a classifier is needed."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from lstmcli.cli import app
from lstmcli.data.corpus import load_corpus, windows
from lstmcli.errors import ConfigError, DataError
from lstmcli.nn.cells import cell_names
from lstmcli.nn.language_model import LanguageModel
from lstmcli.nn.lm_output import adaptive_cutoffs
from lstmcli.pretrain_config import CorpusConfig, LanguageModelConfig, PretrainConfig
from lstmcli.ui.pretrain import PretrainDisplay

from helpers import make_reviews

runner = CliRunner()
# Dropout on and a sampled softmax, so that torch's generator is part of what an exact resume
# must restore.
TINY = ["--hidden-size", "8", "--embed-dim", "8", "--batch-size", "8", "--bptt", "8",
        "--dropout", "0.2", "--threads", "1", "--seed", "3", "--epochs", "3", "--samples", "16"]
TIMING = {"train_seconds", "tokens_per_second", "seconds"}


def corpus_file(folder: Path, count: int = 120) -> Path:
    path = folder / "corpus.txt"
    path.write_text("".join(row["text"] + "\n\n" for row in make_reviews(count)), encoding="utf-8")
    return path


def pretrain(corpus: Path, run: Path, *extra: str):
    return runner.invoke(app, ["pretrain", "--text-file", str(corpus), "--output", str(run),
                               *TINY, "--json", *extra])


def rows(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def test_the_loss_falls_on_a_repetitive_corpus():
    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig(vocab_size=12, embed_dim=16, hidden_size=16,
                                      bidirectional=True))
    # One sentence over and over: both directions can learn it by heart.
    ids = torch.tensor([[2, 3, 4, 5, 6, 7, 8, 9, 10, 11]] * 8)
    lengths = torch.full((8,), 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(60):
        loss = model.loss(model(ids, lengths), model.targets(ids, lengths))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > math.log(12) * 0.8  # about chance at first
    assert losses[-1] < 0.2 * losses[0]


@pytest.mark.parametrize("cell", cell_names())
def test_no_direction_ever_reads_the_token_it_predicts(cell):
    """Change every token after t: the forward predictions up to t must not move (nor their
    whole distribution), the one after must. Change every token before t: likewise the
    backward predictions from t on."""
    torch.manual_seed(1)
    model = LanguageModel(LanguageModelConfig(cell=cell, vocab_size=40, embed_dim=8, hidden_size=8,
                                      bidirectional=True)).eval()
    steps, t = 10, 5
    ids = torch.randint(2, 40, (1, steps))
    lengths = torch.tensor([steps])
    base = model.log_probs(ids, lengths)  # (2 * (T - 1), V): forward rows, then backward rows
    future = ids.clone()
    future[0, t + 1:] = (future[0, t + 1:] - 2 + 7) % 38 + 2  # every later token replaced
    changed = model.log_probs(future, lengths)
    # Forward row p sits at position p and predicts p + 1.
    assert torch.allclose(base[: t + 1], changed[: t + 1], atol=1e-6, rtol=0)
    assert not torch.allclose(base[t + 1], changed[t + 1], atol=1e-4)
    past = ids.clone()
    past[0, :t] = (past[0, :t] - 2 + 7) % 38 + 2  # every earlier token replaced
    changed = model.log_probs(past, lengths)
    # Backward row (T - 1) + (p - 1) sits at position p and predicts p - 1.
    backward = steps - 1 + np.arange(t, steps) - 1
    assert torch.allclose(base[backward], changed[backward], atol=1e-6, rtol=0)
    assert not torch.allclose(base[backward[0] - 1], changed[backward[0] - 1], atol=1e-4)
    targets = model.targets(ids, lengths)
    assert targets[:t + 1].tolist() == ids[0, 1 : t + 2].tolist()  # forward: the next token
    assert targets[backward].tolist() == ids[0, t - 1 : steps - 1].tolist()  # backward: the last


def test_padding_is_never_predicted_nor_predicts():
    model = LanguageModel(LanguageModelConfig(vocab_size=20, embed_dim=8, hidden_size=8)).eval()
    ids = torch.tensor([[2, 3, 4, 5], [6, 7, 0, 0]])
    targets = model.targets(ids, torch.tensor([4, 2]))
    assert targets.tolist() == [3, 4, 5, 7]  # row 1 predicts 7 from 6, nothing from padding
    alone = model.nll(torch.tensor([[6, 7]]), torch.tensor([2]))
    assert torch.allclose(model.nll(ids, torch.tensor([4, 2]))[3:], alone, atol=1e-6)


def test_a_bidirectional_stack_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="see the future"):
        LanguageModel(LanguageModelConfig(vocab_size=20, bidirectional=True, layers=2))
    result = pretrain(corpus_file(tmp_path), tmp_path / "run", "--bidirectional", "--layers",
                      "2")
    assert result.exit_code == 2
    assert "--layers 1 or --unidirectional" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("split", ["test", "validation"])
def test_test_and_validation_texts_are_refused(split, tmp_path):
    result = runner.invoke(app, ["pretrain", "--dataset", "imdb", "--splits", f"train,{split}"])
    assert result.exit_code == 2, result.output
    assert f"{split} texts are never used for pretraining" in result.output
    assert "choose from: train, unsupervised" in result.output
    unknown = runner.invoke(app, ["pretrain", "--splits", "unsupervised"])  # sample has none
    assert unknown.exit_code == 2 and "choose from: train" in unknown.output


def test_the_unsupervised_split_comes_from_a_local_copy_or_the_hub(tmp_path, monkeypatch):
    (tmp_path / "imdb").mkdir()
    for split, label in (("train", 1), ("test", 0), ("unsupervised", -1)):
        pq.write_table(pa.table({"text": [f"{split} review {i}" for i in range(10)],
                                 "label": [label] * 10}), tmp_path / "imdb" / f"{split}.parquet")
    config = CorpusConfig(dataset="imdb", data_dir=str(tmp_path),
                          splits=["train", "unsupervised"], val_fraction=0.1)
    corpus = load_corpus(config)
    texts = [*corpus.train, *corpus.validation]
    assert len(texts) == 20 and "unsupervised review 3" in texts
    assert not any(text.startswith("test") for text in texts)

    import datasets

    asked = []

    def load_dataset(hub_id, name=None, split=None):
        asked.append((hub_id, split))
        return datasets.Dataset.from_dict({"text": [f"{split} {i}" for i in range(5)],
                                           "label": [-1] * 5})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    corpus = load_corpus(CorpusConfig(dataset="imdb", splits=["unsupervised"]))
    assert asked == [("stanfordnlp/imdb", "unsupervised")]
    assert len(corpus.train) + len(corpus.validation) == 5


def test_text_files_give_their_texts_alone(tmp_path):
    (tmp_path / "a.txt").write_text("first document\n\n  \nsecond one\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text('review,stars\n"a, quoted one",5\nplain,1\n',
                                    encoding="utf-8")
    (tmp_path / "c.jsonl").write_text('{"text": "no label here"}\n', encoding="utf-8")
    corpus = load_corpus(CorpusConfig(text_files=[str(tmp_path / name) for name in
                                                  ("a.txt", "b.csv", "c.jsonl")]))
    assert sorted([*corpus.train, *corpus.validation]) == [
        "a, quoted one", "first document", "no label here", "plain", "second one"]
    (tmp_path / "d.doc").write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match="use .txt"):
        load_corpus(CorpusConfig(text_files=[str(tmp_path / "d.doc")]))


def test_windows_cover_every_transition_once():
    document = np.arange(10)
    cut = windows([document, np.arange(1)], 4)
    assert [w.tolist() for w in cut] == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    pairs = [(int(a), int(b)) for w in cut for a, b in zip(w[:-1], w[1:], strict=True)]
    assert pairs == [(i, i + 1) for i in range(9)]
    assert adaptive_cutoffs(30000) == [2000, 10000] and adaptive_cutoffs(50) == [49]


def test_a_run_directory_with_perplexity(tmp_path):
    run = tmp_path / "run"
    result = pretrain(corpus_file(tmp_path), run, "--bidirectional")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert {p.name for p in run.iterdir()} == {"config.json", "tokenizer.json", "metrics.jsonl",
                                              "model.safetensors", "README.md"}
    meta = json.loads((run / "config.json").read_text())
    assert meta["kind"] == "language_model" and meta["model"]["bidirectional"]
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for row in history:
        assert row["val_perplexity"] == pytest.approx(math.exp(row["val_loss"]), rel=1e-12)
        assert row["train_perplexity"] == pytest.approx(math.exp(row["train_loss"]), rel=1e-12)
        assert {"projection", "head", "embedding"} <= set(row["grad_norm_groups"])
        assert "flow" not in row and "train_accuracy" not in row
    best = min(history, key=lambda row: row["val_loss"])
    assert meta["best"]["epoch"] == best["epoch"] == summary["best_epoch"]
    assert summary["best_val_perplexity"] == pytest.approx(best["val_perplexity"])
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert "language model" in (run / "README.md").read_text().splitlines()[0]


def test_a_language_model_classifies_nothing(tmp_path):
    run = tmp_path / "lm"
    assert pretrain(corpus_file(tmp_path), run, "--epochs", "1").exit_code == 0
    for command in (["predict", "--model", str(run), "good"], ["eval", "--model", str(run)],
                    ["explain", "--model", str(run), "good"], ["diagnose", "--model", str(run)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert f"is a language model (written by lstm pretrain), not a classifier; fine-tune it " \
               f"with lstm train --init-from {run}" in result.output
    # Never the latest run either: without --model nothing is found.
    assert "no trained run found" in runner.invoke(app, ["predict", "good"]).output
    listed = runner.invoke(app, ["runs", "--json", str(tmp_path)])
    (row,) = json.loads(listed.output)["runs"]
    assert row["kind"] == "language_model" and row["val_perplexity"] > 1
    assert "ppl" in runner.invoke(app, ["runs", str(tmp_path)]).output


def interrupt_at(monkeypatch: pytest.MonkeyPatch, epoch: int, step: int) -> None:
    """SIGINT to this process right after ``step`` of ``epoch``, as Ctrl-C would."""
    seen = {"epoch": 0}
    start, on_step = PretrainDisplay.on_epoch_start, PretrainDisplay.on_step

    def on_epoch_start(self, epoch_now: int, steps: int) -> None:
        seen["epoch"] = epoch_now
        start(self, epoch_now, steps)

    def kill_on_step(self, step_now: int, loss: float) -> None:
        on_step(self, step_now, loss)
        if (seen["epoch"], step_now) == (epoch, step):
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(PretrainDisplay, "on_epoch_start", on_epoch_start)
    monkeypatch.setattr(PretrainDisplay, "on_step", kill_on_step)


@pytest.mark.parametrize("average", [[], ["--ema-decay", "0.9"]], ids=["plain", "averaged"])
def test_an_interrupted_pretraining_resumes_bitwise(average, tmp_path, monkeypatch):
    from safetensors.numpy import load_file

    corpus = corpus_file(tmp_path)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert pretrain(corpus, whole, "--lr-schedule", "slanted", *average).exit_code == 0
    with monkeypatch.context() as patch:
        interrupt_at(patch, epoch=2, step=3)
        stopped = pretrain(corpus, parts, "--lr-schedule", "slanted", *average)
    assert stopped.exit_code == 130, stopped.output
    assert f"resume with: lstm pretrain --resume {parts}" in stopped.output
    wrong = runner.invoke(app, ["train", "--resume", str(parts)])
    assert wrong.exit_code == 2 and f"resume it with lstm pretrain --resume {parts}" in \
        wrong.output
    resumed = runner.invoke(app, ["pretrain", "--resume", str(parts), "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert (parts / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()
    assert rows(parts) == rows(whole)
    assert load_file(parts / "model.safetensors").keys() == load_file(
        whole / "model.safetensors").keys()
    changed = runner.invoke(app, ["pretrain", "--resume", str(parts), "--bptt", "9"])
    assert changed.exit_code == 2 and "--bptt cannot change it" in changed.output


def test_pretraining_config_keys_are_checked(tmp_path):
    path = tmp_path / "lm.toml"
    path.write_text('[data]\nsplits = ["train"]\nbptt = 1\n', encoding="utf-8")
    result = runner.invoke(app, ["pretrain", "--config", str(path)])
    assert result.exit_code == 2 and "bptt must be >= 2" in result.output
    path.write_text('[data]\nmax_len = 80\n', encoding="utf-8")
    result = runner.invoke(app, ["pretrain", "--config", str(path)])
    assert result.exit_code == 2 and "unknown key 'max_len'" in result.output
    path.write_text('[data]\nsplits = "train"\n', encoding="utf-8")
    result = runner.invoke(app, ["pretrain", "--config", str(path)])
    assert result.exit_code == 2 and "splits must be a list of str" in result.output
    with pytest.raises(ConfigError, match="apply to fine-tuning"):
        PretrainConfig.from_dict({"train": {"gradual_unfreeze": True}}).validate()
