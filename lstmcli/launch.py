"""``--processes N`` (``[train] processes``): `lstm train` and `lstm pretrain` start N copies of
themselves on this machine, as ``torchrun --standalone --nproc_per_node N -m lstmcli ...`` would,
and wait for them.

Why a recipe asks for it: a recurrent model of a few hundred units keeps two threads of one
process barely busier than one (torch's LSTM kernel steps through time one small matrix product
after another), while two processes, each on its own core with its own half of the batch, train
nearly twice as fast (README: the language model of ``configs/imdb_lm.toml`` made 1.39 times the
tokens per second on two cores). The copies are torchrun's processes in every respect
(:mod:`lstmcli.distributed`): this module only starts them, through torch's own launcher
(``torch.distributed.launcher.api``), so signals, rendezvous and a failing process are handled as
under torchrun.

A command that torchrun (or this module) started never starts more: the launch it is part of
decides the number of processes.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from lstmcli import distributed


def wanted(processes: int) -> bool:
    """Whether this command should start ``processes`` copies of itself: more than one asked for,
    and not already one of a launch's processes."""
    return processes > 1 and distributed.launch() is None


def stored_processes(run_dir: Path) -> int:
    """``[train] processes`` of the run in ``run_dir`` (1 if it says none, or cannot be read:
    resuming reports what is wrong with the run, in one process)."""
    from lstmcli.errors import LstmError
    from lstmcli.runs import read_meta

    try:
        train = read_meta(Path(run_dir)).get("train")
    except LstmError:
        return 1
    processes = train.get("processes", 1) if isinstance(train, dict) else 1
    return processes if isinstance(processes, int) and processes > 0 else 1


def run_processes(processes: int, args: Sequence[str]) -> int:
    """Run ``lstm ARGS`` (the command's arguments as it parsed them; sys.argv is the caller's
    when the command is called from Python) as ``processes`` processes on this machine and wait
    for them; the exit status is the first failed process's, or 128 + the signal that stopped the
    launch, else 0. The processes print for themselves (rank 0 the progress and the report; one
    line per error)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=processes,
        # torchrun --standalone's rendezvous: a free local port, a run id of its own.
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", run_id=str(uuid.uuid4()),
        max_restarts=0,  # a process that fails fails the run, as under plain torchrun
    )
    # The launcher logs its own progress, signals and failures (each of its modules at its own
    # level); the processes say what matters, once.
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name.startswith("torch.distributed")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        elastic_launch(config, sys.executable)("-m", "lstmcli", *args)
    except ChildFailedError as error:
        # A process killed by a signal reports -N, as the shell reports 128 + N. The launcher
        # stops the others with SIGTERM once one fails, so the status of the one that failed
        # of itself (below 128) is the run's.
        codes = [code if code >= 0 else 128 - code
                 for code in (failure.exitcode for _, failure in sorted(error.failures.items()))]
        return next((code for code in codes if 0 < code < 128),
                    next((code for code in codes if code), 1))
    except SignalException as stop:
        return 128 + int(stop.sigval)
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    return 0

