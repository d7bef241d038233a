"""Training on several processes: torchrun starts them, torch.distributed connects them and
DistributedDataParallel averages their gradients.

``torchrun --nproc_per_node N -m lstmcli train ...`` (or ``pretrain``) starts N copies of the
command with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set. :func:`start` sees
them and joins the process group, over gloo; :meth:`Group.place` then puts the process on its
device: the CPU, where the gradients are averaged over gloo too, or ``cuda:LOCAL_RANK``, where
they go over NCCL. (Joining first lets rank 0 read a resumable state, and with it the device, and
send it to the others.) Without torchrun's variables (or with a world of one) nothing is set up
and torch.distributed is never touched: :func:`current` is then the single-process
:class:`Group`, whose collectives return their input.

The rules every rank keeps, since a rank that decides otherwise than the rest waits forever in a
collective the others never reach:

* rank 0 alone decides what depends on the file system (the run directory, the resumable state)
  and writes; :meth:`Group.from_rank0` hands its answer, or its error, to every rank;
* figures are summed by gathering every rank's values and adding them in rank order, so every
  rank holds bitwise the same sums and takes the same decisions (best epoch, early stopping,
  stopping on a signal);
* errors that every rank meets alike are printed by local rank 0 alone (:func:`speaks`), one line
  per machine; a rank that loses a peer mid-collective raises :class:`PeerLost`.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from lstmcli.errors import ConfigError, LstmError

if TYPE_CHECKING:
    import torch
    from torch import nn

T = TypeVar("T")
ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class PeerLost(LstmError):
    """Another process of the run stopped (its own output says why); this one stops too."""

    exit_code = 1


class Relayed(LstmError):
    """An error rank 0 met (claiming the run directory, reading the resumable state), raised on
    every other rank too, so that all stop together."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Launch:
    """What torchrun's environment says about this process."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int


def launch() -> Launch | None:
    """This process's place in a torchrun launch of more than one process, else None. Reads the
    environment only."""
    if not all(os.environ.get(name) for name in ENV):
        return None
    try:
        found = Launch(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                       int(os.environ["LOCAL_RANK"]),
                       int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ["WORLD_SIZE"]))
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets "
                          "them); start the training with torchrun or unset them") from None
    return found if found.world_size > 1 else None


def first_process() -> bool:
    """Whether this process is rank 0 (the one that writes and reports), by the environment."""
    found = launch()
    return found is None or found.rank == 0


def speaks() -> bool:
    """Whether this process prints errors: every process but the second and later ones that
    torchrun started on a machine (they meet the same errors as its first)."""
    found = launch()
    return found is None or found.local_rank == 0


class Group:
    """The processes a run trains on; this class is the single process, whose collectives
    return their input. :class:`ProcessGroup` is the real one."""

    rank = 0
    world_size = 1
    backend: str | None = None

    def place(self, device: torch.device, threads: int | None = None) -> torch.device:
        """The device this process computes on, given the one the run asked for (resolved).
        ``threads`` is --threads: without it, each of a machine's processes takes its share of
        its CPUs."""
        return device

    def sums(self, values: Sequence[float]) -> list[float]:
        """``values`` summed over the ranks, bitwise the same on every rank."""
        return [float(value) for value in values]

    def from_rank0(self, work: Callable[[], T]) -> T:
        """``work()`` on rank 0, its result on every rank; if it raises a user error, every other
        rank raises :class:`Relayed` with the same message."""
        return work()

    @contextlib.contextmanager
    def on_rank0(self, manager: AbstractContextManager[Any]) -> Iterator[None]:
        """Hold ``manager`` (a run directory's claim) on rank 0 only; every rank learns whether
        rank 0 could enter it."""
        with manager:
            yield

    def wrap(self, module: nn.Module, sometimes_unused: Sequence[str] = ()) -> nn.Module:
        """``module`` as the trainer should call it: under DistributedDataParallel when there is
        more than one process. ``sometimes_unused`` names the parameters that a step may leave
        without a gradient (an adaptive softmax's tail clusters): DDP leaves them to
        :meth:`average_gradients`."""
        return module

    def average_gradients(self, parameters: Sequence[nn.Parameter]) -> None:
        """Average the gradients of ``parameters`` (those ``wrap`` named) over the processes, as
        DDP does the others', leaving None where no process produced one: what one process that
        computed the whole batch has."""

    def record(self) -> dict[str, Any]:
        """What config.json records about the processes: nothing for one."""
        return {}

    def describe(self) -> str | None:
        """The processes for the training headline, None for one."""
        return None


class ProcessGroup(Group):
    """A torch.distributed process group that torchrun started."""

    def __init__(self, found: Launch) -> None:
        import torch

        self.found = found
        self.rank, self.world_size = found.rank, found.world_size
        self.device = torch.device("cpu")
        self.gradients: Any = None  # the group DDP averages over: the default (gloo), or NCCL's

    def place(self, device: torch.device, threads: int | None = None) -> torch.device:
        import torch
        import torch.distributed as dist

        found = self.found
        if device.type == "cuda":
            count = torch.cuda.device_count()
            if found.local_world_size > count:
                raise ConfigError(f"torchrun started {found.local_world_size} processes on this "
                                  f"machine, but torch sees {count} CUDA device(s); pass "
                                  f"--nproc_per_node (or --processes) {count} or fewer, or "
                                  "--device cpu")
            if not dist.is_nccl_available():
                raise ConfigError("this torch build has no NCCL, which distributed training on "
                                  "CUDA needs; pass --device cpu to train on the CPUs with gloo")
            device = torch.device("cuda", found.local_rank)
            torch.cuda.set_device(device)
            self.gradients, self.backend = dist.new_group(backend="nccl"), "nccl"
        elif device.type == "cpu":
            self.backend = "gloo"
            if threads is None:
                from lstmcli.device import usable_cpus

                torch.set_num_threads(max(1, usable_cpus() // found.local_world_size))
        else:
            raise ConfigError(f"distributed training runs on cpu (gloo) or cuda (NCCL), not "
                              f"{device.type}; pass --device cpu or --device cuda")
        self.device = device
        return device

    def sums(self, values: Sequence[float]) -> list[float]:
        import torch
        import torch.distributed as dist

        mine = torch.tensor([float(value) for value in values], dtype=torch.float64)
        gathered = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(gathered, mine)
        total = gathered[0].clone()
        for part in gathered[1:]:  # rank order, on every rank: the same rounding everywhere
            total += part
        return total.tolist()

    def _broadcast(self, value: Any) -> Any:
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def from_rank0(self, work: Callable[[], T]) -> T:
        if self.rank != 0:
            outcome = self._broadcast(None)
            if outcome[0] == "error":
                raise Relayed(outcome[1], outcome[2])
            return outcome[1]
        try:
            value = work()
        except (LstmError, OSError) as error:
            code = error.exit_code if isinstance(error, LstmError) else 1
            self._broadcast(("error", f"rank 0: {error}", code))
            raise
        except BaseException:  # a bug, or a second Ctrl-C: the others stop too
            self._broadcast(("error", "rank 0 stopped", 1))
            raise
        self._broadcast(("ok", value))
        return value

    @contextlib.contextmanager
    def on_rank0(self, manager: AbstractContextManager[Any]) -> Iterator[None]:
        with contextlib.ExitStack() as held:
            def enter() -> None:
                held.enter_context(manager)

            self.from_rank0(enter)
            yield

    def wrap(self, module: nn.Module, sometimes_unused: Sequence[str] = ()) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        # Not find_unused_parameters: it walks the graph after every forward pass, warns on every
        # process when a step happens to use them all, and these few are cheaper summed apart.
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            module, list(sometimes_unused))
        return DistributedDataParallel(
            module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            process_group=self.gradients)

    def average_gradients(self, parameters: Sequence[nn.Parameter]) -> None:
        import torch
        import torch.distributed as dist

        if not parameters:
            return
        used = torch.tensor([float(p.grad is not None) for p in parameters],
                            device=self.device)  # (P,)
        dist.all_reduce(used, group=self.gradients)
        live = [p for p, count in zip(parameters, used.tolist(), strict=True) if count > 0]
        if not live:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in live])
        dist.all_reduce(flat, group=self.gradients)
        flat /= self.world_size
        for parameter, piece in zip(live, flat.split([p.numel() for p in live]), strict=True):
            parameter.grad = piece.view_as(parameter).clone()

    def record(self) -> dict[str, Any]:
        return {"distributed": {"world_size": self.world_size, "backend": self.backend}}

    def describe(self) -> str | None:
        return f"{self.world_size} processes ({self.backend})"


_current: Group | None = None


def current() -> Group:
    """The group of the run in progress (the single process outside one)."""
    return _current or Group()


def start() -> Group:
    """Join torchrun's process group (gloo) when there is one, else the single-process group."""
    global _current
    found = launch()
    if found is None:
        _current = Group()
        return _current
    import torch.distributed as dist

    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run the training as one "
                          "process (without torchrun)")
    try:
        dist.init_process_group("gloo")
    except (RuntimeError, ValueError) as error:
        raise ConfigError(f"the torchrun processes could not connect ({_first_line(error)}); "
                          "check --rdzv_endpoint (MASTER_ADDR, MASTER_PORT)") from None
    _current = ProcessGroup(found)
    return _current


def end() -> None:
    """Leave the process group (if this process joined one)."""
    global _current
    if isinstance(_current, ProcessGroup):
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _current = None


def peer_lost(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed because another process went away."""
    import torch.distributed as dist

    if isinstance(error, dist.DistError):
        return True
    text = str(error)
    return any(sign in text for sign in ("Connection closed by peer", "Connection reset by peer",
                                         "gloo", "NCCL", "ProcessGroup"))


def entry(function: Callable[..., T]) -> Callable[..., T]:
    """A training entry point: the process group that :func:`start` joined inside it is left
    when it returns or raises (also on interrupts), and a collective broken by another process's
    end becomes :class:`PeerLost` instead of a traceback."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return function(*args, **kwargs)
        except RuntimeError as error:
            if isinstance(_current, ProcessGroup) and peer_lost(error):
                raise PeerLost("another process of this distributed training stopped (its own "
                               "message says why); so did this one") from None
            raise
        finally:
            end()

    return wrapper


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
