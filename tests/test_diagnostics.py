"""Gradient diagnostics: the numbers against other computations of the same quantities, the
training metrics and display, the divergence guard, and `lstm diagnose` as users drive it."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import assert_clean_error, train_tiny
from typer.testing import CliRunner

from lstmcli.cli import app
from lstmcli.config import ModelConfig
from lstmcli.diagnostics.flow import diagnostic_batch, flow_summary, measure_flow
from lstmcli.diagnostics.gates import gate_statistics
from lstmcli.nn.cells import cell_names, get_cell
from lstmcli.nn.classifier import SentimentClassifier
from lstmcli.training.monitor import GradientMonitor, ParameterGroups

runner = CliRunner()
FLOW_KEYS = {"cell", "layer", "direction", "steps", "examples", "loss", "grad_norm_by_step",
             "first", "last", "first_last_ratio", "decay_per_step", "h_grad_norm_by_step",
             "h_first_last_ratio", "c_grad_norm_by_step", "gates"}
TINY_TASK = ["--seq-len", "12", "--train-steps", "0", "--hidden-size", "8"]

CELL_NAMES = cell_names()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def tiny_model(cell: str, dtype=torch.float64, **overrides) -> SentimentClassifier:
    torch.manual_seed(0)
    config = ModelConfig(cell=cell, vocab_size=12, embed_dim=4, hidden_size=3, **overrides)
    return SentimentClassifier(config).to(dtype)


def tiny_batch(batch: int = 2, steps: int = 5, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 12, (batch, steps), generator=generator)
    return ids, torch.full((batch,), steps), torch.arange(batch) % 2


# ---------------------------------------------------------------------------------------------
# Gradient flow against independent computations


def test_rnn_flow_equals_hand_written_backpropagation_through_time():
    """The RNN's dL/dh_t from the textbook recursion in numpy, without autograd."""
    model = tiny_model("rnn")
    ids, lengths, labels = tiny_batch(batch=3, steps=6)
    report = measure_flow(model, ids, lengths, labels)

    cell = model.encoder.layers[0][0].cell
    w_ih, w_hh = cell.weight_ih.detach().numpy(), cell.weight_hh.detach().numpy()
    bias = (cell.bias_ih + cell.bias_hh).detach().numpy()
    x = model.embedding(ids).detach().numpy()  # (B, T, E)
    h = np.zeros((3, 3))
    hs = []
    for t in range(6):
        h = np.tanh(x[:, t] @ w_ih.T + h @ w_hh.T + bias)
        hs.append(h)
    w_c = model.classifier.weight.detach().numpy()
    logits = hs[-1] @ w_c.T + model.classifier.bias.detach().numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - np.eye(2)[labels.numpy()]) / 3 @ w_c  # dL/dh_T of the mean cross-entropy
    expected = [0.0] * 6
    for t in reversed(range(6)):
        expected[t] = float(np.linalg.norm(grad))
        grad = (grad * (1 - hs[t] ** 2)) @ w_hh  # through tanh, then W_hh
    assert report.h_norms == pytest.approx(expected, rel=1e-9)
    assert report.state_norms == pytest.approx(expected, rel=1e-9)


def run_by_hand(model: SentimentClassifier, ids, labels, at: int, part: int, delta) -> float:
    """The loss of a one-layer model run step by step here, with ``delta`` added to state
    component ``part`` (0: h, 1: c) after step ``at``."""
    embedded = model.embedding(ids)  # (B, T, E)
    cell = model.encoder.layers[0][0].cell
    state = cell.init_state(ids.shape[0], embedded)
    outputs = []
    for t in range(ids.shape[1]):
        state, _ = cell(embedded[:, t], state)
        if t == at:
            state = tuple(s + delta if i == part else s for i, s in enumerate(state))
        outputs.append(state[0])
    pooled = outputs[-1] if model.config.pooling == "last" else torch.stack(outputs, 1).mean(1)
    return float(torch.nn.functional.cross_entropy(model.classifier(pooled), labels))


