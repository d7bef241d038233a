"""The cells against their equations: torch's own modules for the standard ones, numpy for the
rest."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lstmcli.nn.cells import cell_names, get_cell
from lstmcli.nn.recurrent import CellModule, RecurrentEncoder, run_stepwise

TORCH_MODULES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
LENGTHS = torch.tensor([7, 3, 5, 1])

CELL_NAMES = cell_names()


def test_registry_lists_the_five_cells_in_order():
    assert CELL_NAMES == ("rnn", "lstm", "gru", "peephole", "coupled")
    with pytest.raises(Exception, match="unknown cell 'transformer'; choose one of: rnn, lstm"):
        get_cell("transformer")


def copy_into_cell(cell, reference: nn.RNNBase, suffix: str) -> None:
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(reference, f"{name}{suffix}"))


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_stepwise_cell_equals_torch_module_on_variable_length_batch(name):
    torch.manual_seed(0)
    reference = TORCH_MODULES[name](5, 8, batch_first=True)
    cell = CellModule(name, 5, 8)
    torch.nn.init.normal_(cell.weight_ih)  # make sure the copy, not a shared init, is tested
    copy_into_cell(cell, reference, "_l0")
    x = torch.randn(4, 7, 5)
    expected, final = reference(pack_padded_sequence(x, LENGTHS, batch_first=True,
                                                     enforce_sorted=False))
    expected, _ = pad_packed_sequence(expected, batch_first=True, total_length=7)
    outputs, state = run_stepwise(cell, x, LENGTHS)
    final_h = final[0] if name == "lstm" else final
    assert (outputs - expected).abs().max() < 1e-5
    assert (state[0] - final_h[0]).abs().max() < 1e-5
    if name == "lstm":
        assert (state[1] - final[1][0]).abs().max() < 1e-5


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("stepwise", [False, True])
def test_bidirectional_two_layer_encoder_equals_torch_module(name, stepwise):
    """Our per-sequence reversal must equal torch's packed bidirectional stack exactly."""
    torch.manual_seed(1)
    reference = TORCH_MODULES[name](6, 5, num_layers=2, bidirectional=True, batch_first=True)
    encoder = RecurrentEncoder(name, 6, 5, layers=2, bidirectional=True)
    for layer_index, layer in enumerate(encoder.layers):
        for direction, recurrence in enumerate(layer):
            suffix = f"_l{layer_index}" + ("_reverse" if direction else "")
            copy_into_cell(recurrence.cell, reference, suffix)
    encoder.set_stepwise(stepwise)
    x = torch.randn(4, 7, 6)
    expected, _ = reference(pack_padded_sequence(x, LENGTHS, batch_first=True,
                                                 enforce_sorted=False))
    expected, _ = pad_packed_sequence(expected, batch_first=True, total_length=7)
    outputs, finals = encoder(x, LENGTHS)
    assert (outputs - expected).abs().max() < 1e-5
    last_forward = expected[torch.arange(4), LENGTHS - 1, :5]
    first_backward = expected[:, 0, 5:]
    assert (finals - torch.cat([last_forward, first_backward], dim=1)).abs().max() < 1e-5


def test_peephole_with_zero_peepholes_equals_lstm():
    torch.manual_seed(2)
    lstm = CellModule("lstm", 4, 6)
    peephole = CellModule("peephole", 4, 6)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(peephole, name).copy_(getattr(lstm, name))
        for name in ("peephole_input", "peephole_forget", "peephole_output"):
            getattr(peephole, name).zero_()
    x = torch.randn(4, 7, 4)
    expected, _ = run_stepwise(lstm, x, LENGTHS)
    outputs, _ = run_stepwise(peephole, x, LENGTHS)
    assert (outputs - expected).abs().max() < 1e-6


def test_peephole_changes_the_result_when_peepholes_are_nonzero():
    torch.manual_seed(2)
    peephole = CellModule("peephole", 4, 6)
    x = torch.randn(2, 5, 4)
    with_peepholes, _ = run_stepwise(peephole, x, torch.tensor([5, 5]))
    with torch.no_grad():
        peephole.peephole_forget.zero_()
    without, _ = run_stepwise(peephole, x, torch.tensor([5, 5]))
    assert (with_peepholes - without).abs().max() > 1e-4


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def numpy_peephole_step(cell, x, h, c):
    """The docstring's equations, written again in numpy."""
    p = {n: t.detach().numpy().astype(np.float64) for n, t in cell.named_parameters()}
    z = x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]
    zi, zf, zg, zo = np.split(z, 4, axis=-1)
    i = sigmoid(zi + p["peephole_input"] * c)
    f = sigmoid(zf + p["peephole_forget"] * c)
    g = np.tanh(zg)
    c_new = f * c + i * g
    o = sigmoid(zo + p["peephole_output"] * c_new)
    return o * np.tanh(c_new), c_new


