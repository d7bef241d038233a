"""Run directories under contention and attack: one training per directory, --overwrite only
over runs, and no write through a planted link."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_cli import assert_clean_error
from typer.testing import CliRunner

from lstmcli.cli import app
from lstmcli.data.tokenizer import Tokenizer
from lstmcli.rundir import LOCK_FILE

runner = CliRunner()
TINY = ["--epochs", "1", "--hidden-size", "8", "--embed-dim", "8", "--batch-size", "16"]


def train(data, output, *extra):
    return runner.invoke(app, ["train", "--dataset", str(data), "--output", str(output),
                               *TINY, *extra])


@pytest.fixture
def sleeper():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def test_a_directory_being_trained_into_is_refused_at_once(tiny_file, tmp_path, sleeper):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(f"{sleeper}\n")
    result = train(tiny_file, run, "--overwrite")
    assert_clean_error(result, "being written by another lstm train", f"process {sleeper}")
    assert result.exit_code == 2
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]


def test_the_refusal_names_the_command_that_holds_the_lock(tiny_file, tmp_path, sleeper):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(f"{sleeper} compare\n")
    result = train(tiny_file, run, "--overwrite")
    assert_clean_error(result, "being written by another lstm compare", f"process {sleeper}")


def test_a_stale_lock_is_taken_over(tiny_file, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(f"{dead.pid}\n")
    result = train(tiny_file, run, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (run / "model.safetensors").is_file() and not (run / LOCK_FILE).exists()


@pytest.mark.slow
def test_two_trainings_into_one_directory_leave_one_consistent_run(tmp_path):
    from helpers import make_reviews, write_jsonl

    small = write_jsonl(tmp_path / "small.jsonl", make_reviews(120, seed=1))
    large = write_jsonl(tmp_path / "large.jsonl", make_reviews(600, seed=2))
    run = tmp_path / "run"
    env = {**os.environ, "LSTM_STATE_DIR": str(tmp_path / "state")}
    processes = [
        subprocess.Popen([sys.executable, "-m", "lstmcli", "train", "--dataset", str(data),
                          "--output", str(run), *TINY, "--vocab-size", size, "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for data, size in ((small, "30"), (large, "60"))
    ]
    outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in processes]
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 2], outcomes
    refused = next(err for code, err in outcomes if code == 2)
    assert "Traceback" not in refused
    assert "being written by another" in refused or "already exists" in refused
    meta = json.loads((run / "config.json").read_text())
    assert Tokenizer.load(run / "tokenizer.json").vocab_size == meta["vocab_size"]
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["epoch"] for row in rows] == [1]


def test_overwrite_replaces_runs_only(tiny_file, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    (mine / "notes.txt").write_text("keep me")
    result = train(tiny_file, mine, "--overwrite")
    assert_clean_error(result, "--overwrite replaces lstmcli runs only", "notes.txt")
    (mine / "notes.txt").unlink()
    result = train(tiny_file, mine, "--overwrite")
    assert_clean_error(result, "was not written by lstmcli")
    assert (mine / "config.json").read_text() == '{"my": "settings"}'

    run = tmp_path / "run"
    assert train(tiny_file, run).exit_code == 0
    again = train(tiny_file, run, "--overwrite", "--seed", "1")
    assert again.exit_code == 0, again.output
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == 1


def test_a_link_planted_in_the_run_is_replaced_not_followed(tiny_file, tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    save = Tokenizer.save

    def plant_then_save(self, path):
        for name in ("metrics.jsonl", "config.json", "model.safetensors"):
            (path.parent / name).symlink_to(victim)
        save(self, path)

    monkeypatch.setattr(Tokenizer, "save", plant_then_save)
    result = train(tiny_file, run)
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious"
    for name in ("metrics.jsonl", "config.json", "model.safetensors"):
        assert not (run / name).is_symlink(), name


def test_bad_data_leaves_no_directory(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\n")
    result = train(bad, tmp_path / "run")
    assert result.exit_code == 2
    assert not (tmp_path / "run").exists()


def test_a_corrupt_latest_run_pointer_falls_back_to_the_runs_root(tiny_file, tmp_path):
    run = tmp_path / "runs" / "only"
    assert train(tiny_file, run).exit_code == 0
    for garbage in (b"\xff\xfe\x00bad", b"\x00", b"/no/such/run\n"):
        (tmp_path / "state" / "latest_run").write_bytes(garbage)
        result = runner.invoke(app, ["predict", "--json", "superb food"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["text"] == "superb food"


def test_run_files_are_as_readable_as_the_umask_allows(tiny_file, tmp_path):
    old = os.umask(0o027)
    try:
        run = tmp_path / "run"
        assert train(tiny_file, run).exit_code == 0
    finally:
        os.umask(old)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "metrics.jsonl"):
        assert (run / name).stat().st_mode & 0o777 == 0o640, name


def test_temporaries_a_killed_training_left_are_cleared(tiny_file, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".model.safetensors.k1ll3d.tmp").write_bytes(b"half a file")
    (run / "tokenizer.json").write_text("{}")  # what a run killed in its first epoch leaves
    result = train(tiny_file, run, "--overwrite")
    assert result.exit_code == 0, result.output
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))


def test_invalid_utf8_on_stdin_is_one_line(tiny_file, tmp_path):
    run = tmp_path / "run"
    assert train(tiny_file, run).exit_code == 0
    done = subprocess.run([sys.executable, "-m", "lstmcli", "predict", "--model", str(run), "-"],
                          input=b"good food\n\xff bad\n", capture_output=True, check=False,
                          env={**os.environ, "LSTM_STATE_DIR": str(tmp_path / "state")})
    assert done.returncode == 2
    assert b"Traceback" not in done.stderr
    assert b"standard input line 2 is not valid UTF-8" in done.stderr
