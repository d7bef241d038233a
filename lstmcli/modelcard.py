"""What a run directory says about itself: a one-row summary for `lstm runs`, and the README.md
model card written when training ends (data, config, metrics, command line, versions, commit).

Reads only config.json and metrics.jsonl, never the weights, so listing a hundred runs stays
quick and torch-free.
"""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
from pathlib import Path
from typing import Any

from lstmcli import __version__
from lstmcli.atomic import atomic_write
from lstmcli.runs import CONFIG_FILE, LANGUAGE_MODEL, METRICS_FILE, is_run

CARD_FILE = "README.md"


def run_summary(run_dir: Path) -> dict[str, Any]:
    """One row of `lstm runs`: kind (classifier, or language_model), cell, dataset, best epoch,
    validation and test accuracy (a language model: validation perplexity), date. A config.json
    that cannot be read gives a row of nulls (and its reason), not an error, so that one damaged
    run never hides the others."""
    row: dict[str, Any] = {"run_dir": str(run_dir), "kind": None, "cell": None, "dataset": None,
                           "best_epoch": None, "val_accuracy": None, "test_accuracy": None,
                           "date": None}
    try:
        meta = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        best = meta.get("best") or {}
        row.update(kind=meta.get("kind", "classifier"), cell=meta["model"]["cell"],
                   dataset=_dataset(meta["data"]), best_epoch=best.get("epoch"),
                   val_accuracy=best.get("val_accuracy"),
                   test_accuracy=meta.get("test_accuracy"), date=meta.get("saved_at"))
        if row["kind"] == LANGUAGE_MODEL:
            row["val_perplexity"] = best.get("val_perplexity")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
        row["error"] = f"unreadable {CONFIG_FILE} ({type(error).__name__})"
    return row


def _dataset(data: dict[str, Any]) -> str | None:
    """The dataset a run read; a language model's text files by name after it."""
    files = [Path(path).name for path in data.get("text_files") or []]
    named = [data["dataset"]] if data["dataset"] else ["sample"] if not files else []
    return " + ".join(named + files)


def list_runs(root: Path) -> list[dict[str, Any]]:
    """The runs directly under ``root`` (and ``root`` itself if it is one), oldest first by the
    directory name's order, which for default names is the time they started."""
    root = Path(root)
    candidates = [root] if is_run(root) else []
    if root.is_dir():
        candidates += sorted(path for path in root.iterdir() if path.is_dir() and is_run(path))
    return [run_summary(path) for path in candidates]


def git_commit(where: Path) -> str | None:
    """The commit checked out at ``where`` (with "-dirty" when files differ), or None outside a
    git checkout or without git: a card records the code only when it can name it exactly."""
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(where), *args], capture_output=True,
                                  text=True, timeout=10, check=True).stdout.strip()

        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "") if commit else None


def command_line(argv: list[str]) -> str:
    """The command as a user would retype it: `lstm ARGS`, whatever path launched it."""
    return f"lstm {shlex.join(argv[1:])}".rstrip()


