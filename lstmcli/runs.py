"""Where runs live: the runs root, fresh run directories and the pointer to the latest run.

Kept free of torch so that `lstm predict` and `--help` can resolve a run without importing it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from lstmcli.errors import CheckpointError, ConfigError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
METRICS_FILE = "metrics.jsonl"


def runs_root() -> Path:
    """$LSTM_RUNS_DIR, or ./runs."""
    return Path(os.environ.get("LSTM_RUNS_DIR", "runs"))


def state_dir() -> Path:
    """$LSTM_STATE_DIR, or $XDG_STATE_HOME/lstmcli (~/.local/state/lstmcli)."""
    if "LSTM_STATE_DIR" in os.environ:
        return Path(os.environ["LSTM_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "lstmcli"


def is_run(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def new_run_dir(output: str | None, cell: str, overwrite: bool = False) -> Path:
    """The directory a new training run will write to (not created yet, so that a run failing on
    bad data leaves nothing behind). An existing run is never replaced silently."""
    if output is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = runs_root() / f"{stamp}-{cell}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = runs_root() / f"{stamp}-{cell}-{suffix}"
    else:
        path = Path(output)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--output {path} is a file; choose a directory path")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ConfigError(
            f"--output {path} already exists and is not empty; "
            "choose another --output or pass --overwrite to replace it"
        )
    return path


def remember_latest(run_dir: Path) -> None:
    """Point `lstm predict` / `lstm eval` without --model at this run."""
    directory = state_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        temp = directory / "latest_run.tmp"
        temp.write_text(str(run_dir.resolve()) + "\n", encoding="utf-8")
        os.replace(temp, directory / "latest_run")
    except OSError:
        pass  # a read-only home must not fail a finished training run; the runs root still works


def latest_run() -> Path:
    """The run trained last: the remembered one if it still exists, else the newest in the runs
    root."""
    pointer = state_dir() / "latest_run"
    if pointer.is_file():
        path = Path(pointer.read_text(encoding="utf-8").strip())
        if is_run(path):
            return path
    root = runs_root()
    candidates = [p for p in root.iterdir() if is_run(p)] if root.is_dir() else []
    if not candidates:
        raise CheckpointError(
            f"no trained run found (looked in {root.resolve()}); "
            "train one with `lstm train` or pass --model RUN_DIR"
        )
    return max(candidates, key=lambda p: (p / CONFIG_FILE).stat().st_mtime)


def resolve_run(model: str | None) -> Path:
    """--model RUN_DIR (checked), or the latest run."""
    if model is None:
        return latest_run()
    path = Path(model)
    if not path.exists():
        raise CheckpointError(f"run directory {path} does not exist; pass a directory from "
                              "`lstm train --output` (or omit --model to use the latest run)")
    if not path.is_dir():
        raise CheckpointError(f"--model {path} is a file; pass the run directory that holds it")
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE)
               if not (path / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{path} is not a complete run directory (missing {', '.join(missing)}); "
            "pass a directory written by `lstm train`"
        )
    return path
