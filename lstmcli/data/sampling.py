"""Seeded, stratified selection of rows: the carved validation split and the --max-*-samples
subsets (and the seeded streams of the pretraining corpus's draws).

The draw depends only on the seed, the purpose, the rows and which rows share a class, never on
label ids, so training and `lstm eval` pick the same rows.
"""

from __future__ import annotations

import numpy as np

# One random stream per purpose, so that e.g. --max-train-samples never moves validation rows.
STREAMS = {"carve": 0, "train": 1, "validation": 2, "test": 3, "all": 4,
           "pretrain": 5, "holdout": 6}  # lstmcli.data.corpus: --max-texts, held-out documents


def rng(seed: int, purpose: str) -> np.random.Generator:
    """The random stream of one purpose (a key of STREAMS) under one seed."""
    return np.random.default_rng([seed % 2**64, STREAMS[purpose]])


def stratified(
    labels: np.ndarray, n: int, rng: np.random.Generator, leave_one: bool
) -> np.ndarray:
    """Sorted indices of about n rows, each class in proportion to its size.

    Classes are visited in order of first appearance in one random permutation, so the choice
    does not depend on which id a class has. leave_one keeps one row of every class unchosen;
    otherwise every class gets at least one row when n allows.
    """
    order = rng.permutation(len(labels))
    shuffled = labels[order]
    classes, first = np.unique(shuffled, return_index=True)
    classes = classes[np.argsort(first)]
    counts = np.array([np.count_nonzero(shuffled == c) for c in classes])
    caps = counts - 1 if leave_one else counts
    exact = counts * n / counts.sum()
    quotas = np.minimum(np.floor(exact).astype(np.int64), caps)
    if not leave_one and n >= len(classes):
        quotas = np.maximum(quotas, 1)
    # Hand out the rows that flooring lost, largest remainder first; take back from the largest.
    while quotas.sum() < n and (quotas < caps).any():
        remainder = np.where(quotas < caps, exact - quotas, -np.inf)
        quotas[np.argmax(remainder)] += 1
    while quotas.sum() > n:
        quotas[np.argmax(quotas)] -= 1
    picked = [order[shuffled == c][:q] for c, q in zip(classes, quotas, strict=True)]
    return np.sort(np.concatenate(picked))
