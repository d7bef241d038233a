"""The training loop: Adam, gradient clipping by global norm, best model by validation accuracy.

Every epoch also records gradient diagnostics (lstmcli.diagnostics): gradient norms per parameter
group, the update-to-weight ratio, the gradient flow through time and the gate statistics on a
fixed validation batch.

The loop assumes nothing about running alone: batches are sharded by rank (all ranks get the
same number), and only rank 0 writes files, so wrapping the model in DistributedDataParallel
under torchrun needs no change here beyond the wrapping.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lstmcli.batching import bucket_batches, iterate_batches, predict_logits, shard
from lstmcli.checkpoint import save_checkpoint, write_json_atomic
from lstmcli.config import Config
from lstmcli.data import DatasetSplits, load_splits
from lstmcli.diagnostics import GradientMonitor, diagnostic_batch, measure_flow
from lstmcli.errors import ConfigError, TrainingDiverged
from lstmcli.model import SentimentClassifier
from lstmcli.runs import (
    CONFIG_FILE,
    METRICS_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    new_run_dir,
    remember_latest,
)
from lstmcli.tokenizer import Tokenizer, encode_cached


class Callbacks:
    """Hooks for a front end (the CLI's progress bar and tables); every one is optional."""

    def on_start(self, info: dict[str, Any]) -> None: ...
    def on_epoch_start(self, epoch: int, steps: int) -> None: ...
    def on_step(self, step: int, loss: float) -> None: ...
    def on_epoch_end(self, row: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_val_accuracy: float
    test_accuracy: float | None
    history: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda asked for, but torch sees no CUDA device; use --device cpu"
        )
    return torch.device(name)


def process_rank() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless torch.distributed has been initialised (torchrun)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def seed_everything(seed: int) -> np.random.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def accuracy(logits: torch.Tensor, labels: np.ndarray) -> float:
    return float((logits.argmax(dim=1).numpy() == labels).mean()) if len(labels) else float("nan")


def train(
    config: Config, callbacks: Callbacks | None = None, overwrite: bool = False
) -> TrainResult:
    """Train a classifier as ``config`` says and write its run directory; returns the summary."""
    callbacks = callbacks or Callbacks()
    config.validate()
    rank, world_size = process_rank()
    device = resolve_device(config.train.device)
    rng = seed_everything(config.train.seed)
    run_dir = new_run_dir(config.train.output, config.model.cell, overwrite)

    splits = load_splits(config.data, seed=config.train.seed)
    tokenizer = Tokenizer.train(splits.train.texts, config.data.vocab_size, config.data.min_freq)
    encoded = {
        name: encode_cached(tokenizer, split.texts, config.data.max_len)
        for name, split in (("train", splits.train), ("validation", splits.validation),
                            ("test", splits.test)) if split is not None
    }
    config.model.vocab_size = tokenizer.vocab_size
    config.model.num_classes = len(splits.label_names)

    config.train.output = str(run_dir)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in (WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE, METRICS_FILE):
            (run_dir / name).unlink(missing_ok=True)  # --overwrite: never mix two runs' files
    model = SentimentClassifier(config.model).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay
    )
    monitor = GradientMonitor(model, config.train.clip_norm)
    # Fixed for the whole run, so that the per-epoch curves compare like with like.
    flow_batch = diagnostic_batch(encoded["validation"], splits.validation.labels,
                                  seed=config.train.seed)
    if rank == 0:
        tokenizer.save(run_dir / TOKENIZER_FILE)
        (run_dir / METRICS_FILE).write_text("", encoding="utf-8")  # a fresh run's history
    callbacks.on_start(_start_info(config, splits, run_dir, device, model))

    train_labels = splits.train.labels
    train_lengths = np.array([len(ids) for ids in encoded["train"]])
    best: dict[str, Any] = {"epoch": 0, "val_accuracy": -1.0, "val_loss": math.inf}
    history: list[dict[str, Any]] = []
    for epoch in range(1, config.train.epochs + 1):
        batches = shard(bucket_batches(train_lengths, config.train.batch_size, rng),
                        rank, world_size)
        callbacks.on_epoch_start(epoch, len(batches))
        started = time.perf_counter()
        model.train()
        loss_sum, correct, seen, tokens = 0.0, 0, 0, 0
        monitor.start_epoch()
        for step, (_, ids, lengths, targets) in enumerate(
            iterate_batches(encoded["train"], batches, device, train_labels), start=1
        ):
            logits = model(ids, lengths)  # (B, C)
            loss = nn.functional.cross_entropy(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = monitor.measure_and_clip()  # before clipping
            if not (math.isfinite(loss.item()) and math.isfinite(norm)):
                what = "loss" if not math.isfinite(loss.item()) else "gradient norm"
                raise TrainingDiverged(
                    f"training diverged at epoch {epoch}, step {step}: the {what} is "
                    f"{loss.item() if what == 'loss' else norm}; the best checkpoint so far in "
                    f"{run_dir} is intact; lower --lr or set --clip-norm"
                )
            monitor.before_update()
            optimizer.step()
            monitor.after_update()
            batch = len(targets)
            loss_sum += loss.item() * batch
            correct += int((logits.argmax(dim=1) == targets).sum())
            seen += batch
            tokens += int(lengths.sum())
            callbacks.on_step(step, loss.item())

        val_logits = predict_logits(model, encoded["validation"], 256, device)
        val_labels = torch.as_tensor(splits.validation.labels)
        seconds = time.perf_counter() - started
        gradients = monitor.epoch_summary()
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "val_loss": float(nn.functional.cross_entropy(val_logits, val_labels)),
            "val_accuracy": accuracy(val_logits, splits.validation.labels),
            "grad_norm_mean": gradients.pop("grad_norm_mean"),
            "grad_norm_max": gradients.pop("grad_norm_max"),
            "clipped_fraction": gradients.pop("clipped_fraction"),
            "steps": gradients.pop("steps"),
            "seconds": seconds,
            "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
            **gradients,
            **_flow_columns(measure_flow(model, *flow_batch).to_dict()),
        }
        improved = (row["val_accuracy"], -row["val_loss"]) > (best["val_accuracy"],
                                                              -best["val_loss"])
        row["best"] = improved
        if improved:
            best = {key: row[key] for key in ("epoch", "val_accuracy", "val_loss")}
            if rank == 0:
                save_checkpoint(run_dir, model, config, splits.label_names, {"best": best})
        history.append(row)
        if rank == 0:
            with open(run_dir / METRICS_FILE, "a", encoding="utf-8") as metrics:
                metrics.write(json.dumps(row) + "\n")
        callbacks.on_epoch_end(row)

    test_accuracy = None
    if rank == 0:
        test_accuracy = _final_test(run_dir, model, config, splits, encoded, device)
        remember_latest(run_dir)
    return TrainResult(run_dir, best["epoch"], best["val_accuracy"], test_accuracy, history)


