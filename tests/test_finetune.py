"""`lstm train --init-from`: the pretrained tokenizer and weights taken exactly, the architecture
kept, discriminative lrs, the slanted triangular schedule, gradual unfreezing, and an exact
resume of all of them."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lstmcli.cli import app
from lstmcli.config import Config, ModelConfig, config_keys, load_config
from lstmcli.errors import ConfigError
from lstmcli.nn.classifier import SentimentClassifier
from lstmcli.pretrain_config import PretrainConfig
from lstmcli.training import finetune
from lstmcli.training.schedule import Schedule
from lstmcli.ui.render import TrainDisplay

from helpers import make_reviews, write_jsonl

runner = CliRunner()
TIMING = {"train_seconds", "tokens_per_second", "seconds"}
FINE = ["--batch-size", "16", "--threads", "1", "--seed", "2", "--dropout", "0.2", "--json"]


@pytest.fixture(scope="module")
def language_model(tmp_path_factory) -> Path:
    """A small pretrained run (two layers, so that there are four layer groups)."""
    folder = tmp_path_factory.mktemp("pretrained")
    corpus = folder / "corpus.txt"
    corpus.write_text("".join(row["text"] + "\n" for row in make_reviews(200, seed=5)),
                      encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:  # set up before conftest's per-test isolation
        for variable in ("LSTM_RUNS_DIR", "LSTM_STATE_DIR", "LSTM_CACHE_DIR"):
            patch.setenv(variable, str(folder / variable.lower()))
        result = CliRunner().invoke(app, [
            "pretrain", "--text-file", str(corpus), "--output", str(folder / "lm"), "--epochs",
            "2", "--hidden-size", "8", "--embed-dim", "8", "--layers", "2", "--bptt", "10",
            "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    return folder / "lm"


def fine_tune(data: Path, lm: Path, run: Path, *extra: str):
    return runner.invoke(app, ["train", "--dataset", str(data), "--init-from", str(lm),
                               "--output", str(run), *FINE, *extra])


def tensors(run: Path) -> dict[str, bytes]:
    from safetensors.numpy import load_file

    return {key: value.tobytes() for key, value in load_file(run / "model.safetensors").items()}


def test_init_from_takes_the_tokenizer_and_weights_exactly(language_model, tiny_file, tmp_path):
    """Epoch 1 of a gradually unfrozen run trains the head alone: the embedding and encoder it
    saves are the pretrained ones, bit for bit."""
    run = tmp_path / "run"
    result = fine_tune(tiny_file, language_model, run, "--epochs", "1", "--gradual-unfreeze")
    assert result.exit_code == 0, result.output
    assert (run / "tokenizer.json").read_bytes() == (language_model / "tokenizer.json").read_bytes()
    pretrained, tuned = tensors(language_model), tensors(run)
    copied = [key for key in tuned if key.startswith(("embedding.", "encoder."))]
    assert copied and all(tuned[key] == pretrained[key] for key in copied)
    assert {key for key in tuned if key not in copied} == {"classifier.weight", "classifier.bias"}
    meta = json.loads((run / "config.json").read_text())
    assert meta["train"]["init_from"] == str(language_model.resolve())
    assert (meta["model"]["layers"], meta["model"]["hidden_size"]) == (2, 8)  # taken, not given
    assert meta["model"]["vocab_size"] == json.loads(
        (language_model / "config.json").read_text())["model"]["vocab_size"]


def test_a_conflicting_architecture_is_refused(language_model, tiny_file, tmp_path):
    result = fine_tune(tiny_file, language_model, tmp_path / "run", "--hidden-size", "16")
    assert result.exit_code == 2
    assert f"hidden_size 16 conflicts with --init-from {language_model.resolve()}, whose " \
           "hidden_size is 8; drop --hidden-size" in result.output
    config = tmp_path / "fine.toml"
    config.write_text("[model]\nbidirectional = true\n", encoding="utf-8")
    result = fine_tune(tiny_file, language_model, tmp_path / "run", "--config", str(config))
    assert result.exit_code == 2 and "bidirectional True conflicts" in result.output
    result = fine_tune(tiny_file, language_model, tmp_path / "run", "--vocab-size", "50")
    assert result.exit_code == 2 and "vocab_size 50 conflicts" in result.output
    classifier = tmp_path / "classifier"
    assert runner.invoke(app, ["train", "--dataset", str(tiny_file), "--output",
                               str(classifier), "--epochs", "1", "--hidden-size", "8",
                               "--embed-dim", "8"]).exit_code == 0
    result = fine_tune(tiny_file, classifier, tmp_path / "run")
    assert result.exit_code == 2 and "is a classifier, not a language model" in result.output
    result = fine_tune(tiny_file, tmp_path / "nowhere", tmp_path / "run")
    assert result.exit_code == 2 and "is not a directory" in result.output
    assert not (tmp_path / "run").exists()


def test_diverged_pretrained_weights_are_refused_before_any_file(language_model, tiny_file,
                                                                 tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(language_model, broken)
    state = load_file(broken / "model.safetensors")
    state["embedding.weight"][3, 1] = float("nan")
    save_file(state, broken / "model.safetensors")
    result = fine_tune(tiny_file, broken, tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert "holds NaN or infinite values in embedding.weight" in result.output
    assert not (tmp_path / "run").exists()


def test_discriminative_lrs_per_layer_group():
    model = SentimentClassifier(ModelConfig(vocab_size=30, embed_dim=4, hidden_size=4, layers=2))
    groups = finetune.optimizer_groups(model, 2.6)
    assert [group["name"] for group in groups] == ["head", "encoder.layers.1", "encoder.layers.0",
                                                   "embedding"]
    assert [group["lr_scale"] for group in groups] == pytest.approx(
        [1, 1 / 2.6, 1 / 2.6**2, 1 / 2.6**3], rel=1e-12)
    grouped = [id(p) for group in groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each exactly once
    assert groups[0]["params"] == list(model.classifier.parameters())
    assert groups[3]["params"] == [model.embedding.weight]
    assert len(finetune.optimizer_groups(model, 1.0)) == 1
    with pytest.raises(ConfigError, match="discriminative_lr must be in"):
        Config.from_dict({"train": {"discriminative_lr": 0.5}}).validate()


def test_gradual_unfreezing_trains_one_more_group_each_epoch():
    model = SentimentClassifier(ModelConfig(vocab_size=30, embed_dim=4, hidden_size=4, layers=2,
                                            bidirectional=True))
    groups = finetune.layer_groups(model)
    expected = {1: ["head"], 2: ["head", "encoder.layers.1"],
                3: ["head", "encoder.layers.1", "encoder.layers.0"],
                4: ["head", "encoder.layers.1", "encoder.layers.0", "embedding"]}
    for epoch in (1, 2, 3, 4, 9):
        trained = finetune.unfreeze(groups, epoch)
        assert trained == expected[min(epoch, 4)]
        for name, parameters in groups:
            assert all(p.requires_grad == (name in trained) for p in parameters), (epoch, name)


def slanted_paper(t: int, total: int, lr: float, cut_frac: float = 0.1,
                  ratio: float = 32) -> float:
    """Howard & Ruder (2018), eq. 3, as printed."""
    cut = math.floor(total * cut_frac)
    p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    return lr * (1 + p * (ratio - 1)) / ratio


def test_the_slanted_schedule_is_the_papers_formula():
    schedule = Schedule("slanted", 0.01, epochs=4, warmup=0, patience=0, steps_per_epoch=50)
    assert schedule.per_step
    values = [schedule.step_lr(epoch, step) for epoch in range(1, 5) for step in range(1, 51)]
    assert values == pytest.approx([slanted_paper(t, 200, 0.01) for t in range(200)], rel=1e-12)
    assert values[0] == pytest.approx(0.01 / 32) and max(values) == values[20] == 0.01
    assert schedule.lr(3) == values[100]  # an epoch starts at its first step's lr
    short = Schedule("slanted", 0.01, epochs=1, warmup=0, patience=0, steps_per_epoch=19)
    assert min(short.step_lr(1, step) for step in range(1, 20)) == pytest.approx(0.01 / 32)
    with pytest.raises(ConfigError, match="warmup_epochs does not apply"):
        Config.from_dict({"train": {"lr_schedule": "slanted", "warmup_epochs": 1}}).validate()


def interrupt_at(monkeypatch: pytest.MonkeyPatch, epoch: int, step: int) -> None:
    seen = {"epoch": 0}
    start, on_step = TrainDisplay.on_epoch_start, TrainDisplay.on_step

    def on_epoch_start(self, epoch_now: int, steps: int) -> None:
        seen["epoch"] = epoch_now
        start(self, epoch_now, steps)

    def kill_on_step(self, step_now: int, loss: float) -> None:
        on_step(self, step_now, loss)
        if (seen["epoch"], step_now) == (epoch, step):
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(TrainDisplay, "on_epoch_start", on_epoch_start)
    monkeypatch.setattr(TrainDisplay, "on_step", kill_on_step)


def test_an_interrupted_fine_tune_resumes_bitwise(language_model, tiny_file, tmp_path,
                                                 monkeypatch):
    """Frozen groups, per-group lrs and the per-step schedule all continue exactly."""
    extra = ("--epochs", "3", "--lr-schedule", "slanted", "--discriminative-lr", "2.6",
             "--gradual-unfreeze")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    done = fine_tune(tiny_file, language_model, whole, *extra)
    assert done.exit_code == 0, done.output
    with monkeypatch.context() as patch:
        interrupt_at(patch, epoch=2, step=3)
        stopped = fine_tune(tiny_file, language_model, parts, *extra)
    assert stopped.exit_code == 130, stopped.output
    assert f"resume with: lstm train --resume {parts}" in stopped.output
    resumed = runner.invoke(app, ["train", "--resume", str(parts), "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert (parts / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()
    lines = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in row.items() if k not in TIMING} for row in lines] == [
        {k: v for k, v in json.loads(line).items() if k not in TIMING}
        for line in (parts / "metrics.jsonl").read_text().splitlines()]
    assert [row["unfrozen"] for row in lines] == [
        ["head"], ["head", "encoder.layers.1"], ["head", "encoder.layers.1", "encoder.layers.0"]]
    steps = lines[0]["steps"]
    schedule = Schedule("slanted", 0.003, epochs=3, warmup=0, patience=0, steps_per_epoch=steps)
    for row in lines:  # the lr each epoch ended with, and each group's share of it
        assert row["lr"] == pytest.approx(schedule.step_lr(row["epoch"], steps), rel=1e-12)
        assert row["lr_groups"]["embedding"] == pytest.approx(row["lr"] / 2.6**3, rel=1e-12)
    refused = runner.invoke(app, ["train", "--resume", str(parts), "--init-from", "x"])
    assert refused.exit_code == 2 and "--init-from cannot change it" in refused.output


def test_the_fine_tuning_configs_leave_the_architecture_to_init_from():
    configs = Path(__file__).parents[1] / "configs"
    inherited = {f"{section}.{key}" for section, keys in finetune.INHERITED.items()
                 for key in keys}
    names = sorted(path.name for path in configs.glob("*_finetune.toml"))
    assert names == ["imdb_finetune.toml", "rotten_tomatoes_finetune.toml", "sst2_finetune.toml"]
    for name in names:
        assert not config_keys(configs / name) & inherited, name
        config = load_config(configs / name).validate()
        # The same texts, read the same way, as the from-scratch recipe it is compared with.
        scratch = load_config(configs / name.replace("_finetune", ""))
        for key in ("dataset", "max_len", "truncation", "val_fraction"):
            assert getattr(config.data, key) == getattr(scratch.data, key), (name, key)
    pretraining = load_config(configs / "imdb_lm.toml", PretrainConfig).validate()
    assert pretraining.data.splits == ["train", "unsupervised"]


def test_a_fine_tune_learns(language_model, tmp_path):
    data = write_jsonl(tmp_path / "reviews.jsonl", make_reviews(200, seed=1))
    result = fine_tune(data, language_model, tmp_path / "run", "--epochs", "8", "--lr", "0.01",
                       "--pooling", "max")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["best_val_accuracy"] >= 0.8
    assert torch.isfinite(torch.tensor([row["train_loss"] for row in json.loads(
        result.output)["epochs"]])).all()