def numpy_coupled_step(cell, x, h, c):
    p = {n: t.detach().numpy().astype(np.float64) for n, t in cell.named_parameters()}
    z = x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]
    zf, zg, zo = np.split(z, 3, axis=-1)
    f = sigmoid(zf)
    c_new = f * c + (1 - f) * np.tanh(zg)
    return sigmoid(zo) * np.tanh(c_new), c_new


@pytest.mark.parametrize("name, reference", [("peephole", numpy_peephole_step),
                                             ("coupled", numpy_coupled_step)])
def test_custom_cells_follow_their_equations(name, reference):
    torch.manual_seed(3)
    cell = CellModule(name, 4, 6)
    with torch.no_grad():
        for parameter in cell.parameters():
            parameter.normal_(0, 0.5)  # peepholes too: the equations, not a zero init, are tested
    x = torch.randn(3, 4)
    h = torch.randn(3, 6)
    c = torch.randn(3, 6)
    (h_new, c_new), _ = cell(x, (h, c))
    h_ref, c_ref = reference(cell, x.double().numpy(), h.double().numpy(), c.double().numpy())
    assert np.abs(h_new.detach().numpy() - h_ref).max() < 1e-5
    assert np.abs(c_new.detach().numpy() - c_ref).max() < 1e-5


def test_coupled_equals_an_lstm_whose_input_gate_is_minus_its_forget_gate():
    """sigmoid(-z) = 1 - sigmoid(z): CIFG is torch.nn.LSTM with the input-gate rows set to minus
    the forget-gate rows, an independent reference for the coupled cell on a padded batch."""
    torch.manual_seed(4)
    cell = CellModule("coupled", 5, 6)
    with torch.no_grad():
        for parameter in cell.parameters():
            parameter.normal_(0, 0.5)
    reference = nn.LSTM(5, 6, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            forget, candidate, output = getattr(cell, name).chunk(3)
            getattr(reference, f"{name}_l0").copy_(torch.cat([-forget, forget, candidate, output]))
    x = torch.randn(4, 7, 5)
    expected, (final_h, final_c) = reference(
        pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False))
    expected, _ = pad_packed_sequence(expected, batch_first=True, total_length=7)
    outputs, (h, c) = run_stepwise(cell, x, LENGTHS)
    assert (outputs - expected).abs().max() < 1e-5
    assert (h - final_h[0]).abs().max() < 1e-5
    assert (c - final_c[0]).abs().max() < 1e-5
    assert sum(p.numel() for p in cell.parameters()) == 3 * 6 * (5 + 6) + 2 * 3 * 6


@pytest.mark.parametrize("name, gate", [("lstm", "forget"), ("peephole", "forget"),
                                        ("coupled", "forget"), ("gru", "update")])
def test_gate_bias_starts_the_memory_gate(name, gate):
    cell = CellModule(name, 4, 6, gate_bias=1.5)
    assert get_cell(name).memory_gate == gate
    chunk = get_cell(name).chunks.index(gate)
    rows = slice(chunk * 6, (chunk + 1) * 6)
    total = (cell.bias_ih + cell.bias_hh)[rows]
    assert torch.allclose(total, torch.full((6,), 1.5))
    # the gate opens to sigmoid(1.5) on a zero input and state
    _, gates = cell(torch.zeros(1, 4), cell.init_state(1, torch.zeros(1)))
    if name != "gru":  # the GRU's update gate also sees b_hz, zero here
        assert torch.allclose(gates[gate], torch.sigmoid(torch.tensor(1.5)).expand(1, 6))


def test_default_gate_bias_is_the_cells_own():
    assert torch.allclose(CellModule("lstm", 4, 6).bias_ih[6:12], torch.ones(6))
    gru = CellModule("gru", 4, 6)  # no default: torch's init, not a constant
    assert gru.bias_ih[6:12].std() > 0


@pytest.mark.parametrize("name", CELL_NAMES)
def test_every_cell_documents_its_equations(name):
    """The docstring gives an equation for every state variable and names every gate."""
    cell = get_cell(name)
    doc = cell.equations()
    for state in cell.state_names:
        assert f"{state}_t = " in doc, state
    for gate in cell.gates():
        assert gate in doc, gate


def test_equations_read_as_clean_text_and_are_never_cropped():
    from typer.testing import CliRunner

    from lstmcli.cli import app

    for name in CELL_NAMES:
        text = get_cell(name).equations()
        assert "``" not in text
        prose = [block for block in text.split("\n\n") if not block.startswith(" ")]
        assert all("\n" not in block for block in prose), name  # one line per paragraph
    shown = CliRunner().invoke(app, ["cells"], terminal_width=80)
    assert shown.exit_code == 0
    # The last words of a long sentence survive at 80 columns (they used to be cropped).
    assert "along c decays" in shown.output and "slowly." in shown.output
