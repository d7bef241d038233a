"""The configuration of `lstm pretrain`: the sections of :mod:`lstmcli.config` with a language
model's own. ``[model]`` is a :class:`LanguageModelConfig` (the encoder's architecture and the
output layer's), ``[data]`` a :class:`CorpusConfig` (unlabelled text instead of labelled
splits), ``[train]`` the classifier's :class:`~lstmcli.config.TrainConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Self

from lstmcli.config import ModelConfig, TrainConfig, _positive, _Sections
from lstmcli.errors import ConfigError

SOFTMAX_CHOICES = ("sampled", "adaptive")  # a language model's output layer (nn.lm_output)


@dataclass
class LanguageModelConfig(ModelConfig):
    """[model] of `lstm pretrain`: the encoder's architecture and the output layer's."""

    softmax: str = "sampled"  # tied to the embedding, trained by sampling; or adaptive
    samples: int = 256  # words drawn per step by the sampled softmax

    def validate(self) -> None:
        super().validate()
        if self.softmax not in SOFTMAX_CHOICES:
            raise ConfigError(f"unknown softmax {self.softmax!r}; choose one of: "
                              f"{', '.join(SOFTMAX_CHOICES)}")
        _positive("samples", self.samples)


@dataclass
class CorpusConfig:
    """Where the unlabelled texts of `lstm pretrain` come from and how they become windows."""

    dataset: str | None = None  # a registered dataset; None: sample, unless text_files are given
    data_dir: str | None = None
    splits: list[str] | None = None  # of the dataset; None: its train split (never test)
    text_files: list[str] = field(default_factory=list)  # .txt (a document per line) or data
    text_column: str | None = None  # of the text files (csv, jsonl, parquet)
    max_texts: int | None = None  # a seeded sample of this many documents, for quick runs
    val_fraction: float = 0.05  # documents held out for validation perplexity
    bptt: int = 70  # tokens per training window (ULMFiT's 70)
    vocab_size: int = 20000
    min_freq: int = 1

    def validate(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.bptt < 2:
            raise ConfigError(f"bptt must be >= 2 (a window predicts its tokens after the "
                              f"first), got {self.bptt}")
        _positive("vocab_size", self.vocab_size)
        _positive("min_freq", self.min_freq)
        if self.max_texts is not None:
            _positive("max_texts", self.max_texts)
        if self.splits is not None and not self.splits:
            raise ConfigError("splits is empty; name at least one split (default: train)")


@dataclass
class PretrainConfig(_Sections):
    """`lstm pretrain`: the encoder's architecture, the unlabelled corpus, the optimisation."""

    model: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    data: CorpusConfig = field(default_factory=CorpusConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> PretrainConfig:
        self.model.validate()
        if self.model.bidirectional and self.model.layers > 1:
            raise ConfigError(
                "a bidirectional language model with more than one layer would let the forward "
                "direction of layer 2 see the future (each layer reads both directions of the one "
                "below); pass --layers 1 or --unidirectional")
        self.data.validate()
        self.train.validate()
        given = [name for name, value in (("init_from", self.train.init_from is not None),
                                          ("discriminative_lr", self.train.discriminative_lr != 1),
                                          ("gradual_unfreeze", self.train.gradual_unfreeze))
                 if value]
        if given:
            raise ConfigError(f"[train] {', '.join(given)} apply to fine-tuning (lstm train "
                              "--init-from), not to pretraining; remove them")
        return self

    @classmethod
    def from_run(cls, raw: dict[str, Any], source: str = "config") -> Self:
        """The config a run stored: one written before [model] softmax existed trained the
        adaptive softmax, whose weights its checkpoint holds."""
        model = raw.get("model")
        if isinstance(model, dict) and "softmax" not in model:
            raw = {**raw, "model": {**model, "softmax": "adaptive"}}
        return cls.from_dict(raw, source)
