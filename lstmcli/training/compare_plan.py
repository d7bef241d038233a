"""What `lstm compare` is asked to do, checked before any training: the variants (cells, config
files, or both) with their configs, the seeds, the baseline, and the runs already on disk.

A run on disk counts as finished once its model card exists (written only after ``train``
returned, so its test accuracy is recorded and no resumable state is left). A run whose recorded
config differs from the one asked for is refused here rather than mixed into the figures.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lstmcli.config import Config, apply_overrides, load_config
from lstmcli.data.registry import absolute_data_paths
from lstmcli.errors import ConfigError
from lstmcli.modelcard import CARD_FILE
from lstmcli.nn.cells import DEFAULT_CELL, cell_names, get_cell
from lstmcli.rundir import check_replaceable
from lstmcli.runs import (
    CONFIG_FILE,
    METRICS_FILE,
    RESUME_STATE_FILE,
    RESUME_TENSORS_FILE,
    runs_root,
)

COMPARE_FILE = "compare.json"
DEFAULT_SEEDS = 3
DEFAULT_ALPHA = 0.05
TEST_NAME = "Welch's two-sample t-test (unequal variances, two-sided)"
SECTIONS = ("model", "data", "train")
# Filled in by training (vocabulary, classes, where it wrote): never a difference of budget.
NOT_BUDGET = {("model", "vocab_size"), ("model", "num_classes"), ("train", "output")}


@dataclass
class Variant:
    name: str
    config: Config  # the budget; each run sets its own seed and output
    config_file: str | None = None  # the --configs file it comes from


@dataclass
class ComparePlan:
    output: Path
    variants: list[Variant]
    seeds: list[int]
    baseline: str
    alpha: float = DEFAULT_ALPHA
    overwrite: bool = False

    def run_dir(self, variant: Variant, seed: int) -> Path:
        return self.output / variant.name / f"seed-{seed}"

    def run_config(self, variant: Variant, seed: int) -> Config:
        config = copy.deepcopy(variant.config)
        config.train.seed = seed
        config.train.output = str(self.run_dir(variant, seed))
        # The runs train one after another in this process; config.json says what each was.
        config.train.processes = 1
        return config

    def pairs(self) -> list[tuple[Variant, int]]:
        return [(variant, seed) for variant in self.variants for seed in self.seeds]


def split_list(values: str | Sequence[str] | None) -> list[str]:
    """A comma-separated option (given once or repeated) as its items, blanks dropped."""
    if values is None:
        return []
    texts = [values] if isinstance(values, str) else list(values)
    return [item.strip() for text in texts for item in text.split(",") if item.strip()]


def parse_seeds(count: int | None, listing: str | None) -> list[int]:
    """--seeds N (0..N-1, default 3) or --seed-list 0,1,2."""
    if count is not None and listing is not None:
        raise ConfigError("--seeds and --seed-list both given; pass one of them")
    if listing is None:
        count = DEFAULT_SEEDS if count is None else count
        if count < 1:
            raise ConfigError(f"--seeds must be >= 1, got {count}")
        return list(range(count))
    seeds = []
    for item in split_list(listing):
        if not item.isdigit():
            raise ConfigError(f"--seed-list takes whole numbers >= 0 separated by commas, "
                              f"got {item!r}")
        seeds.append(int(item))
    if not seeds:
        raise ConfigError("--seed-list is empty; pass seeds such as --seed-list 0,1,2")
    if len(set(seeds)) < len(seeds):
        raise ConfigError(f"--seed-list {listing} repeats a seed; each seed is one run")
    return seeds


def plan_comparison(
    *,
    cells: str | None = None,
    base: str | Path | None = None,
    configs: Sequence[str] | None = None,
    seeds: list[int] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    output: str | Path | None = None,
    baseline: str | None = None,
    alpha: float = DEFAULT_ALPHA,
    overwrite: bool = False,
) -> ComparePlan:
    """Check everything a comparison is asked to do before any training: the cells, config
    files, seeds, baseline and alpha, every variant's config, and the runs already on disk."""
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"--alpha must be in (0, 1), got {alpha}; 0.05 is usual")
    names = split_list(cells)
    for name in names:
        try:
            get_cell(name)
        except ConfigError as error:
            raise ConfigError(f"--cells: {error}") from None
    _no_repeats("--cells", names)
    base_config = load_config(base)
    files = split_list(configs)
    # Without --configs the variants are cells over the base config; with it, the files (each
    # with every --cells cell, if given).
    variants = [] if files else [Variant(name, _with_cell(base_config, name))
                                 for name in names or cell_names()]
    stems = [Path(file).stem for file in files]
    _no_repeats("--configs (variants are named by file stem)", stems)
    for file, stem in zip(files, stems, strict=True):
        if not Path(file).is_file():
            raise ConfigError(f"--configs: {file} not found; pass existing TOML files")
        loaded = load_config(file, base=base_config)
        variants += ([Variant(f"{stem}-{name}", _with_cell(loaded, name), file) for name in names]
                     if names else [Variant(stem, loaded, file)])
    for variant in variants:
        for section, values in (overrides or {}).items():
            apply_overrides(getattr(variant.config, section), values)
        try:
            variant.config.validate()
        except ConfigError as error:
            raise ConfigError(f"variant {variant.name}: {error}") from None
        absolute_data_paths(variant.config.data)  # as train() records it: comparable
    names = [variant.name for variant in variants]
    if baseline is None:
        baseline = next((v.name for v in variants if v.name == DEFAULT_CELL), None) or next(
            (v.name for v in variants if v.config.model.cell == DEFAULT_CELL), names[0])
    elif baseline not in names:
        raise ConfigError(f"--baseline {baseline} is not one of the variants: {', '.join(names)}")
    plan = ComparePlan(_output_dir(output), variants, seeds or list(range(DEFAULT_SEEDS)),
                       baseline, alpha, overwrite)
    _check_existing_runs(plan)
    return plan


