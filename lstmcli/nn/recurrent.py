"""Running cells over padded, variable-length batches, exactly as if each sequence were alone.

``CellModule`` gives a registry cell (:mod:`lstmcli.nn.cells`) its torch parameters: inside the
torch module named by the cell's ``kernel`` where the cell's rows are the kernel's (so training
runs the fused kernel and the step-wise reference path reads exactly the same tensors), else its
own. Its fast path (``run_fused``) is that kernel; or the kernel called with weights the cell's
``kernel_rows`` builds from its own parameters on every forward, so the tie is part of the
autograd graph; or the cell's ``fused_function`` (:mod:`lstmcli.nn.fused`). ``run_stepwise`` is
the reference all of them are tested against, and the path an observer (diagnostics) sees.
Weight dropout (DropConnect on W_hh) changes neither: both read the parameters of a pass from
``CellModule.pass_params``, the kernels called functionally with the dropped W_hh.

Padding sits at the end of every row. A forward pass never lets a padded step touch a real one
(real steps come first), so the fused kernels run on the padded batch and the last real output is
gathered at ``lengths - 1``. The backward direction runs on each sequence reversed within its own
length, so it starts at the sequence's last real token and never reads padding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from lstmcli.nn import fused
from lstmcli.nn.cells import Cell, get_cell
from lstmcli.nn.dropout import LockedDropout, ParamsView, drop_connect

State = tuple[Tensor, ...]


class TorchOps:
    """The array operations of :class:`lstmcli.nn.cells.Ops` on torch tensors."""

    sigmoid = staticmethod(torch.sigmoid)
    tanh = staticmethod(torch.tanh)
    linear = staticmethod(nn.functional.linear)

    @staticmethod
    def split(x: Tensor, chunks: int) -> tuple[Tensor, ...]:
        return x.chunk(chunks, dim=-1)

    @staticmethod
    def split_rows(x: Tensor, chunks: int) -> tuple[Tensor, ...]:
        return x.chunk(chunks, dim=0)

    @staticmethod
    def concat_rows(xs: Sequence[Tensor]) -> Tensor:
        return torch.cat(list(xs), dim=0)


TORCH_OPS = TorchOps()


class CellModule(nn.Module):
    """One registry cell with its parameters: ``weight_ih`` (G*H, I), ``weight_hh`` (G*H, H),
    ``bias_ih`` and ``bias_hh`` (G*H,), plus the cell's vectors (H,).

    ``weight_dropout`` is DropConnect on W_hh in training mode (AWD-LSTM's weight drop): one mask
    per forward pass, shared by every step, drawn in ``pass_params`` for either path."""

    def __init__(
        self, cell: type[Cell] | str, input_size: int, hidden_size: int,
        gate_bias: float | None = None, weight_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.spec = get_cell(cell) if isinstance(cell, str) else cell
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_dropout = weight_dropout
        rows = self.spec.num_chunks() * hidden_size
        if self.spec.kernel is not None and self.spec.kernel_rows is not None:
            # The kernel computes the cell from weights built out of the cell's own (kernel_rows)
            # on every forward. It holds no parameters of its own (meta device) and is kept out
            # of the module tree, so checkpoints and optimisers see only the cell's parameters.
            kernel = getattr(nn, self.spec.kernel)(input_size, hidden_size, num_layers=1,
                                                   batch_first=True, device="meta")
            mapped = self.spec.kernel_rows(TORCH_OPS, torch.empty(rows, device="meta"))
            if mapped.shape != kernel.bias_ih_l0.shape:
                raise ValueError(f"cell {self.spec.name!r}: kernel_rows makes {mapped.shape[0]} "
                                 f"rows, torch.nn.{self.spec.kernel} has "
                                 f"{kernel.bias_ih_l0.shape[0]}")
            object.__setattr__(self, "tied_kernel", kernel)
        elif self.spec.kernel is not None:
            self.kernel = getattr(nn, self.spec.kernel)(input_size, hidden_size, num_layers=1,
                                                        batch_first=True)
            if self.kernel.weight_ih_l0.shape[0] != rows:
                raise ValueError(f"cell {self.spec.name!r}: torch.nn.{self.spec.kernel} has "
                                 f"{self.kernel.weight_ih_l0.shape[0] // hidden_size} chunks, "
                                 f"the cell {self.spec.num_chunks()}")
        if self.spec.kernel is None or self.spec.kernel_rows is not None:
            self.weight_ih = nn.Parameter(torch.empty(rows, input_size))
            self.weight_hh = nn.Parameter(torch.empty(rows, hidden_size))
            self.bias_ih = nn.Parameter(torch.empty(rows))
            self.bias_hh = nn.Parameter(torch.empty(rows))
        for vector in self.spec.vectors:
            setattr(self, vector, nn.Parameter(torch.empty(hidden_size)))
        self.reset_parameters(gate_bias)

    # Shortcuts to the spec, so that callers holding a module need not know the registry.
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def fused(self) -> bool:
        """Whether the cell has a path faster than the step-wise loop (``run_fused``)."""
        return self.spec.fast_path() is not None

    @property
    def has_cell_state(self) -> bool:
        return self.spec.has_cell_state()

    @property
    def num_chunks(self) -> int:
        return self.spec.num_chunks()

    @property
    def gate_names(self) -> tuple[str, ...]:
        return self.spec.gate_names

    def reset_parameters(self, gate_bias: float | None = None) -> None:
        """torch's default init, U(-1/sqrt(H), 1/sqrt(H)), then the memory-gate bias: gate_bias,
        else the cell's default_gate_bias (None leaves torch's init)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.uniform_(-bound, bound)
        bias = self.spec.default_gate_bias if gate_bias is None else gate_bias
        chunk = self.spec.memory_chunk()
        if bias is not None and chunk is not None:
            self.set_gate_bias(chunk, bias)

    def set_gate_bias(self, chunk: int, value: float) -> None:
        """Start one gate (a chunk of the rows) at sigmoid(value): the whole bias goes on b_ih,
        so that b_ih + b_hh == value exactly."""
        rows = slice(chunk * self.hidden_size, (chunk + 1) * self.hidden_size)
        with torch.no_grad():
            self.bias_ih[rows] = value
            self.bias_hh[rows] = 0.0

    def __getattr__(self, name: str) -> Tensor | nn.Module:
        # The kernel's weights under the cell's names (weight_ih for weight_ih_l0 ...).
        if name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            modules = self.__dict__["_modules"]
            if "kernel" in modules:
                return getattr(modules["kernel"], f"{name}_l0")
        return super().__getattr__(name)

    def init_state(self, batch: int, like: Tensor) -> State:
        zeros = like.new_zeros(batch, self.hidden_size)  # (B, H)
        return tuple([zeros] + [zeros.clone() for _ in self.spec.state_names[1:]])

    def project_input(self, x: Tensor) -> Tensor:
        """W_ih x + b_ih for one step (B, I) or a whole sequence (B, T, I) -> (..., G*H)."""
        return nn.functional.linear(x, self.weight_ih, self.bias_ih)

    def pass_params(self) -> CellModule | ParamsView:
        """The parameters one forward pass reads: the module itself, or, with weight_dropout in
        training mode, a view whose ``weight_hh`` carries a fresh DropConnect mask. Both paths
        draw it here, once per pass, so from the same random state they drop the same entries."""
        if not self.training or self.weight_dropout == 0:
            return self
        return ParamsView(self, weight_hh=drop_connect(self.weight_hh, self.weight_dropout))

    def step(
        self, x_projected: Tensor, state: State, params: CellModule | ParamsView | None = None
    ) -> tuple[State, dict[str, Tensor]]:
        """One step of the cell's equations on projected input (B, G*H); ``params`` is this
        pass's (``pass_params``), the module itself when not given."""
        return self.spec.step(TORCH_OPS, self if params is None else params, x_projected, state)

    def forward(self, x: Tensor, state: State) -> tuple[State, dict[str, Tensor]]:
        """One step from raw input x_t (B, I)."""
        return self.step(self.project_input(x), state)

    def run_fused(self, x: Tensor, lengths: Tensor) -> Tensor:
        """All steps of a padded batch (B, T, I) with lengths (B,) through the cell's fast path
        -> outputs (B, T, H), zero at padding.

        Under autocast the whole recurrence runs in autocast's dtype: the input and this pass's
        weights are cast once, and the kernel runs with autocast off. Left to autocast, a kernel
        would meet operands of two dtypes (its in-place steps, float32 weights beside a bfloat16
        input: the peephole recurrence fails so), or autocast would cast inside the kernel
        (oneDNN's LSTM then finds no bfloat16 primitive on a CPU without bfloat16 instructions).
        The float32 parameters get their gradients back through the casts."""
        params: CellModule | ParamsView = self.pass_params()
        device = x.device.type
        dtype = autocast_dtype(device)
        if dtype is None:
            return self._run_fast_path(params, x, lengths)
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", *self.spec.vectors)
        lowered = ParamsView(self, **{name: getattr(params, name).to(dtype) for name in names})
        with torch.autocast(device, enabled=False):
            return self._run_fast_path(lowered, x.to(dtype), lengths)

    def _run_fast_path(
        self, params: CellModule | ParamsView, x: Tensor, lengths: Tensor
    ) -> Tensor:
        spec = self.spec
        if spec.kernel is None:
            if spec.fused_function is None:
                raise RuntimeError(f"cell {self.name!r} has no fused path")
            return getattr(fused, spec.fused_function)(params, x, lengths)
        if spec.kernel_rows is None and params is self:
            outputs, _ = self.kernel(x)  # (B, T, H)
        else:
            # The kernel called with this pass's weights in place of its own: the dropped W_hh
            # of weight dropout, weights cast for autocast, or (kernel_rows) the kernel's rows
            # built from the cell's own.
            kernel = self.kernel if spec.kernel_rows is None else self.tied_kernel
            rows = spec.kernel_rows or (lambda ops, tensor: tensor)
            weights = {f"{name}_l0": rows(TORCH_OPS, getattr(params, name))
                       for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            outputs, _ = torch.func.functional_call(kernel, weights, (x,))  # (B, T, H)
        # Padding comes after every real step, so it never reaches a real output; only the
        # outputs at padding itself need clearing.
        return outputs * length_mask(lengths, x.shape[1]).unsqueeze(-1)


# observer(t, state, gates, mask) sees every step of the step-wise path (diagnostics).
StepObserver = Callable[[int, State, dict[str, Tensor], Tensor], None]


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast computes in on this kind of device now, or None where it is off."""
    if not torch.amp.is_autocast_available(device_type):
        return None
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


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
    cell: CellModule,
    x: Tensor,
    lengths: Tensor,
    observer: StepObserver | None = None,
) -> tuple[Tensor, State]:
    """The reference path: one ``cell.step`` per time step. x (B, T, I) -> outputs (B, T, H)
    (zero at padding) and the state after each sequence's last real step."""
    batch, steps = x.shape[:2]
    # All steps in one matrix product; unbind, because indexing [:, t] would make each step's
    # backward allocate and zero a gradient the size of the whole sequence.
    projected = cell.project_input(x).unbind(1)  # T x (B, G*H)
    mask = length_mask(lengths, steps)  # (B, T)
    real = mask.unsqueeze(-1).unbind(1)  # T x (B, 1)
    # Before the shortest sequence ends every row is real, and where(True, new, old) is new. Not
    # so for an observer: gradients it takes w.r.t. the carried h_t and c_t treat them as
    # separate coordinates (h_t computed from c_t must not count as a path through the carried
    # c_t), which the where's fresh nodes provide.
    all_real = int(lengths.min()) if batch and observer is None else 0
    state = cell.init_state(batch, x)
    params = cell.pass_params()  # one weight-dropout mask for every step
    hs = []
    for t in range(steps):
        new_state, gates = cell.step(projected[t], state, params)
        if t < all_real:
            state = new_state
        else:  # a finished sequence keeps its final state through the padding
            state = tuple(torch.where(real[t], new, old)
                          for new, old in zip(new_state, state, strict=True))
        if observer is not None:
            observer(t, state, gates, mask[:, t])
        hs.append(state[0])
    outputs = torch.stack(hs, dim=1) * mask.unsqueeze(-1)  # (B, T, H), zero at padding
    return outputs, state


class Recurrence(nn.Module):
    """One cell run over a sequence in one direction."""

    def __init__(self, cell: CellModule, reverse: bool = False) -> None:
        super().__init__()
        self.cell = cell
        self.reverse = reverse
        self.stepwise = not cell.fused  # cells with a fast path train on it

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
            outputs = self.cell.run_fused(x, lengths)  # (B, T, H)
        final = outputs[torch.arange(x.shape[0], device=x.device), lengths - 1]  # (B, H)
        if self.reverse:
            outputs = reverse_padded(outputs, lengths)
        return outputs, final


class RecurrentEncoder(nn.Module):
    """Stacked (and optionally bidirectional) cells with dropout between layers: ``dropout``
    (a fresh mask per step) then ``hidden_dropout`` (locked: one mask per sequence);
    ``weight_dropout`` is every cell's DropConnect on W_hh."""

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        gate_bias: float | None = None,
        hidden_dropout: float = 0.0,
        weight_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        spec = get_cell(cell)
        directions = 2 if bidirectional else 1
        self.output_size = directions * hidden_size
        self.layers = nn.ModuleList()
        for layer in range(layers):
            size = input_size if layer == 0 else self.output_size
            self.layers.append(nn.ModuleList(
                Recurrence(CellModule(spec, size, hidden_size, gate_bias, weight_dropout),
                           reverse=direction == 1)
                for direction in range(directions)
            ))
        self.dropout = nn.Dropout(dropout)
        self.hidden_dropout = LockedDropout(hidden_dropout)

    def recurrences(self) -> list[Recurrence]:
        return [recurrence for layer in self.layers for recurrence in layer]

    def set_stepwise(self, stepwise: bool) -> None:
        """Run every cell through its step-wise reference path (True) or its fast path (False;
        only where the cell has one: ``Cell.fast_path``)."""
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
                x = self.hidden_dropout(self.dropout(x))
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
