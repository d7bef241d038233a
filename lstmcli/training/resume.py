"""Interrupts and exact resume: the stop flag that SIGINT/SIGTERM set, and the resumable state.

The state is two files in the run directory, neither of them pickle:

- ``resume.safetensors``: the model's weights as they are now (not the best ones), every tensor
  of the optimiser's per-parameter state keyed by parameter name (Adam's ``step``, ``exp_avg``,
  ``exp_avg_sq``), the gradient monitor's running sums, the weights' moving average (``ema_decay``)
  and torch's RNG state;
- ``resume.json``: the epoch and the step within it, the epoch's running sums, the best-so-far
  record, the history rows, the lr schedule's and early stopping's state, fp16's gradient
  scaler (its scale and growth count), the numpy generator's
  state at the start of the epoch (the batch order is rebuilt from it), Python's ``random``
  state, the optimiser's hyperparameters, the config, and the SHA-256 of the tensors file.

The tensors file is written first and the JSON last, each atomically; the JSON names the checksum
of the tensors it belongs to, so a crash between the two writes is detected on resume instead of
mixing two steps.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import signal
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from lstmcli.atomic import atomic_write, write_json_atomic
from lstmcli.device import mps_available
from lstmcli.distributed import launch as launched_by_torchrun
from lstmcli.errors import CheckpointError
from lstmcli.runs import RESUME_STATE_FILE, RESUME_TENSORS_FILE
from lstmcli.training.average import WeightAverage
from lstmcli.training.trainer import EpochProgress

RESUME_FORMAT = 1


class EpochMonitor(Protocol):
    def epoch_state(self) -> tuple[dict[str, Any], dict[str, Tensor]]: ...

    def load_epoch_state(self, values: dict[str, Any], tensors: dict[str, Tensor]) -> None: ...


class StopFlag:
    """Set by the first SIGINT or SIGTERM; the trainer asks it after every optimiser step.

    Under torchrun a second SIGINT does not stop at once: its launcher passes every signal it gets
    on to the processes, so one Ctrl-C at a terminal reaches them twice (and the launcher kills
    them itself if they have not stopped 30 s later)."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self.second_interrupts = not launched_by_torchrun()

    def __call__(self) -> bool:
        return self.signal_number is not None

    def _handle(self, number: int, frame: object) -> None:
        if (self.signal_number is not None and number == signal.SIGINT
                and self.second_interrupts):
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once, without a new state
        self.signal_number = number


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """Catch SIGINT and SIGTERM for the block (the handlers only set the flag), restoring the
    previous handlers afterwards. Outside the main thread signals cannot be caught: the flag then
    never rises and the default behaviour stays."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {number: signal.signal(number, flag._handle)
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@dataclass
class ResumeState:
    """Everything an interrupted run needs to continue as if it had never stopped."""

    epoch: int  # the epoch that was interrupted
    progress: EpochProgress
    epoch_rng: dict[str, Any]  # numpy bit_generator.state before that epoch's batches were drawn
    best: dict[str, Any]
    history: list[dict[str, Any]]
    config: dict[str, Any]
    python_random: Any
    monitor: dict[str, Any]
    tensors: dict[str, Tensor]
    schedule: dict[str, Any] = field(default_factory=dict)  # lr schedule and patience count
    command: str = "train"  # the command that resumes it: train, or pretrain
    scaler: dict[str, Any] = field(default_factory=dict)  # fp16's GradScaler; {} otherwise
    average: dict[str, Any] = field(default_factory=dict)  # WeightAverage's count; {} without


def save_resume(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    monitor: EpochMonitor,
    state: ResumeState,
    average: WeightAverage | None = None,
) -> None:
    """Write the resumable state of ``model``, ``optimizer``, ``monitor``, the weights'
    ``average``, the RNGs and ``state`` (whose ``monitor`` and ``tensors`` are filled in here)."""
    from safetensors.torch import save

    tensors = {f"model.{name}": tensor for name, tensor in model.state_dict().items()}
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    for index, values in optimizer.state_dict()["state"].items():
        for key, value in values.items():
            if not isinstance(value, Tensor):
                raise CheckpointError(f"optimiser state {key!r} is not a tensor; cannot save it")
            tensors[f"optimizer.{key}.{names[id(parameters[index])]}"] = value
    monitor_values, monitor_tensors = monitor.epoch_state()
    tensors.update({f"monitor.{key}": value for key, value in monitor_tensors.items()})
    average_values: dict[str, Any] = {}
    if average is not None:
        average_values, average_tensors = average.state()
        tensors.update({f"average.{key}": value for key, value in average_tensors.items()})
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for device, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{device}"] = rng
    if mps_available():  # dropout masks drawn on Apple's GPU come from its own generator
        tensors["rng.mps"] = torch.mps.get_rng_state()
    data = save({key: value.detach().cpu().contiguous() for key, value in tensors.items()})
    atomic_write(run_dir / RESUME_TENSORS_FILE, lambda handle: handle.write(data))

    groups = [{key: value for key, value in group.items() if key != "params"}
              for group in optimizer.param_groups]
    payload = {
        "resume_format": RESUME_FORMAT,
        "tensors_sha256": hashlib.sha256(data).hexdigest(),
        "epoch": state.epoch,
        "progress": asdict(state.progress),
        "epoch_rng": state.epoch_rng,
        "best": state.best,
        "history": state.history,
        "config": state.config,
        "python_random": random.getstate(),
        "monitor": monitor_values,
        "schedule": state.schedule,
        "command": state.command,
        "scaler": state.scaler,
        "average": average_values,
        "optimizer": {"class": type(optimizer).__name__, "param_groups": groups},
    }
    # Last: the JSON names the tensors it belongs to, so it is the commit of the pair.
    write_json_atomic(run_dir / RESUME_STATE_FILE, payload)


def has_resume(run_dir: Path) -> bool:
    return (run_dir / RESUME_STATE_FILE).is_file()


def load_resume(run_dir: Path, command: str = "train") -> ResumeState:
    """The resumable state of ``run_dir``, checked: one line naming the problem otherwise.
    ``command`` is the one resuming (train, pretrain); a state the other wrote is refused."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    state_path, tensors_path = run_dir / RESUME_STATE_FILE, run_dir / RESUME_TENSORS_FILE
    if not run_dir.is_dir():
        raise CheckpointError(f"--resume {run_dir} is not a directory; pass the run directory "
                              f"that an interrupted `lstm {command}` named")
    if not state_path.is_file():
        raise CheckpointError(f"{run_dir} holds no resumable state ({RESUME_STATE_FILE}): its "
                              "training finished or was never interrupted; train a new run")
    try:
        payload = json.loads(state_path.read_text(encoding="utf-8"))
        data = tensors_path.read_bytes()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"the resumable state in {run_dir} is unreadable ({error}); "
                              "train a new run") from None
    if not isinstance(payload, dict) or payload.get("resume_format") != RESUME_FORMAT:
        raise CheckpointError(f"{state_path} is not a resumable state this lstmcli reads; "
                              "train a new run")
    if hashlib.sha256(data).hexdigest() != payload.get("tensors_sha256"):
        raise CheckpointError(f"{tensors_path} does not belong to {state_path} (an interrupted "
                              "write); the state cannot be resumed exactly: train a new run")
    written_by = str(payload.get("command", "train"))
    if written_by != command:
        raise CheckpointError(f"{run_dir} was interrupted in `lstm {written_by}`; resume it with "
                              f"lstm {written_by} --resume {run_dir}")
    try:
        tensors = load(data)
        best = dict(payload["best"])
        if best["val_loss"] is None:  # math.inf, written as null by the strict JSON writer
            best["val_loss"] = float("inf")
        return ResumeState(
            epoch=int(payload["epoch"]),
            progress=EpochProgress(**payload["progress"]),
            epoch_rng=payload["epoch_rng"],
            best=best,
            history=list(payload["history"]),
            config=payload["config"],
            python_random=payload["python_random"],
            monitor=payload["monitor"],
            tensors=tensors,
            schedule=dict(payload.get("schedule") or {}),
            command=written_by,
            scaler=dict(payload.get("scaler") or {}),
            average=dict(payload.get("average") or {}),
        )
    except (SafetensorError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"the resumable state in {run_dir} is incomplete ({error}); "
                              "train a new run") from None


