"""Data that tests make: short synthetic reviews whose label one sentiment word decides."""

from __future__ import annotations

import json
import random
from pathlib import Path

POSITIVE_WORDS = ["great", "wonderful", "superb", "loved", "excellent", "delightful"]
NEGATIVE_WORDS = ["awful", "boring", "terrible", "hated", "dreadful", "bland"]
FILLER = ["the", "movie", "food", "plot", "service", "phone", "was", "and", "really", "quite",
          "this", "a", "story", "staff", "battery", "it"]


def make_reviews(count: int, seed: int = 0) -> list[dict[str, str]]:
    """Short synthetic reviews whose label is set by one sentiment word among fillers."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        positive = index % 2 == 0
        words = rng.sample(FILLER, rng.randint(3, 8))
        word = rng.choice(POSITIVE_WORDS if positive else NEGATIVE_WORDS)
        words.insert(rng.randint(0, len(words)), word)
        rows.append({"text": " ".join(words), "label": "positive" if positive else "negative"})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
