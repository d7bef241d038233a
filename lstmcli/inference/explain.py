"""`lstm explain`: how a trained model's belief and its memory gate move, token by token.

For every token t of a text: the class probabilities the model gives to the text's first t tokens,
and the mean over hidden units of the first layer's forward memory gate at that token (forget
gate for the LSTM family, update gate for the GRU; the plain RNN has no gate).

The running probabilities come from running the model on every prefix of the text as one padded
batch. That is exact for every architecture (mean/max pooling, bidirectional, several layers)
because the model's output for a sequence never depends on padding; for a unidirectional model
with ``last`` pooling it equals the classifier applied to h_t.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lstmcli.data.batching import pad_batch
from lstmcli.data.tokenizer import truncate
from lstmcli.errors import DataError
from lstmcli.nn.cells import get_cell
from lstmcli.runload import LoadedRun

PREFIX_CHUNK = 128  # prefixes per forward pass: bounds memory for texts of max_len tokens


@dataclass
class TokenStep:
    token: str
    known: bool  # False: the word is not in the vocabulary and reads as [UNK]
    probabilities: dict[str, float]
    gate: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, "known": self.known, "probabilities": self.probabilities,
                "gate": self.gate}


@dataclass
class Explanation:
    text: str
    cell: str
    label_names: list[str]
    gate_name: str | None  # "forget", "update" or None (rnn)
    tokens: list[TokenStep]
    truncated: bool  # the text had more than max_len tokens; the run's truncation chose which

    @property
    def label(self) -> str:
        final = self.tokens[-1].probabilities
        return max(final, key=final.__getitem__)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "cell": self.cell,
            "label_names": self.label_names,
            "label": self.label,
            "probabilities": self.tokens[-1].probabilities,
            "gate": self.gate_name,
            "gate_layer": 1,
            "gate_direction": "forward",
            "truncated": self.truncated,
            "tokens": [step.to_dict() for step in self.tokens],
        }


def explain(run: LoadedRun, text: str, device: str | torch.device = "cpu") -> Explanation:
    """Per-token running probabilities and memory-gate means of a trained run on one text."""
    if not text.strip():
        raise DataError("the text is empty; give some words to explain")
    data = run.config.data
    ids = run.tokenizer.encode([text], data.max_len, data.truncation)[0]
    words = run.tokenizer.tokens(text)
    truncated = len(words) > len(ids)
    words = truncate(words, data.max_len, data.truncation)  # the words the ids are
    model = run.model.to(device).eval()
    probabilities = _prefix_probabilities(model, ids.tolist(), device)  # (T, C)
    gate_name = get_cell(model.config.cell).memory_gate
    gates = _gate_means(model, ids.tolist(), gate_name, device) if gate_name else None
    unknown = run.tokenizer.UNK_ID
    steps = [
        TokenStep(
            token=word,
            known=int(token_id) != unknown,
            probabilities={name: float(p) for name, p in zip(run.label_names, row, strict=True)},
            gate=None if gates is None else gates[t],
        )
        for t, (word, token_id, row) in enumerate(
            zip(words, ids, probabilities.tolist(), strict=True))
    ]
    return Explanation(text, model.config.cell, list(run.label_names), gate_name, steps, truncated)


@torch.no_grad()
def _prefix_probabilities(model: torch.nn.Module, ids: list[int], device: Any) -> torch.Tensor:
    """Softmax of the model on ids[:1], ids[:2], ..., ids[:T] -> (T, C)."""
    rows = []
    for start in range(0, len(ids), PREFIX_CHUNK):
        prefixes = [ids[: end + 1] for end in range(start, min(start + PREFIX_CHUNK, len(ids)))]
        batch, lengths = pad_batch(prefixes, device)  # (P, T'), (P,)
        rows.append(torch.softmax(model(batch, lengths).float(), dim=1).cpu())  # (P, C)
    return torch.cat(rows)


@torch.no_grad()
def _gate_means(model: torch.nn.Module, ids: list[int], gate: str, device: Any) -> list[float]:
    """Mean over hidden units of ``gate`` in layer 1, forward direction, at every token."""
    means: list[float] = []

    def observer(layer: int, direction: int, t: int, state: Any, gates: dict, mask: Any) -> None:
        if layer == 0 and direction == 0:
            means.append(float(gates[gate].mean()))

    batch, lengths = pad_batch([ids], device)  # (1, T)
    model(batch, lengths, observer=observer)
    return means
