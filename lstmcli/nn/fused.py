"""Fused sequence paths for cells that no torch kernel computes: the whole recurrence as one
autograd node with a hand-written backward through time.

A cell names its function here in ``Cell.fused_function``; each has the signature
``fn(params, x, lengths) -> outputs`` with ``params`` the cell's parameters by name (a
``CellModule``), x (B, T, I) a right-padded batch and outputs (B, T, H), zero at padding. Each
computes exactly what the cell's step-wise reference (``run_stepwise``) computes, gradients too,
up to rounding; the tests check both.

Why a Function rather than the step-wise loop under autograd: only the h/c recurrence is
sequential. The input projection of all steps is one matrix product before the loop, and the
weight gradients are one matrix product each after the backward loop; in between, each step is
one (B, H) x (H, 4H) product and nine (forward) or sixteen (backward) elementwise operations,
in place on preallocated buffers, where autograd would record, save and replay some forty nodes
per step and allocate every intermediate. Buffers are left uninitialised where every element
is written anyway (only the rows of ended sequences are zeroed): zero-filling the (T, B, 4H) ones
would cost as much as a dozen steps.

Padding: the batch is ordered by length, longest first, so the sequences still running at step t
are the first n_t rows and every step works on that prefix alone. A finished sequence's state is
never touched again, and its outputs stay zero, exactly as in the reference.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

_sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input  # g * y * (1 - y), one kernel
_tanh_backward = torch.ops.aten.tanh_backward.grad_input  # g * (1 - y^2), one kernel


def peephole_lstm(params: Any, x: Tensor, lengths: Tensor) -> Tensor:
    """The diagonal-peephole LSTM (``PeepholeLSTMCell``) over a padded batch: x (B, T, I) and
    lengths (B,) -> outputs (B, T, H), zero at padding."""
    lengths = lengths.cpu()
    order = None
    if bool((lengths[1:] > lengths[:-1]).any()):
        order = torch.argsort(lengths, descending=True, stable=True)  # (B,)
        x = x.index_select(0, order.to(x.device))
        lengths = lengths[order]
    steps = x.shape[1]
    # Rows still running at each step: the batch is sorted, so they are a prefix.
    counts = (lengths.unsqueeze(0) > torch.arange(steps).unsqueeze(1)).sum(1).tolist()  # T ints
    # Both biases in the projection: one addition for all steps instead of one per step.
    outputs = _PeepholeRecurrence.apply(
        x, params.weight_ih, params.bias_ih + params.bias_hh, params.weight_hh,
        params.peephole_input, params.peephole_forget, params.peephole_output, counts,
    )  # (T, B, H)
    outputs = outputs.transpose(0, 1)  # (B, T, H)
    if order is not None:
        outputs = outputs.index_select(0, torch.argsort(order).to(x.device))
    return outputs


def _gate_steps(gates: Tensor) -> list[tuple[Tensor, ...]]:
    """Per step t of a (T, B, 4, H) buffer: its rows (B, 4H), the i and f blocks (B, 2, H) and
    the blocks i, f, g, o (B, H) each. Views made in a few calls up front: indexing inside the
    loop costs a few microseconds a view, a tenth of a step at H = 64."""
    steps, batch, _, hidden = gates.shape
    return list(zip(gates.view(steps, batch, 4 * hidden).unbind(0), gates[:, :, :2].unbind(0),
                    *(gates[:, :, k].unbind(0) for k in range(4)), strict=True))


def _head(views: tuple[Tensor, ...], n: int) -> tuple[Tensor, ...]:
    """The first n rows of each view (the sequences still running)."""
    return tuple(view[:n] for view in views)


class _PeepholeRecurrence(torch.autograd.Function):
    """x (B, T, I), rows sorted by length (longest first), ``counts[t]`` rows running at step t
    -> h_t for every step, time first (T, B, H), zero where a sequence has ended. ``bias`` is
    b_ih + b_hh."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, x: Tensor, weight_ih: Tensor, bias: Tensor, weight_hh: Tensor,
        peephole_input: Tensor, peephole_forget: Tensor, peephole_output: Tensor,
        counts: list[int],
    ) -> Tensor:
        batch, steps, features = x.shape
        hidden = weight_hh.shape[1]
        # Time first, so that each step's rows are one contiguous block of every buffer.
        inputs = x.transpose(0, 1).reshape(steps * batch, features)  # (T*B, I)
        # z = W_ih x_t + b for all steps; each step adds W_hh h_{t-1} in place and turns its
        # z into the gate activations i, f, g, o, which the backward pass reads.
        gates = torch.addmm(bias, inputs, weight_ih.t()).view(steps, batch, 4, hidden)
        cells = gates.new_empty(steps, batch, hidden)  # (T, B, H) c_t
        tanh_cells = gates.new_empty(steps, batch, hidden)  # (T, B, H) tanh(c_t)
        outputs = gates.new_empty(steps, batch, hidden)  # (T, B, H) h_t
        peephole_if = torch.stack([peephole_input, peephole_forget])  # (2, H)
        weight_t = weight_hh.t()  # (H, 4H)
        per_step = zip(counts, _gate_steps(gates), cells.unbind(0), tanh_cells.unbind(0),
                       outputs.unbind(0), strict=True)
        h_prev = c_prev = gates.new_zeros(batch, hidden)  # (B, H) h_{-1} = c_{-1} = 0
        for t, (n, gate_views, c, tanh_c, h) in enumerate(per_step):
            if n == 0:  # counts never grow: no sequence runs any more
                gates[t:].zero_()
                outputs[t:].zero_()
                break
            z, z_if, input_gate, forget_gate, candidate, output_gate = gate_views
            if n < batch:  # ended sequences: zero output, and no gradient through their rows
                gates[t, n:].zero_()
                outputs[t, n:].zero_()
                z, z_if, input_gate, forget_gate, candidate, output_gate = _head(gate_views, n)
                c, tanh_c, h, h_prev, c_prev = _head((c, tanh_c, h, h_prev, c_prev), n)
            if t > 0:  # (the zero state adds nothing at t = 0)
                z.addmm_(h_prev, weight_t)  # (n, 4H)
                z_if.addcmul_(peephole_if, c_prev.unsqueeze(1))  # (n, 2, H)
            z_if.sigmoid_()
            candidate.tanh_()
            torch.mul(forget_gate, c_prev, out=c).addcmul_(input_gate, candidate)  # (n, H)
            output_gate.addcmul_(peephole_output, c).sigmoid_()
            torch.tanh(c, out=tanh_c)
            torch.mul(output_gate, tanh_c, out=h)
            h_prev, c_prev = h, c
        ctx.save_for_backward(weight_ih, weight_hh, peephole_input, peephole_forget,
                              peephole_output, outputs)
        ctx.buffers = (inputs, gates, cells, tanh_cells)  # intermediates, never seen outside
        ctx.counts = counts
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_outputs: Tensor) -> tuple[Tensor | None, ...]:
        (weight_ih, weight_hh, peephole_input, peephole_forget, peephole_output,
         outputs) = ctx.saved_tensors
        inputs, gates, cells, tanh_cells = ctx.buffers
        counts: list[int] = ctx.counts
        # Arrives batch first (the caller's layout): one transposing copy, rather than a strided
        # gather of B rows at every step.
        grad_outputs = grad_outputs.contiguous()  # (T, B, H)
        steps, batch, hidden = outputs.shape
        # dL/dz for every step: the rows of every weight gradient. Zero where a sequence ended.
        grad_z = gates.new_empty(steps, batch, 4, hidden)  # (T, B, 4, H)
        grad_h = gates.new_zeros(batch, hidden)  # (B, H) dL/dh_t
        grad_c = gates.new_zeros(batch, hidden)  # (B, H) dL/dc_t from step t+1 on
        # The peephole gradients, summed over steps here while the operands are in cache; in
        # float32 at least, also where autocast runs the recurrence in 16 bits: a sum of T terms
        # in bfloat16 would keep barely two significant digits.
        total = torch.promote_types(gates.dtype, torch.float32)
        grad_peephole_if = gates.new_zeros(batch, 2, hidden, dtype=total)  # (B, 2, H)
        grad_peephole_o = gates.new_zeros(batch, hidden, dtype=total)  # (B, H)
        scratch = gates.new_empty(batch, hidden)  # (B, H)
        scratch_if = gates.new_empty(batch, 2, hidden)  # (B, 2, H)
        rows = (grad_h, grad_c, grad_c.unsqueeze(1), grad_peephole_if, grad_peephole_o, scratch,
                scratch_if, scratch_if[:, 0], scratch_if[:, 1:])
        # c_{t-1} per step, c_{-1} = 0, shaped (B, 1, H) to meet the (B, 2, H) i and f blocks.
        cells_prev = (gates.new_zeros(batch, 1, hidden), *cells[:-1].unsqueeze(2).unbind(0))
        per_step = list(zip(counts, _gate_steps(gates), _gate_steps(grad_z), cells.unbind(0),
                            tanh_cells.unbind(0), cells_prev, grad_outputs.unbind(0),
                            strict=True))
        active = sum(1 for n in counts if n > 0)
        grad_z[active:].zero_()
        for t in reversed(range(active)):
            n, gate_views, grad_views, c, tanh_c, c_prev, grad_out = per_step[t]
            grad_out_prev = per_step[t - 1][6] if t > 0 else grad_out
            dh, dc, dc_3d, acc_if, acc_o, tmp, tmp_if, tmp_i, tmp_f = rows
            if n < batch:
                grad_z[t, n:].zero_()
                gate_views, grad_views = _head(gate_views, n), _head(grad_views, n)
                c, tanh_c, c_prev, grad_out, grad_out_prev = _head(
                    (c, tanh_c, c_prev, grad_out, grad_out_prev), n)
                dh, dc, dc_3d, acc_if, acc_o, tmp, tmp_if, tmp_i, tmp_f = _head(rows, n)
            _, gates_if, input_gate, forget_gate, candidate, output_gate = gate_views
            dz, dz_if, dz_i, dz_f, dz_g, dz_o = grad_views
            # Rows whose sequence ends at t get no gradient from step t+1; the others have
            # all of dL/dh_t in grad_h already (the addmm below).
            ended = counts[t + 1] if t + 1 < active else 0
            if ended < n:
                dh[ended:].copy_(grad_out[ended:])
            # h_t = o * tanh(c_t), o = sigmoid(z_o + p_o * c_t)
            torch.mul(dh, tanh_c, out=dz_o)
            _sigmoid_backward(dz_o, output_gate, grad_input=dz_o)
            torch.mul(dh, output_gate, out=tmp)
            _tanh_backward(tmp, tanh_c, grad_input=tmp)
            dc.add_(tmp).addcmul_(dz_o, peephole_output)  # all of dL/dc_t
            acc_o.addcmul_(dz_o, c)
            # c_t = f * c_{t-1} + i * g;  i, f = sigmoid(z_i,f + p_i,f * c_{t-1})
            torch.mul(dc, input_gate, out=tmp)
            _tanh_backward(tmp, candidate, grad_input=dz_g)
            torch.mul(dc, candidate, out=tmp_i)
            torch.mul(dc_3d, c_prev, out=tmp_f)  # (n, 1, H)
            _sigmoid_backward(tmp_if, gates_if, grad_input=dz_if)
            acc_if.addcmul_(dz_if, c_prev)
            if t > 0:
                # dL/dc_{t-1} = dc_t * f + dz_i * p_i + dz_f * p_f, from step t
                dc.mul_(forget_gate).addcmul_(dz_i, peephole_input).addcmul_(dz_f, peephole_forget)
                torch.addmm(grad_out_prev, dz, weight_hh, out=dh)  # dL/dh_{t-1}
        grad_flat = grad_z.view(steps * batch, 4 * hidden)  # (T*B, 4H)
        grad_x = grad_weight_ih = grad_bias = grad_weight_hh = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_flat.mm(weight_ih).view(steps, batch, -1).transpose(0, 1)  # (B, T, I)
        if ctx.needs_input_grad[1]:
            grad_weight_ih = grad_flat.t().mm(inputs)  # (4H, I)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_flat.sum(0)  # (4H,)
        if ctx.needs_input_grad[3]:
            # sum_t dz_t^T h_{t-1}, h_{-1} = 0: one product over all steps.
            grad_weight_hh = grad_flat[batch:].t().mm(
                outputs[:-1].reshape(-1, hidden))  # (4H, H)
        grad_if = grad_peephole_if.sum(0)  # (2, H)
        return (grad_x, grad_weight_ih, grad_bias, grad_weight_hh, grad_if[0], grad_if[1],
                grad_peephole_o.sum(0), None)
