"""The `lstm explain` strip: each token on a background that shows the running prediction,
with the memory gate underneath, wrapped to the terminal's width."""

from __future__ import annotations

from typing import Any

from rich.console import RenderableType
from rich.text import Text

from lstmcli.ui.text import printable

# Okabe-Ito colours: told apart with any of the common colour-vision deficiencies, unlike red
# against green. Two classes blend vermillion -> grey -> blue.
VERMILLION, GREY, BLUE = (213, 94, 0), (187, 187, 187), (0, 114, 178)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")


def _blend(p: float) -> str:
    """vermillion (0) -> grey (0.5) -> blue (1) as a hex colour."""
    p = min(max(p, 0.0), 1.0)
    a, b, f = (VERMILLION, GREY, p * 2) if p < 0.5 else (GREY, BLUE, (p - 0.5) * 2)
    return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(a, b, strict=True))


def _ink(background: str) -> str:
    """Black or white, whichever reads better on ``background`` (#rrggbb)."""
    red, green, blue = (int(background[i:i + 2], 16) for i in (1, 3, 5))
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else "white"


def explain_renderables(payload: dict[str, Any], width: int = 80) -> list[RenderableType]:
    """Tokens as a coloured strip, wrapped to ``width``: each token on a background that shows
    the running prediction (two classes: vermillion to blue with P(second class); more: the
    predicted class's colour, its name and probability), with the memory-gate mean underneath."""
    names = payload["label_names"]
    binary = len(names) == 2
    gate = payload["gate"]
    rows = ["", f"P({names[1]})" if binary else "P(top class)", gate or ""]
    label_width = max(len(r) for r in rows) + 1
    lines: list[Text] = []
    columns: list[tuple[str, str, str, str]] = []
    for step in payload["tokens"]:
        probabilities = step["probabilities"]
        if binary:
            p = probabilities[names[1]]
            colour, shown = _blend(p), f"{p:.2f}"
        else:
            best = max(probabilities, key=probabilities.__getitem__)
            colour = PALETTE[names.index(best) % len(PALETTE)]
            # The colour names the class (legend below); the row gives its probability in full.
            shown = f"{probabilities[best]:.2f}"
        gate_text = "" if step["gate"] is None else f"{step['gate']:.2f}"
        token = printable(step["token"]) + ("" if step["known"] else "?")
        columns.append((token, shown, gate_text, colour))
    block: list[tuple[str, str, str, str]] = []
    used = label_width

    def flush() -> None:
        if not block:
            return
        for index, label in enumerate(rows):
            if index == 2 and gate is None:
                continue
            line = Text(label.ljust(label_width), style="dim")
            for token, shown, gate_text, colour in block:
                cell_width = max(len(token), 4)
                if index == 0:
                    line.append(token.center(cell_width),
                                style=f"bold {_ink(colour)} on {colour}")
                else:
                    line.append((shown if index == 1 else gate_text).center(cell_width))
                line.append(" ")
            lines.append(line)
        lines.append(Text(""))

    for column in columns:
        cell_width = max(len(column[0]), 4) + 1
        if block and used + cell_width > width:
            flush()
            block, used = [], label_width
        block.append(column)
        used += cell_width
    flush()
    final = payload["probabilities"]
    verdict = Text("prediction: ")
    verdict.append(payload["label"], style="bold")
    verdict.append(" (" + ", ".join(f"{name} {final[name]:.3f}" for name in names) + ")")
    notes = [verdict]
    if not binary:
        legend = Text("colours: ", style="dim")
        for index, name in enumerate(names):
            colour = PALETTE[index % len(PALETTE)]
            legend.append(f" {name} ", style=f"bold {_ink(colour)} on {colour}")
            legend.append(" ")
        notes.append(legend)
    if gate is None:
        notes.append(Text(f"{payload['cell']} has no gate: only the probabilities are shown",
                          style="dim"))
    else:
        notes.append(Text(f"{gate}: mean {gate} gate of layer 1 (forward) at each token; near 1 "
                          "keeps the memory, near 0 overwrites it", style="dim"))
    if any(not step["known"] for step in payload["tokens"]):
        notes.append(Text("?: not in the vocabulary, read as [UNK]", style="dim"))
    if payload["truncated"]:
        notes.append(Text("the text was cut to the model's max_len tokens", style="dim"))
    return [*lines, *notes]
