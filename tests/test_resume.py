"""Interrupts and exact resume: a run stopped mid-epoch by a signal and resumed ends bitwise equal
to one that never stopped (weights, and every metrics figure but the timings)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lstmcli.cli import app
from lstmcli.ui.render import TrainDisplay

runner = CliRunner()
# Dropout on, so that torch's generator is part of what must be restored.
TINY = ["--hidden-size", "8", "--embed-dim", "8", "--batch-size", "8", "--dropout", "0.3",
        "--threads", "1", "--seed", "3", "--epochs", "3"]
TIMING = {"train_seconds", "tokens_per_second", "seconds"}


def train(data: Path, run: Path, *extra: str):
    return runner.invoke(app, ["train", "--dataset", str(data), "--output", str(run), *TINY,
                               "--json", *extra])


def weights(run: Path) -> dict[str, bytes]:
    """Every tensor of the best checkpoint as raw bytes: bitwise, not approximately, equal.
    (The files' own bytes are compared too: their header order is fixed.)"""
    from safetensors.numpy import load_file

    return {key: value.tobytes() for key, value in load_file(run / "model.safetensors").items()}


def rows(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def assert_resumes_bitwise(parts: Path, whole: Path):
    """Resume the interrupted run in ``parts`` (`lstm train --resume`): it must end as ``whole``,
    which never stopped, did, in every weight's bytes and every metrics figure but the timings.
    Returns the resumed command's result."""
    resumed = runner.invoke(app, ["train", "--resume", str(parts), "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert weights(parts) == weights(whole)
    assert rows(parts) == rows(whole)
    return resumed


def interrupt_at(monkeypatch: pytest.MonkeyPatch, epoch: int, step: int, number: int) -> None:
    """Send ``number`` to this process right after ``step`` of ``epoch``, as Ctrl-C would."""
    seen = {"epoch": 0}
    start, on_step = TrainDisplay.on_epoch_start, TrainDisplay.on_step

    def on_epoch_start(self, epoch_now: int, steps: int) -> None:
        seen["epoch"] = epoch_now
        start(self, epoch_now, steps)

    def kill_on_step(self, step_now: int, loss: float) -> None:
        on_step(self, step_now, loss)
        if (seen["epoch"], step_now) == (epoch, step):
            os.kill(os.getpid(), number)

    monkeypatch.setattr(TrainDisplay, "on_epoch_start", on_epoch_start)
    monkeypatch.setattr(TrainDisplay, "on_step", kill_on_step)


def test_an_interrupted_and_resumed_run_ends_bitwise_equal(tiny_file, tmp_path, monkeypatch):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train(tiny_file, whole).exit_code == 0
    # What the process had before (SIG_IGN, not Python's handler, in a background job).
    before = signal.getsignal(signal.SIGINT)

    with monkeypatch.context() as patch:
        interrupt_at(patch, epoch=2, step=5, number=signal.SIGINT)
        stopped = train(tiny_file, parts)
    assert stopped.exit_code == 130, stopped.output
    assert f"interrupted at epoch 2, step 5; resume with: lstm train --resume {parts}" in \
        stopped.output
    assert (parts / "resume.json").is_file() and not (parts / ".lock").exists()
    assert len(rows(parts)) == 1
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored

    # Epoch 3's losses are in the rows: the final weights are equal too.
    resumed = assert_resumes_bitwise(parts, whole)
    assert (parts / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()
    assert [row["epoch"] for row in json.loads(resumed.output)["epochs"]] == [1, 2, 3]
    assert not (parts / "resume.json").exists() and not (parts / "resume.safetensors").exists()


def test_an_interrupt_between_epochs_resumes_at_the_next(tiny_file, tmp_path, monkeypatch):
    """A signal during validation: the next epoch starts no step; resuming still matches."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train(tiny_file, whole, "--no-diagnostics").exit_code == 0
    end = TrainDisplay.on_epoch_end

    def kill_after_first(self, row: dict) -> None:
        end(self, row)
        if row["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    with monkeypatch.context() as patch:
        patch.setattr(TrainDisplay, "on_epoch_end", kill_after_first)
        stopped = train(tiny_file, parts, "--no-diagnostics")
    assert stopped.exit_code == 143, stopped.output
    assert "interrupted at epoch 2, step 0" in stopped.output
    assert_resumes_bitwise(parts, whole)


def test_resume_refuses_what_it_cannot_do(tiny_file, tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert train(tiny_file, run).exit_code == 0
    finished = runner.invoke(app, ["train", "--resume", str(run)])
    assert finished.exit_code == 2 and "holds no resumable state" in finished.output

    with monkeypatch.context() as patch:
        interrupt_at(patch, epoch=1, step=2, number=signal.SIGINT)
        assert train(tiny_file, tmp_path / "cut").exit_code == 130
    changed = runner.invoke(app, ["train", "--resume", str(tmp_path / "cut"), "--lr", "0.1"])
    assert changed.exit_code == 2 and "--lr cannot change it" in changed.output
    zero = runner.invoke(app, ["train", "--resume", str(tmp_path / "cut"), "--dropout", "0"])
    assert zero.exit_code == 2 and "--dropout cannot change it" in zero.output

    state = json.loads((tmp_path / "cut" / "resume.json").read_text())
    state["tensors_sha256"] = "0" * 64  # as if the JSON of another step had been kept
    (tmp_path / "cut" / "resume.json").write_text(json.dumps(state))
    mixed = runner.invoke(app, ["train", "--resume", str(tmp_path / "cut")])
    assert mixed.exit_code == 2 and "does not belong to" in mixed.output


@pytest.mark.slow
def test_sigterm_to_a_real_training_exits_143_and_resumes(tiny_file, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "lstmcli", "train", "--dataset", str(tiny_file),
               "--output", str(run), *TINY, "--epochs", "40"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    assert process.stderr is not None
    for line in process.stderr:  # stderr is a pipe: one plain line per epoch
        if line.startswith("epoch 1/"):
            break
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 143, rest
    assert f"resume with: lstm train --resume {run}" in rest and "Traceback" not in rest
    assert (run / "resume.json").is_file()

    resumed = subprocess.run([sys.executable, "-m", "lstmcli", "train", "--resume", str(run),
                              "--json"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert [row["epoch"] for row in json.loads(resumed.stdout)["epochs"]] == list(range(1, 41))


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_an_interrupted_scheduled_run_with_patience_resumes_bitwise(schedule, tiny_file,
                                                                    tmp_path, monkeypatch):
    """The schedule's and early stopping's state are in the resumable state: the resumed run
    sets the same lr every epoch and ends bitwise equal."""
    extra = ("--lr-schedule", schedule, "--patience", "5")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train(tiny_file, whole, *extra).exit_code == 0
    with monkeypatch.context() as patch:
        interrupt_at(patch, epoch=2, step=5, number=signal.SIGINT)
        assert train(tiny_file, parts, *extra).exit_code == 130
    assert "schedule" in json.loads((parts / "resume.json").read_text())
    assert_resumes_bitwise(parts, whole)
    if schedule == "cosine":
        assert len({row["lr"] for row in rows(whole)}) == 3
