"""Every cell's fast path (torch kernel, tied kernel or lstmcli fused Function) against the
step-wise reference: outputs and every gradient, on padded batches, alone and in a stacked
bidirectional encoder; and the reference itself against its plain per-step form."""

from __future__ import annotations

import pytest
import torch

from lstmcli.nn.cells import cell_names, get_cell
from lstmcli.nn.recurrent import CellModule, RecurrentEncoder, length_mask, run_stepwise

FAST = [name for name in cell_names() if get_cell(name).fast_path() is not None]
# Unsorted, with ties, a length-1 sequence and a padding column no sequence reaches (T = 8).
LENGTHS = torch.tensor([7, 3, 5, 1, 7, 2])
STEPS = 8


def random_cell(name: str, dtype: torch.dtype, seed: int = 0) -> CellModule:
    torch.manual_seed(seed)
    cell = CellModule(name, 5, 6).to(dtype)
    with torch.no_grad():
        for parameter in cell.parameters():
            parameter.normal_(0, 0.5)  # peepholes too: a zero init would hide their gradients
    return cell


def outputs_and_gradients(cell: CellModule, x: torch.Tensor, outputs: torch.Tensor,
                          weights: torch.Tensor) -> list[torch.Tensor]:
    """The outputs, then dL/dx and dL/dparameter for L = sum(outputs * weights)."""
    loss = (outputs * weights).sum()
    return [outputs, *torch.autograd.grad(loss, [x, *cell.parameters()])]


def max_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((p - q).detach().abs().max()) for p, q in zip(a, b, strict=True))


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_fast_path_equals_the_stepwise_reference_with_gradients(name, dtype, tolerance):
    cell = random_cell(name, dtype)
    x = torch.randn(len(LENGTHS), STEPS, 5, dtype=dtype, requires_grad=True)
    weights = torch.randn(len(LENGTHS), STEPS, 6, dtype=dtype)
    expected, _ = run_stepwise(cell, x, LENGTHS)
    fast = cell.run_fused(x, LENGTHS)
    mask = length_mask(LENGTHS, STEPS).unsqueeze(-1)
    assert (fast * ~mask == 0).all()  # zero at padding, as the reference
    reference = outputs_and_gradients(cell, x, expected, weights)
    got = outputs_and_gradients(cell, x, fast, weights)
    assert all(g.abs().max() > 0 for g in reference[1:])  # every gradient is really tested
    assert max_difference(got, reference) < tolerance


@pytest.mark.parametrize("name", FAST)
def test_fast_path_equals_the_reference_in_a_two_layer_bidirectional_encoder(name):
    torch.manual_seed(1)
    encoder = RecurrentEncoder(name, 5, 6, layers=2, bidirectional=True).double()
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.normal_(0, 0.5)
    x = torch.randn(len(LENGTHS), STEPS, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(len(LENGTHS), STEPS, 12, dtype=torch.float64)
    final_weights = torch.randn(len(LENGTHS), 12, dtype=torch.float64)
    results = []
    for stepwise in (True, False):
        encoder.set_stepwise(stepwise)
        outputs, finals = encoder(x, LENGTHS)
        loss = (outputs * weights).sum() + (finals * final_weights).sum()
        results.append([outputs, finals,
                        *torch.autograd.grad(loss, [x, *encoder.parameters()])])
    assert max_difference(results[1], results[0]) < 1e-10


def test_fused_peephole_passes_gradcheck():
    peephole = next(name for name in FAST if get_cell(name).fused_function is not None)
    cell = random_cell(peephole, torch.float64)
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, 4, 1])
    assert torch.autograd.gradcheck(lambda x, *_: cell.run_fused(x, lengths),
                                    (x, *cell.parameters()), fast_mode=True)


def test_coupled_keeps_its_own_parameters_and_checkpoint_keys():
    cell = CellModule("coupled", 5, 6)
    shapes = {key: tuple(value.shape) for key, value in cell.state_dict().items()}
    assert shapes == {"weight_ih": (18, 5), "weight_hh": (18, 6), "bias_ih": (18,),
                      "bias_hh": (18,)}
    assert get_cell("coupled").fast_path() == "torch.nn.LSTM (tied weights)"
    assert len(list(cell.parameters())) == 4


def plain_stepwise(cell: CellModule, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """run_stepwise as first written: index each step, mask state and output at every step."""
    projected = cell.project_input(x)
    mask = length_mask(lengths, x.shape[1])
    state = cell.init_state(x.shape[0], x)
    outputs = []
    for t in range(x.shape[1]):
        new_state, _ = cell.step(projected[:, t], state)
        real = mask[:, t].unsqueeze(1)
        state = tuple(torch.where(real, new, old) for new, old in zip(new_state, state,
                                                                       strict=True))
        outputs.append(state[0] * real)
    return torch.stack(outputs, dim=1)


@pytest.mark.parametrize("name", cell_names())
def test_the_reference_path_computes_what_it_did_before(name):
    """Outputs to the bit; gradients to rounding (autograd may sum a tensor's gradient
    contributions in another order)."""
    cell = random_cell(name, torch.float64)
    x = torch.randn(len(LENGTHS), STEPS, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(len(LENGTHS), STEPS, 6, dtype=torch.float64)
    before = outputs_and_gradients(cell, x, plain_stepwise(cell, x, LENGTHS), weights)
    now = outputs_and_gradients(cell, x, run_stepwise(cell, x, LENGTHS)[0], weights)
    assert torch.equal(now[0], before[0])
    assert max_difference(now, before) < 1e-12
