"""Errors a user can cause and fix; the CLI prints the message on one line, with no traceback."""

from __future__ import annotations


class LstmError(Exception):
    """A problem with the user's input: the message names the problem and the fix."""

    exit_code = 2


class ConfigError(LstmError):
    """A bad option value, config file or unknown config key."""


class DataError(LstmError):
    """A dataset or data file that cannot be read as asked."""


class CheckpointError(LstmError):
    """A run directory that is missing, incomplete or written by an incompatible version."""


class CheckFailed(LstmError):
    """A quality gate (`lstm eval --min-accuracy`, `--min-f1`) that the model does not pass.

    Exit code 1, not 2: the input was fine, the model is not good enough, and a CI job should
    tell the two apart."""

    exit_code = 1


class TrainingDiverged(LstmError):
    """The loss or a gradient became NaN/Inf; the last good checkpoint is kept."""

    exit_code = 3


class TrainingInterrupted(LstmError):
    """SIGINT or SIGTERM stopped a training after a whole step; its resumable state is saved.

    Exit code 128 + the signal's number, as the shell reports a process the signal killed: 130
    for Ctrl-C, 143 for SIGTERM."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signal_number
