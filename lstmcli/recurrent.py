"""Running cells over padded, variable-length batches, exactly as if each sequence were alone.

Padding sits at the end of every row. A forward pass never lets a padded step touch a real one
(real steps come first), so the fused kernels run on the padded batch and the last real output is
gathered at ``lengths - 1``. The backward direction runs on each sequence reversed within its own
length, so it starts at the sequence's last real token and never reads padding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lstmcli.cells import CELLS, RecurrentCell, State

# observer(t, state, gates, mask) sees every step of the step-wise path (diagnostics).
StepObserver = Callable[[int, State, dict[str, Tensor], Tensor], None]


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, T) bool, True on real steps."""
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row of (B, T, ...) within its length; padding stays at the end."""
    batch, steps = x.shape[:2]
    t = torch.arange(steps, device=x.device).unsqueeze(0).expand(batch, steps)  # (B, T)
    last = (lengths - 1).unsqueeze(1)
    index = torch.where(t <= last, last - t, t)  # (B, T)
    index = index.view(batch, steps, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


def run_stepwise(
    cell: RecurrentCell,
    x: Tensor,
    lengths: Tensor,
    observer: StepObserver | None = None,
) -> tuple[Tensor, State]:
    """The reference path: one ``cell.step`` per time step. x (B, T, I) -> outputs (B, T, H)
    (zero at padding) and the state after each sequence's last real step."""
    batch, steps = x.shape[:2]
    projected = cell.project_input(x)  # (B, T, G*H), all steps in one matrix product
    mask = length_mask(lengths, steps)  # (B, T)
    state = cell.init_state(batch, x)
    outputs = []
    for t in range(steps):
        new_state, gates = cell.step(projected[:, t], state)
        real = mask[:, t].unsqueeze(1)  # (B, 1)
        # A finished sequence keeps its final state through the padding.
        state = tuple(
            torch.where(real, new, old) for new, old in zip(new_state, state, strict=True)
        )
        if observer is not None:
            observer(t, state, gates, mask[:, t])
        outputs.append(state[0] * real)
    return torch.stack(outputs, dim=1), state


class Recurrence(nn.Module):
    """One cell run over a sequence in one direction."""

    def __init__(self, cell: RecurrentCell, reverse: bool = False) -> None:
        super().__init__()
        self.cell = cell
        self.reverse = reverse
        self.stepwise = not cell.fused  # standard cells train on torch's fused kernels

    def forward(
        self, x: Tensor, lengths: Tensor, observer: StepObserver | None = None
    ) -> tuple[Tensor, Tensor]:
        """x (B, T, I) -> outputs (B, T, H) aligned with x and zero at padding, and the final
        hidden state (B, H): after the last real token (forward) or the first (reverse)."""
        if self.reverse:
            x = reverse_padded(x, lengths)
        if self.stepwise or observer is not None:
            outputs, _ = run_stepwise(self.cell, x, lengths, observer)
        else:
            mask = length_mask(lengths, x.shape[1]).unsqueeze(-1)  # (B, T, 1)
            outputs = self.cell.run_fused(x) * mask  # (B, T, H)
        final = outputs[torch.arange(x.shape[0], device=x.device), lengths - 1]  # (B, H)
        if self.reverse:
            outputs = reverse_padded(outputs, lengths)
        return outputs, final


class RecurrentEncoder(nn.Module):
    """Stacked (and optionally bidirectional) cells with dropout between layers."""

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        forget_bias: float = 1.0,
    ) -> None:
        super().__init__()
        cell_class = CELLS[cell]
        directions = 2 if bidirectional else 1
        self.output_size = directions * hidden_size
        self.layers = nn.ModuleList()
        for layer in range(layers):
            size = input_size if layer == 0 else self.output_size
            self.layers.append(nn.ModuleList(
                Recurrence(cell_class(size, hidden_size, forget_bias), reverse=direction == 1)
                for direction in range(directions)
            ))
        self.dropout = nn.Dropout(dropout)

    def recurrences(self) -> list[Recurrence]:
        return [recurrence for layer in self.layers for recurrence in layer]

    def set_stepwise(self, stepwise: bool) -> None:
        """Run every cell through its step-wise reference path (True) or fused kernel (False;
        only where the cell has one)."""
        for recurrence in self.recurrences():
            recurrence.stepwise = stepwise or not recurrence.cell.fused

    def forward(
        self, x: Tensor, lengths: Tensor, observer: Callable[..., None] | None = None
    ) -> tuple[Tensor, Tensor]:
        """x (B, T, I) -> outputs (B, T, D*H) of the top layer and its final states (B, D*H).
        ``observer(layer, direction, t, state, gates, mask)`` sees every step when given."""
        finals: list[Tensor] = []
        for index, layer in enumerate(self.layers):
            if index > 0:
                x = self.dropout(x)
            outputs, finals = [], []
            for direction, recurrence in enumerate(layer):
                step_observer = None
                if observer is not None:
                    step_observer = _bind(observer, index, direction)
                out, final = recurrence(x, lengths, step_observer)
                outputs.append(out)
                finals.append(final)
            x = torch.cat(outputs, dim=-1)  # (B, T, D*H)
        return x, torch.cat(finals, dim=-1)


def _bind(observer: Callable[..., None], layer: int, direction: int) -> StepObserver:
    def step_observer(t: int, state: State, gates: dict[str, Tensor], mask: Tensor) -> None:
        observer(layer, direction, t, state, gates, mask)

    return step_observer
