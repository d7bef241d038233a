"""`lstm compare`: several variants (cells, config files, or both) trained with several seeds on
the same data and budget, and what the seeds say about their differences.

Each (variant, seed) is an ordinary run, trained by :func:`lstmcli.training.run.train` into
``OUTPUT/<variant>/seed-<s>``, one after another in this process so that their timings compare.
Running the same comparison again reuses the finished runs (:mod:`lstmcli.training.compare_plan`
says which) and trains the rest, so an interrupted comparison loses only the run in progress.

The aggregates and the Welch tests (:mod:`lstmcli.stats`) are computed from the runs' own
``config.json`` and ``metrics.jsonl``, for trained and reused runs alike. Torch is imported only
when a run is trained.
"""

from __future__ import annotations

import json
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lstmcli.atomic import write_json_atomic
from lstmcli.errors import (
    CheckpointError,
    ConfigError,
    LstmError,
    TrainingDiverged,
    TrainingInterrupted,
)
from lstmcli.modelcard import write_model_card
from lstmcli.rundir import claim
from lstmcli.runs import METRICS_FILE
from lstmcli.stats import mean, sample_sd, welch
from lstmcli.training.callbacks import Callbacks
from lstmcli.training.compare_plan import (
    COMPARE_FILE,
    NOT_BUDGET,
    TEST_NAME,
    ComparePlan,
    Variant,
    is_finished,
    read_config,
)


class RunsFailed(LstmError):
    """Some runs of a comparison diverged; the others finished and are reported. Exit code 1:
    the input was fine, and a script should tell this from a usage error."""

    exit_code = 1


class CompareCallbacks(Callbacks):
    """What a front end hears from a comparison: each run's start and end, and, for the runs
    it trains, everything a training run reports."""

    def on_run_start(self, variant: str, seed: int, index: int, total: int) -> None:
        """Before a run is trained (not for a reused one)."""

    def on_run_end(self, row: dict[str, Any], index: int, total: int) -> None:
        """After each run, trained, reused or failed: its row of the report."""



def run_row(variant: Variant, seed: int, run_dir: Path, status: str) -> dict[str, Any]:
    """One run's figures, read from its own files: best validation accuracy and test accuracy
    from config.json, training wall time (the sum of the epochs' train_seconds) and tokens/s
    (the mean over epochs) from metrics.jsonl."""
    meta = read_config(run_dir) or {}
    try:
        epochs = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text(
            encoding="utf-8").splitlines() if line.strip()]
        speeds = [row["tokens_per_second"] for row in epochs
                  if row.get("tokens_per_second") is not None]
        best = meta.get("best") or {}
    except (UnicodeDecodeError, ValueError, AttributeError) as error:
        raise CheckpointError(
            f"{run_dir / METRICS_FILE} cannot be read ({type(error).__name__}); remove "
            f"{run_dir} to train that run again, or pass --overwrite to retrain every run"
        ) from None
    return {**_row_head(variant, seed, run_dir, status), "best_epoch": best.get("epoch"),
            "epochs": len(epochs), "val_accuracy": best.get("val_accuracy"),
            "test_accuracy": meta.get("test_accuracy"),
            "train_seconds": sum(row.get("train_seconds") or 0.0 for row in epochs),
            "tokens_per_second": mean(speeds), "error": None}


def _row_head(variant: Variant, seed: int, run_dir: Path, status: str) -> dict[str, Any]:
    return {"variant": variant.name, "cell": variant.config.model.cell, "seed": seed,
            "run_dir": str(run_dir), "status": status}


def _failed_row(variant: Variant, seed: int, run_dir: Path, error: str) -> dict[str, Any]:
    """A run that diverged: the same keys as a finished one, its figures null."""
    return {**_row_head(variant, seed, run_dir, "failed"), "best_epoch": None, "epochs": None,
            "val_accuracy": None, "test_accuracy": None, "train_seconds": None,
            "tokens_per_second": None, "error": error}


