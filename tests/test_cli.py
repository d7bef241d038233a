"""The `lstm` command as users and scripts drive it: exit codes, output, JSON and errors."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lstmcli.cli import app
from lstmcli.nn.cells import cell_names

from helpers import make_reviews, write_jsonl

runner = CliRunner()
TINY = ["--epochs", "3", "--hidden-size", "16", "--embed-dim", "16", "--batch-size", "16",
        "--lr", "0.01"]

CELL_NAMES = cell_names()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def train_tiny(data: Path, output: Path, *extra: str):
    result = invoke("train", "--dataset", str(data), "--output", str(output), *TINY, *extra)
    assert result.exit_code == 0, result.output
    return result


def assert_clean_error(result, *fragments: str) -> None:
    """One line naming the problem, a non-zero exit code, no traceback."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:"), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_train_eval_predict_round_trip(cell, tiny_file, tmp_path):
    run = tmp_path / f"run-{cell}"
    result = train_tiny(tiny_file, run, "--cell", cell)
    assert "best epoch" in result.output
    for name in ("model.safetensors", "config.json", "tokenizer.json", "metrics.jsonl"):
        assert (run / name).is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert {"train_loss", "val_loss", "val_accuracy", "grad_norm_mean", "grad_norm_max",
            "clipped_fraction"} <= set(rows[0])

    evaluated = invoke("eval", "--model", str(run), "--split", "validation", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.output)
    assert report["split"] == "validation"
    assert sum(map(sum, report["confusion_matrix"])) == report["examples"]
    assert 0.0 <= report["accuracy"] <= 1.0

    predicted = invoke("predict", "--model", str(run), "--json", "wonderful superb food",
                       "awful boring plot")
    assert predicted.exit_code == 0, predicted.output
    lines = [json.loads(line) for line in predicted.output.splitlines()]
    assert [line["text"] for line in lines] == ["wonderful superb food", "awful boring plot"]
    for line in lines:
        assert set(line["probabilities"]) == {"negative", "positive"}
        assert abs(sum(line["probabilities"].values()) - 1) < 1e-5


