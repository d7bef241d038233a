"""Datasets as the rest of lstmcli sees them: texts plus integer labels, split three ways.

``load_splits`` serves training (train, validation, optional test); ``load_eval_split`` serves
``lstm eval`` on a trained model, mapping the data's labels onto the model's label names and
reproducing the validation rows that training carved from train. The data comes from a registered
dataset (:mod:`lstmcli.data.registry`) or local files (:mod:`lstmcli.data.files`).

Randomness (the carved validation split, ``--max-*-samples`` subsets, :mod:`lstmcli.data.sampling`)
depends only on the seed, the rows and which rows share a class, never on label ids, so training
and evaluation agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lstmcli.config import DataConfig
from lstmcli.data.columns import TextColumn
from lstmcli.data.files import SUPPORTED_SUFFIXES, RawSplit, read_file
from lstmcli.data.labels import distinct_keys, infer_label_names, polarity
from lstmcli.data.registry import (
    SPLITS,
    DatasetInfo,
    Source,
    dataset_registry,
    local_copy_dir,
    lookup,
    named_source,
)
from lstmcli.data.sampling import rng, stratified
from lstmcli.errors import ConfigError, DataError

__all__ = [
    "SPLITS",
    "DatasetInfo",
    "DatasetSplits",
    "EVAL_SPLITS",
    "EvalSplit",
    "TextColumn",
    "TextSplit",
    "dataset_registry",
    "eval_split_for",
    "is_data_file",
    "load_eval_rows",
    "load_eval_split",
    "load_splits",
    "local_copy_dir",
]

# What `lstm eval` scores: a split, or "all", every row of a data file.
EVAL_SPLITS = (*SPLITS, "all")


@dataclass(frozen=True)
class TextSplit:
    """Texts and their class ids (int64 indices into DatasetSplits.label_names).

    The texts stay in Arrow (a TextColumn; a list of strings given here becomes one), so a
    corpus of millions of reviews is never a list of millions of Python strings.
    """

    texts: TextColumn
    labels: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.texts, TextColumn):
            object.__setattr__(self, "texts", TextColumn.from_texts(self.texts))

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: np.ndarray) -> TextSplit:
        """The rows at `indices`, in that order."""
        return TextSplit(self.texts.take(indices), self.labels[indices])


@dataclass
class DatasetSplits:
    """Everything training needs from a dataset; `notes` are remarks for the CLI to print."""

    name: str
    label_names: list[str]
    train: TextSplit
    validation: TextSplit
    test: TextSplit | None
    notes: list[str]


def load_splits(cfg: DataConfig, seed: int = 0) -> DatasetSplits:
    """Train, validation (carved from train when the data has none) and test, if there is one.

    Label names come from the registry for a named dataset, else from the training data; a label
    in validation or test that training lacks is a DataError. Test rows are never merged into the
    other splits.
    """
    source = open_source(cfg)
    notes = list(source.notes)
    texts, keys = _clean(source.read("train"), "train", notes)
    label_names = source.label_names or infer_label_names(set(distinct_keys(keys)))
    if len(label_names) > 2 and all(name.lstrip("-").isdigit() for name in label_names):
        notes.append(
            f"labels: {len(label_names)} classes ({', '.join(label_names[:10])}); for star "
            "ratings pass --positive-threshold T to get negative/positive"
        )
    train = TextSplit(texts, _map_labels(keys, label_names, "train", source, notes))
    _require_two_classes(train, label_names, source, capped=False)
    if "validation" in source.available:
        validation = _load(source, "validation", label_names, notes)
    else:
        train, validation = _carve(train, cfg.val_fraction, seed, source)
        notes.append(
            f"validation: {len(validation):,} rows carved from train "
            f"(seed {seed}, stratified, val_fraction {cfg.val_fraction:g})"
        )
    test = _load(source, "test", label_names, notes) if "test" in source.available else None
    if test is None:
        notes.append("no test split: no test accuracy (pass --test-file to add one)")
    train = cap(train, cfg.max_train_samples, seed, "train", "--max-train-samples", notes)
    _require_two_classes(train, label_names, source, capped=cfg.max_train_samples is not None)
    validation = cap(validation, cfg.max_eval_samples, seed, "validation", "--max-eval-samples",
                      notes)
    if test is not None:
        test = cap(test, cfg.max_eval_samples, seed, "test", "--max-eval-samples", notes)
    return DatasetSplits(source.name, list(label_names), train, validation, test, notes)


@dataclass(frozen=True)
class EvalSplit:
    """The rows `lstm eval` scores, how many the split had before --max-eval-samples, and notes
    for the CLI to print (skipped rows, label aliases, the cap)."""

    rows: TextSplit
    available: int
    notes: list[str]


def is_data_file(dataset: str) -> bool:
    """Whether --dataset names a local file rather than a registered dataset."""
    if lookup(dataset) is not None:
        return False
    return Path(dataset).suffix.lower() in SUPPORTED_SUFFIXES or Path(dataset).exists()


def eval_split_for(dataset: str | None, split: str | None) -> str:
    """The split `lstm eval` scores: --split if given, else every row ("all") of a data file given
    with --dataset (it was named to be scored, not carved), else "test"."""
    if split is None:
        return "all" if dataset is not None and is_data_file(dataset) else "test"
    if split not in EVAL_SPLITS:
        raise DataError(f"unknown split {split!r}; choose train, validation, test, or all (every "
                        "row of a data file given with --dataset)")
    return split


def load_eval_rows(
    cfg: DataConfig, split: str, label_names: list[str], seed: int = 0
) -> EvalSplit:
    """One split for evaluating a trained model, its labels mapped onto the model's label names.

    "validation" on data without one is the rows training carved (same seed and val_fraction);
    "train" on such data is the rest; "all" is every usable row of the data file cfg.dataset.
    cfg.max_eval_samples (None or 0: no cap) caps the split, with the same seeded draw as
    training, so the run's own capped validation rows can be reproduced.
    """
    if split not in EVAL_SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of: {', '.join(EVAL_SPLITS)}")
    notes: list[str] = []
    if split == "all":
        if not is_data_file(cfg.dataset):
            raise DataError(
                f"--split all scores every row of a data file, and {cfg.dataset} is a named "
                f"dataset; choose one of: {', '.join(SPLITS)}"
            )
        cfg.validate()
        source = _file_source(cfg, cfg.dataset)
        rows = _load(source, "all", label_names, notes, known_by="the model")
        return _capped_eval(rows, cfg, seed, split, notes)
    source = open_source(cfg)
    carved = "validation" not in source.available
    present = [s for s in SPLITS if s in source.available or (s == "validation" and carved)]
    if split not in present:
        raise DataError(
            f"{source.name} has no {split} split; choose one of: {', '.join(present)}"
        )
    if split in source.available and not (split == "train" and carved):
        rows = _load(source, split, label_names, notes, known_by="the model")
    else:
        train = _load(source, "train", label_names, notes, known_by="the model")
        train, validation = _carve(train, cfg.val_fraction, seed, source)
        rows = validation if split == "validation" else train
    return _capped_eval(rows, cfg, seed, split, notes)


def _capped_eval(
    rows: TextSplit, cfg: DataConfig, seed: int, split: str, notes: list[str]
) -> EvalSplit:
    capped = cap(rows, cfg.max_eval_samples, seed, split, "--max-eval-samples", notes)
    return EvalSplit(capped, len(rows), notes)


def load_eval_split(
    cfg: DataConfig, split: str, label_names: list[str], seed: int = 0
) -> TextSplit:
    """The rows of :func:`load_eval_rows` alone."""
    return load_eval_rows(cfg, split, label_names, seed).rows


def open_source(cfg: DataConfig) -> Source:
    """Where cfg's data comes from: a registered dataset or local files, per-split files applied."""
    cfg.validate()
    info = lookup(cfg.dataset)
    if cfg.train_file is not None:
        # "sample" is the default, so a --train-file next to it means the user did not pick one.
        if cfg.dataset not in ("sample", cfg.train_file):
            raise ConfigError(
                f"pass either --dataset {cfg.dataset} or --train-file {cfg.train_file}, not both"
            )
        source = _file_source(cfg, cfg.train_file)
    elif info is not None:
        source = _named(cfg, info)
    elif Path(cfg.dataset).suffix.lower() in SUPPORTED_SUFFIXES or Path(cfg.dataset).exists():
        source = _file_source(cfg, cfg.dataset)
    else:
        raise DataError(
            f"unknown dataset {cfg.dataset!r}; choose one of: {', '.join(dataset_registry())} "
            f"(see `lstm datasets`), or pass a {'/'.join(SUPPORTED_SUFFIXES)} file"
        )
    return _with_split_files(cfg, source)