@pytest.mark.parametrize("cell", ["lstm", "gru", "peephole", "coupled"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_flow_equals_finite_differences(cell, pooling):
    """dL/dh_t and dL/dc_t by central differences on every coordinate of the state, in float64."""
    model = tiny_model(cell, pooling=pooling)
    with torch.no_grad():  # a non-trivial peephole, so that its paths are exercised
        for name, parameter in model.named_parameters():
            if "peephole" in name:
                parameter.uniform_(-0.5, 0.5)
    ids, lengths, labels = tiny_batch()
    report = measure_flow(model, ids, lengths, labels)
    eps = 1e-6
    parts = [report.h_norms] + ([report.c_norms] if report.c_norms is not None else [])
    with torch.no_grad():
        for part, measured in enumerate(parts):
            for t in range(5):
                grad = torch.zeros(2, 3, dtype=torch.float64)
                for b in range(2):
                    for k in range(3):
                        delta = torch.zeros(2, 3, dtype=torch.float64)
                        delta[b, k] = eps
                        up = run_by_hand(model, ids, labels, t, part, delta)
                        down = run_by_hand(model, ids, labels, t, part, -delta)
                        grad[b, k] = (up - down) / (2 * eps)
                assert measured[t] == pytest.approx(float(grad.norm()), rel=1e-5, abs=1e-12)


def test_flow_leaves_the_model_and_its_gradients_alone():
    model = tiny_model("lstm", dtype=torch.float32)
    model.train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    measure_flow(model, *tiny_batch())
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before[name])


def test_flow_of_a_reverse_direction_counts_in_processing_order():
    """A bidirectional model: the backward direction's step 0 reads the last token, so under
    last pooling its gradient is largest at the last processed step, like the forward one."""
    model = tiny_model("gru", bidirectional=True)
    ids, lengths, labels = tiny_batch(steps=8)
    backward = measure_flow(model, ids, lengths, labels, direction=1)
    assert backward.to_dict()["direction"] == "backward"
    assert backward.steps == 8
    assert backward.h_norms[-1] == max(backward.h_norms)


# ---------------------------------------------------------------------------------------------
# Summaries, schema, gates, the diagnostic batch


def test_flow_summary_values():
    summary = flow_summary([0.001, 0.01, 0.1, 1.0])
    assert summary["first_last_ratio"] == pytest.approx(1e-3)
    assert summary["decay_per_step"] == pytest.approx(0.1)
    assert flow_summary([5.0])["decay_per_step"] is None
    assert flow_summary([1.0, 0.0])["first_last_ratio"] is None
    assert flow_summary([0.0, 2.0])["decay_per_step"] == 0.0


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_flow_json_schema_is_stable(cell):
    report = measure_flow(tiny_model(cell), *tiny_batch())
    payload = report.to_dict()
    assert set(payload) == FLOW_KEYS
    json.dumps(payload, allow_nan=False)  # strict JSON: no NaN or Infinity anywhere
    assert len(payload["grad_norm_by_step"]) == payload["steps"] == 5
    assert payload["first"] == payload["grad_norm_by_step"][0]
    assert payload["layer"] == 1 and payload["direction"] == "forward"
    has_c = get_cell(cell).has_cell_state()
    assert (payload["c_grad_norm_by_step"] is not None) == has_c
    if has_c:
        assert payload["c_grad_norm_by_step"][-1] == 0.0  # nothing reads the last c
        for s, h, c in zip(payload["grad_norm_by_step"], payload["h_grad_norm_by_step"],
                           payload["c_grad_norm_by_step"], strict=True):
            assert s == pytest.approx(math.hypot(h, c))
    expected_gates = {"rnn": set(), "gru": {"reset", "update"}}.get(
        cell, {"input", "forget", "output"})
    assert set(payload["gates"]) == expected_gates
    for stats in payload["gates"].values():
        assert set(stats) == {"mean", "saturated_low", "saturated_high"}


def test_gate_statistics_count_only_real_steps():
    gate = torch.tensor([[[0.05, 0.5], [0.95, 0.95]], [[0.5, 0.5], [0.0, 0.0]]])  # (B, T, H)
    steps = [{"forget": gate[:, t]} for t in range(2)]
    mask = torch.tensor([[True, True], [True, False]])  # the second row's step 2 is padding
    stats = gate_statistics(steps, mask, ["forget"])["forget"]
    assert stats["mean"] == pytest.approx((0.05 + 0.5 + 0.95 + 0.95 + 0.5 + 0.5) / 6)
    assert stats["saturated_low"] == pytest.approx(1 / 6)
    assert stats["saturated_high"] == pytest.approx(2 / 6)


def test_diagnostic_batch_takes_the_longest_cut_to_a_common_length():
    sequences = [np.arange(1, n + 1) for n in (3, 9, 2, 7, 8, 5)]
    labels = np.array([0, 1, 0, 1, 0, 1])
    ids, lengths, chosen = diagnostic_batch(sequences, labels, size=3)
    assert ids.shape == (3, 7) and lengths.tolist() == [7, 7, 7]
    assert sorted(chosen.tolist()) == [0, 1, 1]  # the rows of lengths 9, 7 and 8
    assert (ids != 0).all()


# ---------------------------------------------------------------------------------------------
# Per-step statistics during training


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_parameter_groups_split_the_gradient_per_gate(cell):
    model = tiny_model(cell, dtype=torch.float32, layers=2, bidirectional=True)
    ids, lengths, labels = tiny_batch()
    torch.nn.functional.cross_entropy(model(ids, lengths), labels).backward()
    groups = ParameterGroups(model)
    squares = dict(zip(groups.names, groups.squared_norms([p.grad for p in groups.parameters]),
                       strict=True))
    total = sum(float(p.grad.norm()) ** 2 for p in model.parameters())
    assert sum(float(v) for v in squares.values()) == pytest.approx(total, rel=1e-5)
    chunks = get_cell(cell).chunks
    for index, chunk in enumerate(chunks):
        name = f"hh.{chunk}" if chunk else "hh"
        rows = slice(index * 3, (index + 1) * 3)
        expected = sum(float(r.cell.weight_hh.grad[rows].norm()) ** 2
                       for r in model.encoder.recurrences())
        assert float(squares[name]) == pytest.approx(expected, rel=1e-5)
    assert ("peephole" in groups.names) == (cell == "peephole")
    assert {"embedding", "bias", "classifier"} <= set(groups.names)
    assert "other" not in groups.names


def test_monitor_clips_exactly_like_clip_grad_norm_and_measures_the_update():
    def gradients(model):
        ids, lengths, labels = tiny_batch()
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(ids, lengths), labels).backward()

    reference, measured = tiny_model("lstm", torch.float32), tiny_model("lstm", torch.float32)
    gradients(reference)
    gradients(measured)
    expected_norm = float(torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.01))
    monitor = GradientMonitor(measured, clip_norm=0.01)
    assert monitor.measure_and_clip() == pytest.approx(expected_norm, rel=1e-5)
    for a, b in zip(reference.parameters(), measured.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-9)

    before = [p.detach().clone() for p in measured.parameters()]
    optimizer = torch.optim.SGD(measured.parameters(), lr=0.5)
    monitor.before_update()
    optimizer.step()
    monitor.after_update()
    update = sum(float((p.detach() - b).norm()) ** 2
                 for p, b in zip(measured.parameters(), before, strict=True))
    weight = sum(float(b.norm()) ** 2 for b in before)
    summary = monitor.epoch_summary()
    assert summary["update_ratio"] == pytest.approx(math.sqrt(update / weight), rel=1e-4)
    assert summary["clipped_fraction"] == 1.0
    assert summary["grad_norm_median"] == pytest.approx(expected_norm, rel=1e-5)
    classifier = measured.classifier
    expected = math.sqrt(sum(float(p.grad.norm()) ** 2 for p in classifier.parameters()))
    assert summary["grad_norm_groups"]["classifier"] > expected  # measured before clipping


