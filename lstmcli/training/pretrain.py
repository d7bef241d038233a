"""The assembly of a pretraining run (`lstm pretrain`): unlabelled texts -> tokenizer -> windows
-> language model (:mod:`lstmcli.nn.language_model`) -> epochs -> run directory.

The epochs are :mod:`lstmcli.training.loop`'s, as for a classifier: Adam, the lr schedule,
clipping, gradient norms per parameter group, the best checkpoint, SIGINT/SIGTERM and an exact
``--resume``. What differs: the loss is the language model's (mean negative log-likelihood per
predicted token, in nats), each epoch is judged by the validation perplexity ``exp(val_loss)``
on held-out documents, and the best checkpoint is the one with the lowest. The gradient flow
through time and the gate statistics that `lstm train` measures each epoch are left out: they
are defined on a classifier's loss for a whole text, which a language model does not have.

The run directory has the classifier's layout; config.json says ``"kind": "language_model"``.
It is not remembered as the latest run: `lstm predict` and `lstm eval` have nothing to classify
with it.

Under torchrun it is distributed as `lstm train` is (:mod:`lstmcli.training.run`): the global batch
of windows split between the processes, each process's loss weighted by its share of the
predicted tokens, the validation windows sharded and the sums added up.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lstmcli import distributed
from lstmcli.data.batching import bucket_batches, iterate_batches
from lstmcli.data.corpus import MAX_DOCUMENT_TOKENS, Corpus, load_corpus, windows
from lstmcli.data.registry import DATA_DIR_ENV
from lstmcli.data.tokenizer import Tokenizer, encode_cached
from lstmcli.device import describe_device, resolve_device
from lstmcli.errors import CheckpointError, DataError
from lstmcli.nn.language_model import LanguageModel
from lstmcli.pretrain_config import PretrainConfig
from lstmcli.rundir import claim
from lstmcli.runs import LANGUAGE_MODEL, TOKENIZER_FILE, new_run_dir, save_checkpoint
from lstmcli.training.callbacks import Callbacks
from lstmcli.training.loop import EpochTask, run_epochs
from lstmcli.training.precision import Precision, check_precision
from lstmcli.training.resume import (
    ResumeState,
    StopFlag,
    clear_resume,
    stop_on_signals,
)
from lstmcli.training.run import open_resume, seed_everything
from lstmcli.training.trainer import Batch, EpochStats

EVAL_BATCH = 256  # windows per validation batch


@dataclass
class PretrainResult:
    run_dir: Path
    best_epoch: int
    best_val_perplexity: float
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False  # --patience ended the run before --epochs
    stopped_epoch: int | None = None


def perplexity(loss: float) -> float:
    """exp(loss), the perplexity of a mean negative log-likelihood in nats (inf past float)."""
    return math.exp(loss) if loss < 700 else math.inf


@distributed.entry
def pretrain(
    config: PretrainConfig, callbacks: Callbacks | None = None, overwrite: bool = False
) -> PretrainResult:
    """Pretrain a language model as ``config`` says and write its run directory."""
    callbacks = callbacks or Callbacks()
    config.validate()
    device = resolve_device(config.train.device, config.train.threads)
    check_precision(config.train.precision, device)  # before anything is read or written
    processes = distributed.start()
    device = processes.place(device, config.train.threads)
    rng = seed_everything(config.train.seed)
    run_dir = processes.from_rank0(
        lambda: new_run_dir(config.train.output, f"{config.model.cell}-lm", overwrite))
    _absolute_paths(config)
    corpus = load_corpus(config.data, seed=config.train.seed)
    tokenizer = Tokenizer.train(corpus.train, config.data.vocab_size, config.data.min_freq)
    train_windows, val_windows = _windows(tokenizer, corpus, config)
    config.model.vocab_size = tokenizer.vocab_size
    config.model.num_classes = 0  # a language model has none
    config.train.output = str(run_dir)
    # The directory is created (and locked) only with the data read: bad data leaves nothing.
    lock = processes.on_rank0(claim(run_dir, overwrite, command="pretrain"))
    with lock, stop_on_signals() as stop:
        processes.from_rank0(lambda: tokenizer.save(run_dir / TOKENIZER_FILE))
        task = LanguageModelTask(config, train_windows, val_windows, device)
        return _finish(task, config, corpus, callbacks, run_dir, rng, None, stop)


@distributed.entry
def resume_pretrain(
    run_dir: Path, callbacks: Callbacks | None = None, epochs: int | None = None
) -> PretrainResult:
    """Continue the interrupted pretraining in ``run_dir`` exactly: its config, its tokenizer,
    the texts read again. ``epochs`` extends (or shortens) the run, not to before the
    interrupted epoch."""
    callbacks = callbacks or Callbacks()
    run_dir = Path(run_dir)
    processes = distributed.start()
    # Rank 0's files: the other processes (on other machines, maybe) hear them from it.
    state, config, tokenizer = processes.from_rank0(lambda: (
        *open_resume(run_dir, "pretrain", PretrainConfig, epochs),
        Tokenizer.load(run_dir / TOKENIZER_FILE)))
    device = resolve_device(config.train.device, config.train.threads)
    check_precision(config.train.precision, device)
    device = processes.place(device, config.train.threads)
    rng = seed_everything(config.train.seed)
    corpus = load_corpus(config.data, seed=config.train.seed)
    if tokenizer.vocab_size != config.model.vocab_size:
        raise CheckpointError(f"{run_dir / TOKENIZER_FILE} changed since {run_dir} was "
                              "interrupted; it cannot be resumed exactly: pretrain a new run")
    train_windows, val_windows = _windows(tokenizer, corpus, config)
    lock = processes.on_rank0(claim(run_dir, False, resume=True, command="pretrain"))
    with lock, stop_on_signals() as stop:
        task = LanguageModelTask(config, train_windows, val_windows, device)
        return _finish(task, config, corpus, callbacks, run_dir, rng, state, stop)


def _absolute_paths(config: PretrainConfig) -> None:
    """config.json must find the texts from any directory: text files and the data directory
    become absolute (as absolute_data_paths does for `lstm train`)."""
    data = config.data
    data.text_files = [str(Path(path).expanduser().resolve()) for path in data.text_files]
    root = data.data_dir or os.environ.get(DATA_DIR_ENV) or None
    if root is not None and Path(root).expanduser().is_dir():
        data.data_dir = str(Path(root).expanduser().resolve())


def _windows(
    tokenizer: Tokenizer, corpus: Corpus, config: PretrainConfig
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The training and validation windows; DataError when either has none."""
    bptt = config.data.bptt
    found = []
    for name, texts in (("training", corpus.train), ("validation", corpus.validation)):
        pieces = windows(encode_cached(tokenizer, texts, MAX_DOCUMENT_TOKENS), bptt)
        if not pieces:
            raise DataError(f"the {name} documents hold no text of two or more tokens to "
                            "predict; add texts, or raise --val-fraction")
        found.append(pieces)
    return found[0], found[1]