def _named(cfg: DataConfig, info: DatasetInfo) -> Source:
    if cfg.positive_threshold is not None:
        raise ConfigError(
            f"--positive-threshold applies to local files of ratings; {info.name} already has "
            f"labels ({', '.join(info.label_names)}): drop the option"
        )
    return named_source(info, cfg.data_dir)


def _file_source(cfg: DataConfig, train_file: str) -> Source:
    path = Path(train_file).expanduser()

    def read(split: str) -> RawSplit:
        return _read_user_file(cfg, path)

    return Source(path.stem, ("train",), read, None, [f"data: {path}"])


def _with_split_files(cfg: DataConfig, source: Source) -> Source:
    """--validation-file / --test-file replace (or add) those splits of any source."""
    files = {"validation": cfg.validation_file, "test": cfg.test_file}
    files = {split: Path(f).expanduser() for split, f in files.items() if f is not None}
    if not files:
        return source
    base_read = source.read

    def read(split: str) -> RawSplit:
        return _read_user_file(cfg, files[split]) if split in files else base_read(split)

    available = tuple(s for s in SPLITS if s in source.available or s in files)
    notes = source.notes + [f"{split}: {path}" for split, path in files.items()]
    return Source(source.name, available, read, source.label_names, notes)


def _read_user_file(cfg: DataConfig, path: Path) -> RawSplit:
    return read_file(path, cfg.text_column, cfg.label_column, cfg.positive_threshold)


