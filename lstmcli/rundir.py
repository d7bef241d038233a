"""Claiming a run directory for one training: an exclusive lock, the rules of --overwrite, and
appends that never follow a planted link.

Two `lstm train -o SAME` started together used to pass the "is it empty" check both, then write
into each other's files. Now the first takes ``.lock`` (created exclusively, holding its process
id) and the second refuses at once; a lock left by a process that no longer exists is stale and
taken over.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from lstmcli.errors import ConfigError
from lstmcli.runs import (
    CONFIG_FILE,
    METRICS_FILE,
    PENDING_WEIGHTS_FILE,
    RESUME_STATE_FILE,
    RESUME_TENSORS_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
)

LOCK_FILE = ".lock"
# README.md: the model card (lstmcli.modelcard), named here to keep this module free of it.
RUN_FILES = (WEIGHTS_FILE, PENDING_WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE, METRICS_FILE,
             RESUME_TENSORS_FILE, RESUME_STATE_FILE, "README.md")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _is_ours(name: str) -> bool:
    """A file lstmcli writes in a run directory: the run's files, the lock, or a temporary of
    the atomic writer (".model.safetensors.x1y2.tmp")."""
    if name in RUN_FILES or name == LOCK_FILE:
        return True
    return name.startswith(".") and name.endswith(".tmp") and any(
        name.startswith(f".{run_file}.") for run_file in RUN_FILES)


def _is_lstmcli_config(path: Path) -> bool:
    import json

    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(meta, dict) and "lstmcli_version" in meta and "format_version" in meta


def check_replaceable(run_dir: Path) -> None:
    """--overwrite replaces an lstmcli run (or what an interrupted one left), nothing else: a
    directory holding other files, or a config.json lstmcli did not write, is refused."""
    if not run_dir.is_dir():
        return
    others = sorted(entry.name for entry in run_dir.iterdir() if not _is_ours(entry.name))
    if others:
        listed = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise ConfigError(
            f"--overwrite replaces lstmcli runs only, and {run_dir} also holds {listed}; "
            "choose another --output"
        )
    config = run_dir / CONFIG_FILE
    if config.exists() and not _is_lstmcli_config(config):
        raise ConfigError(
            f"--overwrite replaces lstmcli runs only, and {config} was not written by lstmcli; "
            "choose another --output"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _take_lock(run_dir: Path, command: str) -> Path:
    """The lock file holds "PID COMMAND", so that the refusal names what holds it."""
    path = run_dir / LOCK_FILE
    for _ in range(2):  # a second try after clearing a stale lock
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
        except FileExistsError:
            try:
                fields = path.read_text(encoding="utf-8").split()
                holder = int(fields[0])
            except (OSError, ValueError, IndexError):
                fields, holder = [], None  # being written this instant, or garbage: held
            if holder is None or _alive(holder):
                who = f"process {holder}" if holder is not None else "another process"
                # Locks written before the command was recorded hold the pid alone: train's.
                other = fields[1] if len(fields) > 1 and fields[1].isidentifier() else "train"
                raise ConfigError(
                    f"{run_dir} is being written by another lstm {other} ({who}); wait for it "
                    f"to finish, or choose another --output (a stale lock is {path})"
                ) from None
            path.unlink(missing_ok=True)  # its process is gone
            continue
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()} {command}\n")
        return path
    raise ConfigError(f"could not take the lock {path}; remove it if no training is running")


@contextlib.contextmanager
def claim(
    run_dir: Path, overwrite: bool, resume: bool = False, command: str = "train"
) -> Iterator[None]:
    """Create ``run_dir`` if needed and hold its lock for the block. Under the lock the
    directory is checked again (another process may have filled it since the first look), and
    the previous run's files are removed when overwriting. A block that fails before writing
    anything leaves no directory behind that it created. ``resume``: the directory is the run
    being continued, so its files are expected and kept. ``command``: the `lstm` command that
    holds the lock, for the message another one gets."""
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = _take_lock(run_dir, command)
    try:
        present = [entry for entry in run_dir.iterdir() if entry.name != LOCK_FILE]
        if present and not overwrite and not resume:
            raise ConfigError(
                f"--output {run_dir} already exists and is not empty; "
                "choose another --output or pass --overwrite to replace it"
            )
        if overwrite:
            check_replaceable(run_dir)
            for name in RUN_FILES:
                (run_dir / name).unlink(missing_ok=True)  # never mix two runs' files
        for entry in run_dir.iterdir():
            # Under the lock no writer is alive: a temporary is what a killed one left behind.
            if entry.name.endswith(".tmp") and _is_ours(entry.name):
                entry.unlink(missing_ok=True)
        yield
    except BaseException:
        lock.unlink(missing_ok=True)
        if created and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise
    else:
        lock.unlink(missing_ok=True)


def append_line(path: Path, line: str) -> None:
    """Append one line to a file of the run, refusing to follow a link planted in its place."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o644)
    with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
