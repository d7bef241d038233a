"""Checkpoints that describe themselves: safetensors weights + a JSON config, never pickle.

A run directory holds ``model.safetensors``, ``config.json`` (model, data and training config,
label names, vocabulary size, format and package versions, the best epoch), ``tokenizer.json``
and ``metrics.jsonl``. Loading rebuilds the model from ``config.json`` alone.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lstmcli import __version__
from lstmcli.config import Config
from lstmcli.errors import CheckpointError, LstmError
from lstmcli.model import SentimentClassifier
from lstmcli.runs import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, resolve_run
from lstmcli.tokenizer import Tokenizer

FORMAT_VERSION = 1


@dataclass
class LoadedRun:
    path: Path
    model: SentimentClassifier
    config: Config
    tokenizer: Tokenizer
    label_names: list[str]
    meta: dict[str, Any]


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(temp, path)


def save_checkpoint(
    run_dir: Path,
    model: SentimentClassifier,
    config: Config,
    label_names: list[str],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write weights then config, each atomically, so a crash leaves the previous pair usable."""
    state = {name: tensor.detach().cpu().contiguous()
             for name, tensor in model.state_dict().items()}
    temp = run_dir / (WEIGHTS_FILE + ".tmp")
    metadata = {"format": "lstmcli", "format_version": str(FORMAT_VERSION)}
    save_file(state, str(temp), metadata=metadata)
    os.replace(temp, run_dir / WEIGHTS_FILE)
    payload = {
        "format_version": FORMAT_VERSION,
        "lstmcli_version": __version__,
        "torch_version": torch.__version__,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "label_names": list(label_names),
        "vocab_size": config.model.vocab_size,
        **config.to_dict(),
        **(extra or {}),
    }
    write_json_atomic(run_dir / CONFIG_FILE, payload)


def read_run_config(run_dir: Path) -> tuple[Config, list[str], dict[str, Any]]:
    """The config, label names and remaining metadata of a run, checked for compatibility."""
    path = run_dir / CONFIG_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"{path} is unreadable ({error}); retrain or restore the run"
        ) from None
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{run_dir} has checkpoint format {version!r}, this lstmcli reads format "
            f"{FORMAT_VERSION}; use lstmcli {meta.get('lstmcli_version', '?')} or retrain"
        )
    try:
        config = Config.from_dict(
            {key: meta[key] for key in ("model", "data", "train")}, source=str(path)
        )
        label_names = [str(name) for name in meta["label_names"]]
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{path} lacks {error}; retrain or restore the run") from None
    except LstmError as error:
        raise CheckpointError(str(error)) from None
    return config, label_names, meta


def load_run(model: str | Path | None = None, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild a trained model from its run directory (the latest run when ``model`` is None)."""
    run_dir = resolve_run(None if model is None else str(model))
    config, label_names, meta = read_run_config(run_dir)
    network = SentimentClassifier(config.model)
    try:
        state = load_file(str(run_dir / WEIGHTS_FILE), device="cpu")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{run_dir / WEIGHTS_FILE} is unreadable ({error}); "
                              "retrain or restore the run") from None
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[1:2] or [str(error)]
        raise CheckpointError(
            f"{run_dir / WEIGHTS_FILE} does not match its config.json ({first[0].strip()}); "
            "retrain or restore the run"
        ) from None
    network.to(device).eval()
    tokenizer = Tokenizer.load(run_dir / TOKENIZER_FILE)
    return LoadedRun(run_dir, network, config, tokenizer, label_names, meta)
