"""Run configuration: three dataclasses (model, data, train), loaded from TOML, overridden by
flags.

A TOML file has the sections ``[model]``, ``[data]`` and ``[train]``; a key that no dataclass
field matches is an error, so a typo never silently falls back to a default. `lstm pretrain`
reads the same sections into :class:`lstmcli.pretrain_config.PretrainConfig`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from lstmcli.errors import ConfigError
from lstmcli.nn.cells import DEFAULT_CELL, cell_names, get_cell

MAX_LR = 10.0  # beyond this no optimiser here trains; 1e38 overflowed into a traceback
MAX_GATE_BIAS = 30.0  # sigmoid(30) is 1 in float32: larger biases change nothing
MAX_EMBED_INIT = 10.0  # far beyond torch's own N(0, 1); a typo such as 1e30 is refused
POOLING_CHOICES = ("last", "mean", "max", "concat")
TRUNCATION_CHOICES = ("head", "tail", "both")  # which max_len tokens of a long text are kept
OPTIMIZER_CHOICES = ("adam", "adamw")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")  # auto: cuda, then mps, then cpu
# Training arithmetic (lstmcli.training.precision): float32, or autocast to bfloat16 / float16.
PRECISION_CHOICES = ("fp32", "bf16", "fp16")
LR_SCHEDULES = ("constant", "cosine", "onecycle", "plateau", "slanted")  # training.schedule
DROPOUTS = ("embed_dropout", "input_dropout", "hidden_dropout", "weight_dropout")  # [model]
MAX_DISCRIMINATIVE_LR = 100.0  # ULMFiT's 2.6 per layer; beyond this lower layers never learn
ENGINE_CHOICES = ("auto", "numpy", "torch")  # `lstm predict --engine`
EXPORT_FORMATS = ("onnx", "torchscript")  # `lstm export --format`
# --engine auto's limit for numpy on the CPU: beyond it torch's import time (seconds) is small
# beside the work, and torch's fused kernels do each step in one call where numpy makes several.
NUMPY_MAX_TEXTS = 64


@dataclass
class ModelConfig:
    """Architecture: embedding -> stacked recurrent cells -> pooling -> linear classifier."""

    cell: str = DEFAULT_CELL
    embed_dim: int = 64
    hidden_size: int = 64
    layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    # AWD-LSTM's regularisers (lstmcli.nn.dropout); 0 leaves the model as without them.
    embed_dropout: float = 0.0  # whole word types dropped per batch
    input_dropout: float = 0.0  # locked: one mask per sequence on the embedded text
    hidden_dropout: float = 0.0  # locked, between stacked layers
    weight_dropout: float = 0.0  # DropConnect on the recurrent weights W_hh
    gate_bias: float | None = None  # memory gate's initial bias; None: the cell's default
    # The embedding starts uniform in [-embed_init, embed_init] (AWD-LSTM and ULMFiT: 0.1);
    # None: torch's N(0, 1), whose rows Adam's lr-sized steps hardly move.
    embed_init: float | None = None
    pooling: str = "last"
    vocab_size: int = 0  # set from the tokenizer when training starts
    num_classes: int = 2  # set from the training labels

    def validate(self) -> None:
        cell = get_cell(self.cell)
        if self.gate_bias is not None and cell.memory_gate is None:
            raise ConfigError(
                f"cell {self.cell} has no memory gate, so gate_bias does not apply; drop "
                "--gate-bias or pick a gated cell"
            )
        if self.pooling not in POOLING_CHOICES:
            raise ConfigError(
                f"unknown pooling {self.pooling!r}; choose one of: {', '.join(POOLING_CHOICES)}"
            )
        _positive("embed_dim", self.embed_dim)
        _positive("hidden_size", self.hidden_size)
        _positive("layers", self.layers)
        for name in ("dropout", *DROPOUTS):
            value = getattr(self, name)
            # Written so that NaN fails too.
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value}; 0 turns it off")
        if self.hidden_dropout > 0 and self.layers == 1:
            raise ConfigError("hidden_dropout acts between stacked layers and the model has one; "
                              "drop --hidden-dropout or pass --layers 2 or more")
        if self.embed_init is not None and not 0 < self.embed_init <= MAX_EMBED_INIT:
            raise ConfigError(f"embed_init must be in (0, {MAX_EMBED_INIT:g}] (the embedding "
                              f"starts uniform in [-embed_init, embed_init]; 0.1 is usual), got "
                              f"{self.embed_init}")
        if self.gate_bias is not None and not -MAX_GATE_BIAS <= self.gate_bias <= MAX_GATE_BIAS:
            raise ConfigError(f"gate_bias must be a number in [-{MAX_GATE_BIAS:g}, "
                              f"{MAX_GATE_BIAS:g}], got {self.gate_bias}")


@dataclass
class DataConfig:
    """Where the texts come from and how they become token ids."""

    dataset: str = "sample"
    data_dir: str | None = None  # local copies as DIR/NAME/SPLIT.parquet; env LSTM_DATA_DIR
    text_column: str | None = None
    label_column: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    positive_threshold: float | None = None  # star ratings: >= threshold is positive
    val_fraction: float = 0.1
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_len: int = 400
    truncation: str = "head"  # which max_len tokens a longer text keeps: TRUNCATION_CHOICES
    vocab_size: int = 20000
    min_freq: int = 1

    def validate(self) -> None:
        if self.truncation not in TRUNCATION_CHOICES:
            raise ConfigError(f"unknown truncation {self.truncation!r}; choose one of: "
                              f"{', '.join(TRUNCATION_CHOICES)}")
        if self.positive_threshold is not None and not math.isfinite(self.positive_threshold):
            raise ConfigError(f"positive_threshold must be a finite number, got "
                              f"{self.positive_threshold}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        _positive("max_len", self.max_len)
        _positive("vocab_size", self.vocab_size)
        _positive("min_freq", self.min_freq)
        if self.max_train_samples is not None:
            _positive("max_train_samples", self.max_train_samples)
        # 0 means every row: a way to lift a cap that a config file or a run set.
        if self.max_eval_samples is not None and self.max_eval_samples < 0:
            raise ConfigError(
                f"max_eval_samples must be >= 0 (0: all rows), got {self.max_eval_samples}"
            )


@dataclass
class TrainConfig:
    """Optimisation: Adam or AdamW, gradient clipping by global norm, best model by validation
    accuracy."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adamw: decoupled weight decay (Loshchilov & Hutter 2019)
    label_smoothing: float = 0.0  # of the training loss only; validation loss stays plain
    clip_norm: float = 5.0  # 0 disables clipping (the norm is still measured)
    # Validation, the best checkpoint and the test see this moving average of the weights
    # (lstmcli.training.average); 0 turns it off.
    ema_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # PRECISION_CHOICES; the weights stay float32 whatever it is
    output: str | None = None  # run directory; default runs/<time>-<cell>
    threads: int | None = None  # CPU threads; None: the CPUs this process may use
    processes: int = 1  # the CLI starts this many processes on this machine (lstmcli.launch)
    diagnostics: bool = True  # per-step gradient groups and per-epoch flow (off: raw speed)
    patience: int = 0  # stop after this many epochs without validation improvement; 0: never
    lr_schedule: str = "constant"
    warmup_epochs: int = 0  # linear warmup (onecycle: its rising phase)
    # Fine-tuning from a pretrained language model (`lstm pretrain`), ULMFiT-style.
    init_from: str | None = None  # the pretraining run whose tokenizer and encoder start this one
    discriminative_lr: float = 1.0  # each lower layer group's lr is divided by this
    gradual_unfreeze: bool = False  # epoch 1 trains the head, each later one a group more

    def validate(self) -> None:
        _positive("epochs", self.epochs)
        _positive("batch_size", self.batch_size)
        # NaN fails every comparison, so each check is written to pass only for good values.
        if not 0 < self.lr <= MAX_LR:
            raise ConfigError(f"lr must be in (0, {MAX_LR:g}], got {self.lr}; Adam's usual "
                              "range is 1e-4 to 1e-2")
        if not 0 <= self.weight_decay <= 1:
            raise ConfigError(f"weight_decay must be in [0, 1], got {self.weight_decay}")
        if self.optimizer not in OPTIMIZER_CHOICES:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of: "
                              f"{', '.join(OPTIMIZER_CHOICES)}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}; "
                              "0 turns it off")
        if not 0 <= self.clip_norm < math.inf:
            raise ConfigError(f"clip_norm must be a finite number >= 0 (0 disables clipping), "
                              f"got {self.clip_norm}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}; 0 turns the "
                              "weight average off, 0.99 to 0.999 are usual")
        if self.device not in DEVICE_CHOICES:
            raise ConfigError(
                f"unknown device {self.device!r}; choose one of: {', '.join(DEVICE_CHOICES)}"
            )
        if self.precision not in PRECISION_CHOICES:
            raise ConfigError(f"unknown precision {self.precision!r}; choose one of: "
                              f"{', '.join(PRECISION_CHOICES)}")
        if self.threads is not None:
            _positive("threads", self.threads)
        _positive("processes", self.processes)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of: "
                              f"{', '.join(LR_SCHEDULES)}")
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0 (0: never stop early), got {self.patience}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(f"warmup_epochs must be in [0, epochs={self.epochs}], got "
                              f"{self.warmup_epochs}")
        if self.lr_schedule == "slanted" and self.warmup_epochs:
            raise ConfigError("warmup_epochs does not apply to lr_schedule slanted (its rise is "
                              "the first 10% of the steps); drop it")
        if not 1.0 <= self.discriminative_lr <= MAX_DISCRIMINATIVE_LR:
            raise ConfigError(f"discriminative_lr must be in [1, {MAX_DISCRIMINATIVE_LR:g}] (1: "
                              "one lr for every layer; ULMFiT uses 2.6), got "
                              f"{self.discriminative_lr}")


