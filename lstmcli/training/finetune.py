"""Fine-tuning a classifier from a language model that `lstm pretrain` wrote (ULMFiT, Howard &
Ruder 2018): `lstm train --init-from RUN`.

- The pretrained run's tokenizer is reused, never retrained, and its architecture taken (cell,
  embed_dim, hidden_size, layers, bidirectional, gate_bias; vocab_size and min_freq for the
  record): a flag or config key that asks for another value is refused with one line.
- Its ``embedding.*`` and ``encoder.*`` weights are copied by name (the language model keeps them
  under the classifier's names); the classifier head starts fresh.
- Layer groups, top to bottom: the head (every parameter outside the embedding and the
  encoder), the encoder's layers from the top one down, the embedding.
- Discriminative learning rates: group k (0 = head) trains at ``lr / factor**k``.
- Gradual unfreezing: epoch 1 trains the head alone, each later epoch unfreezes the next group
  down, until everything trains. The frozen set is a function of the epoch, so a resumed run
  freezes exactly what the uninterrupted one did.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lstmcli.config import Config
from lstmcli.data.tokenizer import Tokenizer
from lstmcli.errors import CheckpointError, ConfigError, LstmError
from lstmcli.pretrain_config import PretrainConfig
from lstmcli.runs import (
    CONFIG_FILE,
    LANGUAGE_MODEL,
    RESUME_STATE_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    read_meta,
    settle_weights,
)

INHERITED = {"model": ("cell", "embed_dim", "hidden_size", "layers", "bidirectional",
                       "gate_bias", "embed_init"),
             "data": ("vocab_size", "min_freq")}
COPIED = ("embedding.", "encoder.")  # state-dict prefixes that fine-tuning takes over


@dataclass
class Pretrained:
    """A finished (or at least checkpointed) run of `lstm pretrain`."""

    run_dir: Path
    config: PretrainConfig
    tokenizer: Tokenizer


def open_pretrained(path: str | Path) -> Pretrained:
    """The language model at ``path`` with its config and tokenizer, checked: one line naming
    the problem otherwise."""
    run_dir = Path(path).expanduser()
    flag = f"--init-from {run_dir}"
    if not run_dir.is_dir():
        raise CheckpointError(f"{flag} is not a directory; pass the run directory that "
                              "`lstm pretrain --output` wrote")
    settle_weights(run_dir)
    if not (run_dir / CONFIG_FILE).is_file() or not (run_dir / WEIGHTS_FILE).is_file():
        if (run_dir / RESUME_STATE_FILE).is_file():
            raise CheckpointError(f"{flag} has no checkpoint yet (interrupted before its first "
                                  f"epoch ended); finish it with lstm pretrain --resume {run_dir}")
        raise CheckpointError(f"{flag} is not a run directory (no {CONFIG_FILE} and "
                              f"{WEIGHTS_FILE}); pass the run directory `lstm pretrain` wrote")
    meta = read_meta(run_dir)
    if meta.get("kind") != LANGUAGE_MODEL:
        raise CheckpointError(f"{flag} is a classifier, not a language model; pass a run "
                              "directory written by `lstm pretrain`")
    try:
        config = PretrainConfig.from_run({key: meta[key] for key in ("model", "data", "train")},
                                          source=str(run_dir / CONFIG_FILE))
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{run_dir / CONFIG_FILE} lacks {error}; pretrain again") from None
    except LstmError as error:
        raise CheckpointError(str(error)) from None
    tokenizer = Tokenizer.load(run_dir / TOKENIZER_FILE)
    if tokenizer.vocab_size != config.model.vocab_size:
        raise CheckpointError(f"{run_dir / TOKENIZER_FILE} has {tokenizer.vocab_size:,} entries "
                              f"but the language model's vocabulary is "
                              f"{config.model.vocab_size:,}: the files come from different runs")
    return Pretrained(run_dir.resolve(), config, tokenizer)


def inherit_architecture(config: Config, given: set[str]) -> Pretrained:
    """Take the architecture and vocabulary settings of ``config.train.init_from`` into
    ``config``; a setting in ``given`` ("model.hidden_size": a flag or a config key) that asks
    for another value is refused. The run's path is made absolute: config.json records it."""
    assert config.train.init_from is not None
    pretrained = open_pretrained(config.train.init_from)
    for section, key, ours, theirs in _settings(config, pretrained):
        if f"{section}.{key}" in given and ours != theirs:
            raise _conflict(pretrained, key, ours, theirs)
        setattr(getattr(config, section), key, theirs)
    config.train.init_from = str(pretrained.run_dir)
    return pretrained


