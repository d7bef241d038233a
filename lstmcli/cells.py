"""The five recurrent cells, each a one-step reference implementation whose docstring is its maths.

Every cell has one signature::

    state, gates = cell(x_t, state)        # x_t (B, I); state a tuple of (B, H) tensors

``state`` is ``(h,)`` for the RNN and GRU and ``(h, c)`` for the LSTM family; ``gates`` maps
each gate's name to its activation (B, H), for diagnostics. A sequence runner first projects the
whole input sequence at once with ``project_input`` and then calls ``step`` per time step, so the
loop does only the recurrent matrix product.

Parameters use torch's layout and names (``weight_ih`` (G*H, I), ``weight_hh`` (G*H, H),
``bias_ih``, ``bias_hh``, gate chunks in torch's order). For ``rnn``, ``lstm`` and ``gru`` they
live inside a one-layer ``torch.nn.RNN/LSTM/GRU`` (``cell.kernel``), so training runs the fused
kernel and the step-wise path here reads exactly the same weights. All maths is elementwise
functions and matrix products, so each cell has a direct numpy twin.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

State = tuple[Tensor, ...]


class RecurrentCell(nn.Module):
    """Base class: parameter layout, state initialisation and the step protocol."""

    name: ClassVar[str]
    gate_names: ClassVar[tuple[str, ...]]
    num_chunks: ClassVar[int]  # G: blocks of H rows in weight_ih / weight_hh
    has_cell_state: ClassVar[bool] = False
    fused: ClassVar[bool] = False  # has a torch kernel (FusedCell)
    forget_chunk: ClassVar[int | None] = None  # which chunk gets --forget-bias

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.create_parameters()
        self.reset_parameters(forget_bias)

    def create_parameters(self) -> None:
        rows = self.num_chunks * self.hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, self.input_size))
        self.weight_hh = nn.Parameter(torch.empty(rows, self.hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(rows))
        self.bias_hh = nn.Parameter(torch.empty(rows))

    def reset_parameters(self, forget_bias: float = 1.0) -> None:
        """torch's default init, U(-1/sqrt(H), 1/sqrt(H)), then the forget-gate bias."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.uniform_(-bound, bound)
        if self.forget_chunk is not None:
            self.set_gate_bias(self.forget_chunk, forget_bias)

    def set_gate_bias(self, chunk: int, value: float) -> None:
        """Start one gate (a chunk of the rows) at sigmoid(value): the whole bias goes on b_ih,
        so that b_ih + b_hh == value exactly."""
        rows = slice(chunk * self.hidden_size, (chunk + 1) * self.hidden_size)
        with torch.no_grad():
            self.bias_ih[rows] = value
            self.bias_hh[rows] = 0.0

    def init_state(self, batch: int, like: Tensor) -> State:
        zeros = like.new_zeros(batch, self.hidden_size)
        return (zeros, zeros.clone()) if self.has_cell_state else (zeros,)

    def project_input(self, x: Tensor) -> Tensor:
        """W_ih x + b_ih for one step (B, I) or a whole sequence (B, T, I) -> (..., G*H)."""
        return nn.functional.linear(x, self.weight_ih, self.bias_ih)

    def project_hidden(self, h: Tensor) -> Tensor:
        return nn.functional.linear(h, self.weight_hh, self.bias_hh)  # (B, G*H)

    def step(self, x_projected: Tensor, state: State) -> tuple[State, dict[str, Tensor]]:
        raise NotImplementedError

    def forward(self, x: Tensor, state: State) -> tuple[State, dict[str, Tensor]]:
        return self.step(self.project_input(x), state)

    def run_fused(self, x: Tensor) -> Tensor:
        raise RuntimeError(f"cell {self.name!r} has no fused kernel")


