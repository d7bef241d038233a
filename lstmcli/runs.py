"""Run directories: where they live, the pointer to the latest run, writing checkpoints and
reading their config (loading the model is :mod:`lstmcli.runload`'s).

A run directory holds ``model.safetensors``, ``config.json`` (model, data and training config,
label names, vocabulary size, format and package versions, the best epoch), ``tokenizer.json``
and ``metrics.jsonl``. Weights are safetensors, never pickle. Every file goes through
:mod:`lstmcli.atomic`.

A run of `lstm pretrain` (config.json ``"kind": "language_model"``) classifies nothing: loading
it is refused with one line naming `lstm train --init-from`; it is never the latest run.

Free of torch at import, so that `lstm predict` and `--help` can resolve a run without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmcli import __version__
from lstmcli.atomic import atomic_write, write_json_atomic
from lstmcli.config import Config
from lstmcli.errors import CheckpointError, ConfigError, LstmError
from lstmcli.pretrain_config import PretrainConfig

if TYPE_CHECKING:
    import torch


WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
METRICS_FILE = "metrics.jsonl"
# New weights wait here until config.json, which names their checksum, has been written.
PENDING_WEIGHTS_FILE = WEIGHTS_FILE + ".next"
# The resumable state of an interrupted training (lstmcli.training.resume); gone once it finishes.
RESUME_TENSORS_FILE = "resume.safetensors"
RESUME_STATE_FILE = "resume.json"
FORMAT_VERSION = 1
LANGUAGE_MODEL = "language_model"  # config.json's "kind" for a run of `lstm pretrain`


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


def is_language_model(path: Path) -> bool:
    """Whether the run at ``path`` was written by `lstm pretrain` (False if unreadable)."""
    try:
        meta = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        return meta.get("kind") == LANGUAGE_MODEL
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, AttributeError):
        return False


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
    data = (str(run_dir.resolve()) + "\n").encode("utf-8")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / "latest_run", lambda handle: handle.write(data))
    except OSError:
        pass  # a read-only home must not fail a finished training run; the runs root still works


def latest_run() -> Path:
    """The run trained last: the remembered one if it still exists, else the newest in the runs
    root."""
    pointer = state_dir() / "latest_run"
    try:
        path = Path(pointer.read_text(encoding="utf-8").strip())
        if is_run(path):
            return path
    except (OSError, UnicodeDecodeError, ValueError):
        pass  # no pointer, or a corrupt one: the runs root still knows the newest run
    root = runs_root()
    candidates = ([p for p in root.iterdir() if is_run(p) and not is_language_model(p)]
                  if root.is_dir() else [])
    if not candidates:
        raise CheckpointError(
            f"no trained run found (looked in {root.resolve()}); "
            "train one with `lstm train` or pass --model RUN_DIR"
        )
    return max(candidates, key=lambda p: (p / CONFIG_FILE).stat().st_mtime)


def resolve_run(model: str | None) -> Path:
    """--model RUN_DIR (checked), or the latest run."""
    if model is None:
        path = latest_run()
        settle_weights(path)
        return path
    path = Path(model)
    if not path.exists():
        raise CheckpointError(f"run directory {path} does not exist; pass a directory from "
                              "`lstm train --output` (or omit --model to use the latest run)")
    if not path.is_dir():
        raise CheckpointError(f"--model {path} is a file; pass the run directory that holds it")
    settle_weights(path)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE)
               if not (path / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{path} is not a complete run directory (missing {', '.join(missing)}); "
            "pass a directory written by `lstm train`"
        )
    return path


# ---------------------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    config: Config | PretrainConfig,
    label_names: list[str],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the weights and the config that describes them so that, whatever instant a crash
    hits, the run holds a matching pair: the new weights go to PENDING_WEIGHTS_FILE, then
    config.json (naming their SHA-256) is written, the commit point, and only then are the
    weights renamed into place; :func:`settle_weights` finishes or discards an interrupted save
    when the run is next read."""
    import torch

    from lstmcli.stable_safetensors import stable_save

    state = {name: tensor.detach().cpu().contiguous()
             for name, tensor in model.state_dict().items()}
    metadata = {"format": "lstmcli", "format_version": str(FORMAT_VERSION)}
    # Not safetensors' own save: its metadata order varies between processes, and identical
    # seeded runs must write identical bytes, so that a checksum verifies a model.
    data = stable_save(state, metadata)
    pending = run_dir / PENDING_WEIGHTS_FILE
    atomic_write(pending, lambda handle: handle.write(data))
    payload = {
        "format_version": FORMAT_VERSION,
        "lstmcli_version": __version__,
        "torch_version": torch.__version__,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "label_names": list(label_names),
        "vocab_size": config.model.vocab_size,
        **config.to_dict(),
        **(extra or {}),
        "weights_sha256": hashlib.sha256(data).hexdigest(),
    }
    write_json_atomic(run_dir / CONFIG_FILE, payload)
    os.replace(pending, run_dir / WEIGHTS_FILE)


def settle_weights(run_dir: Path) -> None:
    """Finish or discard a save that a crash interrupted. Pending weights whose checksum is the
    one config.json names were committed: they are renamed into place. Any other pending weights
    never reached their config: they are removed, and the previous pair stands. A directory that
    cannot be written is left as it is (loading then fails with a clear line)."""
    pending = run_dir / PENDING_WEIGHTS_FILE
    if not pending.is_file():
        return
    try:
        meta = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        expected = meta.get("weights_sha256") if isinstance(meta, dict) else None
        if expected is not None and _sha256(pending) == expected:
            os.replace(pending, run_dir / WEIGHTS_FILE)
        else:
            pending.unlink()
    except (OSError, UnicodeDecodeError, ValueError):
        pass


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_run_config(run_dir: Path) -> tuple[Config, list[str], dict[str, Any]]:
    """The config, label names and remaining metadata of a classifier's run, checked for
    compatibility; a language model's run is refused."""
    path = run_dir / CONFIG_FILE
    meta = read_meta(run_dir)
    if meta.get("kind") == LANGUAGE_MODEL:
        raise CheckpointError(f"{run_dir} is a language model (written by lstm pretrain), not a "
                              f"classifier; fine-tune it with lstm train --init-from {run_dir}")
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


def read_meta(run_dir: Path) -> dict[str, Any]:
    """A run's config.json as a dict, checked to be a JSON object of the format this lstmcli
    reads."""
    path = run_dir / CONFIG_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise CheckpointError(
            f"{path} is unreadable ({error}); retrain or restore the run"
        ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} must hold a JSON object, not a {type(meta).__name__}; "
                              "restore the run's config.json or retrain")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{run_dir} has checkpoint format {version!r}, this lstmcli reads format "
            f"{FORMAT_VERSION}; use lstmcli {meta.get('lstmcli_version', '?')} or retrain"
        )
    return meta
