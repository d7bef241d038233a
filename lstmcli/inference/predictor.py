"""Predictions of a trained run: probabilities and labels, for a list or a stream of texts.

Two engines compute the same probabilities (within 1e-5): torch, and numpy
(:mod:`lstmcli.inference.numpy_model`), which never imports torch. Importing torch takes seconds,
running a few texts through numpy milliseconds, so `lstm predict` on a few texts on the CPU picks
numpy; bulk work and GPUs go to torch's batched kernels.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lstmcli.config import ENGINE_CHOICES, NUMPY_MAX_TEXTS
from lstmcli.errors import ConfigError, DataError

# Texts per chunk of a stream: enough for length-sorted batches to waste little on padding, few
# enough that a chunk's results reach the reader quickly and memory stays flat.
STREAM_CHUNK = 2048


def choose_engine(engine: str, device: str, texts: int | None, int8: bool = False) -> str:
    """The engine that will run: "numpy" or "torch". ``device`` is a resolved device name
    ("cpu", "cuda", "cuda:1"); auto picks numpy on the CPU for up to NUMPY_MAX_TEXTS texts, and
    for a stream of unknown length (``texts`` None): counting it would mean waiting for input
    that a pipeline may send only after it has seen the answers so far. ``int8`` (torch's int8
    kernels, CPU only) needs torch."""
    if engine not in ENGINE_CHOICES:
        raise ConfigError(
            f"unknown engine {engine!r}; choose one of: {', '.join(ENGINE_CHOICES)}"
        )
    on_cpu = device == "cpu"
    if int8:
        if engine == "numpy":
            raise ConfigError("--int8 runs on the torch engine (torch's int8 kernels); drop "
                              "--engine numpy, or drop --int8")
        if not on_cpu:
            raise ConfigError(f"--int8 runs on the CPU only, and the device is {device}; pass "
                              "--device cpu or drop --int8")
        return "torch"
    if engine == "numpy" and not on_cpu:
        raise ConfigError(f"--engine numpy runs on the CPU only, and the device is {device}; "
                          "pass --device cpu or use --engine torch")
    if engine == "auto":
        return "numpy" if on_cpu and (texts is None or texts <= NUMPY_MAX_TEXTS) else "torch"
    return engine


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
    """A trained run ready to classify texts, on the torch or the numpy engine."""

    def __init__(self, run: Any, device: str = "cpu", engine: str = "torch") -> None:
        self.run = run
        self.device = device
        self.engine = engine
        self.label_names: list[str] = run.label_names

    @classmethod
    def from_run(
        cls, model: str | Path | None = None, device: str = "cpu", engine: str = "torch",
        int8: bool = False,
    ) -> Predictor:
        """Load a run for ``engine`` "torch" or "numpy" (see choose_engine for "auto");
        ``int8``: int8 weight matrices on the CPU: the run's int8 ONNX graph on onnxruntime
        when the `export` extra is installed (:mod:`lstmcli.inference.onnx_int8`), else the
        torch model with int8 weights (:mod:`lstmcli.nn.int8`)."""
        from lstmcli.runload import load_run

        if int8:
            choose_engine(engine, device, None, int8=True)  # torch on the CPU, or one line
        run = load_run(model, device, engine)
        if int8:
            from lstmcli.inference import onnx_int8

            if onnx_int8.available():  # 1.9x torch float32 here, where torch's int8 is slower
                import torch

                predictor = cls(run, device, "onnx-int8")
                predictor.int8_model = onnx_int8.OnnxInt8Model(run, torch.get_num_threads())
                return predictor
            from lstmcli.nn.int8 import int8_classifier

            run.model = int8_classifier(run.model)
        return cls(run, device, engine)

    @property
    def run_dir(self) -> Path:
        return self.run.path

    def probabilities(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Class probabilities (N, C) float32, rows in input order; texts: a list or a split's
        TextColumn (the tokenizer reads either a batch at a time)."""
        if not texts:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        data = self.run.config.data  # the run's own cut, so a text reads as in training
        ids = self.run.tokenizer.encode(texts, data.max_len, data.truncation)
        if self.engine == "numpy":
            return self.run.model.probabilities(ids, batch_size)
        if self.engine == "onnx-int8":
            logits = self.int8_model.logits(ids, batch_size)  # (N, C)
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            return shifted / shifted.sum(axis=1, keepdims=True)
        import torch

        from lstmcli.nn.classifier import predict_logits

        logits = predict_logits(self.run.model, ids, batch_size, self.device)
        return torch.softmax(logits, dim=1).numpy()

    def predict(self, texts: list[str]) -> list[Prediction]:
        """One Prediction per text, in order."""
        return list(self.predict_stream(texts, chunk=max(len(texts), 1)))

    def predict_stream(
        self, texts: Iterable[str], chunk: int = STREAM_CHUNK
    ) -> Iterator[Prediction]:
        """Predictions in input order, ``chunk`` texts at a time: each chunk's results come out
        as soon as they are computed, and memory holds one chunk, whatever the input's length."""
        iterator = iter(texts)
        number = 0
        while batch := list(itertools.islice(iterator, chunk)):
            for text in batch:
                number += 1
                if not text.strip():
                    raise DataError(f"text {number} is empty; give each text some words")
            for text, row in zip(batch, self.probabilities(batch), strict=True):
                best = int(row.argmax())
                yield Prediction(
                    text, self.label_names[best], float(row[best]),
                    {name: float(p) for name, p in zip(self.label_names, row, strict=True)},
                )