class FusedCell(RecurrentCell):
    """A cell whose weights live in a one-layer torch.nn.RNN/LSTM/GRU, so that training runs
    torch's fused kernel and the step-wise reference path reads exactly the same tensors."""

    kernel_class: ClassVar[type[nn.RNNBase]]
    fused = True

    def create_parameters(self) -> None:
        self.kernel = self.kernel_class(
            self.input_size, self.hidden_size, num_layers=1, batch_first=True
        )

    def run_fused(self, x: Tensor) -> Tensor:
        """All steps of a padded batch (B, T, I) through torch's kernel -> outputs (B, T, H)."""
        outputs, _ = self.kernel(x)
        return outputs

    @property
    def weight_ih(self) -> Tensor:
        return self.kernel.weight_ih_l0

    @property
    def weight_hh(self) -> Tensor:
        return self.kernel.weight_hh_l0

    @property
    def bias_ih(self) -> Tensor:
        return self.kernel.bias_ih_l0

    @property
    def bias_hh(self) -> Tensor:
        return self.kernel.bias_hh_l0


class ElmanRNNCell(FusedCell):
    """Vanilla (Elman) RNN, equal to ``torch.nn.RNN(nonlinearity="tanh")``.

        h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

    The gradient through time is multiplied by diag(1 - h_t^2) W_hh at every step, so it
    vanishes (or explodes) geometrically with distance.
    """

    name = "rnn"
    gate_names = ()
    num_chunks = 1
    kernel_class = nn.RNN

    def step(self, x_projected: Tensor, state: State) -> tuple[State, dict[str, Tensor]]:
        (h_prev,) = state
        h = torch.tanh(x_projected + self.project_hidden(h_prev))  # (B, H)
        return (h,), {}


class LSTMCell(FusedCell):
    """Long short-term memory (Hochreiter & Schmidhuber 1997; forget gate Gers et al. 2000),
    equal to ``torch.nn.LSTM``. Chunks of W in torch's order: input, forget, cell, output.

        i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)      input gate
        f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)      forget gate
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)         candidate cell
        o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)      output gate
        c_t = f_t * c_{t-1} + i_t * g_t
        h_t = o_t * tanh(c_t)

    dc_t/dc_{t-1} = f_t: with the forget bias at 1 the gradient along c decays slowly.
    """

    name = "lstm"
    gate_names = ("input", "forget", "cell", "output")
    num_chunks = 4
    has_cell_state = True
    kernel_class = nn.LSTM
    forget_chunk = 1

    def step(self, x_projected: Tensor, state: State) -> tuple[State, dict[str, Tensor]]:
        h_prev, c_prev = state
        z = x_projected + self.project_hidden(h_prev)  # (B, 4H)
        z_input, z_forget, z_cell, z_output = z.chunk(4, dim=-1)
        input_gate = torch.sigmoid(z_input)
        forget_gate = torch.sigmoid(z_forget)
        candidate = torch.tanh(z_cell)
        output_gate = torch.sigmoid(z_output)
        c = forget_gate * c_prev + input_gate * candidate  # (B, H)
        h = output_gate * torch.tanh(c)
        gates = {"input": input_gate, "forget": forget_gate, "cell": candidate,
                 "output": output_gate}
        return (h, c), gates


class GRUCell(FusedCell):
    """Gated recurrent unit (Cho et al. 2014), equal to ``torch.nn.GRU``. Chunks: reset, update,
    new.

        r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)      reset gate
        z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)      update gate
        n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn)) candidate
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}

    z_t plays the forget gate's part: dh_t/dh_{t-1} contains the identity scaled by z_t.
    """

    name = "gru"
    gate_names = ("reset", "update", "new")
    num_chunks = 3
    kernel_class = nn.GRU

    def step(self, x_projected: Tensor, state: State) -> tuple[State, dict[str, Tensor]]:
        (h_prev,) = state
        x_reset, x_update, x_new = x_projected.chunk(3, dim=-1)
        h_reset, h_update, h_new = self.project_hidden(h_prev).chunk(3, dim=-1)
        reset_gate = torch.sigmoid(x_reset + h_reset)  # (B, H)
        update_gate = torch.sigmoid(x_update + h_update)
        candidate = torch.tanh(x_new + reset_gate * h_new)
        h = (1.0 - update_gate) * candidate + update_gate * h_prev
        return (h,), {"reset": reset_gate, "update": update_gate, "new": candidate}


