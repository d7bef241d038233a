"""The weights' moving average (``[train] ema_decay``): its arithmetic against a reference written
here, that validation, the checkpoint and the test see it while training steps the weights
themselves, and that an interrupted run keeps it exactly."""

from __future__ import annotations

import json
import math
import signal

import numpy as np
import pytest
import torch
from test_cli import assert_clean_error
from test_resume import assert_resumes_bitwise, interrupt_at, rows, train, weights
from torch import nn
from typer.testing import CliRunner

from lstmcli.cli import app
from lstmcli.config import TrainConfig
from lstmcli.errors import ConfigError
from lstmcli.training.average import WeightAverage

runner = CliRunner()


def test_the_average_is_the_bias_corrected_exponential_mean_of_the_steps():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    decay = 0.9
    average = WeightAverage(model, decay)
    seen = []
    for _ in range(7):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter))
        seen.append([parameter.detach().numpy().copy() for parameter in model.parameters()])
        average.update()
    # sum_i (1 - d) d^(n - i) w_i / (1 - d^n): weights that sum to one over the steps taken.
    n = len(seen)
    factors = np.array([(1 - decay) * decay ** (n - i) for i in range(1, n + 1)])
    factors /= 1 - decay ** n
    assert math.isclose(factors.sum(), 1.0)
    for index, got in enumerate(average.averaged()):
        expected = sum(f * step[index] for f, step in zip(factors, seen, strict=True))
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_before_any_step_the_average_is_the_weights_and_after_one_step_the_step():
    model = nn.Linear(2, 2)
    average = WeightAverage(model, 0.999)
    for got, parameter in zip(average.averaged(), model.parameters(), strict=True):
        assert torch.equal(got, parameter)
    average.update()  # one step: nothing of the zeros it started from may remain
    for got, parameter in zip(average.averaged(), model.parameters(), strict=True):
        torch.testing.assert_close(got, parameter.detach())


def test_applied_swaps_the_average_in_and_the_weights_back_even_on_error():
    model = nn.Linear(2, 2)
    average = WeightAverage(model, 0.5)
    average.update()
    with torch.no_grad():
        model.weight.add_(1.0)
    own = model.weight.detach().clone()
    with pytest.raises(RuntimeError), average.applied():
        assert torch.allclose(model.weight, own - 1.0)
        raise RuntimeError("validation failed")
    assert torch.equal(model.weight, own)


@pytest.mark.parametrize("value", [-0.1, 1.0, math.nan])
def test_ema_decay_must_be_below_one(value):
    with pytest.raises(ConfigError, match=r"^ema_decay must be in \[0, 1\), got"):
        TrainConfig(ema_decay=value).validate()


def test_a_bad_ema_decay_flag_is_one_line_and_writes_nothing(tiny_file, tmp_path):
    result = runner.invoke(app, ["train", "--dataset", str(tiny_file), "--output",
                                 str(tmp_path / "run"), "--ema-decay", "1"])
    assert_clean_error(result, "ema_decay must be in [0, 1), got 1.0")
    assert result.exit_code == 2 and not (tmp_path / "run").exists()


def test_training_steps_the_weights_and_the_checkpoint_holds_the_average(tiny_file, tmp_path):
    """The optimiser never sees the average: with a decay so small that the average is the last
    step's weights, one epoch ends on the plain run's checkpoint; with 0.9 the checkpoint is
    another model, and evaluating it gives the validation accuracy the run recorded."""
    plain, last, averaged = tmp_path / "plain", tmp_path / "last", tmp_path / "averaged"
    assert train(tiny_file, plain, "--epochs", "1").exit_code == 0
    assert train(tiny_file, last, "--epochs", "1", "--ema-decay", "1e-9").exit_code == 0
    from safetensors.numpy import load_file

    expected, got = load_file(plain / "model.safetensors"), load_file(last / "model.safetensors")
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=1e-7, err_msg=key)

    result = train(tiny_file, averaged, "--epochs", "1", "--ema-decay", "0.9")
    assert result.exit_code == 0, result.output
    assert weights(averaged) != weights(plain)
    config = json.loads((averaged / "config.json").read_text())
    assert config["train"]["ema_decay"] == 0.9
    recorded = rows(averaged)[0]
    evaluated = runner.invoke(app, ["eval", "--model", str(averaged), "--split", "validation",
                                    "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["accuracy"] == pytest.approx(recorded["val_accuracy"])


def test_an_interrupted_averaged_run_resumes_bitwise(tiny_file, tmp_path, monkeypatch):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train(tiny_file, whole, "--ema-decay", "0.8").exit_code == 0
    with monkeypatch.context() as patch:
        interrupt_at(patch, epoch=2, step=5, number=signal.SIGINT)
        stopped = train(tiny_file, parts, "--ema-decay", "0.8")
    assert stopped.exit_code == 130, stopped.output
    state = json.loads((parts / "resume.json").read_text())
    assert state["average"]["steps"] > 0
    assert_resumes_bitwise(parts, whole)


def test_resume_refuses_a_state_that_lost_its_average(tiny_file, tmp_path, monkeypatch):
    parts = tmp_path / "parts"
    with monkeypatch.context() as patch:
        interrupt_at(patch, epoch=1, step=3, number=signal.SIGINT)
        assert train(tiny_file, parts, "--ema-decay", "0.8").exit_code == 130
    state = json.loads((parts / "resume.json").read_text())
    state["average"] = {}
    (parts / "resume.json").write_text(json.dumps(state))
    resumed = runner.invoke(app, ["train", "--resume", str(parts)])
    assert_clean_error(resumed, "holds no weight average")
    assert resumed.exit_code != 0 and (parts / "resume.json").is_file()
