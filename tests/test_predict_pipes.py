"""`lstm predict` in a pipeline: answers as lines arrive, `--file -`, and a reader that quits."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

import lstmcli
from lstmcli.cli import app

from helpers import make_reviews, write_jsonl

TIMEOUT = 60.0  # generous: the first answer pays for the interpreter and the model load


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pipes")
    data = write_jsonl(folder / "tiny.jsonl", make_reviews(60))
    run = folder / "run"
    with pytest.MonkeyPatch.context() as patch:
        for variable in ("LSTM_RUNS_DIR", "LSTM_STATE_DIR", "LSTM_CACHE_DIR"):
            patch.setenv(variable, str(folder / variable.lower()))
        result = CliRunner().invoke(app, ["train", "--dataset", str(data), "--output", str(run),
                                          "--epochs", "1", "--hidden-size", "8",
                                          "--embed-dim", "8"])
    assert result.exit_code == 0, result.output
    return run


def lstm_process(*args: str, **popen) -> subprocess.Popen:
    """`lstm ARGS` from this checkout in a fresh interpreter."""
    path = [str(Path(lstmcli.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    return subprocess.Popen([sys.executable, "-m", "lstmcli", *args], env=env, text=True,
                            **popen)


@pytest.mark.parametrize("how", [["-"], ["--file", "-"]])
def test_each_line_is_answered_before_the_next_is_written(trained_run, how):
    process = lstm_process("predict", "--model", str(trained_run), *how,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    answers: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [answers.put(line) for line in process.stdout],
                              daemon=True)
    reader.start()
    try:
        for text in ("great movie", "awful food", "loved every minute"):
            process.stdin.write(text + "\n")
            process.stdin.flush()
            # stdin stays open: the answer must come without EOF or a full chunk.
            label, probability, echoed = answers.get(timeout=TIMEOUT).rstrip("\n").split("\t")
            assert echoed == text and label in {"positive", "negative"}
            assert 0.0 <= float(probability) <= 1.0
        process.stdin.close()
        assert process.wait(timeout=TIMEOUT) == 0, process.stderr.read()
    finally:
        process.kill()
        process.wait()


def test_a_reader_that_quits_ends_quietly(trained_run, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("great movie and superb food\n" * 20_000, encoding="utf-8")
    process = lstm_process("predict", "--model", str(trained_run), "--file", str(big),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = process.stdout.readline()  # `| head -1`
    process.stdout.close()
    _, stderr = process.communicate(timeout=TIMEOUT * 2)
    assert first.count("\t") == 2
    assert process.returncode == 141
    assert stderr == ""


def test_file_dash_reads_stdin(trained_run):
    result = CliRunner().invoke(app, ["predict", "--model", str(trained_run), "--file", "-"],
                                input="great movie\n\nawful food\n")
    assert result.exit_code == 0, result.output
    assert [line.split("\t")[2] for line in result.output.splitlines()] == ["great movie",
                                                                          "awful food"]