def _figure(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("n/a" if value is None else str(value))


def model_card(run_dir: Path, argv: list[str]) -> str:
    """The README.md of a finished run, in Markdown."""
    meta = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    if meta.get("kind") == LANGUAGE_MODEL:
        return _language_model_card(run_dir, argv, meta)
    epochs = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text(
        encoding="utf-8").splitlines() if line.strip()]
    summary = run_summary(run_dir)
    model, data, train = meta["model"], meta["data"], meta["train"]
    shape = ("bidirectional " if model.get("bidirectional") else "") + str(model["cell"])
    lines = [
        f"# {run_dir.name}: {shape} sentiment classifier",
        "",
        f"A {model.get('layers')}-layer {shape} ({model.get('hidden_size')} hidden units per "
        f"direction, {model.get('pooling')} pooling) trained by lstmcli on `{data['dataset']}` "
        f"for the labels {', '.join(f'`{name}`' for name in meta['label_names'])}.",
        "",
        "## Metrics",
        "",
        "| | value |",
        "| --- | --- |",
        f"| best epoch | {summary['best_epoch']} of {len(epochs)} |",
        f"| validation accuracy (best epoch) | {_figure(summary['val_accuracy'])} |",
        f"| test accuracy (best checkpoint, measured once) | {_figure(summary['test_accuracy'])} |",
        "",
        "| epoch | loss | acc | val loss | val acc |",
        "| --- | --- | --- | --- | --- |",
        *("| " + " | ".join(_figure(row.get(key)) for key in (
            "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")) + " |"
          for row in epochs),
        "",
        "## Data",
        "",
        *(f"- {key}: `{value}`" for key, value in data.items() if value is not None),
        "",
        *_config_and_provenance({"model": model, "train": train}, argv, meta),
    ]
    return "\n".join(lines)


def _language_model_card(run_dir: Path, argv: list[str], meta: dict[str, Any]) -> str:
    """The card of a run of `lstm pretrain`: perplexity instead of accuracy."""
    epochs = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text(
        encoding="utf-8").splitlines() if line.strip()]
    model, data, train = meta["model"], meta["data"], meta["train"]
    shape = ("bidirectional " if model.get("bidirectional") else "") + str(model["cell"])
    best = meta.get("best") or {}
    return "\n".join([
        f"# {run_dir.name}: {shape} language model",
        "",
        f"A {model.get('layers')}-layer {shape} language model ({model.get('hidden_size')} "
        f"hidden units per direction) pretrained by lstmcli on `{_dataset(data)}` (windows of "
        f"{data.get('bptt')} tokens). Fine-tune it with `lstm train --init-from {run_dir}`.",
        "",
        "## Metrics",
        "",
        f"Best epoch {best.get('epoch')} of {len(epochs)}: validation perplexity "
        f"{_figure(best.get('val_perplexity'))}.",
        "",
        "| epoch | loss | val loss | val perplexity |",
        "| --- | --- | --- | --- |",
        *("| " + " | ".join(_figure(row.get(key)) for key in (
            "epoch", "train_loss", "val_loss", "val_perplexity")) + " |" for row in epochs),
        "",
        *_config_and_provenance({"model": model, "data": data, "train": train}, argv, meta),
    ])


def _config_and_provenance(config: dict[str, Any], argv: list[str],
                           meta: dict[str, Any]) -> list[str]:
    """The end of every card: the config, the command that made the run, the versions, the
    device and precision it trained in, the git commit of the code and when the weights were
    saved."""
    commit = git_commit(Path(__file__).resolve().parent)
    processes = meta.get("distributed") or {}
    return [
        "## Config",
        "",
        "```json",
        json.dumps(config, indent=2, sort_keys=True),
        "```",
        "",
        "## Reproduce",
        "",
        "```console",
        command_line(argv),
        "```",
        "",
        f"- lstmcli {meta.get('lstmcli_version', __version__)}, torch "
        f"{meta.get('torch_version', '?')}, Python {platform.python_version()}",
        f"- trained on {meta.get('device', 'an unrecorded device')}, precision "
        f"{config['train'].get('precision', 'fp32')} (float32 weights)",
        f"- git commit: `{commit}`" if commit else "- git commit: not inside a git checkout",
        *([f"- trained by {processes.get('world_size')} processes under torchrun "
           f"({processes.get('backend')}); the batch size is the global batch"]
          if processes else []),
        f"- saved: {meta.get('saved_at')}",
        "",
    ]


def write_model_card(run_dir: Path, argv: list[str]) -> Path:
    """Write RUN_DIR/README.md atomically; returns its path."""
    path = Path(run_dir) / CARD_FILE
    text = model_card(Path(run_dir), argv).encode("utf-8")
    atomic_write(path, lambda handle: handle.write(text))
    return path
