"""Loading a trained run: its files checked to agree before any memory is allocated for the
model (a hostile or mixed-up run is one line, not an allocation or an index error), then the
model rebuilt from config.json alone as a torch SentimentClassifier or, with ``engine="numpy"``, a
NumpyClassifier that never imports torch. Weights are safetensors, never pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmcli.config import Config
from lstmcli.errors import CheckpointError, ConfigError, LstmError
from lstmcli.runs import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, read_run_config, resolve_run

if TYPE_CHECKING:
    import torch

    from lstmcli.data.tokenizer import Tokenizer
    from lstmcli.inference.numpy_model import NumpyClassifier
    from lstmcli.nn.classifier import SentimentClassifier


@dataclass
class LoadedRun:
    path: Path
    model: SentimentClassifier | NumpyClassifier  # as the engine asked of load_run
    config: Config
    tokenizer: Tokenizer
    label_names: list[str]
    meta: dict[str, Any]


def load_run(
    model: str | Path | None = None,
    device: str | torch.device = "cpu",
    engine: str = "torch",
) -> LoadedRun:
    """Rebuild a trained model from its run directory (the latest run when ``model`` is None):
    a torch SentimentClassifier on ``device``, or with ``engine="numpy"`` a NumpyClassifier
    (CPU, and torch is never imported)."""
    from lstmcli.data.tokenizer import Tokenizer

    run_dir = resolve_run(None if model is None else str(model))
    config, label_names, meta = read_run_config(run_dir)
    tokenizer = Tokenizer.load(run_dir / TOKENIZER_FILE)
    check_run(run_dir, config, label_names, tokenizer.vocab_size)
    if engine == "numpy":
        network: SentimentClassifier | NumpyClassifier = _numpy_model(run_dir, config)
    elif engine == "torch":
        network = _torch_model(run_dir, config, device)
    else:
        raise ConfigError(f"unknown engine {engine!r}; choose numpy or torch")
    return LoadedRun(run_dir, network, config, tokenizer, label_names, meta)


def check_run(run_dir: Path, config: Config, label_names: list[str], tokenizer_size: int) -> None:
    """Everything a run's files must agree on, checked before any memory is allocated for the
    model: the weight file's header (names, shapes, dtypes) against the config, the tokenizer's
    vocabulary and the label names against the model's sizes. A hostile or mixed-up run (a
    vocab_size of 10^12, another run's tokenizer) fails here with one line, not in an allocation
    or an index error."""
    from safetensors import SafetensorError, safe_open

    from lstmcli.nn.layout import expected_shapes

    model = config.model
    if tokenizer_size != model.vocab_size:
        raise CheckpointError(
            f"{run_dir / TOKENIZER_FILE} has {tokenizer_size:,} entries but the model's "
            f"vocabulary is {model.vocab_size:,}: the files come from different runs; restore "
            "this run's tokenizer.json or retrain"
        )
    if len(label_names) != model.num_classes:
        raise CheckpointError(
            f"{run_dir / CONFIG_FILE} names {len(label_names)} labels for a model of "
            f"{model.num_classes} classes; restore the run's config.json or retrain"
        )
    try:
        expected = expected_shapes(model)
        with safe_open(str(run_dir / WEIGHTS_FILE), framework="numpy") as weights:
            stored = {key: (tuple(weights.get_slice(key).get_shape()),
                            weights.get_slice(key).get_dtype()) for key in weights.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise _unreadable(run_dir, error) from None
    except LstmError as error:
        raise CheckpointError(f"{run_dir / CONFIG_FILE}: {error}") from None
    missing = [key for key in expected if key not in stored]
    unexpected = [key for key in stored if key not in expected]
    if missing or unexpected:
        detail = (f"missing key(s) {', '.join(missing)}" if missing
                  else f"unexpected key(s) {', '.join(unexpected)}")
        raise _mismatch(run_dir, detail)
    for key, shape in expected.items():
        if stored[key][0] != shape:
            raise _mismatch(run_dir, f"size mismatch for {key}: the file has {stored[key][0]}, "
                                     f"the config implies {shape}")
        if stored[key][1] != "F32":
            raise CheckpointError(
                f"{run_dir / WEIGHTS_FILE} stores {key} as {stored[key][1]}; lstmcli reads "
                "float32 (F32) weights only: retrain, or convert the file to float32"
            )


def _check_finite(run_dir: Path, state: Any) -> None:
    """NaN or infinite weights give NaN predictions, printed as if they meant something."""
    import numpy as np

    for key, value in state.items():
        array = value.numpy() if hasattr(value, "numpy") else value
        if not np.isfinite(array).all():
            raise CheckpointError(
                f"{run_dir / WEIGHTS_FILE} holds NaN or infinite values in {key}; the training "
                "that wrote it diverged: retrain or restore the run"
            )


def _torch_model(run_dir: Path, config: Config, device: str | torch.device) -> SentimentClassifier:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from lstmcli.device import resolve_device
    from lstmcli.nn.classifier import SentimentClassifier

    device = resolve_device(str(device))  # on CPU: denormals flushed, threads fitted
    network = SentimentClassifier(config.model)
    try:
        state = load_file(str(run_dir / WEIGHTS_FILE), device="cpu")
    except (SafetensorError, OSError) as error:
        raise _unreadable(run_dir, error) from None
    _check_finite(run_dir, state)
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[1:2] or [str(error)]
        raise _mismatch(run_dir, first[0].strip()) from None
    return network.to(device).eval()


def _numpy_model(run_dir: Path, config: Config) -> NumpyClassifier:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from lstmcli.inference.numpy_model import NumpyClassifier

    try:
        state = load_file(str(run_dir / WEIGHTS_FILE))
    except (SafetensorError, OSError) as error:
        raise _unreadable(run_dir, error) from None
    _check_finite(run_dir, state)
    try:
        return NumpyClassifier(config.model, state)
    except ValueError as error:
        raise _mismatch(run_dir, str(error)) from None


def _unreadable(run_dir: Path, error: Exception) -> CheckpointError:
    return CheckpointError(f"{run_dir / WEIGHTS_FILE} is unreadable ({error}); "
                           "retrain or restore the run")


def _mismatch(run_dir: Path, detail: str) -> CheckpointError:
    return CheckpointError(f"{run_dir / WEIGHTS_FILE} does not match its config.json ({detail}); "
                           "retrain or restore the run")
