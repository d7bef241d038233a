"""A crash at any instant of a save, and a full disk: the run always holds weights and a config
that belong together, and nothing half-written."""

from __future__ import annotations

import contextlib
import errno
import json
import os

import pytest
import torch
from test_cli import assert_clean_error, train_tiny
from typer.testing import CliRunner

from lstmcli import atomic, runs
from lstmcli.cli import app
from lstmcli.config import Config, ModelConfig
from lstmcli.nn.classifier import SentimentClassifier
from lstmcli.runload import load_run
from lstmcli.runs import PENDING_WEIGHTS_FILE, WEIGHTS_FILE, save_checkpoint


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs (not even `except Exception`)."""


def model_and_config(seed: int) -> tuple[SentimentClassifier, Config]:
    config = Config()
    config.model = ModelConfig(vocab_size=20, embed_dim=4, hidden_size=3)
    torch.manual_seed(seed)
    return SentimentClassifier(config.model), config


def saved(run_dir, seed: int, epoch: int) -> SentimentClassifier:
    model, config = model_and_config(seed)
    save_checkpoint(run_dir, model, config, ["negative", "positive"], {"best": {"epoch": epoch}})
    return model


def same_weights(run_dir, model: SentimentClassifier) -> bool:
    from safetensors.torch import load_file

    runs.settle_weights(run_dir)
    stored = load_file(str(run_dir / WEIGHTS_FILE))
    return all(torch.equal(stored[k], v) for k, v in model.state_dict().items())


def best_epoch(run_dir) -> int:
    return json.loads((run_dir / "config.json").read_text())["best"]["epoch"]


def test_a_crash_before_the_config_keeps_the_previous_pair(tmp_path, monkeypatch):
    first = saved(tmp_path, seed=0, epoch=1)
    monkeypatch.setattr(runs, "write_json_atomic", lambda *args: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):
        saved(tmp_path, seed=1, epoch=2)
    assert (tmp_path / PENDING_WEIGHTS_FILE).exists()  # the new weights, never committed
    assert same_weights(tmp_path, first) and best_epoch(tmp_path) == 1
    assert not (tmp_path / PENDING_WEIGHTS_FILE).exists()  # discarded on the next read


@contextlib.contextmanager
def killed_before_the_last_rename():
    """The process dies after config.json is written, before the weights are renamed."""
    real_replace = os.replace

    def dies(source, target):
        if str(source).endswith(PENDING_WEIGHTS_FILE):
            raise Crash()
        real_replace(source, target)

    os.replace = dies
    try:
        with pytest.raises(Crash):
            yield
    finally:
        os.replace = real_replace


def test_a_crash_between_the_config_and_the_rename_rolls_forward(tmp_path):
    saved(tmp_path, seed=0, epoch=1)
    with killed_before_the_last_rename():
        saved(tmp_path, seed=1, epoch=2)
    second, _ = model_and_config(1)
    assert best_epoch(tmp_path) == 2
    assert same_weights(tmp_path, second)  # the committed weights, renamed into place


def test_the_first_save_interrupted_after_its_config_still_loads(tmp_path):
    with killed_before_the_last_rename():
        saved(tmp_path, seed=0, epoch=1)
    model, _ = model_and_config(0)
    assert not (tmp_path / WEIGHTS_FILE).exists()
    assert same_weights(tmp_path, model)


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(tiny_file, tmp_path,
                                                                  monkeypatch):
    run = tmp_path / "run"

    def full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    result = CliRunner().invoke(app, ["train", "--dataset", str(tiny_file), "--output", str(run),
                                      "--epochs", "1", "--hidden-size", "8"])
    assert_clean_error(result, "No space left on device")
    assert result.exit_code == 1
    assert not run.exists()  # it held nothing committed, so it is gone, temporaries and all


def test_a_full_disk_at_a_later_checkpoint_keeps_the_earlier_one(tiny_file, tmp_path,
                                                                 monkeypatch):
    run = tmp_path / "run"
    train_tiny(tiny_file, run)
    real_fsync = os.fsync
    weights = (run / WEIGHTS_FILE).read_bytes()

    def full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        saved(run, seed=5, epoch=9)
    monkeypatch.setattr(atomic.os, "fsync", real_fsync)
    assert (run / WEIGHTS_FILE).read_bytes() == weights
    assert best_epoch(run) != 9
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []
    assert load_run(run).model is not None


def test_a_read_only_directory_is_one_line(tiny_file, tmp_path, monkeypatch):
    """Simulated: the tests run as root, whom file modes do not stop."""
    import tempfile

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "run"))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    result = CliRunner().invoke(app, ["train", "--dataset", str(tiny_file), "--output",
                                      str(tmp_path / "run"), "--epochs", "1"])
    assert_clean_error(result, "cannot access", "Permission denied")
    assert result.exit_code == 1


def test_a_corrupt_resume_state_is_one_line(tiny_file, tmp_path):
    run = tmp_path / "run"
    train_tiny(tiny_file, run)
    (run / "resume.json").write_bytes(b"\xff{ not json")
    (run / "resume.safetensors").write_bytes(b"")
    result = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert_clean_error(result, "resumable state", "unreadable")
    assert result.exit_code == 2
