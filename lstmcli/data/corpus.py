"""Unlabelled text for `lstm pretrain`: a dataset's train and unlabelled splits and any text files,
pooled into documents; a seeded share of documents held out for validation; documents cut into
windows of token ids.

Never a test or validation split: the fine-tuned classifier is selected on the one and scored on
the other, so a language model that had read them would have seen the texts it is judged by.
Labels are never read.

Windows: a document of n tokens becomes windows of at most ``bptt`` tokens, each starting where
the last one ended (consecutive windows share one token), so every next-token transition of the
document is predicted exactly once per direction. Each window starts from a zero state: no
hidden state is carried from one window to the next (windows of one document land in different
batches), which costs the first tokens of a window their context and keeps batches independent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lstmcli.data.columns import TextColumn
from lstmcli.data.files import read_texts
from lstmcli.data.registry import DatasetInfo, dataset_registry, lookup, read_split_texts
from lstmcli.data.sampling import rng
from lstmcli.errors import ConfigError, DataError
from lstmcli.pretrain_config import CorpusConfig

UNSEEN_SPLITS = ("validation", "test")  # what pretraining never reads
MAX_DOCUMENT_TOKENS = 1_000_000  # tokens kept per document (a whole book; more is a mistake)


@dataclass
class Corpus:
    """The pretraining documents: ``train`` for the windows, ``validation`` (held-out documents)
    for perplexity; ``notes`` are remarks for the CLI to print."""

    name: str
    train: TextColumn
    validation: TextColumn
    notes: list[str]


def corpus_dataset(cfg: CorpusConfig) -> str | None:
    """The dataset the corpus reads: the one named, else the bundled sample unless text files
    are given."""
    if cfg.dataset is not None:
        return cfg.dataset
    return None if cfg.text_files else "sample"


def pretraining_splits(info: DatasetInfo, splits: list[str] | None) -> list[str]:
    """The splits of ``info`` to read (default: train), checked: test and validation are
    refused, and so is a split the dataset lacks."""
    allowed = ["train", *info.unlabelled_splits]
    for split in splits or ["train"]:
        if split in UNSEEN_SPLITS:
            raise ConfigError(
                f"--splits {split}: {split} texts are never used for pretraining (the fine-tuned "
                f"model is judged on them, so they must stay unseen); choose from: "
                f"{', '.join(allowed)}")
        if split not in allowed:
            raise DataError(f"{info.name} has no split {split!r} to pretrain on; choose from: "
                            f"{', '.join(allowed)}")
    return list(dict.fromkeys(splits or ["train"]))  # each split once


def load_corpus(cfg: CorpusConfig, seed: int = 0) -> Corpus:
    """The documents of ``cfg``: blank ones dropped, capped at ``max_texts`` (a seeded sample),
    ``val_fraction`` of them (at least one) held out for validation."""
    cfg.validate()
    parts: list[pa.ChunkedArray] = []
    names: list[str] = []
    notes: list[str] = []
    dataset = corpus_dataset(cfg)
    if dataset is not None:
        info = lookup(dataset)
        if info is None:
            raise DataError(f"unknown dataset {dataset!r}; choose one of: "
                            f"{', '.join(dataset_registry())} (see `lstm datasets`), or pass "
                            "your own texts with --text-file")
        for split in pretraining_splits(info, cfg.splits):
            texts = read_split_texts(info, split, cfg.data_dir)
            parts.append(texts)
            notes.append(f"{info.name} {split}: {len(texts):,} texts")
        names.append(info.name)
    elif cfg.splits is not None:
        raise ConfigError("--splits names splits of --dataset, and no dataset is given; pass "
                          "--dataset NAME or drop --splits")
    for file in cfg.text_files:
        path = Path(file).expanduser()
        texts = read_texts(path, cfg.text_column)
        parts.append(texts)
        notes.append(f"{path}: {len(texts):,} texts")
        names.append(path.name)
    texts = _documents(parts)
    if len(texts) < 2:
        raise DataError(f"the pretraining texts hold {len(texts)} non-blank document(s); at least "
                        "two are needed (one to train on, one to validate): add texts")
    if cfg.max_texts is not None and cfg.max_texts < len(texts):
        chosen = np.sort(rng(seed, "pretrain").choice(len(texts), cfg.max_texts, replace=False))
        notes.append(f"{cfg.max_texts:,} of {len(texts):,} texts (--max-texts, seed {seed})")
        texts = texts.take(chosen)
    held = min(max(1, round(len(texts) * cfg.val_fraction)), len(texts) - 1)
    order = rng(seed, "holdout").permutation(len(texts))
    validation, train = np.sort(order[:held]), np.sort(order[held:])
    notes.append(f"validation: {held:,} documents held out (seed {seed}, val_fraction "
                 f"{cfg.val_fraction:g})")
    return Corpus(" + ".join(names), texts.take(train), texts.take(validation), notes)


def _documents(parts: list[pa.ChunkedArray]) -> TextColumn:
    """The parts as one column of texts, missing and blank ones left out (by row number: no
    text is copied)."""
    chunks = [chunk.cast(pa.large_string()) for part in parts for chunk in part.chunks]
    texts = pa.chunked_array(chunks, type=pa.large_string())
    blank = pc.or_(pc.equal(pc.utf8_length(texts), 0), pc.utf8_is_space(texts))
    kept = np.flatnonzero(~pc.fill_null(blank, True).to_numpy(zero_copy_only=False))
    return TextColumn(texts, kept)


def windows(documents: Sequence[np.ndarray], bptt: int) -> list[np.ndarray]:
    """Every document's windows of at most ``bptt`` token ids (views, not copies), consecutive
    ones sharing a token; a one-token document predicts nothing and gives none."""
    stride = bptt - 1
    return [document[start : start + bptt] for document in documents
            for start in range(0, len(document) - 1, stride)]
