"""The package's shape as the next developer meets it: one home per cell, no import cycles, small
modules; and a sixth cell that is one class, defined here, working through every command."""

from __future__ import annotations

import ast
import io
import json
import tokenize
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lstmcli.cli import app
from lstmcli.nn.cells import Cell, Ops, State, cell_names, register_cell, unregister_cell

from helpers import make_reviews, write_jsonl

PACKAGE = Path(__file__).resolve().parent.parent / "lstmcli"
FIVE = ("rnn", "lstm", "gru", "peephole", "coupled")
runner = CliRunner()


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def string_literals(path: Path) -> set[str]:
    """Every plain string literal of a module, f-string parts left out."""
    values = set()
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if token.type == tokenize.STRING:
            try:
                value = ast.literal_eval(token.string)
            except ValueError:
                continue
            if isinstance(value, str):
                values.add(value)
    return values


def test_only_the_registry_names_the_cells():
    naming = {name for name, path in modules().items() if string_literals(path) & set(FIVE)}
    assert naming == {"lstmcli.nn.cells"}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules a module imports, at any depth of its code (lazy imports count)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target in known and target != name}
    return found


def test_no_import_cycles():
    found = modules()
    graph = {name: imports_of(name, path, set(found)) for name, path in found.items()}
    # A package's __init__ importing its own submodules (the CLI registering its commands) is
    # how Python packages are built, not a cycle of the design.
    for name in graph:
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = trail[trail.index(target):] + [target] if target in trail else [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_modules_are_small_and_say_their_job():
    for name, path in modules().items():
        assert len(path.read_text().splitlines()) <= 420, name
        assert ast.get_docstring(ast.parse(path.read_text())), f"{name} has no docstring"


# ---------------------------------------------------------------------------------------------
# A sixth cell: one class, here, and every command knows it


class KeepGateCell(Cell):
    """A toy gated cell: one gate k decides how much of the state to keep.

        k_t = sigmoid(W_ik x_t + b_ik + W_hk h_{t-1} + b_hk)      keep gate
        n_t = tanh(W_in x_t + b_in + W_hn h_{t-1} + b_hn)         candidate
        h_t = k_t * h_{t-1} + (1 - k_t) * n_t
    """

    name = "toykeep"
    chunks = ("keep", "new")
    gate_names = ("keep", "new")
    candidates = ("new",)
    memory_gate = "keep"
    default_gate_bias = 1.0

    @staticmethod
    def step(ops: Ops, params: Any, x_projected: Any, state: State) -> tuple[State, dict]:
        (h_prev,) = state
        x_keep, x_new = ops.split(x_projected, 2)
        h_keep, h_new = ops.split(ops.linear(h_prev, params.weight_hh, params.bias_hh), 2)
        keep = ops.sigmoid(x_keep + h_keep)  # (B, H)
        new = ops.tanh(x_new + h_new)
        h = keep * h_prev + (1.0 - keep) * new
        return (h,), {"keep": keep, "new": new}


@pytest.fixture
def toy_cell():
    register_cell(KeepGateCell)
    yield KeepGateCell.name
    unregister_cell(KeepGateCell.name)


@pytest.mark.slow
def test_a_sixth_cell_trains_predicts_explains_and_diagnoses(toy_cell, tmp_path):
    data = write_jsonl(tmp_path / "reviews.jsonl", make_reviews(120))
    run = tmp_path / "run"
    trained = runner.invoke(app, [
        "train", "--dataset", str(data), "--output", str(run), "--cell", toy_cell,
        "--epochs", "6", "--hidden-size", "16", "--embed-dim", "16", "--batch-size", "16",
        "--lr", "0.01", "--gate-bias", "2", "--json"])
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.output)
    assert summary["best_val_accuracy"] >= 0.8
    row = summary["epochs"][-1]
    assert {"ih.keep", "hh.keep", "ih.new", "hh.new"} <= set(row["grad_norm_groups"])
    assert set(row["gates"]) == {"keep"}  # the candidate is no gate
    assert json.loads((run / "config.json").read_text())["model"]["cell"] == toy_cell

    predicted = runner.invoke(app, ["predict", "--model", str(run), "--json", "superb food",
                                    "dreadful plot"])
    assert predicted.exit_code == 0, predicted.output
    labels = [json.loads(line)["label"] for line in predicted.output.splitlines()]
    assert labels == ["positive", "negative"]

    explained = runner.invoke(app, ["explain", "--model", str(run), "--json", "superb food"])
    assert explained.exit_code == 0, explained.output
    explanation = json.loads(explained.output)
    assert explanation["cell"] == toy_cell and explanation["gate"] == "keep"
    assert all(0 < step["gate"] < 1 for step in explanation["tokens"])

    diagnosed = runner.invoke(app, ["diagnose", "--cell", toy_cell, "--cell", "rnn",
                                    "--seq-len", "12", "--train-steps", "5", "--json"])
    assert diagnosed.exit_code == 0, diagnosed.output
    cells = json.loads(diagnosed.output)["cells"]
    assert set(cells) == {toy_cell, "rnn"}
    assert set(cells[toy_cell]["gates"]) == {"keep"}

    listed = runner.invoke(app, ["cells", "--json"])
    entry = json.loads(listed.output)["cells"][-1]
    assert entry["name"] == toy_cell and entry["memory_gate"] == "keep"
    assert "h_t = k_t * h_{t-1}" in entry["equations"]


def test_registering_a_taken_name_or_a_missing_gate_is_refused():
    class Clash(KeepGateCell):
        name = cell_names()[0]

    class NoSuchGate(KeepGateCell):
        name = "nosuchgate"
        memory_gate = "forget"

    with pytest.raises(ValueError, match="already registered"):
        register_cell(Clash)
    with pytest.raises(ValueError, match="memory gate 'forget' is not one of its chunks"):
        register_cell(NoSuchGate)
