"""Which torch device and which distributed rank this process runs as (torch imported lazily)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lstmcli.errors import ConfigError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str) -> torch.device:
    """auto (CUDA when torch sees one, else CPU), cpu or cuda; ConfigError for an absent CUDA."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda asked for, but torch sees no CUDA device; use --device cpu"
        )
    return torch.device(name)


# Device files that a GPU driver torch can use creates on Linux: NVIDIA (native and WSL) and ROCm.
# Without any of them torch.cuda.is_available() is False, so there is no need to import torch to
# hear it say so.
_GPU_DRIVER_FILES = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")


def resolve_device_name(name: str) -> str:
    """resolve_device(name) as a string ("cpu", "cuda"), importing torch only when the answer may
    not be the CPU: `--device cpu`, and `--device auto` on a machine without a GPU driver (or on
    macOS, where torch has no CUDA), are answered without it."""
    if name == "cpu":
        return "cpu"
    if name == "auto" and not _may_have_cuda():
        return "cpu"
    return str(resolve_device(name))


def _may_have_cuda() -> bool:
    if sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux"):
        return any(Path(path).exists() for path in _GPU_DRIVER_FILES)
    return True  # elsewhere (Windows) only torch can tell


def process_rank() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless torch.distributed has been initialised (torchrun)."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
