"""`lstm compare`: the runs it makes, the figures it derives from them, the statistics behind its
verdicts, and how it continues, refuses and fails."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lstmcli.cli import app
from lstmcli.errors import ConfigError, TrainingDiverged
from lstmcli.nn.cells import DEFAULT_CELL, cell_names
from lstmcli.stats import incomplete_beta, mean, sample_sd, t_two_sided_p, welch
from lstmcli.training.compare_plan import parse_seeds, plan_comparison

runner = CliRunner()
# Two cells, two seeds, one short epoch of the bundled sample: seconds, not minutes.
TINY = ["--dataset", "sample", "--max-train-samples", "240", "--epochs", "1", "--hidden-size",
        "8", "--embed-dim", "8", "--batch-size", "32", "--threads", "1", "--no-diagnostics"]
COMPARE = ["compare", "--cells", "rnn,gru", "--seeds", "2", *TINY]
RUN_KEYS = {"variant", "cell", "seed", "run_dir", "status", "best_epoch", "epochs",
            "val_accuracy", "test_accuracy", "train_seconds", "tokens_per_second", "error"}
TEST_KEYS = {"difference", "t", "df", "p", "reason", "significant"}


def strict(text: str) -> dict:
    """Parse JSON that must be strict: NaN and Infinity are not JSON."""
    def refuse(token: str) -> None:
        raise AssertionError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One real comparison, trained once for the module: rnn and gru, seeds 0 and 1."""
    root = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("RUNS", "STATE", "CACHE"):
            patch.setenv(f"LSTM_{name}_DIR", str(root / name.lower()))
        patch.chdir(root)
        result = runner.invoke(app, [*COMPARE, "--output", str(root / "out"), "--json"])
    assert result.exit_code == 0, result.output
    return root / "out", strict(result.stdout)


@pytest.fixture
def copy_of(compared, tmp_path) -> Path:
    """A copy of the module's comparison that a test may change."""
    target = tmp_path / "out"
    shutil.copytree(compared[0], target)
    return target


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("train() was called")

    monkeypatch.setattr("lstmcli.training.run.train", refuse)