def test_training_records_and_shows_the_diagnostics(tiny_file, tmp_path):
    run = tmp_path / "run"
    result = train_tiny(tiny_file, run, "--cell", "gru")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        assert row["grad_norm_mean"] <= row["grad_norm_max"]
        assert 0 < row["grad_norm_median"] <= row["grad_norm_max"]
        assert list(row["grad_norm_groups"]) == [
            "embedding", "ih.reset", "ih.update", "ih.new", "hh.reset", "hh.update", "hh.new",
            "bias", "classifier"]
        assert set(row["update_ratio_groups"]) == set(row["grad_norm_groups"])
        assert 0 < row["update_ratio"] < 1
        assert set(row["flow"]) == FLOW_KEYS - {"gates"}
        assert row["flow"]["steps"] >= 2
        assert row["flow_first_last_ratio"] == row["flow"]["first_last_ratio"]
        assert row["flow_decay_per_step"] == row["flow"]["decay_per_step"]
        assert set(row["gates"]) == {"reset", "update"}
    # The flow batch is fixed: its length is the same every epoch.
    assert len({row["flow"]["steps"] for row in rows}) == 1
    assert "Gradients" in result.output and "update lo/hi" in result.output
    assert "Parameter groups, epoch 3" in result.output and "hh.update" in result.output
    tables = [line for line in result.output.splitlines() if line.startswith(("┃", "│", "┏"))]
    assert tables and max(len(line) for line in tables) <= 80  # CliRunner's terminal is 80 wide


