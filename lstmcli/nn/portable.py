"""The classifier rebuilt from parts that exporters and quantizers understand.

:class:`SentimentClassifier` trains on whatever computes a cell fastest: a torch kernel, a kernel
called with weights built on every forward (``functional_call``), or a hand-written autograd
Function. Neither the ONNX exporter nor TorchScript can follow the last two, and dynamic int8
quantization swaps only whole ``nn.Linear`` / ``nn.LSTM`` / ``nn.GRU`` modules. So
:class:`PortableClassifier` holds the same weights in plain modules, recurrence by recurrence:

* :class:`KernelRecurrence`: a real one-layer ``torch.nn.RNN/LSTM/GRU`` whose weights are the
  cell's (built once by the cell's ``kernel_rows`` where the cell keeps its own rows), for every
  cell whose ``kernel`` the caller accepts;
* :class:`LoopRecurrence`: any other cell, step by step through its own ``Cell.step``, with the
  input projection (all steps at once) and the recurrent product in ``nn.Linear`` modules (or
  MatMul form, :class:`MatMulLinear`), so that quantization reaches both.

It computes what the classifier computes in eval mode (dropout is the identity), under the same
padding conventions: right padding, outputs zero at padding, the final state gathered at each
sequence's last real step, the backward direction read reversed within each length. Nothing here
names a cell.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import Tensor, nn

from lstmcli.nn.cells import Cell
from lstmcli.nn.classifier import SentimentClassifier
from lstmcli.nn.recurrent import CellModule, Recurrence, TorchOps, length_mask


class ModuleOps(TorchOps):
    """TorchOps whose ``linear`` also takes a module standing for the weight (with its bias
    inside; the cell passes bias None): how a cell's step reaches a quantizable layer."""

    @staticmethod
    def linear(x: Tensor, weight: Tensor | nn.Module, bias: Tensor | None) -> Tensor:
        if isinstance(weight, nn.Module):
            return weight(x)
        return nn.functional.linear(x, weight, bias)


MODULE_OPS = ModuleOps()


class MatMulLinear(nn.Module):
    """x W^T + b as one MatMul with a stored W^T and an Add: onnxruntime's dynamic quantization
    turns MatMul (not Gemm, what an exported nn.Linear becomes) into int8."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.weight_t = nn.Parameter(weight.detach().t().contiguous())  # (I, O)
        self.bias = nn.Parameter(bias.detach().clone())  # (O,)

    def forward(self, x: Tensor) -> Tensor:
        return torch.matmul(x, self.weight_t) + self.bias  # (..., O)


def linear_layer(weight: Tensor, bias: Tensor, matmul: bool = False) -> nn.Module:
    """An nn.Linear (what torch's dynamic quantization swaps) or a MatMulLinear holding a copy of
    weight (O, I) and bias (O,)."""
    if matmul:
        return MatMulLinear(weight, bias)
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


class StepParams(nn.Module):
    """What a cell's ``step`` reads: ``weight_hh`` is a linear module holding b_hh too (so
    ``bias_hh`` is None), and the cell's vectors are parameters of their own."""

    def __init__(self, cell: CellModule, matmul: bool) -> None:
        super().__init__()
        self.recurrent = linear_layer(cell.weight_hh, cell.bias_hh, matmul)
        for vector in cell.spec.vectors:
            setattr(self, vector, nn.Parameter(getattr(cell, vector).detach().clone()))

    @property
    def weight_hh(self) -> nn.Module:
        return self.recurrent

    @property
    def bias_hh(self) -> None:
        return None


class CellStep(nn.Module):
    """One step of a registry cell on its state stacked into one tensor (S, B, H): one signature
    for every cell, which a traced step needs."""

    def __init__(self, spec: type[Cell], params: StepParams) -> None:
        super().__init__()
        self.spec = spec
        self.params = params

    def forward(self, x_projected: Tensor, state: Tensor) -> Tensor:
        new_state, _ = self.spec.step(MODULE_OPS, self.params, x_projected, tuple(state.unbind(0)))
        return torch.stack(new_state)  # (S, B, H)


