"""Learning-rate schedules and early stopping: each schedule's lr sequence against its
definition (onecycle against torch's OneCycleLR), --patience ending a run, the lr in
metrics.jsonl, and a bad schedule name as one clear error."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from lstmcli.cli import app
from lstmcli.config import Config
from lstmcli.errors import ConfigError
from lstmcli.training import run as run_module
from lstmcli.training.schedule import Schedule

runner = CliRunner()
LR = 0.01
TINY = ["--hidden-size", "8", "--embed-dim", "8", "--batch-size", "16", "--threads", "1",
        "--lr", str(LR), "--no-diagnostics"]


def lrs(name: str, epochs: int, warmup: int = 0, losses: list[float] | None = None) -> list:
    schedule = Schedule(name, LR, epochs, warmup, patience=0)
    values = []
    for epoch in range(1, epochs + 1):
        values.append(schedule.lr(epoch))
        schedule.end_epoch(losses[epoch - 1] if losses else 1.0, improved=True)
    return values


def test_constant_with_linear_warmup():
    assert lrs("constant", 5, warmup=2) == pytest.approx([LR / 2, LR, LR, LR, LR])
    assert lrs("constant", 3) == [LR] * 3


def test_cosine_anneals_to_zero_after_the_warmup():
    expected = [LR * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)]
    assert lrs("cosine", 4) == pytest.approx(expected)
    assert lrs("cosine", 5, warmup=1) == pytest.approx([LR, *expected])


@pytest.mark.parametrize(("epochs", "warmup"), [(10, 3), (10, 0), (6, 2)])
def test_onecycle_matches_torchs_onecycle_lr(epochs, warmup):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LR, total_steps=epochs, pct_start=warmup / epochs if warmup else 0.3,
        cycle_momentum=False)
    expected = []
    for _ in range(epochs):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs("onecycle", epochs, warmup) == pytest.approx(expected, rel=1e-12)


def test_plateau_halves_after_an_epoch_without_a_lower_validation_loss():
    losses = [1.0, 0.9, 0.95, 0.8, 0.85, 0.85]
    assert lrs("plateau", 6, losses=losses) == pytest.approx(
        [LR, LR, LR, LR / 2, LR / 2, LR / 4])


def test_an_unknown_schedule_is_one_clear_error():
    config = Config.from_dict({"train": {"lr_schedule": "linear", "patience": 2}})
    with pytest.raises(ConfigError, match="unknown lr_schedule 'linear'; choose one of: "
                                          "constant, cosine, onecycle, plateau"):
        config.validate()
    with pytest.raises(ConfigError, match="warmup_epochs"):
        Config.from_dict({"train": {"warmup_epochs": 20, "epochs": 3}}).validate()


def test_the_lr_of_each_epoch_is_in_metrics(tiny_file, tmp_path):
    result = runner.invoke(app, ["train", "--dataset", str(tiny_file), "--output",
                                 str(tmp_path / "run"), *TINY, "--epochs", "4",
                                 "--lr-schedule", "cosine", "--warmup-epochs", "1", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
            .splitlines()]
    assert [row["lr"] for row in rows] == pytest.approx(lrs("cosine", 4, warmup=1))
    assert json.loads(result.output)["stopped_early"] is False


def test_patience_stops_early_and_says_so(tiny_file, tmp_path, monkeypatch):
    """Validation logits that never change: epoch 1 is the best, epochs 2 and 3 do not
    improve, so --patience 2 ends the run after epoch 3 of 10."""
    monkeypatch.setattr(run_module, "predict_logits",
                        lambda model, sequences, *args: torch.zeros(len(sequences), 2))
    args = ["train", "--dataset", str(tiny_file), *TINY, "--epochs", "10", "--patience", "2"]
    result = runner.invoke(app, [*args, "--output", str(tmp_path / "json"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["stopped_early"] is True and summary["stopped_epoch"] == 3
    assert [row["epoch"] for row in summary["epochs"]] == [1, 2, 3]
    assert summary["best_epoch"] == 1
    shown = runner.invoke(app, [*args, "--output", str(tmp_path / "text")])
    assert shown.exit_code == 0, shown.output
    assert "stopped early after epoch 3" in shown.output