# ---------------------------------------------------------------------------------------------
# Rows and labels


def _clean(raw: RawSplit, split: str, notes: list[str]) -> tuple[TextColumn, pa.ChunkedArray]:
    """Texts and label keys with the unusable rows (no text, no label) dropped and counted."""
    texts, keys = raw.texts, raw.labels
    # Whitespace as Python's str.strip() sees it; utf8_is_space is false for "", hence the length.
    blank = pc.or_(pc.equal(pc.utf8_length(texts), 0), pc.utf8_is_space(texts))
    no_text = pc.fill_null(blank, True)  # a missing text
    unusable = pc.or_(no_text, pc.is_null(keys))
    no_text_count = pc.sum(no_text).as_py() or 0
    dropped = pc.sum(unusable).as_py() or 0
    no_label_count = dropped - no_text_count
    if no_text_count:
        notes.append(f"skipped {no_text_count:,} rows with an empty or missing text in {split}")
    if no_label_count:
        notes.append(f"skipped {no_label_count:,} rows with a missing label in {split}")
    if dropped == len(texts):
        raise DataError(
            f"{raw.source} has no usable rows ({no_text_count:,} without text, "
            f"{no_label_count:,} without label); check --text-column and --label-column"
        )
    if not dropped:
        return TextColumn(texts), keys
    # The texts are not copied: the column reads the kept rows through their numbers.
    kept = np.flatnonzero(~unusable.to_numpy(zero_copy_only=False))
    return TextColumn(texts, kept), keys.take(kept)