class _Sections:
    """What the configs of `lstm train` and `lstm pretrain` share: the sections [model], [data]
    and [train], read from nested dicts with unknown sections and keys refused."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]  (a dataclass)

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], source: str = "config", base: Self | None = None
    ) -> Self:
        """Build a config from nested dicts, rejecting unknown sections and keys; the values
        given update a copy of ``base`` (default: the defaults)."""
        unknown = set(raw) - {"model", "data", "train"}
        if unknown:
            raise ConfigError(
                f"{source}: unknown section(s) {', '.join(sorted(unknown))}; "
                "valid sections: model, data, train"
            )
        config = copy.deepcopy(base) if base is not None else cls()
        for section in ("model", "data", "train"):
            values = raw.get(section, {})
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: [{section}] must be a table of key = value pairs")
            if section == "model" and "forget_bias" in values:
                values = _legacy_forget_bias(values, config.model.cell)
            apply_overrides(getattr(config, section), values, source=f"{source} [{section}]")
        return config

    @classmethod
    def from_run(cls, raw: dict[str, Any], source: str = "config") -> Self:
        """The config a run stored (PretrainConfig reads older runs' defaults)."""
        return cls.from_dict(raw, source)


@dataclass
class Config(_Sections):
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> Config:
        self.model.validate()
        self.data.validate()
        self.train.validate()
        return self


def _legacy_forget_bias(values: dict[str, Any], cell: str) -> dict[str, Any]:
    """Runs and configs written before gate_bias name it forget_bias; a cell without a memory
    gate simply had it unused."""
    values = dict(values)
    legacy = values.pop("forget_bias")
    cell = values.get("cell", cell)
    if "gate_bias" not in values and cell in cell_names() and get_cell(cell).memory_gate:
        values["gate_bias"] = legacy
    return values


def load_config(
    path: str | Path | None, kind: type[Any] = Config, base: Any | None = None
) -> Any:
    """Defaults (a ``kind``: Config, or PretrainConfig; or a copy of ``base``: `lstm compare
    --configs` layers each file over --config), updated from a TOML file when one is given."""
    if path is None:
        return copy.deepcopy(base) if base is not None else kind()
    return kind.from_dict(_read_toml(path), source=str(path), base=base)


def config_keys(path: str | Path | None) -> set[str]:
    """The keys a TOML config file sets, as "section.key" ("model.hidden_size"): what it gives,
    as opposed to what it leaves at the defaults. forget_bias counts as gate_bias (its old
    name)."""
    if path is None:
        return set()
    keys = {f"{section}.{key}" for section, values in _read_toml(path).items()
            if isinstance(values, dict) for key in values}
    return keys | ({"model.gate_bias"} if "model.forget_bias" in keys else set())


def _read_toml(path: str | Path) -> dict[str, Any]:
    import tomllib  # only `--config` reads TOML

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass an existing TOML file to --config")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None


def apply_overrides(target: Any, values: dict[str, Any], source: str = "flags") -> None:
    """Set dataclass fields from a mapping, checking names and types; None values are skipped."""
    fields = {f.name: f for f in dataclasses.fields(target)}
    hints = typing.get_type_hints(type(target))
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(
                f"{source}: unknown key {key!r}; valid keys: {', '.join(sorted(fields))}"
            )
        if value is None:
            continue
        setattr(target, key, _coerce(value, hints[key], f"{source}: {key}"))


def _coerce(value: Any, hint: Any, where: str) -> Any:
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    allowed = tuple(a for a in allowed if a is not type(None))
    for kind in allowed:
        if kind is bool:
            if isinstance(value, bool):
                return value
        elif kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif kind is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        elif typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            if isinstance(value, list) and all(isinstance(v, item) for v in value):
                return list(value)
        elif isinstance(value, kind):
            return value
    names = " or ".join(_type_name(a) for a in allowed)
    raise ConfigError(f"{where} must be {names}, got {value!r}")


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is list:
        return f"a list of {typing.get_args(kind)[0].__name__}"
    return kind.__name__


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