def check_architecture(config: Config, pretrained: Pretrained) -> None:
    """ConfigError unless ``config`` has the pretrained run's architecture and vocabulary
    settings (:func:`inherit_architecture` gives it them)."""
    for _, key, ours, theirs in _settings(config, pretrained):
        if ours != theirs:
            raise _conflict(pretrained, key, ours, theirs)


def _settings(config: Config, pretrained: Pretrained) -> list[tuple[str, str, Any, Any]]:
    return [(section, key, getattr(getattr(config, section), key),
             getattr(getattr(pretrained.config, section), key))
            for section, keys in INHERITED.items() for key in keys]


def _conflict(pretrained: Pretrained, key: str, ours: Any, theirs: Any) -> ConfigError:
    return ConfigError(
        f"{key} {ours} conflicts with --init-from {pretrained.run_dir}, whose {key} is {theirs}; "
        f"drop --{key.replace('_', '-')} (and {key} from the config): a fine-tuned model keeps "
        "the pretrained architecture and vocabulary")


def copy_pretrained(model: nn.Module, run_dir: Path) -> list[str]:
    """Copy the language model's embedding and encoder weights into ``model`` by name; returns
    the keys copied. Every one must be there with the same shape, and finite."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(run_dir / WEIGHTS_FILE))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{run_dir / WEIGHTS_FILE} is unreadable ({error}); pretrain "
                              "again") from None
    own = model.state_dict()  # the parameters' own storage: copy_ writes into the model
    keys = [key for key in own if key.startswith(COPIED)]
    for key in keys:
        if key not in state or state[key].shape != own[key].shape:
            found = "missing" if key not in state else f"of shape {tuple(state[key].shape)}"
            raise CheckpointError(f"{run_dir / WEIGHTS_FILE}: {key} is {found}, the classifier "
                                  f"needs {tuple(own[key].shape)}; pretrain again")
        if not torch.isfinite(state[key]).all():
            raise CheckpointError(f"{run_dir / WEIGHTS_FILE} holds NaN or infinite values in "
                                  f"{key}; its pretraining diverged: pretrain again")
    with torch.no_grad():
        for key in keys:
            own[key].copy_(state[key])
    return keys


def layer_groups(model: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """The model's parameters in groups, top to bottom: head, encoder layers (top first),
    embedding."""
    head = [parameter for name, parameter in model.named_parameters()
            if not name.startswith(COPIED)]
    layers = model.encoder.layers
    groups = [("head", head)]
    groups += [(f"encoder.layers.{index}", list(layers[index].parameters()))
               for index in reversed(range(len(layers)))]
    groups.append(("embedding", list(model.embedding.parameters())))
    return groups


def optimizer_groups(model: nn.Module, factor: float) -> list[dict[str, Any]]:
    """Adam's parameter groups: one for the whole model when ``factor`` is 1, else one per layer
    group, each with its ``lr_scale`` (the share of the base lr it trains at)."""
    if factor == 1:
        return [{"params": list(model.parameters()), "name": "all", "lr_scale": 1.0}]
    return [{"params": parameters, "name": name, "lr_scale": factor ** -depth}
            for depth, (name, parameters) in enumerate(layer_groups(model))]


def unfreeze(groups: list[tuple[str, list[nn.Parameter]]], epoch: int) -> list[str]:
    """Train the top ``epoch`` groups and freeze the rest; returns the names of those trained."""
    trained = min(epoch, len(groups))
    for depth, (_, parameters) in enumerate(groups):
        for parameter in parameters:
            parameter.requires_grad_(depth < trained)
    return [name for name, _ in groups[:trained]]
