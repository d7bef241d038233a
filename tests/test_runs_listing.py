"""`lstm runs` and the README.md model card every finished run gets."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

import lstmcli
from lstmcli.cli import app
from lstmcli.modelcard import git_commit

from helpers import make_reviews, write_jsonl

runner = CliRunner()
TINY = ["--epochs", "2", "--hidden-size", "8", "--embed-dim", "8", "--batch-size", "16"]


def train(data: Path, *extra: str) -> None:
    result = runner.invoke(app, ["train", "--dataset", str(data), *TINY, *extra])
    assert result.exit_code == 0, result.output


def test_a_finished_run_has_a_model_card(tmp_path):
    data = write_jsonl(tmp_path / "tiny.jsonl", make_reviews(60))
    run = tmp_path / "card-run"
    train(data, "--output", str(run), "--cell", "gru")
    card = (run / "README.md").read_text(encoding="utf-8")
    meta = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert card.startswith("# card-run: gru sentiment classifier")
    assert str(data) in card and "`positive`" in card
    assert f"best epoch | {meta['best']['epoch']} of 2" in card
    test = meta.get("test_accuracy")  # a single file has no test split
    assert f"| {'n/a' if test is None else f'{test:.4f}'} |" in card
    assert f"lstmcli {lstmcli.__version__}, torch {meta['torch_version']}" in card
    commit = git_commit(Path(lstmcli.__file__).parent)
    assert (f"git commit: `{commit}`" if commit else "not inside a git checkout") in card
    # The card is lstmcli's own file: --overwrite replaces the run, card included.
    train(data, "--output", str(run), "--overwrite", "--cell", "rnn")
    assert (run / "README.md").read_text(encoding="utf-8").startswith("# card-run: rnn")


def test_the_card_holds_the_exact_command_line(tmp_path, monkeypatch):
    from lstmcli.modelcard import command_line

    assert command_line(["/venv/bin/lstm", "train", "--text-column", "my body"]) == (
        "lstm train --text-column 'my body'")
    data = write_jsonl(tmp_path / "tiny.jsonl", make_reviews(60))
    argv = ["/somewhere/lstm", "train", "--dataset", str(data), "--output", "r", *TINY]
    monkeypatch.setattr("sys.argv", argv)
    result = runner.invoke(app, argv[1:])
    assert result.exit_code == 0, result.output
    assert command_line(argv) in (tmp_path / "r" / "README.md").read_text(encoding="utf-8")


def test_runs_lists_every_run_under_the_root(tmp_path):
    data = write_jsonl(tmp_path / "tiny.jsonl", make_reviews(60))
    train(data, "--cell", "gru", "--output", str(tmp_path / "runs" / "a"))
    train(data, "--cell", "lstm", "--output", str(tmp_path / "runs" / "b"))
    (tmp_path / "runs" / "not-a-run").mkdir()
    broken = tmp_path / "runs" / "c"
    broken.mkdir()
    (broken / "config.json").write_text("[", encoding="utf-8")
    (broken / "model.safetensors").write_bytes(b"")
    listed = runner.invoke(app, ["runs", "--json"])  # default: $LSTM_RUNS_DIR (conftest)
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)["runs"]
    assert [Path(row["run_dir"]).name for row in rows] == ["a", "b", "c"]
    assert [row["cell"] for row in rows] == ["gru", "lstm", None]
    assert rows[0]["dataset"] == str(data) and rows[0]["best_epoch"] in (1, 2)
    assert 0 <= rows[0]["val_accuracy"] <= 1
    assert rows[0]["date"] and "error" in rows[2]
    table = runner.invoke(app, ["runs", str(tmp_path / "runs")])
    assert table.exit_code == 0, table.output
    assert "gru" in table.output and "lstm" in table.output and "unreadable" in table.output
    one = runner.invoke(app, ["runs", "--json", str(tmp_path / "runs" / "a")])
    assert [row["cell"] for row in json.loads(one.output)["runs"]] == ["gru"]


def test_runs_on_an_empty_or_missing_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    assert runner.invoke(app, ["runs", str(tmp_path / "empty")]).output.startswith("no runs")
    missing = runner.invoke(app, ["runs", str(tmp_path / "missing")])
    assert missing.exit_code == 2 and missing.output.startswith("error:")