def _flow_columns(flow: dict[str, Any]) -> dict[str, Any]:
    """The flow record as metrics.jsonl columns: the two summaries flat (easy to plot), the
    per-step curves under "flow" and the gate statistics under "gates"."""
    gates = flow.pop("gates")
    return {"flow_first_last_ratio": flow["first_last_ratio"],
            "flow_decay_per_step": flow["decay_per_step"], "flow": flow, "gates": gates}


def _final_test(
    run_dir: Path,
    model: SentimentClassifier,
    config: Config,
    splits: DatasetSplits,
    encoded: dict[str, list[np.ndarray]],
    device: torch.device,
) -> float | None:
    """Test accuracy of the best checkpoint, reported only: never used to choose a model."""
    if splits.test is None:
        return None
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(run_dir / WEIGHTS_FILE), device=str(device)))
    test_accuracy = accuracy(predict_logits(model, encoded["test"], 256, device),
                             splits.test.labels)
    meta = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    meta["test_accuracy"] = test_accuracy
    write_json_atomic(run_dir / CONFIG_FILE, meta)
    return test_accuracy


def _start_info(
    config: Config,
    splits: DatasetSplits,
    run_dir: Path,
    device: torch.device,
    model: nn.Module,
) -> dict[str, Any]:
    return {
        "run_dir": str(run_dir),
        "device": str(device),
        "dataset": splits.name,
        "label_names": splits.label_names,
        "train_size": len(splits.train),
        "validation_size": len(splits.validation),
        "test_size": len(splits.test) if splits.test is not None else 0,
        "vocab_size": config.model.vocab_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "cell": config.model.cell,
        "notes": list(splits.notes),
    }
