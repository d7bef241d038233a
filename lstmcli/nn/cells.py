"""The registry of recurrent cells: each cell is one class whose docstring is its maths.

A cell class holds everything that belongs to the cell: its equations (``step``), the names of its
gates and of the row blocks of its weights, which gate carries its memory (and so gets the
``--gate-bias``), its state and, where one exists, the torch module that computes exactly the same
function with the same weights. Nothing else in lstmcli names a cell: the CLI, the diagnostics,
the plots and the training code all ask this registry. A new cell is one new class here (or
anywhere, with :func:`register_cell`).

``step`` is written against a small namespace of array operations (``ops``: ``sigmoid``, ``tanh``,
``linear``, ``split``; ``split_rows`` and ``concat_rows`` for ``kernel_rows``) rather than against
torch, so the same equations can run on other array libraries; this module imports neither torch
nor numpy.

One signature for every cell::

    state, gates = Cell.step(ops, params, x_projected, state)

``x_projected`` is ``W_ih x_t + b_ih`` (B, G*H), computed for all steps at once by the runner;
``state`` is a tuple of (B, H) arrays named by ``state_names``; ``params`` has ``weight_hh``
(G*H, H), ``bias_hh`` (G*H,) and the cell's ``vectors``; ``gates`` maps each of ``gate_names`` to
its activation (B, H). Weights use torch's layout and chunk order.

Training runs the fastest path that computes a cell exactly: its ``kernel`` (a torch.nn module,
with the cell's own rows mapped onto the kernel's by ``kernel_rows`` where the two differ), else its
``fused_function`` (in :mod:`lstmcli.nn.fused`), else ``step`` in a loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

from lstmcli.errors import ConfigError


class Ops(Protocol):
    """The array operations a cell's equations may use."""

    def sigmoid(self, x: Any) -> Any: ...
    def tanh(self, x: Any) -> Any: ...
    def linear(self, x: Any, weight: Any, bias: Any) -> Any: ...  # x W^T + b
    def split(self, x: Any, chunks: int) -> tuple[Any, ...]: ...  # equal blocks of the last axis
    def split_rows(self, x: Any, chunks: int) -> tuple[Any, ...]: ...  # equal blocks of axis 0
    def concat_rows(self, xs: Sequence[Any]) -> Any: ...  # joined along axis 0


State = tuple[Any, ...]


class Cell:
    """Base class of the registry's cells (never instantiated: a cell is its class)."""

    name: ClassVar[str]
    chunks: ClassVar[tuple[str, ...]]  # the G row blocks of weight_ih / weight_hh, in order
    gate_names: ClassVar[tuple[str, ...]] = ()  # activations step() reports, for diagnostics
    candidates: ClassVar[tuple[str, ...]] = ()  # those of gate_names that are tanh candidates
    state_names: ClassVar[tuple[str, ...]] = ("h",)
    memory_gate: ClassVar[str | None] = None  # the gate that decides how much state survives
    default_gate_bias: ClassVar[float | None] = None  # initial memory-gate bias; None: torch init
    vectors: ClassVar[tuple[str, ...]] = ()  # extra (H,) parameters, e.g. peephole weights
    kernel: ClassVar[str | None] = None  # torch.nn class computing this cell with these weights
    # kernel_rows(ops, rows): the kernel's weight or bias rows made from the cell's own (G*H rows,
    # a weight or a bias), for a cell whose weights are tied blocks of the kernel's. None: the
    # cell's rows are the kernel's, and its parameters live inside the kernel module.
    kernel_rows: ClassVar[Callable[[Ops, Any], Any] | None] = None
    # Where no kernel computes the cell: the name of the function in lstmcli.nn.fused that runs it
    # over a whole padded batch, fn(params, x, lengths) -> outputs (B, T, H) zero at padding.
    fused_function: ClassVar[str | None] = None
    diagnose_by_default: ClassVar[bool] = False  # in `lstm diagnose`'s default comparison

    @classmethod
    def num_chunks(cls) -> int:
        return len(cls.chunks)

    @classmethod
    def has_cell_state(cls) -> bool:
        return len(cls.state_names) > 1

    @classmethod
    def gates(cls) -> tuple[str, ...]:
        """The sigmoid gates among gate_names (the ones that open and close)."""
        return tuple(name for name in cls.gate_names if name not in cls.candidates)

    @classmethod
    def weights_in_kernel(cls) -> bool:
        """Whether the weights live inside the torch kernel module, under its names
        (``kernel.weight_ih_l0`` ...), rather than as the cell's own parameters (a cell whose
        kernel_rows maps its own rows onto the kernel's keeps its own)."""
        return cls.kernel is not None and cls.kernel_rows is None

    @classmethod
    def fast_path(cls) -> str | None:
        """What computes the cell in training, or None: only the step-wise loop."""
        if cls.kernel is not None:
            return f"torch.nn.{cls.kernel}" + (" (tied weights)" if cls.kernel_rows else "")
        if cls.fused_function is not None:
            return f"lstmcli.nn.fused.{cls.fused_function}"
        return None

    @classmethod
    def memory_chunk(cls) -> int | None:
        """The row block whose bias sets the memory gate, or None (no memory gate)."""
        if cls.memory_gate is None:
            return None
        return cls.chunks.index(cls.memory_gate)

    @classmethod
    def equations(cls) -> str:
        """The docstring as clean text, the cell's maths as people read it: dedented, prose
        paragraphs joined into one line each (a terminal wraps them), the indented equation lines
        kept as they are, reStructuredText's double backticks dropped."""
        import inspect

        blocks = inspect.cleandoc(cls.__doc__ or "").replace("``", "").split("\n\n")
        return "\n\n".join(
            block if block.startswith(" ") else " ".join(block.split("\n"))
            for block in blocks
        )

    @staticmethod
    def step(ops: Ops, params: Any, x_projected: Any, state: State) -> tuple[State, dict[str, Any]]:
        raise NotImplementedError


