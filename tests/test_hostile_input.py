"""Hostile input at the command line: invalid hyperparameters, invalid UTF-8, escape sequences
in texts, non-finite numbers in JSON. Each gives one clear line or safe output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_cli import assert_clean_error, train_tiny
from typer.testing import CliRunner

from lstmcli.cli import app
from lstmcli.jsonout import dumps
from lstmcli.ui.text import printable

runner = CliRunner()


@pytest.mark.parametrize("flags, fragment", [
    (["--lr", "1e38"], "lr must be in (0, 10]"),
    (["--lr", "nan"], "lr must be in (0, 10]"),
    (["--lr", "0"], "lr must be in (0, 10]"),
    (["--weight-decay", "-1"], "weight_decay must be in [0, 1]"),
    (["--clip-norm", "nan"], "clip_norm must be a finite number >= 0"),
    (["--clip-norm", "inf"], "clip_norm must be a finite number >= 0"),
    (["--dropout", "nan"], "dropout must be in [0, 1)"),
    (["--gate-bias", "nan"], "gate_bias must be a number in [-30, 30]"),
    (["--positive-threshold", "inf"], "positive_threshold must be a finite number"),
    (["--val-fraction", "nan"], "val_fraction must be in (0, 1)"),
])
def test_invalid_hyperparameters_are_refused_up_front(flags, fragment, tiny_file, tmp_path):
    result = runner.invoke(app, ["train", "--dataset", str(tiny_file), "--output",
                                 str(tmp_path / "run"), *flags])
    assert_clean_error(result, fragment)
    assert result.exit_code == 2
    assert not (tmp_path / "run").exists()


def test_escape_sequences_in_texts_never_reach_the_terminal_raw(tiny_file, tmp_path):
    run = tmp_path / "run"
    train_tiny(tiny_file, run)
    nasty = "great \x1b[2J\x1b[31mfood\u202e evil"
    result = runner.invoke(app, ["predict", "--model", str(run), nasty, "plain food"])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\u202e" not in result.output
    assert "\\x1b[2J" in result.output and "\\u202e" in result.output
    explained = runner.invoke(app, ["explain", "--model", str(run), nasty])
    assert explained.exit_code == 0, explained.output
    assert "\x1b" not in explained.output and "\u202e" not in explained.output
    as_json = runner.invoke(app, ["predict", "--model", str(run), "--json", nasty])
    assert json.loads(as_json.output)["text"] == nasty  # machines get the text unchanged


def test_printable_escapes_controls_and_bidi_only():
    assert printable("plain, é 中 ✓\ttab") == "plain, é 中 ✓\ttab"
    assert printable("a\x00b\x7f\x9bc") == "a\\x00b\\x7f\\x9bc"
    assert printable("\u2066x\u2069") == "\\u2066x\\u2069"


def test_invalid_utf8_in_an_argument_is_one_clear_line(tiny_file, tmp_path):
    run = tmp_path / "run"
    train_tiny(tiny_file, run)
    env = {**os.environ, "LSTM_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run([sys.executable.encode(), b"-m", b"lstmcli", b"predict", b"--model",
                           str(run).encode(), b"caf\xe9 good"],
                          capture_output=True, env=env, check=False)
    assert done.returncode == 2
    err = done.stderr.decode()
    assert "Traceback" not in err
    assert "TEXT argument 1 is not valid UTF-8 (byte 0xe9)" in err
    done = subprocess.run([sys.executable.encode(), b"-m", b"lstmcli", b"explain", b"--model",
                           str(run).encode(), b"caf\xe9 good"],
                          capture_output=True, env=env, check=False)
    assert done.returncode == 2
    assert b"Traceback" not in done.stderr and b"not valid UTF-8 (byte 0xe9)" in done.stderr


def test_json_never_carries_nan_or_infinity():
    line = dumps({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}})
    assert json.loads(line) == {"a": None, "b": [1.0, None], "c": {"d": None}}
    assert "NaN" not in line and "Infinity" not in line
