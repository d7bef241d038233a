"""Training precision, ``--precision fp32|bf16|fp16``: torch.autocast on the run's device, and
for fp16 a gradient scaler.

- fp32: no autocast, nothing scaled; a run is exactly what it was before this option existed.
- bf16: autocast to bfloat16. Its exponent range is float32's, so a gradient overflows or
  underflows no sooner than in float32, and nothing is scaled.
- fp16: autocast to float16 with ``torch.amp.GradScaler``: the loss is multiplied by a scale
  before ``backward`` so that small gradients survive float16's narrow range, and the gradients
  are divided by it again before anything reads them (the gradient monitor, clipping and the
  divergence guard see the true norms). A step whose gradient overflowed is skipped and the
  scale halved; the scale doubles again after 2000 good steps. Its state is part of the
  resumable state, so ``--resume`` continues with the scale it stopped at.

Parameters, gradients and the optimiser's state stay float32 in every mode: autocast computes
each eligible operation on a lower-precision copy. Checkpoints are therefore float32, and
inference (`lstm predict`, `lstm eval`) runs float32 whatever precision trained the model.
Training's own validation and test figures are computed under the same autocast as its steps.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from lstmcli.errors import ConfigError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# A step skipped with the scale already below 1 overflowed without any scaling: that gradient
# is not finite in float16 at all, which more skipping cannot fix.
MIN_SCALE = 1.0


def check_precision(name: str, device: torch.device) -> None:
    """ConfigError, naming the fix, where ``device`` cannot train in precision ``name``."""
    if name == "fp32":
        return
    kind = device.type
    if name not in DTYPES:
        raise ConfigError(f"unknown precision {name!r}; choose one of: fp32, {', '.join(DTYPES)}")
    if not torch.amp.is_autocast_available(kind):
        raise ConfigError(f"--precision {name} needs torch's autocast, which this torch does not "
                          f"offer on {kind}; use --precision fp32")
    if kind == "cuda" and name == "bf16" and not torch.cuda.is_bf16_supported(
            including_emulation=False):
        raise ConfigError(f"--precision bf16 needs a GPU with bfloat16 arithmetic (compute "
                          f"capability 8.0 or later), and {torch.cuda.get_device_name(device)} "
                          "has none; use --precision fp16 or fp32")
    if kind == "mps" and name == "bf16" and not torch.backends.mps.is_macos_or_newer(14, 0):
        raise ConfigError("--precision bf16 on MPS needs macOS 14 or later; use --precision fp16 "
                          "or fp32")


class Precision:
    """The arithmetic of a run's training steps and of its validation: ``autocast()`` around the
    forward passes, ``backward``/``unscale``/``step``/``skip`` around the optimiser (a scaler's
    work for fp16, the plain calls otherwise)."""

    def __init__(self, name: str = "fp32", device: torch.device | str = "cpu") -> None:
        device = torch.device(device)
        check_precision(name, device)
        self.name, self.device = name, device
        self.dtype = DTYPES.get(name)  # None: float32, no autocast
        self.scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring the gradients back to their true size (fp16), before anything measures them."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)  # unscaled already: it only steps
            self.scaler.update()

    def skip(self) -> bool:
        """After a gradient that is not finite: True where the scaler skips the step and lowers
        its scale (fp16 overflow, to be expected now and then), False where the run has
        diverged (any other precision; or the scale would fall below MIN_SCALE, or did not fall
        because no gradient overflowed, only their norm)."""
        if self.scaler is None:
            return False
        before = self.scaler.get_scale()
        self.scaler.update()
        after = self.scaler.get_scale()
        return MIN_SCALE <= after < before

    def state(self) -> dict[str, Any]:
        """What a resumed run needs: the scaler's scale and growth count (empty without one)."""
        return {} if self.scaler is None else dict(self.scaler.state_dict())

    def load_state(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