def run_comparison(
    plan: ComparePlan, callbacks: CompareCallbacks | None = None, argv: list[str] | None = None
) -> dict[str, Any]:
    """Train (or reuse) every run of ``plan`` in turn and return the report, also written to
    OUTPUT/compare.json after every run. A diverged run is a failed row, and the others go on;
    an interrupt stops the comparison, keeping every finished run for the next attempt."""
    from lstmcli.distributed import launch
    from lstmcli.training.run import train

    if launch() is not None:  # every process would claim the output and train every run
        raise ConfigError("lstm compare trains its runs one after another in one process; run "
                          "it without torchrun (lstm train runs under torchrun)")
    callbacks = callbacks or CompareCallbacks()
    argv = list(sys.argv if argv is None else argv)
    pairs = plan.pairs()
    rows: list[dict[str, Any]] = []
    # The output's own lock: two comparisons into one directory would train the same runs.
    with claim(plan.output, False, resume=True, command="compare"):
        _write_report(plan, rows, "running")
        for index, (variant, seed) in enumerate(pairs, 1):
            run_dir = plan.run_dir(variant, seed)
            if not plan.overwrite and is_finished(run_dir):
                row = run_row(variant, seed, run_dir, "reused")
            else:
                callbacks.on_run_start(variant.name, seed, index, len(pairs))
                try:
                    # An unfinished run left here is replaced: only its finished form counts.
                    train(plan.run_config(variant, seed), callbacks,
                          overwrite=plan.overwrite or run_dir.exists())
                    write_model_card(run_dir, argv)  # last: it marks the run finished
                    row = run_row(variant, seed, run_dir, "trained")
                except TrainingDiverged as error:
                    row = _failed_row(variant, seed, run_dir, str(error))
                except (TrainingInterrupted, KeyboardInterrupt) as error:
                    _write_report(plan, rows, "interrupted")
                    number = (error.exit_code - 128 if isinstance(error, TrainingInterrupted)
                              else signal.SIGINT)
                    raise TrainingInterrupted(
                        f"interrupted while training {variant.name} seed {seed}; {len(rows)} of "
                        f"{len(pairs)} runs are done and kept; run the same lstm compare with "
                        f"--output {shlex.quote(str(plan.output))} to continue (finished runs "
                        "are reused, the interrupted one starts again)", int(number)) from None
            rows.append(row)
            _write_report(plan, rows, "running")
            callbacks.on_run_end(row, index, len(pairs))
        return _write_report(plan, rows, "done")


def _write_report(plan: ComparePlan, rows: list[dict[str, Any]], status: str) -> dict[str, Any]:
    payload = report(plan, rows, status)
    write_json_atomic(plan.output / COMPARE_FILE, payload)
    return payload


def _summary(values: Sequence[float]) -> dict[str, Any] | None:
    return {"mean": mean(values), "sd": sample_sd(values)} if values else None


def report(plan: ComparePlan, rows: list[dict[str, Any]], status: str = "done") -> dict[str, Any]:
    """The comparison as one JSON-ready object: per variant n, mean and sample sd of each figure
    and, for every variant but the baseline, Welch's test of its accuracies against the
    baseline's; and every run's row."""
    def values(name: str, key: str) -> list[float]:
        return [row[key] for row in rows if row["variant"] == name and row["status"] != "failed"
                and row.get(key) is not None]

    variants: dict[str, Any] = {}
    for variant in plan.variants:
        name = variant.name
        budget = variant.config.to_dict()
        for section, key in (*NOT_BUDGET, ("train", "seed")):
            budget[section].pop(key, None)
        entry: dict[str, Any] = {
            "cell": variant.config.model.cell, "config_file": variant.config_file,
            "n": len(values(name, "val_accuracy")),
            "failed": sum(row["variant"] == name and row["status"] == "failed" for row in rows),
            **{key: _summary(values(name, key)) for key in (
                "val_accuracy", "test_accuracy", "train_seconds", "tokens_per_second")},
            "vs_baseline": None, "config": budget}
        if name != plan.baseline:
            entry["vs_baseline"] = {
                key: welch(values(name, key), values(plan.baseline, key)).to_dict(plan.alpha)
                if values(name, key) and values(plan.baseline, key) else None
                for key in ("val_accuracy", "test_accuracy")}
        variants[name] = entry
    return {"output": str(plan.output), "status": status, "test": TEST_NAME,
            "alpha": plan.alpha, "baseline": plan.baseline, "seeds": plan.seeds,
            "variants": variants, "runs": rows}