# ---------------------------------------------------------------------------------------------
# The divergence guard


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_nan_stops_training_and_keeps_the_last_good_checkpoint(where, tiny_file, tmp_path,
                                                               monkeypatch):
    """A NaN at epoch 2, step 2 (7 steps per epoch): exit code 3, a message naming the epoch and
    the step, and epoch 1's checkpoint left byte for byte."""
    run = tmp_path / "run"
    original = SentimentClassifier.forward
    calls = {"train": 0}
    saved: dict[str, bytes] = {}

    def poisoned(self, ids, lengths, observer=None):
        logits = original(self, ids, lengths, observer)
        if not self.training:
            return logits  # validation and the flow measurement stay clean
        calls["train"] += 1
        if calls["train"] == 9:
            for name in ("model.safetensors", "config.json"):
                saved[name] = (run / name).read_bytes()
            if where == "loss":
                return logits * float("nan")
            self.embedding.weight.register_hook(lambda grad: grad * float("inf"))
        return logits

    monkeypatch.setattr(SentimentClassifier, "forward", poisoned)
    # --json: no progress display, so the error is the only output
    result = invoke("train", "--dataset", str(tiny_file), "--output", str(run), "--epochs", "3",
                    "--hidden-size", "8", "--embed-dim", "8", "--batch-size", "16", "--json")
    assert result.exit_code == 3
    assert_clean_error(result, "epoch 2, step 2", "loss" if where == "loss" else "gradient norm")
    assert saved, "the NaN was never injected"
    for name, content in saved.items():
        assert (run / name).read_bytes() == content
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1


# ---------------------------------------------------------------------------------------------
# `lstm diagnose`


