"""The `lstm` command line: parses options, loads the config, calls the library, prints with rich.

No maths here, and no torch import at module level: `lstm --help` and `lstm predict` must not pay
for importing what they do not use. One module per group of commands, each registering on the
app of :mod:`lstmcli.cli.common`.
"""

from __future__ import annotations

from lstmcli.cli import (  # noqa: F401  (register commands)
    catalog,
    compare,
    diagnose,
    export,
    inference,
    pretrain,
    train,
)
from lstmcli.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
