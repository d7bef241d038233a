"""The state-dict layout of a classifier: every key its config implies and that key's shape.

Torch-free, so that a run's weight file can be checked against its config from the file's header
alone, before any memory is allocated for the model, and so that the numpy engine can read the
torch model's keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lstmcli.config import ModelConfig
from lstmcli.nn.cells import Cell, get_cell

WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def cell_keys(spec: type[Cell], prefix: str) -> dict[str, str]:
    """State-dict key of each parameter of one CellModule at ``prefix``: its four weights (inside
    the torch kernel module when the cell keeps them there, named as torch names them) and its
    vectors.
    A test checks these against the torch model's state_dict for every registered cell."""
    if spec.weights_in_kernel():
        keys = {name: f"{prefix}.kernel.{name}_l0" for name in WEIGHTS}
    else:
        keys = {name: f"{prefix}.{name}" for name in WEIGHTS}
    keys.update((vector, f"{prefix}.{vector}") for vector in spec.vectors)
    return keys


def feature_size(config: ModelConfig) -> int:
    """Width of the pooled features the classifier reads: D*H, three times that for concat
    pooling ([last, max, mean])."""
    directions = 2 if config.bidirectional else 1
    return (3 if config.pooling == "concat" else 1) * directions * config.hidden_size


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict key the config implies, with its shape, in the torch model's layout."""
    spec = get_cell(config.cell)
    hidden, rows = config.hidden_size, spec.num_chunks() * config.hidden_size
    directions = 2 if config.bidirectional else 1
    shapes: dict[str, tuple[int, ...]] = {"embedding.weight": (config.vocab_size, config.embed_dim)}
    for layer in range(config.layers):
        inputs = config.embed_dim if layer == 0 else directions * hidden
        for direction in range(directions):
            keys = cell_keys(spec, f"encoder.layers.{layer}.{direction}.cell")
            sizes = {"weight_ih": (rows, inputs), "weight_hh": (rows, hidden),
                     "bias_ih": (rows,), "bias_hh": (rows,)}
            sizes.update((vector, (hidden,)) for vector in spec.vectors)
            shapes.update((keys[name], size) for name, size in sizes.items())
    shapes["classifier.weight"] = (config.num_classes, feature_size(config))
    shapes["classifier.bias"] = (config.num_classes,)
    return shapes


def check_state(config: ModelConfig, state: Mapping[str, Any]) -> None:
    """ValueError naming the first missing, unexpected or wrongly shaped tensor, as torch's
    strict load_state_dict would refuse it."""
    shapes = expected_shapes(config)
    missing = [key for key in shapes if key not in state]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}")
    unexpected = [key for key in state if key not in shapes]
    if unexpected:
        raise ValueError(f"unexpected key(s) {', '.join(unexpected)}")
    for key, shape in shapes.items():
        if tuple(state[key].shape) != shape:
            raise ValueError(f"size mismatch for {key}: the file has {tuple(state[key].shape)}, "
                             f"the config implies {shape}")