def reverse_within(x: Tensor, lengths: Tensor) -> Tensor:
    """Each row of x (B, T, F) reversed within its length; padding stays at the end.
    recurrent.reverse_padded for three dimensions only, which TorchScript can compile."""
    t = torch.arange(x.size(1), device=x.device).unsqueeze(0)  # (1, T)
    last = (lengths - 1).unsqueeze(1)  # (B, 1)
    index = torch.where(t <= last, last - t, t)  # (B, T)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


def last_real(outputs: Tensor, lengths: Tensor) -> Tensor:
    """outputs (B, T, H) at each row's last real step -> (B, H), as a gather that exports to one
    ONNX node (advanced indexing would become several)."""
    index = (lengths - 1).view(-1, 1, 1).expand(-1, 1, outputs.size(2))  # (B, 1, H)
    return outputs.gather(1, index).squeeze(1)


class KernelRecurrence(nn.Module):
    """A cell computed by its torch kernel (exact, as in training's fast path)."""

    def __init__(self, kernel: nn.Module, hidden: int, cell_state: bool, reverse: bool) -> None:
        super().__init__()
        self.kernel = kernel
        self.hidden = hidden
        self.cell_state = cell_state
        self.reverse = reverse

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if self.reverse:
            x = reverse_within(x, lengths)
        # The zero state made from x's own batch size: an exported kernel then takes any batch.
        zeros = x.new_zeros(1, x.size(0), self.hidden)  # (1, B, H)
        outputs, _ = self.kernel(x, (zeros, zeros) if self.cell_state else zeros)  # (B, T, H)
        # Padding comes after every real step: it never reaches a real output, only its own.
        outputs = outputs * length_mask(lengths, x.size(1)).unsqueeze(-1).to(outputs.dtype)
        final = last_real(outputs, lengths)  # (B, H)
        if self.reverse:
            outputs = reverse_within(outputs, lengths)
        return outputs, final


class LoopRecurrence(nn.Module):
    """A cell run one ``step`` per time step over a padded batch, the loop written so that
    TorchScript keeps it as a loop over however many steps the input has (ONNX: a Loop node)."""

    def __init__(self, project: nn.Module, step: nn.Module, rows: int, states: int, hidden: int,
                 reverse: bool) -> None:
        super().__init__()
        self.project = project
        self.step = step
        self.rows = rows
        self.states = states
        self.hidden = hidden
        self.reverse = reverse

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if self.reverse:
            x = reverse_within(x, lengths)
        batch = x.size(0)
        steps = x.size(1)
        projected = self.project(x)  # (B, T, G*H), every step in one product
        mask = length_mask(lengths, steps)  # (B, T)
        state = torch.zeros(self.states, batch, self.hidden, dtype=x.dtype,
                            device=x.device)  # (S, B, H)
        hs: list[Tensor] = []
        # select(), not [:, t]: exported, a slice copies the whole tensor at every step.
        for t in range(steps):
            new_state = self.step(projected.select(1, t), state)  # (S, B, H)
            # A finished sequence keeps its final state through the padding.
            state = torch.where(mask.select(1, t).view(1, -1, 1), new_state, state)
            hs.append(state[0])
        outputs = torch.stack(hs, dim=1) * mask.unsqueeze(-1).to(x.dtype)  # (B, T, H)
        final = last_real(outputs, lengths)  # (B, H)
        if self.reverse:
            outputs = reverse_within(outputs, lengths)
        return outputs, final


