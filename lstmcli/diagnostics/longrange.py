"""The bundled long-range task behind `lstm diagnose --cell ...`.

Every example is ``--seq-len`` tokens: one sentiment word in the first SIGNAL_POSITIONS positions,
neutral filler words everywhere else, and the label is that word's polarity. A classifier reading
the last hidden state (``last`` pooling) must carry one bit across the whole sequence, so the task
isolates exactly what the gradient through time has to do.

Every cell starts with its memory gate set to carry (``gate_bias``: the initial bias of the LSTM
family's forget gate and of the GRU's update gate z, in h_t = (1 - z) * n + z * h_{t-1}; the plain
RNN has no such gate). The gradient flow and gates are measured on a fixed batch of ``seq_len``
tokens at initialisation (the headline: what the gates do for the gradient as training starts),
then each cell is trained briefly with a length curriculum (lengths double from CURRICULUM_START
up to ``seq_len``, the last part of the budget at full length) and measured again: the accuracy
on held-out examples, and the flow and gates of the trained cell.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lstmcli.config import ModelConfig
from lstmcli.diagnostics.flow import DIAGNOSTIC_BATCH, FlowReport, measure_flow
from lstmcli.errors import ConfigError
from lstmcli.nn.cells import get_cell
from lstmcli.nn.classifier import SentimentClassifier
from lstmcli.training.callbacks import Callbacks
from lstmcli.training.trainer import Batch, ClipGradients, Trainer

POSITIVE = ("great", "superb", "wonderful", "excellent")
NEGATIVE = ("awful", "dreadful", "boring", "terrible")
FILLER = (
    "the", "a", "movie", "film", "plot", "scene", "actor", "camera", "story", "was", "is", "and",
    "then", "of", "to", "in", "on", "with", "it", "this", "that", "after", "before", "while",
    "there", "some", "day", "night", "house", "street", "city", "car", "table", "window", "door",
    "chair", "paper", "water", "time", "music",
)
VOCABULARY = ("[PAD]", "[UNK]", *POSITIVE, *NEGATIVE, *FILLER)
LABEL_NAMES = ("negative", "positive")
SIGNAL_POSITIONS = 3  # the sentiment word is one of the first three tokens
CURRICULUM_START = 8
FULL_LENGTH_SHARE = 0.4  # the last 40% of the training steps see full-length examples only

DEFAULT_SEQ_LEN = 200
DEFAULT_TRAIN_STEPS = 300
DEFAULT_HIDDEN_SIZE = 32
DEFAULT_GATE_BIAS = 4.0  # sigmoid(4) = 0.982: 0.982 ** 200 = 0.027 (5: LSTM trains worse)
EMBED_DIM = 16
BATCH_SIZE = 32
LEARNING_RATE = 1e-2
CLIP_NORM = 5.0
EVAL_EXAMPLES = 512

_FIRST_POSITIVE = 2
_FIRST_NEGATIVE = _FIRST_POSITIVE + len(POSITIVE)
_FIRST_FILLER = _FIRST_NEGATIVE + len(NEGATIVE)


@dataclass(frozen=True)
class TaskSettings:
    seq_len: int = DEFAULT_SEQ_LEN
    train_steps: int = DEFAULT_TRAIN_STEPS
    hidden_size: int = DEFAULT_HIDDEN_SIZE
    seed: int = 0
    gate_bias: float = DEFAULT_GATE_BIAS

    def validate(self) -> None:
        if self.seq_len < 2:
            raise ConfigError(
                f"--seq-len must be at least 2 (a sentiment word and what follows it), got "
                f"{self.seq_len}"
            )
        if self.train_steps < 0:
            raise ConfigError(f"--train-steps must be >= 0 (0: at initialisation), got "
                              f"{self.train_steps}")
        if self.hidden_size < 1:
            raise ConfigError(f"--hidden-size must be > 0, got {self.hidden_size}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq_len": self.seq_len, "train_steps": self.train_steps,
            "hidden_size": self.hidden_size, "embed_dim": EMBED_DIM, "seed": self.seed,
            "gate_bias": self.gate_bias,
            "signal_positions": min(SIGNAL_POSITIONS, self.seq_len - 1),
            "vocabulary": len(VOCABULARY), "batch_size": BATCH_SIZE, "lr": LEARNING_RATE,
            "curriculum": curriculum(self.seq_len), "eval_examples": EVAL_EXAMPLES,
            "flow_examples": DIAGNOSTIC_BATCH,
        }


def make_examples(
    count: int, length: int, rng: np.random.Generator, position: int | None = None
) -> tuple[Tensor, Tensor]:
    """``count`` task examples of ``length`` tokens -> ids (N, length), labels (N,). The
    sentiment word sits at a random one of the first SIGNAL_POSITIONS positions, or at
    ``position`` when given."""
    ids = rng.integers(_FIRST_FILLER, len(VOCABULARY), size=(count, length))  # (N, T)
    labels = rng.integers(0, 2, size=count)  # (N,)
    positions = rng.integers(0, min(SIGNAL_POSITIONS, length - 1), size=count)
    if position is not None:
        positions[:] = position
    positive = rng.integers(_FIRST_POSITIVE, _FIRST_NEGATIVE, size=count)
    negative = rng.integers(_FIRST_NEGATIVE, _FIRST_FILLER, size=count)
    ids[np.arange(count), positions] = np.where(labels == 1, positive, negative)
    return torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(labels, dtype=torch.long)


def decode(ids: Tensor) -> str:
    """One example as words (for reading what the task looks like)."""
    return " ".join(VOCABULARY[i] for i in ids.tolist())


def curriculum(seq_len: int) -> list[int]:
    """Training lengths in order: CURRICULUM_START, doubling, then seq_len."""
    lengths = []
    length = CURRICULUM_START
    while length < seq_len:
        lengths.append(length)
        length *= 2
    return [*lengths, seq_len]


def length_at(step: int, steps: int, seq_len: int) -> int:
    """The training length at ``step``: each curriculum stage gets an equal share of the first
    (1 - FULL_LENGTH_SHARE) of the steps; the rest are at full length. The few distinct lengths
    also let the fused CPU kernels reuse their compiled primitives."""
    stages = curriculum(seq_len)
    ramp = int(steps * (1 - FULL_LENGTH_SHARE))
    if step >= ramp or len(stages) == 1:
        return seq_len
    return stages[min(len(stages) - 2, step * (len(stages) - 1) // ramp)]


def build_model(cell: str, hidden_size: int, gate_bias: float = 1.0) -> SentimentClassifier:
    """A task model whose memory gate (the cell's ``memory_gate``: the forget gate of the LSTM
    family, the GRU's update gate) starts at sigmoid(gate_bias); a cell without one (the RNN)
    keeps torch's initialisation."""
    has_gate = get_cell(cell).memory_gate is not None
    config = ModelConfig(cell=cell, vocab_size=len(VOCABULARY), embed_dim=EMBED_DIM,
                         hidden_size=hidden_size, pooling="last", num_classes=2,
                         gate_bias=gate_bias if has_gate else None)
    return SentimentClassifier(config)


@dataclass
class CellResult:
    cell: str
    flow: FlowReport  # at initialisation (the headline measurement)
    accuracy: float  # after training, on EVAL_EXAMPLES held-out examples of seq_len tokens
    train_seconds: float
    trained: FlowReport | None = None  # after training; None with train_steps 0

    def to_dict(self) -> dict[str, Any]:
        """The flow at initialisation (FlowReport's keys), ``accuracy``, ``train_seconds`` and
        ``trained``: the flow after training (the same keys), or None without training."""
        return {**self.flow.to_dict(), "accuracy": self.accuracy,
                "train_seconds": self.train_seconds,
                "trained": None if self.trained is None else self.trained.to_dict()}


Progress = Callable[[str, int, int], None]  # (cell, step done, steps)


def run_cell(cell: str, settings: TaskSettings, progress: Progress | None = None) -> CellResult:
    """Measure one cell at initialisation, train it on the task (or not, with train_steps 0)
    and measure it again."""
    get_cell(cell)  # ConfigError listing the cells
    settings.validate()
    # Every cell sees the same initial draw of the random streams and the same examples.
    torch.manual_seed(settings.seed)
    model = build_model(cell, settings.hidden_size, settings.gate_bias)
    held_out = np.random.default_rng([settings.seed, 2])
    eval_ids, eval_labels = make_examples(EVAL_EXAMPLES, settings.seq_len, held_out)  # (N, T)
    lengths = torch.full((len(eval_labels),), settings.seq_len, dtype=torch.long)
    # The flow batch has its sentiment word first: ||dL/ds_1|| is then exactly the gradient that
    # reaches the deciding token (were the word at t=3, the state before it would rightly get
    # almost no gradient, and the curve would say nothing about memory).
    flow_ids, flow_labels = make_examples(DIAGNOSTIC_BATCH, settings.seq_len, held_out,
                                          position=0)
    flow_lengths = lengths[:DIAGNOSTIC_BATCH]
    # measure_flow works on a copy and leaves the random streams alone: training is unchanged.
    initial = measure_flow(model, flow_ids, flow_lengths, flow_labels)
    rng = np.random.default_rng([settings.seed, 1])
    started = time.perf_counter()
    if settings.train_steps:
        _train(model, settings, rng, cell, progress)
    seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        accuracy = float((model(eval_ids, lengths).argmax(dim=1) == eval_labels).float().mean())
    trained = None
    if settings.train_steps:
        trained = measure_flow(model, flow_ids, flow_lengths, flow_labels)
    return CellResult(cell, initial, accuracy, seconds, trained)


def _train(
    model: SentimentClassifier,
    settings: TaskSettings,
    rng: np.random.Generator,
    cell: str,
    progress: Progress | None,
) -> None:
    """Adam with gradient clipping on the length curriculum, through the same trainer as `lstm
    train`, on the fused kernels where the cell has one (only the measurement needs the step-wise
    path)."""
    steps = settings.train_steps
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=LEARNING_RATE),
                      gradients=ClipGradients(model.parameters(), CLIP_NORM),
                      callbacks=_StepProgress(cell, steps, progress))

    def batches() -> Iterator[Batch]:
        for step in range(steps):
            length = length_at(step, steps, settings.seq_len)
            ids, labels = make_examples(BATCH_SIZE, length, rng)  # (B, T), (B,)
            lengths = torch.full((BATCH_SIZE,), length, dtype=torch.long)
            yield Batch((ids, lengths), labels, BATCH_SIZE * length)

    trainer.train_epoch(batches(), epoch=1, steps=steps)


class _StepProgress(Callbacks):
    def __init__(self, cell: str, steps: int, progress: Progress | None) -> None:
        self.cell, self.steps, self.progress = cell, steps, progress

    def on_step(self, step: int, loss: float) -> None:
        if self.progress is not None:
            self.progress(self.cell, step, self.steps)


def compare_cells(
    cells: list[str], settings: TaskSettings, progress: Progress | None = None
) -> list[CellResult]:
    """run_cell for every cell (duplicates once), in the order given."""
    for cell in cells:
        get_cell(cell)  # ConfigError listing the cells, before any work
    settings.validate()
    return [run_cell(cell, settings, progress) for cell in dict.fromkeys(cells)]