def test_a_trained_model_learns_the_tiny_task(tiny_file, tmp_path):
    run = tmp_path / "run"
    result = invoke("train", "--dataset", str(tiny_file), "--output", str(run), "--epochs", "8",
                    "--lr", "0.01", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["best_val_accuracy"] >= 0.9
    predicted = invoke("predict", "--model", str(run), "the plot was wonderful")
    assert predicted.output.split()[0] == "positive"
    predicted = invoke("predict", "--model", str(run), "the plot was awful")
    assert predicted.output.split()[0] == "negative"


def test_predict_human_output_and_latest_run(tiny_file, tmp_path):
    train_tiny(tiny_file, tmp_path / "run")
    single = invoke("predict", "great movie")  # no --model: the latest run
    assert single.exit_code == 0, single.output
    # One shape whatever the count: label<TAB>probability<TAB>text.
    label, probability, text = single.output.rstrip("\n").split("\t")
    assert label in {"positive", "negative"} and 0.5 <= float(probability) <= 1.0
    assert text == "great movie"
    several = invoke("predict", "great movie", "dreadful food")
    lines = several.output.splitlines()
    assert [line.split("\t", 2)[2] for line in lines] == ["great movie", "dreadful food"]


def test_predict_reads_stdin_and_files(tiny_file, tmp_path):
    train_tiny(tiny_file, tmp_path / "run")
    from_stdin = invoke("predict", "--json", "-", input="great movie\n\nawful food\n")
    assert [json.loads(x)["text"] for x in from_stdin.output.splitlines()] == ["great movie",
                                                                               "awful food"]
    texts = tmp_path / "texts.txt"
    texts.write_text("superb\nbland\nloved it\n", encoding="utf-8")
    from_file = invoke("predict", "--file", str(texts))
    assert from_file.exit_code == 0
    assert len(from_file.output.splitlines()) == 3


def test_eval_human_output(tiny_file, tmp_path):
    train_tiny(tiny_file, tmp_path / "run")
    result = invoke("eval", "--split", "validation")
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "Confusion matrix" in result.output


def test_train_with_a_config_file_and_flag_override(tiny_file, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'[model]\ncell = "gru"\nhidden_size = 12\n[data]\ndataset = "{tiny_file}"'
                      '\n[train]\nepochs = 1\n', encoding="utf-8")
    run = tmp_path / "run"
    result = invoke("train", "--config", str(config), "--hidden-size", "10", "--output", str(run))
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["cell"] == "gru"
    assert saved["model"]["hidden_size"] == 10
    assert saved["label_names"] == ["negative", "positive"]
    assert saved["format_version"] == 1


def test_bundled_config_files_load():
    from lstmcli.config import Config, load_config
    from lstmcli.pretrain_config import PretrainConfig

    for path in sorted(Path(__file__).parents[1].glob("configs/*.toml")):
        # configs/NAME_lm.toml are `lstm pretrain`'s.
        load_config(path, PretrainConfig if path.stem.endswith("_lm") else Config).validate()


def test_unknown_cell_lists_the_valid_ones(tiny_file):
    result = invoke("train", "--dataset", str(tiny_file), "--cell", "transformer")
    assert_clean_error(result, "unknown cell 'transformer'", ", ".join(CELL_NAMES))
    assert not Path("runs").exists()


def test_unknown_config_key_is_an_error(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[model]\nhiden_size = 12\n", encoding="utf-8")
    assert_clean_error(invoke("train", "--config", str(config)), "unknown key 'hiden_size'")


def test_missing_model_directory(tmp_path):
    assert_clean_error(invoke("predict", "--model", str(tmp_path / "nope"), "hi"),
                       "does not exist")
    assert_clean_error(invoke("eval", "--model", str(tmp_path / "nope")), "does not exist")


def test_no_run_yet():
    assert_clean_error(invoke("predict", "great movie"), "no trained run found")


def test_incomplete_run_directory(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    assert_clean_error(invoke("predict", "--model", str(tmp_path / "half"), "hi"),
                       "missing model.safetensors")


def test_empty_text(tiny_file, tmp_path):
    train_tiny(tiny_file, tmp_path / "run")
    assert_clean_error(invoke("predict", "great", "   "), "text 2 is empty")
    assert_clean_error(invoke("predict", "-", input="\n\n"), "no text to classify")


def test_file_without_the_named_column(tmp_path):
    data = write_jsonl(tmp_path / "reviews.jsonl", make_reviews(20))
    result = invoke("train", "--dataset", str(data), "--text-column", "body")
    assert_clean_error(result, "body", "text")
    assert not Path("runs").exists()


def test_existing_output_is_never_replaced_silently(tiny_file, tmp_path):
    run = tmp_path / "run"
    train_tiny(tiny_file, run)
    before = (run / "model.safetensors").read_bytes()
    assert_clean_error(invoke("train", "--dataset", str(tiny_file), "--output", str(run)),
                       "--overwrite")
    assert (run / "model.safetensors").read_bytes() == before
    train_tiny(tiny_file, run, "--overwrite", "--seed", "1")
    assert (run / "model.safetensors").read_bytes() != before


def test_cells_lists_every_cell_with_equations():
    result = invoke("cells", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.output)["cells"]
    assert [row["name"] for row in rows] == list(CELL_NAMES)
    assert all("h_t" in row["equations"] for row in rows)
    human = invoke("cells")
    assert "1 - f_t" in human.output


def test_help_and_predict_do_not_import_torch_at_top_level():
    code = ("import sys; import lstmcli.cli, lstmcli.runs, lstmcli.inference.predictor; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_version_and_help():
    assert invoke("--version").output.startswith("lstmcli ")
    help_text = invoke("--help").output
    for command in ("train", "eval", "predict", "cells", "datasets"):
        assert command in help_text


def test_train_logs_one_plain_line_per_epoch_when_stderr_is_not_a_terminal(
        tiny_file, tmp_path, monkeypatch):
    """In CI (stderr piped) each epoch's row is written as soon as the epoch ends, before the
    next one starts; no progress bar, and the summary tables still go to stdout."""
    from rich.console import Console

    from lstmcli.ui.render import TrainDisplay

    events: list[str] = []

    class Log(io.StringIO):
        def write(self, text: str) -> int:
            events.extend(f"line {line}" for line in text.splitlines() if line.strip())
            return super().write(text)

    log = Log()
    # The command's stderr console, writing to a file that is not a terminal, as in CI.
    monkeypatch.setattr(sys.modules["lstmcli.cli.train"], "err", Console(file=log, soft_wrap=True))
    epoch_start = TrainDisplay.on_epoch_start

    def recording_start(self, epoch: int, steps: int) -> None:
        events.append(f"start {epoch}")
        epoch_start(self, epoch, steps)

    monkeypatch.setattr(TrainDisplay, "on_epoch_start", recording_start)
    result = train_tiny(tiny_file, tmp_path / "run")
    rows = [event for event in events if event.startswith("line epoch ")]
    assert [row.split()[2] for row in rows] == ["1/3", "2/3", "3/3"]
    for row in rows:
        assert re.fullmatch(r"line epoch \d/3  loss \d\.\d{4}  acc \d\.\d{4}  val_loss \d\.\d{4}  "
                            r"val_acc \d\.\d{4}  grad_norm \d+\.\d{3}  tok/s [\d,]+( {2}\*)?",
                            row), row
    order = [event for event in events if event.startswith(("start", "line epoch"))]
    assert order == ["start 1", rows[0], "start 2", rows[1], "start 3", rows[2]]
    assert "━" not in log.getvalue()  # no progress bar
    assert "Training" in result.stdout and "best epoch" in result.stdout


def test_eval_quality_gates(tiny_file, tmp_path):
    """--min-accuracy / --min-f1: the full report, then exit 1 and one line when below the bar."""
    train_tiny(tiny_file, tmp_path / "run")
    passed = invoke("eval", "--split", "validation", "--json", "--min-accuracy", "0",
                    "--min-f1", "0")
    assert passed.exit_code == 0, passed.output
    checks = json.loads(passed.stdout)["checks"]
    assert checks["min_accuracy"]["bar"] == 0 and checks["min_accuracy"]["passed"] is True
    assert set(checks) == {"min_accuracy", "min_f1"}
    assert "checks" not in json.loads(invoke("eval", "--split", "validation", "--json").stdout)

    # Labels swapped: the model now scores below any bar near 1.
    flipped = [{**row, "label": "negative" if row["label"] == "positive" else "positive"}
               for row in make_reviews(40, seed=5)]
    data = write_jsonl(tmp_path / "flipped.jsonl", flipped)
    failed = invoke("eval", "--dataset", str(data), "--split", "train", "--json",
                    "--min-accuracy", "0.99")
    assert failed.exit_code == 1
    report = json.loads(failed.stdout)
    check = report["checks"]["min_accuracy"]
    assert check == {"bar": 0.99, "value": report["accuracy"], "passed": False}
    assert failed.stderr.strip() == (f"error: accuracy {report['accuracy']:.4f} is below "
                                     "--min-accuracy 0.99")
    human = invoke("eval", "--dataset", str(data), "--split", "train", "--min-f1", "0.99")
    assert human.exit_code == 1
    assert "Confusion matrix" in human.stdout and "min-f1 0.99 failed" in human.stdout
    assert human.stderr.startswith("error: macro F1 ") and "--min-f1 0.99" in human.stderr
    assert len(human.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flag, value", [("--min-accuracy", "1.5"), ("--min-f1", "-0.1"),
                                         ("--min-accuracy", "nan")])
def test_eval_gate_outside_zero_one_is_a_usage_error(flag, value, tmp_path):
    result = invoke("eval", "--model", str(tmp_path / "nope"), flag, value)
    assert_clean_error(result, flag, "outside [0, 1]")
    assert result.exit_code == 2


def test_quality_checks_and_the_failure_line():
    from lstmcli.errors import CheckFailed
    from lstmcli.inference.metrics import enforce_checks, quality_checks

    report = {"accuracy": 0.849996, "macro_f1": 0.9}
    checks = quality_checks(report, {"min_accuracy": 0.85, "min_f1": 0.9})
    assert checks["min_f1"]["passed"] is True  # equal to the bar passes
    with pytest.raises(CheckFailed) as failure:
        enforce_checks(checks)
    # 0.8500 would read as passing: more digits then.
    assert str(failure.value) == "accuracy 0.849996 is below --min-accuracy 0.85"
    assert failure.value.exit_code == 1
    assert quality_checks(report, {"min_accuracy": None, "min_f1": None}) == {}


def test_eval_scores_a_data_file_in_full(tiny_file, tmp_path):
    """A file given with --dataset is scored whole (no --split needed); --max-eval-samples N
    is eval's own cap, and 0 means every row."""
    train_tiny(tiny_file, tmp_path / "run", "--max-eval-samples", "5")
    other = write_jsonl(tmp_path / "other.jsonl", make_reviews(40, seed=3))
    whole = invoke("eval", "--dataset", str(other), "--json")
    assert whole.exit_code == 0, whole.output
    report = json.loads(whole.stdout)
    assert (report["split"], report["examples"], report["split_rows"]) == ("all", 40, 40)
    assert sum(map(sum, report["confusion_matrix"])) == 40

    human = invoke("eval", "--dataset", str(other))
    assert human.stdout.splitlines()[0].startswith(f"{other}: all 40 rows scored, accuracy")
    capped = invoke("eval", "--dataset", str(other), "--max-eval-samples", "10")
    assert capped.stdout.splitlines()[0].startswith(
        f"{other}: 10 of 40 rows (--max-eval-samples) scored")
    capped = json.loads(invoke("eval", "--dataset", str(other), "--max-eval-samples", "10",
                               "--json").stdout)
    assert (capped["examples"], capped["split_rows"]) == (10, 40)
    everything = json.loads(invoke("eval", "--dataset", str(other), "--max-eval-samples", "0",
                                   "--json").stdout)
    assert everything["examples"] == 40
    # The training file itself, named again: every one of its rows.
    assert json.loads(invoke("eval", "--dataset", str(tiny_file), "--json").stdout)[
        "examples"] == 120


def test_eval_of_the_runs_validation_split_ignores_the_runs_cap(tiny_file, tmp_path):
    """Training capped validation at 5 rows; eval scores all the carved rows unless given the
    same cap, which reproduces exactly the rows (and the accuracy) training validated on."""
    summary = json.loads(train_tiny(tiny_file, tmp_path / "run", "--max-eval-samples", "5",
                                    "--json").stdout)
    full = json.loads(invoke("eval", "--split", "validation", "--json").stdout)
    assert (full["examples"], full["split_rows"]) == (12, 12)  # 10% of 120, uncapped
    same = json.loads(invoke("eval", "--split", "validation", "--max-eval-samples", "5",
                             "--json").stdout)
    assert (same["examples"], same["split_rows"]) == (5, 12)
    assert same["accuracy"] == pytest.approx(summary["best_val_accuracy"])


def test_eval_split_errors(tiny_file, tmp_path):
    train_tiny(tiny_file, tmp_path / "run")
    assert_clean_error(invoke("eval", "--split", "dev"), "unknown split 'dev'", "all")
    assert_clean_error(invoke("eval", "--dataset", "sample", "--split", "all"),
                       "--split all", "named dataset", "train, validation, test")
    assert_clean_error(invoke("eval", "--max-eval-samples", "-1"), "max_eval_samples", ">= 0")


def test_short_help_on_the_app_and_every_command():
    import typer

    commands = sorted(typer.main.get_command(app).commands)
    assert {"train", "eval", "predict", "cells", "datasets"} <= set(commands)
    for args in ([], *([name] for name in commands)):
        short, long = invoke(*args, "-h"), invoke(*args, "--help")
        assert short.exit_code == 0, (args, short.output)
        assert short.output == long.output
        assert "Usage:" in short.output
        assert re.search(r"--help +-h +Show this", short.output), short.output


def test_a_terminal_keeps_the_live_display():
    from rich.console import Console

    from lstmcli.ui.render import TrainDisplay

    terminal = Console(file=io.StringIO(), force_terminal=True)
    assert TrainDisplay(terminal, terminal).plain is False
    assert TrainDisplay(terminal, Console(file=io.StringIO())).plain is True


def test_a_run_trained_on_relative_paths_evaluates_from_another_directory(tmp_path,
                                                                          monkeypatch):
    """config.json records absolute data paths and the data directory used: eval from
    elsewhere, without $LSTM_DATA_DIR, reads the same files."""
    work, elsewhere, data_dir = tmp_path / "work", tmp_path / "elsewhere", tmp_path / "copies"
    for folder in (work, elsewhere, data_dir):
        folder.mkdir()
    write_jsonl(work / "reviews.jsonl", make_reviews(80))
    write_jsonl(work / "held.jsonl", make_reviews(30, seed=1))
    monkeypatch.chdir(work)
    monkeypatch.setenv("LSTM_DATA_DIR", "../copies")
    train_tiny(Path("reviews.jsonl"), tmp_path / "run", "--test-file", "held.jsonl")
    data = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert data["dataset"] == str(work / "reviews.jsonl")
    assert data["test_file"] == str(work / "held.jsonl")
    assert data["data_dir"] == str(data_dir)
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("LSTM_DATA_DIR")
    result = invoke("eval", "--model", str(tmp_path / "run"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["dataset"] == str(work / "reviews.jsonl")