def test_diagnose_json_schema():
    result = invoke("diagnose", "--cell", "rnn", "--cell", "lstm", *TINY_TASK, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["mode"] == "synthetic"
    assert payload["task"]["seq_len"] == 12 and payload["task"]["train_steps"] == 0
    assert list(payload["cells"]) == ["rnn", "lstm"]
    assert payload["task"]["gate_bias"] == 4.0
    for name, entry in payload["cells"].items():
        assert set(entry) == FLOW_KEYS | {"accuracy", "train_seconds", "trained"}
        assert entry["cell"] == name
        assert len(entry["grad_norm_by_step"]) == 12
        assert entry["first_last_ratio"] == pytest.approx(
            entry["grad_norm_by_step"][0] / entry["grad_norm_by_step"][-1])
        assert 0.0 <= entry["accuracy"] <= 1.0
        assert entry["trained"] is None  # --train-steps 0: nothing trained to measure


def test_diagnose_json_reports_the_flow_at_initialisation_and_after_training():
    base = ["--cell", "lstm", "--cell", "gru", "--seq-len", "12", "--hidden-size", "8",
            "--seed", "3", "--json"]
    untrained = json.loads(invoke("diagnose", *base, "--train-steps", "0").output)["cells"]
    result = invoke("diagnose", *base, "--train-steps", "5")
    assert result.exit_code == 0, result.output
    cells = json.loads(result.output)["cells"]
    for name, entry in cells.items():
        # The headline keys are the flow at initialisation: training does not change them.
        assert entry["grad_norm_by_step"] == untrained[name]["grad_norm_by_step"]
        trained = entry["trained"]
        assert set(trained) == FLOW_KEYS and trained["cell"] == name
        assert len(trained["grad_norm_by_step"]) == 12
        assert trained["grad_norm_by_step"] != entry["grad_norm_by_step"]
        assert trained["first_last_ratio"] == pytest.approx(
            trained["grad_norm_by_step"][0] / trained["grad_norm_by_step"][-1])


@pytest.mark.parametrize("bias", [0.0, 4.0])
def test_gate_bias_sets_the_forget_and_the_update_gate(bias):
    from lstmcli.diagnostics.longrange import build_model

    for cell in ("lstm", "gru", "peephole", "coupled"):
        recurrence = build_model(cell, 6, gate_bias=bias).encoder.recurrences()[0]
        chunk = get_cell(cell).memory_chunk()
        rows = slice(chunk * 6, (chunk + 1) * 6)
        assert torch.equal(recurrence.cell.bias_ih.detach()[rows], torch.full((6,), bias))
        assert torch.equal(recurrence.cell.bias_hh.detach()[rows], torch.zeros(6))


def test_diagnose_human_output_draws_tables_and_curves():
    result = invoke("diagnose", *TINY_TASK)
    assert result.exit_code == 0, result.output
    for fragment in ("first/last", "decay", "t=1", "t=12", "forget", "update", "R rnn",
                     "L lstm", "G gru", "at initialisation"):
        assert fragment in result.output
    # The task's line wraps between words at the terminal's width, never inside one.
    assert "memory-gate bias 4" in " ".join(result.output.split())
    first, second = result.output.strip().splitlines()[:2]
    assert first.startswith("synthetic") and len(first) <= 80
    sentence = ("synthetic long-range task: a sentiment word in the first 3 positions, neutral "
                "filler up to 12 tokens; 0 training steps per cell,")
    whole_words = set(sentence.split())
    assert first.split()[-1] in whole_words and second.split()[0] in whole_words
    trained = invoke("diagnose", "--seq-len", "12", "--train-steps", "3", "--hidden-size", "8")
    assert trained.exit_code == 0, trained.output
    for fragment in ("trained f/l", "tr. decay", "acc", "init", "trained"):
        assert fragment in trained.output
    rows = [line for line in trained.output.splitlines() if "│" in line]
    assert rows and max(len(line) for line in rows) <= 80  # the table fits 80 columns


def test_with_the_gate_bias_the_rnn_decays_faster_than_the_lstm_and_gru_at_initialisation():
    result = invoke("diagnose", "--seq-len", "50", "--train-steps", "0", "--seed", "0",
                    "--json")
    assert result.exit_code == 0, result.output
    cells = json.loads(result.output)["cells"]
    rnn = cells["rnn"]
    for gated in (cells["lstm"], cells["gru"]):
        assert gated["first_last_ratio"] > 1e-2
        assert rnn["first_last_ratio"] < 1e-3 * gated["first_last_ratio"]
        assert rnn["decay_per_step"] < gated["decay_per_step"]
    # Without the bias the GRU's update gate starts at sigmoid(0) = 0.5 and its gradient vanishes.
    plain = invoke("diagnose", "--cell", "gru", "--seq-len", "50", "--train-steps", "0",
                   "--gate-bias", "0", "--json")
    assert json.loads(plain.output)["cells"]["gru"]["first_last_ratio"] < 1e-3


def test_the_rnn_gradient_decays_faster_than_the_lstm_at_initialisation():
    result = invoke("diagnose", "--cell", "rnn", "--cell", "lstm", "--seq-len", "60",
                    "--train-steps", "0", "--json")
    cells = json.loads(result.output)["cells"]
    assert cells["rnn"]["first_last_ratio"] < 1e-3 * cells["lstm"]["first_last_ratio"]
    assert cells["rnn"]["decay_per_step"] < cells["lstm"]["decay_per_step"]


@pytest.mark.slow
def test_after_a_short_training_the_rnn_still_decays_faster_and_learns_less():
    from lstmcli.diagnostics.longrange import TaskSettings, compare_cells

    results = compare_cells(["rnn", "lstm"], TaskSettings(seq_len=60, train_steps=150, seed=0))
    rnn, lstm = (result.trained.to_dict() for result in results)
    assert rnn["first_last_ratio"] < 1e-6 * lstm["first_last_ratio"]
    assert rnn["decay_per_step"] < lstm["decay_per_step"]
    assert results[1].accuracy > 0.9 and results[1].accuracy > results[0].accuracy + 0.1


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_diagnose_writes_a_figure(suffix, tmp_path):
    target = tmp_path / f"flow{suffix}"
    result = invoke("diagnose", "--cell", "rnn", *TINY_TASK, "--plot", str(target))
    assert result.exit_code == 0, result.output
    head = target.read_bytes()[:200]
    assert head.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in head or b"<?xml" in head
    assert not list(tmp_path.glob("*.tmp"))


def test_diagnose_a_trained_run(tiny_file, tmp_path):
    run = tmp_path / "run"
    train_tiny(tiny_file, run, "--cell", "coupled")
    result = invoke("diagnose", "--model", str(run), "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["mode"] == "model" and payload["split"] == "validation"
    entry = payload["cells"]["coupled"]
    assert set(entry) == FLOW_KEYS | {"accuracy", "train_seconds"}
    assert entry["steps"] >= 2 and entry["accuracy"] is None
    human = invoke("diagnose", "--model", str(run))
    assert human.exit_code == 0 and "coupled" in human.output


@pytest.mark.parametrize(("args", "fragments"), [
    (["--cell", "transformer"], ["unknown cell 'transformer'", ", ".join(CELL_NAMES)]),
    (["--seq-len", "1"], ["--seq-len must be at least 2"]),
    (["--train-steps", "-1"], ["--train-steps must be >= 0"]),
    (["--model", "nope"], ["does not exist"]),
    (["--model", "nope", "--seq-len", "50"], ["--seq-len", "does not apply to --model"]),
    (["--plot", "flow.gif"], ["unknown image type .gif", ".png"]),
    (["--plot", "missing/flow.png"], ["does not exist"]),
])
def test_diagnose_bad_input_is_one_clear_line(args, fragments):
    assert_clean_error(invoke("diagnose", *args), *fragments)
    assert not Path("flow.gif").exists()


def test_plot_without_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    assert_clean_error(invoke("diagnose", *TINY_TASK, "--plot", "flow.png"),
                       "pip install lstmcli[plot]")
    assert not Path("flow.png").exists()