class LanguageModelTask(EpochTask):
    """A language model's epochs: its windows, its loss, validation perplexity."""

    command = "pretrain"
    measure_accuracy = False
    best_keys = ("epoch", "val_loss", "val_perplexity")
    initial_best = {"epoch": 0, "val_loss": math.inf, "val_perplexity": math.inf}

    def __init__(self, config: PretrainConfig, train_windows: list[np.ndarray],
                 val_windows: list[np.ndarray], device: torch.device) -> None:
        self.language_model = LanguageModel(config.model).to(device)
        super().__init__(self.language_model, np.array([len(w) for w in train_windows]),
                         Precision(config.train.precision, device))
        # A batch may hold no word of one of an adaptive softmax's tail clusters.
        tail = getattr(self.language_model.head, "tail", None)
        self.sometimes_unused = () if tail is None else tuple(
            f"head.{name}" for name, _ in tail.named_parameters(prefix="tail"))
        self.config, self.device = config, device
        self.train_windows, self.val_windows = train_windows, val_windows

    def batches(self, index_batches: list[np.ndarray]) -> Iterator[Batch]:
        model = self.language_model
        for index, ids, lengths, _ in iterate_batches(self.train_windows, index_batches,
                                                      self.device):
            # (B, T), (B,); the targets (N,): every predicted token, of both directions
            yield Batch((ids, lengths), model.targets(ids, lengths),
                        int(self.lengths[index].sum()))

    def loss(self, output: Tensor, targets: Tensor) -> Tensor:
        return self.language_model.loss(output, targets)

    def loss_terms(self, index: np.ndarray) -> int:
        # Every window of T tokens predicts T - 1 of them, once per direction.
        directions = 2 if self.config.model.bidirectional else 1
        return int(np.maximum(self.lengths[index] - 1, 0).sum()) * directions

    def measure(self, stats: EpochStats) -> dict[str, Any]:
        # Each process scores every world_size-th window; the sums make the whole set's mean.
        processes = distributed.current()
        share = self.val_windows[processes.rank::processes.world_size]
        total, count = processes.sums(nll_sums(self.language_model, share, self.device))
        val_loss = total / max(count, 1)
        return {"train_loss": stats.loss, "train_perplexity": perplexity(stats.loss),
                "val_loss": val_loss, "val_perplexity": perplexity(val_loss)}

    def save(self, run_dir: Path, best: dict[str, Any]) -> None:
        save_checkpoint(run_dir, self.model, self.config, [],
                        {"kind": LANGUAGE_MODEL, "best": best,
                         "device": describe_device(self.device),
                         **distributed.current().record()})