def run_files(run_dir: Path) -> tuple[dict, list[dict]]:
    meta = json.loads((run_dir / "config.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return meta, rows


# ---------------------------------------------------------------------------------------------
# The comparison and its figures


def test_every_variant_and_seed_is_a_complete_run_in_its_own_directory(compared):
    output, payload = compared
    assert sorted(p.name for p in output.iterdir()) == ["compare.json", "gru", "rnn"]
    for cell in ("rnn", "gru"):
        assert sorted(p.name for p in (output / cell).iterdir()) == ["seed-0", "seed-1"]
        for seed in (0, 1):
            run_dir = output / cell / f"seed-{seed}"
            for name in ("model.safetensors", "config.json", "tokenizer.json", "metrics.jsonl",
                         "README.md"):
                assert (run_dir / name).is_file(), run_dir / name
            meta, _ = run_files(run_dir)
            assert meta["model"]["cell"] == cell and meta["train"]["seed"] == seed
            assert meta["model"]["hidden_size"] == 8 and meta["train"]["epochs"] == 1
    assert [(row["variant"], row["seed"]) for row in payload["runs"]] == [
        ("rnn", 0), ("rnn", 1), ("gru", 0), ("gru", 1)]
    assert {row["status"] for row in payload["runs"]} == {"trained"}
    # The seed changes the run: two seeds that trained identically would measure no noise.
    assert run_files(output / "gru" / "seed-0")[0]["weights_sha256"] != \
        run_files(output / "gru" / "seed-1")[0]["weights_sha256"]


def test_aggregates_are_the_mean_and_sd_of_the_runs_own_files(compared):
    output, payload = compared
    for variant in ("rnn", "gru"):
        metas, speeds, seconds = [], [], []
        for seed in (0, 1):
            meta, rows = run_files(output / variant / f"seed-{seed}")
            metas.append(meta)
            seconds.append(sum(row["train_seconds"] for row in rows))
            speeds.append(statistics.mean(row["tokens_per_second"] for row in rows))
        entry = payload["variants"][variant]
        assert entry["n"] == 2 and entry["failed"] == 0
        for key, values in (
                ("val_accuracy", [meta["best"]["val_accuracy"] for meta in metas]),
                ("test_accuracy", [meta["test_accuracy"] for meta in metas]),
                ("train_seconds", seconds), ("tokens_per_second", speeds)):
            assert entry[key]["mean"] == pytest.approx(statistics.mean(values), rel=1e-12)
            assert entry[key]["sd"] == pytest.approx(statistics.stdev(values), rel=1e-9,
                                                     abs=1e-15)


def test_the_baseline_is_first_without_lstm_and_the_others_are_tested_against_it(compared):
    _, payload = compared
    assert payload["baseline"] == "rnn" and payload["variants"]["rnn"]["vs_baseline"] is None
    vs = payload["variants"]["gru"]["vs_baseline"]
    for key in ("val_accuracy", "test_accuracy"):
        runs = {variant: [row[key] for row in payload["runs"] if row["variant"] == variant]
                for variant in ("rnn", "gru")}
        expected = welch(runs["gru"], runs["rnn"])
        assert set(vs[key]) == TEST_KEYS
        assert vs[key]["difference"] == pytest.approx(
            statistics.mean(runs["gru"]) - statistics.mean(runs["rnn"]))
        if expected.p is None:  # identical accuracies on every seed: said, not computed
            assert vs[key]["p"] is None and vs[key]["reason"]
        else:
            assert vs[key]["p"] == pytest.approx(expected.p)
            assert vs[key]["significant"] == (vs[key]["p"] < 0.05)


def test_json_is_strict_complete_and_also_written_to_compare_json(compared):
    output, payload = compared
    assert strict((output / "compare.json").read_text()) == payload
    assert {"output", "status", "test", "alpha", "baseline", "seeds", "variants",
            "runs"} <= set(payload)
    assert payload["status"] == "done" and payload["alpha"] == 0.05 and payload["seeds"] == [0, 1]
    assert "Welch" in payload["test"] and "two-sided" in payload["test"]
    assert all(set(row) == RUN_KEYS for row in payload["runs"])
    entry = payload["variants"]["gru"]
    assert {"cell", "config_file", "n", "failed", "val_accuracy", "test_accuracy",
            "train_seconds", "tokens_per_second", "vs_baseline", "config"} <= set(entry)
    assert entry["config"]["model"]["cell"] == "gru" and entry["config"]["train"]["lr"] == 0.003


# ---------------------------------------------------------------------------------------------
# Continuing, refusing, failing


def test_the_same_command_again_reuses_every_finished_run(copy_of, no_training):
    before = {p: p.stat().st_mtime_ns for p in copy_of.rglob("config.json")}
    result = runner.invoke(app, [*COMPARE, "--output", str(copy_of)])
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in copy_of.rglob("config.json")} == before
    assert "baseline" in result.stdout and "Welch" in result.stdout
    assert "* marks p < 0.05" in result.stdout
    payload = strict((copy_of / "compare.json").read_text())
    assert {row["status"] for row in payload["runs"]} == {"reused"}


def test_only_the_unfinished_run_is_trained_again(copy_of, compared, monkeypatch):
    from lstmcli.training import run

    unfinished = copy_of / "gru" / "seed-1"
    (unfinished / "README.md").unlink()  # what a run stopped before it returned lacks
    calls = []
    real = run.train

    def counting(config, *args, **kwargs):
        calls.append((config.model.cell, config.train.seed))
        return real(config, *args, **kwargs)

    monkeypatch.setattr(run, "train", counting)
    result = runner.invoke(app, [*COMPARE, "--output", str(copy_of), "--json"])
    assert result.exit_code == 0, result.output
    assert calls == [("gru", 1)]
    payload = strict(result.stdout)
    assert [row["status"] for row in payload["runs"]] == ["reused", "reused", "reused",
                                                          "trained"]
    assert (unfinished / "README.md").is_file()
    # The same seed trains the same model: the figures do not move.
    assert payload["variants"]["gru"]["val_accuracy"] == \
        compared[1]["variants"]["gru"]["val_accuracy"]


def test_a_run_with_another_budget_is_refused_not_mixed(copy_of, no_training):
    before = (copy_of / "rnn" / "seed-0" / "config.json").read_bytes()
    result = runner.invoke(app, [*COMPARE, "--output", str(copy_of), "--lr", "0.01"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "was trained with another config" in lines[0] and "train.lr: 0.003" in lines[0]
    assert "--overwrite" in lines[0]
    assert (copy_of / "rnn" / "seed-0" / "config.json").read_bytes() == before


def test_a_finished_run_with_damaged_metrics_is_one_line_not_a_traceback(copy_of, no_training):
    (copy_of / "rnn" / "seed-0" / "metrics.jsonl").write_text("{not json\n")
    result = runner.invoke(app, [*COMPARE, "--output", str(copy_of)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "metrics.jsonl cannot be read" in lines[-1]


def test_a_diverged_run_is_reported_failed_and_the_command_exits_1(copy_of, monkeypatch):
    (copy_of / "gru" / "seed-0" / "README.md").unlink()

    def diverges(config, *args, **kwargs):
        raise TrainingDiverged("training diverged at epoch 1, step 2: the loss is nan")

    monkeypatch.setattr("lstmcli.training.run.train", diverges)
    result = runner.invoke(app, [*COMPARE, "--output", str(copy_of), "--json"])
    assert result.exit_code == 1
    payload = strict(result.stdout)
    failed = [row for row in payload["runs"] if row["status"] == "failed"]
    assert [(row["variant"], row["seed"]) for row in failed] == [("gru", 0)]
    assert "diverged" in failed[0]["error"] and failed[0]["val_accuracy"] is None
    gru = payload["variants"]["gru"]
    assert gru["n"] == 1 and gru["failed"] == 1 and gru["val_accuracy"]["sd"] is None
    assert gru["vs_baseline"]["val_accuracy"]["p"] is None
    assert "at least 2 runs" in gru["vs_baseline"]["val_accuracy"]["reason"]
    assert result.stderr.strip().startswith("error: 1 of 4 runs failed")
    human = runner.invoke(app, [*COMPARE, "--output", str(copy_of)])
    assert human.exit_code == 1 and "1/2" in human.stdout
    assert "failed: gru seed 0: training diverged" in human.stdout


def test_an_interrupt_keeps_the_finished_runs_and_says_how_to_continue(tmp_path, monkeypatch):
    def interrupted(config, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("lstmcli.training.run.train", interrupted)
    result = runner.invoke(app, [*COMPARE, "--output", str(tmp_path / "out")])
    assert result.exit_code == 130
    assert "interrupted while training rnn seed 0" in result.stderr
    assert f"--output {tmp_path / 'out'} to continue" in result.stderr
    assert strict((tmp_path / "out" / "compare.json").read_text())["status"] == "interrupted"


def test_an_unknown_cell_is_one_line_and_exit_2(tmp_path):
    result = runner.invoke(app, ["compare", "--cells", "rnn,nope", "--output",
                                 str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        f"error: --cells: unknown cell 'nope'; choose one of: {', '.join(cell_names())}"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--seeds", "2", "--seed-list", "0,1"], "--seeds and --seed-list both given"),
    (["--seed-list", "0,x"], "--seed-list takes whole numbers"),
    (["--seed-list", "1,1"], "repeats a seed"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--alpha", "1.5"], "--alpha must be in (0, 1)"),
    (["--baseline", "gru"], "--baseline gru is not one of the variants: rnn"),
    (["--cells", "rnn,rnn"], "names rnn more than once"),
    (["--lr", "nan"], "lr must be in"),
])
def test_bad_flags_are_one_line_before_any_training(args, fragment, tmp_path, no_training):
    # A repeated --cells: the last one counts.
    result = runner.invoke(app, ["compare", "--cells", "rnn", *args, "-o", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines


def test_a_folder_that_is_not_a_comparison_is_never_written_into(tmp_path, no_training):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    result = runner.invoke(app, [*COMPARE, "--output", str(folder)])
    assert result.exit_code == 2 and "holds no compare.json" in result.output
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_plot_is_a_png(copy_of, tmp_path, no_training):
    pytest.importorskip("matplotlib")
    figure = tmp_path / "compare.png"
    result = runner.invoke(app, [*COMPARE, "--output", str(copy_of), "--plot", str(figure),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# Planning: variants, layering, defaults


def test_default_cells_are_every_cell_and_the_baseline_is_the_default_cell(tmp_path):
    plan = plan_comparison(output=tmp_path / "o")
    assert [variant.name for variant in plan.variants] == list(cell_names())
    assert plan.baseline == DEFAULT_CELL and plan.seeds == [0, 1, 2]
    assert parse_seeds(None, "3,1") == [3, 1] and parse_seeds(4, None) == [0, 1, 2, 3]


def test_configs_layer_over_the_base_flags_win_and_cells_cross_them(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text("[model]\nhidden_size = 16\n[train]\nepochs = 2\n")
    (tmp_path / "wide.toml").write_text("[model]\nhidden_size = 32\ndropout = 0.2\n")
    (tmp_path / "slow.toml").write_text("[train]\nlr = 0.001\nepochs = 7\n")
    files = [str(tmp_path / "wide.toml"), str(tmp_path / "slow.toml")]
    plan = plan_comparison(base=base, configs=[",".join(files)], output=tmp_path / "o",
                           overrides={"train": {"epochs": 3}})
    wide, slow = plan.variants
    assert (wide.name, slow.name) == ("wide", "slow") and plan.baseline == "wide"
    assert (wide.config.model.hidden_size, wide.config.model.dropout) == (32, 0.2)
    assert (slow.config.model.hidden_size, slow.config.train.lr) == (16, 0.001)
    assert wide.config.train.epochs == slow.config.train.epochs == 3  # the flag wins
    crossed = plan_comparison(base=base, configs=files, cells=f"gru,{DEFAULT_CELL}",
                              output=tmp_path / "o")
    assert [v.name for v in crossed.variants] == [
        "wide-gru", f"wide-{DEFAULT_CELL}", "slow-gru", f"slow-{DEFAULT_CELL}"]
    assert crossed.baseline == f"wide-{DEFAULT_CELL}"
    assert crossed.variants[0].config.model.cell == "gru"
    assert crossed.variants[0].config.model.hidden_size == 32


def test_a_variant_config_that_does_not_apply_names_the_variant(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text("[model]\ngate_bias = 2.0\n")
    with pytest.raises(ConfigError, match="variant rnn: cell rnn has no memory gate"):
        plan_comparison(base=base, cells="gru,rnn", output=tmp_path / "o")


# ---------------------------------------------------------------------------------------------
# Statistics (references computed with mpmath to 30 digits; closed forms where they exist)


@pytest.mark.parametrize("t, df, p", [
    (2.0, 5, 0.101939478829858),
    (1.0, 10, 0.34089313230206),
    (3.5, 2.3, 0.0593452348434886),
    (0.5, 1, 1 - 2 / math.pi * math.atan(0.5)),  # Cauchy: exact
    (2.0, 2, 1 - 2 / math.sqrt(6)),  # df 2: 1 - t / sqrt(2 + t^2), exact
    (4.0, 30, 0.000381845636083757),
    (10.0, 3, 0.00212839905841415),
    (2.5, 7.5, 0.0388202582736256),
    (1.5, 0.5, 0.507901790648108),
    (6.0, 100, 3.17249150280286e-8),
    (-2.0, 5, 0.101939478829858),
    (0.0, 7, 1.0),
    (1e-8, 4, 0.9999999925),
])
def test_student_t_two_sided_p_values(t, df, p):
    assert t_two_sided_p(t, df) == pytest.approx(p, rel=1e-9)


def test_student_t_tends_to_the_normal_for_large_df():
    normal = math.erfc(1.96 / math.sqrt(2))  # two-sided normal tail, 0.04999579...
    assert t_two_sided_p(1.96, 1e6) == pytest.approx(0.0499960675852698, rel=1e-8)
    assert t_two_sided_p(1.96, 1e8) == pytest.approx(normal, rel=1e-6)
    assert t_two_sided_p(1.96, 10) > t_two_sided_p(1.96, 100) > normal  # heavier tails


def test_incomplete_beta_against_references():
    assert incomplete_beta(2, 3, 0.4) == pytest.approx(0.5248, rel=1e-12)  # a polynomial
    assert incomplete_beta(0.5, 0.5, 0.3) == pytest.approx(
        2 / math.pi * math.asin(math.sqrt(0.3)), rel=1e-12)  # the arcsine law
    assert incomplete_beta(3, 4, 0.0) == 0.0 and incomplete_beta(3, 4, 1.0) == 1.0


@pytest.mark.parametrize("a, b, difference, t, df, p", [
    ([0.70, 0.74, 0.69, 0.75], [0.78, 0.80, 0.79], -0.07, -4.42718872424, 3.85714285714,
     0.0124203228371),
    ([0.81, 0.83, 0.82], [0.80, 0.84, 0.79, 0.83, 0.81], 0.006, 0.549250377928, 5.9222771591,
     0.602910893224),
    # One side without spread: its variance is 0 and df falls to the other side's n - 1.
    ([0.9, 0.9, 0.9], [0.8, 0.85, 0.83], 0.0733333333333, 5.04714614515, 2.0, 0.0370861590287),
])
def test_welch_against_references(a, b, difference, t, df, p):
    result = welch(a, b)
    assert result.difference == pytest.approx(difference, rel=1e-9)
    assert result.t == pytest.approx(t, rel=1e-9)
    assert result.df == pytest.approx(df, rel=1e-9)
    assert result.p == pytest.approx(p, rel=1e-8)
    assert result.reason is None
    assert result.to_dict(0.05)["significant"] is (p < 0.05)


def test_welch_says_why_when_it_cannot_test():
    few = welch([0.8], [0.7, 0.75])
    assert few.p is None and few.t is None and few.difference == pytest.approx(0.075)
    assert "at least 2 runs" in few.reason and few.to_dict(0.05)["significant"] is None
    flat = welch([0.8, 0.8], [0.7, 0.7])
    assert flat.p is None and flat.difference == pytest.approx(0.1)
    assert "no seed-to-seed variation" in flat.reason


def test_mean_and_sample_sd():
    assert mean([]) is None and sample_sd([0.5]) is None
    assert sample_sd([1.0, 2.0, 3.0, 4.0]) == pytest.approx(statistics.stdev([1, 2, 3, 4]))
