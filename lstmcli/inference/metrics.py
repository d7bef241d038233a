"""Evaluation of a trained run on labelled texts: accuracy, per-class precision, recall and F1,
and the confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lstmcli.errors import CheckFailed, ConfigError, DataError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lstmcli.inference.predictor import Predictor


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


# Quality gates of `lstm eval`: check name -> (report key, how the figure is named, the flag).
GATES = {
    "min_accuracy": ("accuracy", "accuracy", "--min-accuracy"),
    "min_f1": ("macro_f1", "macro F1", "--min-f1"),
}


def validate_bars(bars: dict[str, float | None]) -> None:
    """Refuse a bar outside [0, 1] (NaN included) before any work is done."""
    for name, bar in bars.items():
        if bar is not None and not 0.0 <= bar <= 1.0:
            flag = GATES[name][2]
            raise ConfigError(f"{flag} {bar:g} is outside [0, 1]; pass a fraction such as "
                              f"{flag} 0.85")


def quality_checks(report: dict[str, Any], bars: dict[str, float | None]) -> dict[str, Any]:
    """Each bar given, with the report's figure and whether it passed (a figure equal to the bar
    passes); an empty dict when no bar is given."""
    validate_bars(bars)
    checks = {}
    for name, bar in bars.items():
        if bar is not None:
            value = report[GATES[name][0]]
            checks[name] = {"bar": bar, "value": value, "passed": bool(value >= bar)}
    return checks


def enforce_checks(checks: dict[str, Any]) -> None:
    """Raise CheckFailed naming every figure below its bar, on one line."""
    failures = [
        f"{GATES[name][1]} {_shown(check['value'], check['bar'])} is below {GATES[name][2]} "
        f"{check['bar']:g}"
        for name, check in checks.items() if not check["passed"]
    ]
    if failures:
        raise CheckFailed("; ".join(failures))


def _shown(value: float, bar: float) -> str:
    """Four decimals, or more where four would round the value up to the bar (0.84996 -> 0.85
    would read as passing)."""
    text = f"{value:.4f}"
    return text if float(text) < bar else f"{value:.10g}"
