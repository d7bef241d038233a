"""The one way lstmcli writes a file: atomically, so a crash never leaves half of one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from lstmcli.jsonout import finite


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through ``write`` to a new temporary file beside ``path`` (a unique name, created
    exclusively), flush and fsync it, then rename it over ``path``: a reader sees the old file or
    the new, never half of one; a failure leaves ``path`` as it was and no temporary behind."""
    path = Path(path)
    descriptor, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); a run is meant to be shared as the umask allows.
        os.fchmod(descriptor, 0o666 & ~_umask())
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    # Strict JSON: a NaN figure is written as null, never as the invalid token NaN.
    data = (json.dumps(finite(payload), indent=2, allow_nan=False) + "\n").encode("utf-8")
    atomic_write(path, lambda handle: handle.write(data))


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