def kernel_module(cell: CellModule) -> nn.Module:
    """A new one-layer torch kernel holding the cell's weights: its own rows, or the kernel's
    rows built from them by the cell's ``kernel_rows`` (built once: nothing trains here)."""
    spec = cell.spec
    kernel = getattr(nn, spec.kernel)(cell.input_size, cell.hidden_size, num_layers=1,
                                      batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            rows = getattr(cell, name)
            if spec.kernel_rows is not None:
                rows = spec.kernel_rows(MODULE_OPS, rows)
            getattr(kernel, f"{name}_l0").copy_(rows)
    return kernel


def portable_recurrence(recurrence: Recurrence, kernels: Collection[str] | None,
                        matmul: bool) -> nn.Module:
    """The plain-module form of one trained recurrence: its kernel when the cell has one and
    ``kernels`` (torch.nn class names; None: any) names it, else the step-wise loop."""
    cell = recurrence.cell
    spec = cell.spec
    if spec.kernel is not None and (kernels is None or spec.kernel in kernels):
        return KernelRecurrence(kernel_module(cell), cell.hidden_size, spec.has_cell_state(),
                                recurrence.reverse)
    project = linear_layer(cell.weight_ih, cell.bias_ih, matmul)
    step = CellStep(spec, StepParams(cell, matmul))
    return LoopRecurrence(project, step, spec.num_chunks() * cell.hidden_size,
                          len(spec.state_names), cell.hidden_size, recurrence.reverse)


class PortableClassifier(nn.Module):
    """A trained SentimentClassifier's eval-mode function, in plain modules: ``forward(ids (B, T)
    int64 right-padded with 0, lengths (B,) int64) -> logits (B, C)``.

    ``kernels``: the torch.nn kernel classes (``"LSTM"`` ...) that may compute a cell (None: any
    cell's own); other cells run step-wise. ``matmul``: linear layers as MatMul + Add (for
    onnxruntime's quantizer)."""

    def __init__(self, model: SentimentClassifier, kernels: Collection[str] | None = None,
                 matmul: bool = False) -> None:
        super().__init__()
        self.pooling = model.config.pooling
        self.embedding = nn.Embedding.from_pretrained(model.embedding.weight.detach().clone(),
                                                      freeze=True)
        self.layers = nn.ModuleList(
            nn.ModuleList(portable_recurrence(recurrence, kernels, matmul) for recurrence in layer)
            for layer in model.encoder.layers
        )
        self.classifier = linear_layer(model.classifier.weight, model.classifier.bias, matmul)
        self.eval()

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        x = self.embedding(ids)  # (B, T, E)
        finals: list[Tensor] = []
        for layer in self.layers:
            outputs: list[Tensor] = []
            finals = []
            for recurrence in layer:
                out, final = recurrence(x, lengths)  # (B, T, H), (B, H)
                outputs.append(out)
                finals.append(final)
            x = torch.cat(outputs, dim=-1)  # (B, T, D*H)
        last = torch.cat(finals, dim=-1)  # (B, D*H)
        mean = x.sum(dim=1) / lengths.unsqueeze(1).to(x.dtype)  # (B, D*H)
        mask = length_mask(lengths, ids.size(1)).unsqueeze(-1)  # (B, T, 1)
        peak = x.masked_fill(~mask, float("-inf")).amax(dim=1)  # (B, D*H)
        # A plain branch on a constant: the tracer records only the pooling taken.
        if self.pooling == "last":
            features = last
        elif self.pooling == "mean":
            features = mean
        elif self.pooling == "max":
            features = peak
        else:  # concat, as SentimentClassifier.features: [last, max, mean]
            features = torch.cat([last, peak, mean], dim=-1)  # (B, 3*D*H)
        return self.classifier(features)  # (B, C)


def to_torchscript(model: PortableClassifier) -> torch.jit.ScriptModule:
    """The model as TorchScript, for any batch size and number of steps: each step-wise loop is
    scripted (so it stays a loop) around its traced step, and the whole is traced around them.
    The model's loops are replaced in place."""
    for layer in model.layers:
        for index, recurrence in enumerate(layer):
            if isinstance(recurrence, LoopRecurrence):
                example = (torch.zeros(2, recurrence.rows),
                           torch.zeros(recurrence.states, 2, recurrence.hidden))
                recurrence.step = torch.jit.trace(recurrence.step, example)
                layer[index] = torch.jit.script(recurrence)
    return torch.jit.trace(model, example_inputs())


def example_inputs() -> tuple[Tensor, Tensor]:
    """A padded batch to trace with: two texts of different lengths (3 and 2 ids), ids that every
    vocabulary has (0 [PAD], 1 [UNK] and at least one word)."""
    return torch.tensor([[2, 1, 2], [1, 2, 0]]), torch.tensor([3, 2])
