"""Predictions and evaluation of a trained run: probabilities, labels and classification metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lstmcli.errors import DataError


@dataclass
class Prediction:
    text: str
    label: str
    probability: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "label": self.label, "probability": self.probability,
                "probabilities": self.probabilities}


class Predictor:
    """A trained run ready to classify texts."""

    def __init__(self, run: Any, device: str = "cpu") -> None:
        self.run = run
        self.device = device
        self.label_names: list[str] = run.label_names

    @classmethod
    def from_run(cls, model: str | Path | None = None, device: str = "cpu") -> Predictor:
        from lstmcli.runs import load_run

        return cls(load_run(model, device), device)

    @property
    def run_dir(self) -> Path:
        return self.run.path

    def probabilities(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Class probabilities (N, C), rows in input order; texts: a list or a split's TextColumn
        (the tokenizer reads either a batch at a time)."""
        import torch

        from lstmcli.nn.classifier import predict_logits

        if not texts:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        ids = self.run.tokenizer.encode(texts, self.run.config.data.max_len)
        logits = predict_logits(self.run.model, ids, batch_size, self.device)
        return torch.softmax(logits, dim=1).numpy()

    def predict(self, texts: list[str]) -> list[Prediction]:
        for number, text in enumerate(texts, start=1):
            if not text.strip():
                raise DataError(f"text {number} is empty; give each text some words")
        probabilities = self.probabilities(texts)
        results = []
        for text, row in zip(texts, probabilities, strict=True):
            best = int(row.argmax())
            results.append(Prediction(
                text, self.label_names[best], float(row[best]),
                {name: float(p) for name, p in zip(self.label_names, row, strict=True)},
            ))
        return results


@dataclass
class EvalReport:
    examples: int
    accuracy: float
    label_names: list[str]
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    confusion: list[list[int]]  # rows: true label, columns: predicted label

    def to_dict(self) -> dict[str, Any]:
        per_class = {
            name: {"precision": p, "recall": r, "f1": f, "support": s}
            for name, p, r, f, s in zip(self.label_names, self.precision, self.recall, self.f1,
                                        self.support, strict=True)
        }
        macro_f1 = float(np.mean(self.f1)) if self.f1 else 0.0
        return {"examples": self.examples, "accuracy": self.accuracy, "macro_f1": macro_f1,
                "label_names": self.label_names, "per_class": per_class,
                "confusion_matrix": self.confusion}


def classification_report(
    true: np.ndarray, predicted: np.ndarray, label_names: list[str]
) -> EvalReport:
    """Accuracy, per-class precision/recall/F1 (0 where undefined) and the confusion matrix."""
    classes = len(label_names)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (true, predicted), 1)
    hits = np.diag(confusion).astype(float)
    predicted_counts = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(hits, predicted_counts, out=np.zeros(classes),
                          where=predicted_counts > 0)
    recall = np.divide(hits, support, out=np.zeros(classes), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(classes), where=both > 0)
    total = int(confusion.sum())
    return EvalReport(
        examples=total,
        accuracy=float(hits.sum() / total) if total else 0.0,
        label_names=list(label_names),
        precision=precision.tolist(),
        recall=recall.tolist(),
        f1=f1.tolist(),
        support=support.tolist(),
        confusion=confusion.tolist(),
    )


def evaluate(predictor: Predictor, texts: Sequence[str], labels: np.ndarray) -> EvalReport:
    if len(texts) == 0:
        raise DataError("the evaluation split has no examples; choose another --split or dataset")
    predicted = predictor.probabilities(texts).argmax(axis=1)
    return classification_report(np.asarray(labels), predicted, predictor.label_names)