def _with_cell(config: Config, cell: str) -> Config:
    config = copy.deepcopy(config)
    config.model.cell = cell
    return config


def _no_repeats(flag: str, names: list[str]) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"{flag} names {', '.join(repeated)} more than once; list each once")


def _output_dir(output: str | Path | None) -> Path:
    """--output, or a new runs/compare-<time>. An existing directory must be a comparison (it
    holds compare.json) or empty: a comparison never writes into a folder of other things."""
    if output is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path, suffix = runs_root() / f"compare-{stamp}", 1
        while path.exists():
            suffix += 1
            path = runs_root() / f"compare-{stamp}-{suffix}"
        return path
    path = Path(output)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--output {path} is a file; choose a directory path")
    if path.is_dir() and any(path.iterdir()) and not (path / COMPARE_FILE).is_file():
        raise ConfigError(f"--output {path} is not empty and holds no {COMPARE_FILE}, so it is "
                          "not a comparison to continue; choose another --output")
    return path


def budget_differences(requested: Config, meta: dict[str, Any]) -> list[str]:
    """What a run's recorded config (its config.json) says differently from ``requested``, as
    ``section.key: recorded (asked: requested)``; empty when they match."""
    source = "the run's config.json"
    try:
        recorded = Config.from_dict({s: meta.get(s, {}) for s in SECTIONS}, source=source)
    except ConfigError as error:
        return [str(error)]
    asked, had = requested.to_dict(), recorded.to_dict()
    return [f"{section}.{key}: {had[section][key]!r} (asked: {value!r})"
            for section in SECTIONS for key, value in asked[section].items()
            if (section, key) not in NOT_BUDGET and had[section][key] != value]


def _check_existing_runs(plan: ComparePlan) -> None:
    """Refuse, before any training, runs on disk that another budget made, and directories in
    the place of a run that would be replaced but hold more than an lstmcli run."""
    for variant, seed in plan.pairs():
        run_dir = plan.run_dir(variant, seed)
        meta = None if plan.overwrite else read_config(run_dir)
        differences = budget_differences(plan.run_config(variant, seed), meta) if meta else []
        if differences:
            shown = "; ".join(differences[:3]) + ("; ..." if len(differences) > 3 else "")
            raise ConfigError(
                f"{run_dir} was trained with another config ({shown}); give the flags and "
                "config files it was trained with, choose another --output, or pass --overwrite "
                "to retrain every run")
        if plan.overwrite or not is_finished(run_dir):
            check_replaceable(run_dir)


def read_config(run_dir: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def is_finished(run_dir: Path) -> bool:
    """A run that `train` completed: its model card is written only after it returned, and
    neither a resumable state (an interrupt) nor a missing config or metrics file says otherwise.
    """
    return ((run_dir / CARD_FILE).is_file() and (run_dir / METRICS_FILE).is_file()
            and read_config(run_dir) is not None
            and not (run_dir / RESUME_STATE_FILE).exists()
            and not (run_dir / RESUME_TENSORS_FILE).exists())