@torch.no_grad()
def nll_sums(model: LanguageModel, sequences: Sequence[np.ndarray],
             device: torch.device | str = "cpu") -> tuple[float, int]:
    """The summed negative log-likelihood of every predicted token of ``sequences`` and how
    many tokens that is, in eval mode."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for _, ids, lengths, _ in iterate_batches(sequences, bucket_batches(
            [len(s) for s in sequences], EVAL_BATCH), device):
        nll = model.nll(ids, lengths)  # (N,)
        total += float(nll.detach().cpu().double().sum())  # float64: not on every device (MPS)
        count += nll.numel()
    model.train(was_training)
    return total, count


def _finish(
    task: LanguageModelTask,
    config: PretrainConfig,
    corpus: Corpus,
    callbacks: Callbacks,
    run_dir: Path,
    rng: np.random.Generator,
    start: ResumeState | None,
    stop: StopFlag,
) -> PretrainResult:
    info = {
        "kind": LANGUAGE_MODEL,
        "run_dir": str(run_dir),
        "device": describe_device(task.device),
        "precision": config.train.precision,
        "dataset": corpus.name,
        "train_size": len(corpus.train),
        "validation_size": len(corpus.validation),
        "train_windows": len(task.train_windows),
        "train_tokens": int(task.lengths.sum()),
        "bptt": config.data.bptt,
        "vocab_size": config.model.vocab_size,
        "parameters": sum(p.numel() for p in task.model.parameters()),
        "cell": config.model.cell,
        "epochs": config.train.epochs,
        "diagnostics": config.train.diagnostics,
        "processes": distributed.current().describe(),
        "notes": list(corpus.notes),
    }
    epochs = run_epochs(task, config, callbacks, run_dir, rng, start, stop, info)
    distributed.current().from_rank0(lambda: clear_resume(run_dir))
    best = epochs.best
    return PretrainResult(run_dir, best["epoch"], best["val_perplexity"], epochs.history,
                          epochs.stopped_epoch is not None, epochs.stopped_epoch)
