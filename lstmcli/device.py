"""Where the maths runs: the torch device and the CPU threads it may use.

torch is imported lazily, so that commands that never compute (help, listings) never load it.
On CPU two settings matter more than any kernel here:

* denormals are flushed to zero. As a gradient vanishes through time its values become
  subnormal floats, which x86 processes many times slower; flushing them made a GRU training
  step 11x faster, with no measurable change in results (tests/test_device.py).
* the thread count fits the CPUs this process may actually use (its affinity mask and its cgroup
  quota, less the CPUs other processes keep busy when it starts), since torch counts every core
  of the machine; and OpenMP threads sleep rather than spin
  while they wait, so that a second busy process on a small machine does not stall every
  parallel region (a training step ran 20-90x slower beside one with spinning threads); that
  setting is made in ``lstmcli/__init__.py``, before anything can import torch.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lstmcli.errors import ConfigError

if TYPE_CHECKING:
    import torch

def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 or v1 CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def _cgroup_quota() -> float | None:
    """CPUs' worth of time the cgroup allows per period, or None without a limit."""
    try:
        fields = Path("/sys/fs/cgroup/cpu.max").read_text().split()  # v2: "max 100000"
        if fields and fields[0] != "max":
            return int(fields[0]) / int(fields[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())  # v1
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def default_threads() -> int:
    """usable_cpus(), less the CPUs that other processes keep busy right now: on a small shared
    machine a thread that has to share its core with a busy neighbour stalls every parallel
    region it takes part in, so one thread on a free core beats two on contended ones."""
    busy = _others_running()
    return max(1, usable_cpus() - busy)


def _others_running(samples: int = 5, interval: float = 0.01) -> int:
    """Processes other than this one that are runnable at every one of a few instants (the
    fourth field of /proc/loadavg counts the runnable ones, this process included); 0 where the
    kernel does not say."""
    counts = []
    for sample in range(samples):
        try:
            running = Path("/proc/loadavg").read_text().split()[3].split("/")[0]
            counts.append(int(running) - 1)
        except (OSError, ValueError, IndexError):
            return 0
        if sample + 1 < samples:
            time.sleep(interval)
    return max(0, min(counts))


def resolve_device(name: str, threads: int | None = None) -> torch.device:
    """auto (CUDA when torch sees one, else Apple's MPS when it is there, else the CPU), cpu,
    cuda or mps; ConfigError for an accelerator torch cannot use here. On CPU also flushes
    denormals and sets the thread count (``threads``, else default_threads())."""
    import torch

    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else
                              "mps" if mps_available() else "cpu")
    elif name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda asked for, but torch sees no CUDA device; use --device cpu"
        )
    elif name == "mps" and not mps_available():
        raise ConfigError("--device mps asked for, but torch cannot use Apple's MPS here (it needs "
                          "Apple silicon, a recent macOS and a torch built with MPS); use "
                          "--device cpu")
    else:
        device = torch.device(name)
    if device.type == "cpu":
        torch.set_flush_denormal(True)
        torch.set_num_threads(threads or default_threads())
    return device


def mps_available() -> bool:
    """Whether torch can use Apple's GPU (MPS) here."""
    import torch

    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def describe_device(device: torch.device) -> str:
    """The device as a run records it: "cpu", "mps", or "cuda (NVIDIA H200)" with the GPU's
    name, so that a run's timings can be read against the hardware that made them."""
    if device.type != "cuda":
        return device.type
    import torch

    return f"{device.type} ({torch.cuda.get_device_name(device)})"


# Device files that a GPU driver torch can use creates on Linux: NVIDIA (native and WSL) and ROCm.
# Without any of them torch.cuda.is_available() is False (and Linux has no MPS), so there is no
# need to import torch to hear it say so.
_GPU_DRIVER_FILES = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")


def resolve_device_name(name: str) -> str:
    """resolve_device(name) as a string ("cpu", "cuda", "mps"), importing torch only when the
    answer may not be the CPU: `--device cpu`, and `--device auto` on a Linux machine without a
    GPU driver, are answered without it."""
    if name == "cpu":
        return "cpu"
    if name == "auto" and not _may_have_accelerator():
        return "cpu"
    return str(resolve_device(name))


def _may_have_accelerator() -> bool:
    if sys.platform.startswith("linux"):
        return any(Path(path).exists() for path in _GPU_DRIVER_FILES)
    return True  # elsewhere (macOS: MPS; Windows: CUDA) only torch can tell