_REGISTRY: dict[str, type[Cell]] = {}


def register_cell(cell: type[Cell]) -> type[Cell]:
    """Add a cell class to the registry (usable as a decorator); its name must be new."""
    if not getattr(cell, "name", "") or not cell.name.isidentifier():
        raise ValueError(f"cell class {cell.__name__} needs a name that is an identifier")
    if cell.name in _REGISTRY and _REGISTRY[cell.name] is not cell:
        raise ValueError(f"a cell named {cell.name!r} is already registered")
    if cell.memory_gate is not None and cell.memory_gate not in cell.chunks:
        raise ValueError(f"cell {cell.name!r}: memory gate {cell.memory_gate!r} is not one of "
                         f"its chunks {cell.chunks}")
    _REGISTRY[cell.name] = cell
    return cell


def unregister_cell(name: str) -> None:
    """Remove a cell added with register_cell (for tests and plugins)."""
    _REGISTRY.pop(name, None)


def cell_names() -> tuple[str, ...]:
    """The registered cells' names, in registration order (also the order of plot colours)."""
    return tuple(_REGISTRY)


def get_cell(name: str) -> type[Cell]:
    """The cell class of that name; ConfigError listing the choices otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown cell {name!r}; choose one of: {', '.join(_REGISTRY)}"
        ) from None


@register_cell
class ElmanRNNCell(Cell):
    """Vanilla (Elman) RNN, equal to ``torch.nn.RNN(nonlinearity="tanh")``.

        h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

    The gradient through time is multiplied by diag(1 - h_t^2) W_hh at every step, so it
    vanishes (or explodes) geometrically with distance.
    """

    name = "rnn"
    chunks = ("",)
    kernel = "RNN"
    diagnose_by_default = True

    @staticmethod
    def step(ops: Ops, params: Any, x_projected: Any, state: State) -> tuple[State, dict[str, Any]]:
        (h_prev,) = state
        h = ops.tanh(x_projected + ops.linear(h_prev, params.weight_hh, params.bias_hh))  # (B, H)
        return (h,), {}


@register_cell
class LSTMCell(Cell):
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
    chunks = ("input", "forget", "cell", "output")
    gate_names = ("input", "forget", "cell", "output")
    candidates = ("cell",)
    state_names = ("h", "c")
    memory_gate = "forget"
    default_gate_bias = 1.0  # Jozefowicz et al. 2015
    kernel = "LSTM"
    diagnose_by_default = True

    @staticmethod
    def step(ops: Ops, params: Any, x_projected: Any, state: State) -> tuple[State, dict[str, Any]]:
        h_prev, c_prev = state
        z = x_projected + ops.linear(h_prev, params.weight_hh, params.bias_hh)  # (B, 4H)
        z_input, z_forget, z_cell, z_output = ops.split(z, 4)
        input_gate = ops.sigmoid(z_input)
        forget_gate = ops.sigmoid(z_forget)
        candidate = ops.tanh(z_cell)
        output_gate = ops.sigmoid(z_output)
        c = forget_gate * c_prev + input_gate * candidate  # (B, H)
        h = output_gate * ops.tanh(c)
        gates = {"input": input_gate, "forget": forget_gate, "cell": candidate,
                 "output": output_gate}
        return (h, c), gates


@register_cell
class GRUCell(Cell):
    """Gated recurrent unit (Cho et al. 2014), equal to ``torch.nn.GRU``. Chunks: reset, update,
    new.

        r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)      reset gate
        z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)      update gate
        n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn)) candidate
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}

    z_t plays the forget gate's part: dh_t/dh_{t-1} contains the identity scaled by z_t.
    """

    name = "gru"
    chunks = ("reset", "update", "new")
    gate_names = ("reset", "update", "new")
    candidates = ("new",)
    memory_gate = "update"
    kernel = "GRU"
    diagnose_by_default = True

    @staticmethod
    def step(ops: Ops, params: Any, x_projected: Any, state: State) -> tuple[State, dict[str, Any]]:
        (h_prev,) = state
        x_reset, x_update, x_new = ops.split(x_projected, 3)
        h_reset, h_update, h_new = ops.split(
            ops.linear(h_prev, params.weight_hh, params.bias_hh), 3)
        reset_gate = ops.sigmoid(x_reset + h_reset)  # (B, H)
        update_gate = ops.sigmoid(x_update + h_update)
        candidate = ops.tanh(x_new + reset_gate * h_new)
        h = (1.0 - update_gate) * candidate + update_gate * h_prev
        return (h,), {"reset": reset_gate, "update": update_gate, "new": candidate}


@register_cell
class PeepholeLSTMCell(Cell):
    """LSTM with diagonal peephole connections (Gers & Schmidhuber 2000): the gates also see the
    cell state. Chunks as in the LSTM; p_i, p_f, p_o are vectors (H,) applied elementwise.

        i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi + p_i * c_{t-1})   input gate
        f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf + p_f * c_{t-1})   forget gate
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)                      candidate cell
        c_t = f_t * c_{t-1} + i_t * g_t
        o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho + p_o * c_t)       output gate
        h_t = o_t * tanh(c_t)

    With p = 0 it is exactly the LSTM.
    """

    name = "peephole"
    chunks = ("input", "forget", "cell", "output")
    gate_names = ("input", "forget", "cell", "output")
    candidates = ("cell",)
    state_names = ("h", "c")
    memory_gate = "forget"
    default_gate_bias = 1.0
    vectors = ("peephole_input", "peephole_forget", "peephole_output")
    fused_function = "peephole_lstm"  # no torch kernel sees c in its gates

    @staticmethod
    def step(ops: Ops, params: Any, x_projected: Any, state: State) -> tuple[State, dict[str, Any]]:
        h_prev, c_prev = state
        z = x_projected + ops.linear(h_prev, params.weight_hh, params.bias_hh)  # (B, 4H)
        z_input, z_forget, z_cell, z_output = ops.split(z, 4)
        input_gate = ops.sigmoid(z_input + params.peephole_input * c_prev)
        forget_gate = ops.sigmoid(z_forget + params.peephole_forget * c_prev)
        candidate = ops.tanh(z_cell)
        c = forget_gate * c_prev + input_gate * candidate  # (B, H)
        output_gate = ops.sigmoid(z_output + params.peephole_output * c)
        h = output_gate * ops.tanh(c)
        gates = {"input": input_gate, "forget": forget_gate, "cell": candidate,
                 "output": output_gate}
        return (h, c), gates


@register_cell
class CoupledLSTMCell(Cell):
    """Coupled input-forget gate LSTM (CIFG; Greff et al. 2017): the input gate is 1 - forget
    gate, so a cell forgets exactly as much as it writes. Chunks: forget, cell, output.

        f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)      forget gate
        i_t = 1 - f_t                                             input gate (coupled)
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)         candidate cell
        o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)      output gate
        c_t = f_t * c_{t-1} + i_t * g_t
        h_t = o_t * tanh(c_t)

    A quarter fewer recurrent weights than the LSTM, at about the same accuracy. As
    sigmoid(-z) = 1 - sigmoid(z), it is torch.nn.LSTM whose input-gate rows (weights and both
    biases) are minus its forget-gate rows: training runs that kernel (``kernel_rows``).
    """

    name = "coupled"
    chunks = ("forget", "cell", "output")
    gate_names = ("input", "forget", "cell", "output")
    candidates = ("cell",)
    state_names = ("h", "c")
    memory_gate = "forget"
    default_gate_bias = 1.0
    kernel = "LSTM"

    @staticmethod
    def kernel_rows(ops: Ops, rows: Any) -> Any:
        """The LSTM's (input, forget, cell, output) rows from the cell's (forget, cell, output):
        a weight (3H, K) -> (4H, K) or a bias (3H,) -> (4H,)."""
        forget, cell, output = ops.split_rows(rows, 3)
        return ops.concat_rows((-forget, forget, cell, output))

    @staticmethod
    def step(ops: Ops, params: Any, x_projected: Any, state: State) -> tuple[State, dict[str, Any]]:
        h_prev, c_prev = state
        z = x_projected + ops.linear(h_prev, params.weight_hh, params.bias_hh)  # (B, 3H)
        z_forget, z_cell, z_output = ops.split(z, 3)
        forget_gate = ops.sigmoid(z_forget)
        input_gate = 1.0 - forget_gate
        candidate = ops.tanh(z_cell)
        output_gate = ops.sigmoid(z_output)
        c = forget_gate * c_prev + input_gate * candidate  # (B, H)
        h = output_gate * ops.tanh(c)
        gates = {"input": input_gate, "forget": forget_gate, "cell": candidate,
                 "output": output_gate}
        return (h, c), gates


DEFAULT_CELL = LSTMCell.name