def restore(
    state: ResumeState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    monitor: EpochMonitor,
    average: WeightAverage | None = None,
) -> None:
    """Put the weights, the optimiser's state, the monitor's sums, the weights' average and the
    torch and Python RNG states back as they were at the interrupt. Call it last before training
    continues: building the model drew from torch's generator."""
    tensors = state.tensors
    model.load_state_dict({key[len("model."):]: value for key, value in tensors.items()
                           if key.startswith("model.")})
    # Positions in the optimiser's own order: with several param groups (discriminative lrs)
    # it is not the model's.
    positions = {id(parameter): position for position, parameter in
                 enumerate(p for group in optimizer.param_groups for p in group["params"])}
    index = {name: positions[id(parameter)] for name, parameter in model.named_parameters()}
    saved = optimizer.state_dict()
    per_parameter: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, field, name = key.split(".", 2)
            per_parameter.setdefault(index[name], {})[field] = value
    saved["state"] = per_parameter
    optimizer.load_state_dict(saved)
    monitor.load_epoch_state(state.monitor, {key[len("monitor."):]: value
                                             for key, value in tensors.items()
                                             if key.startswith("monitor.")})
    if average is not None:  # open_resume made sure that the state holds one
        try:
            average.load_state(state.average, {key[len("average."):]: value
                                               for key, value in tensors.items()
                                               if key.startswith("average.")})
        except (KeyError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"the resumable state's weight average is incomplete ({error}); "
                                  "train a new run") from None
    version, internal, gauss = state.python_random
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[key] for key in sorted(tensors) if key.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    if "rng.mps" in tensors and mps_available():
        torch.mps.set_rng_state(tensors["rng.mps"])


def clear_resume(run_dir: Path) -> None:
    """A finished run keeps no resumable state: it has nothing left to resume."""
    (run_dir / RESUME_STATE_FILE).unlink(missing_ok=True)
    (run_dir / RESUME_TENSORS_FILE).unlink(missing_ok=True)
