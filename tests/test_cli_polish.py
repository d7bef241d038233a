"""Help and output polish: choices in --help, shell completion, --quiet, the explain strip."""

from __future__ import annotations

import json
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from lstmcli.cli import app
from lstmcli.nn.cells import cell_names
from lstmcli.ui.explain import PALETTE, _blend, explain_renderables

from helpers import make_reviews, write_jsonl

runner = CliRunner()
TINY = ["--epochs", "1", "--hidden-size", "8", "--embed-dim", "8", "--batch-size", "16"]


def help_of(*command: str) -> str:
    wide = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}  # every choice on its flag's line
    result = runner.invoke(app, [*command, "--help"], env=wide)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(("command", "flag", "choices"), [
    ("train", "--cell", cell_names()),
    ("train", "--pooling", ["last", "mean", "max", "concat"]),
    ("train", "--optimizer", ["adam", "adamw"]),
    ("train", "--truncation", ["head", "tail", "both"]),
    ("train", "--device", ["auto", "cpu", "cuda", "mps"]),
    ("train", "--precision", ["fp32", "bf16", "fp16"]),
    ("pretrain", "--precision", ["fp32", "bf16", "fp16"]),
    ("eval", "--split", ["train", "validation", "test", "all"]),
    ("eval", "--device", ["auto", "cpu", "cuda", "mps"]),
    ("predict", "--engine", ["auto", "numpy", "torch"]),
    ("predict", "--device", ["auto", "cpu", "cuda", "mps"]),
    ("diagnose", "--cell", cell_names()),
    ("explain", "--device", ["auto", "cpu", "cuda", "mps"]),
])
def test_help_shows_the_choices(command, flag, choices):
    line = next(line for line in help_of(command).splitlines()
                if line.strip("│ ").startswith(f"{flag} "))
    assert "[" + "|".join(choices) + "]" in line, line


@pytest.mark.parametrize("args", [["train", "--cell", "lstmm"], ["train", "--pooling", "sum"],
                                  ["train", "--optimizer", "sgd"],
                                  ["train", "--truncation", "middle"],
                                  ["predict", "--engine", "jax", "hi"],
                                  ["train", "--device", "tpu"]])
def test_a_bad_choice_is_one_line_naming_the_choices(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "choose one of" in lines[0]


def test_shell_completion_is_installable():
    output = help_of()
    assert "--install-completion" in output and "--show-completion" in output


def test_quiet_prints_only_errors(tmp_path):
    data = write_jsonl(tmp_path / "tiny.jsonl", make_reviews(60))
    run = tmp_path / "run"
    trained = runner.invoke(app, ["train", "--dataset", str(data), "-o", str(run), *TINY, "-q"])
    assert trained.exit_code == 0 and trained.output == ""
    for args in (["eval", "-m", str(run), "--dataset", str(data), "--quiet"],
                 ["predict", "-m", str(run), "--quiet", "great movie"],
                 ["diagnose", "--cell", "gru", "--train-steps", "0", "--seq-len", "20",
                  "--quiet"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and result.output == "", (args, result.output)
    # --quiet is not --json: asked for, the JSON still comes.
    both = runner.invoke(app, ["predict", "-m", str(run), "--quiet", "--json", "great"])
    assert json.loads(both.output)["text"] == "great"
    failed = runner.invoke(app, ["predict", "-m", str(tmp_path / "nope"), "--quiet", "hi"])
    assert failed.exit_code == 2 and failed.output.startswith("error:")
    # explain's notes wrap between words on a narrow terminal, never inside one.
    explained = runner.invoke(app, ["explain", "-m", str(run), "great movie"],
                              env={"COLUMNS": "30"})
    assert explained.exit_code == 0, explained.output
    note_text = ("forget: mean forget gate of layer 1 (forward) at each token; near 1 keeps the "
                 "memory, near 0 overwrites it")
    words = set(note_text.split())
    note = [line for line in explained.output.splitlines() if set(line.split()) & {
        "forget:", "keeps", "overwrites", "memory,"}]
    assert len(note) > 1
    for line in note:
        assert set(line.split()) <= words, line


def payload(names: list[str], tokens: int = 3) -> dict:
    steps = [{"token": f"word{i}", "known": True, "gate": 0.5,
              "probabilities": {name: (0.8 if j == i % len(names) else 0.2 / (len(names) - 1))
                                for j, name in enumerate(names)}} for i in range(tokens)]
    return {"label_names": names, "gate": "forget", "tokens": steps, "label": names[0],
            "probabilities": steps[-1]["probabilities"], "cell": "lstm", "truncated": False}


def render(renderables, width: int = 60) -> list:
    console = Console(width=width, record=True, force_terminal=True, color_system="truecolor")
    for renderable in renderables:
        console.print(renderable, soft_wrap=False)
    return console.export_text(clear=False).splitlines(), console.export_html(inline_styles=True)


def test_explain_strip_for_three_classes_is_readable():
    names = ["negative", "neutral", "positive"]
    lines, html = render(explain_renderables(payload(names), width=60))
    assert any(line.startswith("P(top class)") and "0.80" in line for line in lines)
    legend = next(line for line in lines if line.startswith("colours:"))
    assert all(name in legend for name in names)
    for colour in PALETTE[:3]:
        assert colour.lower() in html.lower()


def test_explain_colours_are_colour_blind_safe():
    assert _blend(0.0).lower() == "#d55e00" and _blend(1.0).lower() == "#0072b2"
    _, html = render(explain_renderables(payload(["negative", "positive"])))
    for red_or_green in ("#c82828", "#1ea03c", "#d62728", "#2ca02c"):
        assert red_or_green not in html.lower()


def test_long_captions_wrap_between_words():
    lines, _ = render(explain_renderables(payload(["negative", "positive"])), width=30)
    words = set(re.findall(r"\S+", "forget: mean forget gate of layer 1 (forward) at each "
                                   "token; near 1 keeps the memory, near 0 overwrites it"))
    note = [line for line in lines if "overwrites" in line or "keeps" in line or "memory" in line]
    assert note
    for line in note:
        assert set(line.split()) <= words, line