class PeepholeLSTMCell(RecurrentCell):
    """LSTM with diagonal peephole connections (Gers & Schmidhuber 2000): the gates also see the
    cell state. Chunks as in the LSTM; p_i, p_f, p_o are vectors (B, H) broadcast elementwise.

        i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi + p_i * c_{t-1})
        f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf + p_f * c_{t-1})
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
        c_t = f_t * c_{t-1} + i_t * g_t
        o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho + p_o * c_t)
        h_t = o_t * tanh(c_t)

    With p = 0 it is exactly the LSTM.
    """

    name = "peephole"
    gate_names = ("input", "forget", "cell", "output")
    num_chunks = 4
    has_cell_state = True
    forget_chunk = 1

    def create_parameters(self) -> None:
        super().create_parameters()
        self.peephole_input = nn.Parameter(torch.empty(self.hidden_size))
        self.peephole_forget = nn.Parameter(torch.empty(self.hidden_size))
        self.peephole_output = nn.Parameter(torch.empty(self.hidden_size))

    def step(self, x_projected: Tensor, state: State) -> tuple[State, dict[str, Tensor]]:
        h_prev, c_prev = state
        z = x_projected + self.project_hidden(h_prev)  # (B, 4H)
        z_input, z_forget, z_cell, z_output = z.chunk(4, dim=-1)
        input_gate = torch.sigmoid(z_input + self.peephole_input * c_prev)
        forget_gate = torch.sigmoid(z_forget + self.peephole_forget * c_prev)
        candidate = torch.tanh(z_cell)
        c = forget_gate * c_prev + input_gate * candidate  # (B, H)
        output_gate = torch.sigmoid(z_output + self.peephole_output * c)
        h = output_gate * torch.tanh(c)
        gates = {"input": input_gate, "forget": forget_gate, "cell": candidate,
                 "output": output_gate}
        return (h, c), gates


class CoupledLSTMCell(RecurrentCell):
    """Coupled input-forget gate LSTM (CIFG; Greff et al. 2017): the input gate is 1 - forget
    gate, so a cell forgets exactly as much as it writes. Chunks: forget, cell, output.

        f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)
        i_t = 1 - f_t
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
        o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)
        c_t = f_t * c_{t-1} + i_t * g_t
        h_t = o_t * tanh(c_t)

    A quarter fewer recurrent weights than the LSTM, at about the same accuracy.
    """

    name = "coupled"
    gate_names = ("input", "forget", "cell", "output")
    num_chunks = 3
    has_cell_state = True
    forget_chunk = 0

    def step(self, x_projected: Tensor, state: State) -> tuple[State, dict[str, Tensor]]:
        h_prev, c_prev = state
        z = x_projected + self.project_hidden(h_prev)  # (B, 3H)
        z_forget, z_cell, z_output = z.chunk(3, dim=-1)
        forget_gate = torch.sigmoid(z_forget)
        input_gate = 1.0 - forget_gate
        candidate = torch.tanh(z_cell)
        output_gate = torch.sigmoid(z_output)
        c = forget_gate * c_prev + input_gate * candidate  # (B, H)
        h = output_gate * torch.tanh(c)
        gates = {"input": input_gate, "forget": forget_gate, "cell": candidate,
                 "output": output_gate}
        return (h, c), gates


CELLS: dict[str, type[RecurrentCell]] = {
    cell.name: cell
    for cell in (ElmanRNNCell, LSTMCell, GRUCell, PeepholeLSTMCell, CoupledLSTMCell)
}