def _map_labels(
    keys: pa.ChunkedArray,
    label_names: list[str],
    split: str,
    source: Source,
    notes: list[str],
    known_by: str = "the training data",
) -> np.ndarray:
    """Class ids for label keys; a negative/positive pair also accepts neg/pos, 0/1 and so on."""
    index = {name: i for i, name in enumerate(label_names)}
    distinct = distinct_keys(keys)
    unknown = sorted(set(distinct) - set(index))
    # A model that knows negative/positive also reads 0/1, neg/pos... (imdb model, 0/1 file).
    polar = [polarity(n) for n in label_names] == ["negative", "positive"]
    aliased = {k: 0 if polarity(k) == "negative" else 1
               for k in unknown if polar and polarity(k) is not None}
    still_unknown = [k for k in unknown if k not in aliased]
    if still_unknown:
        listed = ", ".join(still_unknown[:10]) + (", ..." if len(still_unknown) > 10 else "")
        raise DataError(
            f"{source.name} {split} has label(s) {listed} that {known_by} does not know "
            f"(it knows: {', '.join(label_names)}); use the same label names, or check "
            "--label-column"
        )
    if aliased:
        index.update(aliased)
        pairs = ", ".join(f"{k} -> {label_names[i]}" for k, i in aliased.items())
        notes.append(f"{split}: labels read as {pairs}")
    # Each distinct key is looked up once; the rows index into those ids.
    ids = np.array([index[k] for k in distinct], dtype=np.int64)
    positions = pc.index_in(keys, value_set=pa.array(distinct, type=keys.type))
    return ids[positions.to_numpy()]


def _load(
    source: Source, split: str, label_names: list[str], notes: list[str],
    known_by: str = "the training data",
) -> TextSplit:
    texts, keys = _clean(source.read(split), split, notes)
    return TextSplit(texts, _map_labels(keys, label_names, split, source, notes, known_by))


def _require_two_classes(
    split: TextSplit, label_names: list[str], source: Source, capped: bool
) -> None:
    present = np.unique(split.labels)
    if present.size < 2:
        only = label_names[int(present[0])]
        fix = "raise --max-train-samples" if capped else "check --label-column and the data"
        raise DataError(
            f"the training data of {source.name} has only one class ({only!r}, {len(split):,} "
            f"rows); a classifier needs at least two: {fix}"
        )


# ---------------------------------------------------------------------------------------------
# Seeded, stratified selection (the draws themselves: lstmcli.data.sampling)


def _carve(
    train: TextSplit, fraction: float, seed: int, source: Source
) -> tuple[TextSplit, TextSplit]:
    """Split train into (train, validation); every class keeps at least one training row."""
    target = min(max(1, round(len(train) * fraction)), len(train) - 1)
    chosen = stratified(train.labels, target, rng(seed, "carve"), leave_one=True)
    if chosen.size == 0:
        raise DataError(
            f"{source.name} train has too few rows ({len(train):,}) to carve a validation split "
            "and keep every class in train; add rows or pass --validation-file"
        )
    keep = np.ones(len(train), dtype=bool)
    keep[chosen] = False
    return train.subset(np.flatnonzero(keep)), train.subset(chosen)


def cap(
    split: TextSplit, limit: int | None, seed: int, name: str, flag: str, notes: list[str]
) -> TextSplit:
    """At most `limit` rows, drawn stratified; unchanged when it is already small enough, or
    when limit is None or 0 (0 spells "no cap" on the command line)."""
    if not limit or limit >= len(split):
        return split
    chosen = stratified(split.labels, limit, rng(seed, name), leave_one=False)
    notes.append(f"{name}: {limit:,} of {len(split):,} rows ({flag}, stratified, seed {seed})")
    return split.subset(chosen)
