"""The named datasets behind ``--dataset NAME`` and where their rows come from.

Resolution order for a hub dataset: a local copy ``DIR/NAME/SPLIT.parquet`` (``--data-dir DIR``
or ``$LSTM_DATA_DIR``), then the Hugging Face cache and hub through ``datasets.load_dataset``.
The bundled ``sample`` dataset is read from ``data/sample/*.jsonl`` beside the package.

A dataset may also have unlabelled splits (IMDB's 50,000 ``unsupervised`` reviews), read, like
its train split, as texts alone by :func:`read_split_texts` for `lstm pretrain`, from the same
places.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from lstmcli.data.files import (
    TEXT_COLUMN_NAMES,
    RawSplit,
    make_raw_split,
    one_line,
    pick_column,
    pick_columns,
    read_file,
    read_texts,
)
from lstmcli.data.labels import ids_to_names
from lstmcli.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

    from lstmcli.config import DataConfig

SPLITS = ("train", "validation", "test")
DATA_DIR_ENV = "LSTM_DATA_DIR"
OFFLINE_ENV = "HF_HUB_OFFLINE"
_PROXY_ENV = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
SAMPLE_DIR = Path(str(resources.files("lstmcli.data") / "sample"))
BINARY = ("negative", "positive")


@dataclass(frozen=True)
class DatasetInfo:
    """One registered dataset: where it lives on the hub and how its columns read."""

    name: str
    hub_id: str | None  # None: bundled with the package
    text_column: str
    label_column: str
    label_names: tuple[str, ...]  # index = the integer label the data stores
    splits: tuple[str, ...]  # the labelled splits the hub offers
    description: str
    hub_config: str | None = None  # the `name` argument of load_dataset (GLUE's "sst2")
    unlabelled_splits: tuple[str, ...] = ()  # texts without labels, for `lstm pretrain`


_REGISTRY: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "sample", None, "text", "label", BINARY, SPLITS,
            "About 1,000 short English reviews bundled with lstmcli, for demos and smoke tests",
        ),
        DatasetInfo(
            "imdb", "stanfordnlp/imdb", "text", "label", BINARY, ("train", "test"),
            "IMDB movie reviews (Maas et al. 2011): 25,000 train / 25,000 test, long reviews; "
            "50,000 unlabelled (unsupervised) for pretraining",
            unlabelled_splits=("unsupervised",),
        ),
        DatasetInfo(
            "sst2", "nyu-mll/glue", "sentence", "label", BINARY, ("train", "validation"),
            "GLUE SST-2 movie-review sentences: 67,349 train / 872 validation "
            "(the test split is unlabelled: evaluate on validation)",
            hub_config="sst2",
        ),
        DatasetInfo(
            "rotten_tomatoes", "cornell-movie-review-data/rotten_tomatoes", "text", "label",
            BINARY, SPLITS,
            "Pang & Lee sentence polarity (Rotten Tomatoes snippets): 8,530 / 1,066 / 1,066",
        ),
        DatasetInfo(
            "yelp_polarity", "fancyzhx/yelp_polarity", "text", "label", BINARY,
            ("train", "test"),
            "Yelp reviews, 1-2 stars negative, 3-4 positive: 560,000 train / 38,000 test",
        ),
        DatasetInfo(
            "amazon_polarity", "fancyzhx/amazon_polarity", "content", "label", BINARY,
            ("train", "test"),
            "Amazon product reviews (body text): 3,600,000 train / 400,000 test",
        ),
    )
}


def dataset_registry() -> dict[str, DatasetInfo]:
    """The registered datasets by name (a copy: changing it changes nothing)."""
    return dict(_REGISTRY)


def lookup(name: str) -> DatasetInfo | None:
    """The registered dataset of that name, or None."""
    return _REGISTRY.get(name)


@dataclass
class Source:
    """Where one dataset's splits come from; `read` loads one split on demand."""

    name: str
    available: tuple[str, ...]  # the labelled splits present, in SPLITS order
    read: Callable[[str], RawSplit]
    label_names: list[str] | None = None  # fixed by the registry; None: inferred from train
    notes: list[str] = field(default_factory=list)


def resolve_data_dir(data_dir: str | None) -> Path | None:
    """--data-dir, else $LSTM_DATA_DIR, else None; DataError if the one given does not exist."""
    origin = "--data-dir"
    if not data_dir:
        data_dir, origin = os.environ.get(DATA_DIR_ENV) or None, DATA_DIR_ENV
    if data_dir is None:
        return None
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataError(
            f"data directory {path} (from {origin}) does not exist; create it with "
            f"NAME/SPLIT.parquet files or point {origin} at an existing directory"
        )
    return path


def local_copy_dir(name: str, data_dir: str | None = None) -> Path | None:
    """The folder a named dataset is read from locally; None when it would come from the hub."""
    if name == "sample":
        return SAMPLE_DIR if SAMPLE_DIR.is_dir() else None
    root = resolve_data_dir(data_dir)
    if root is not None and (root / name).is_dir():
        return root / name
    return None


def named_source(info: DatasetInfo, data_dir: str | None) -> Source:
    """The splits of a registered dataset: bundled, local copy, or the Hugging Face hub."""
    names = list(info.label_names)
    if info.hub_id is None:
        return _folder_source(info, _sample_dir(), ".jsonl", "bundled sample")
    root = resolve_data_dir(data_dir)
    if root is not None and (root / info.name).is_dir():
        return _folder_source(info, root / info.name, ".parquet", "local copy")

    def read(split: str) -> RawSplit:
        return _read_hub(info, split, root)

    note = f"{info.name}: from the Hugging Face hub or its cache ({info.hub_id})"
    return Source(info.name, info.splits, read, names, [note])


def _sample_dir() -> Path:
    if not (SAMPLE_DIR / "train.jsonl").is_file():
        raise DataError(
            f"the bundled sample dataset is missing ({SAMPLE_DIR / 'train.jsonl'} not found); "
            "reinstall lstmcli, or pass --dataset with another dataset or a data file"
        )
    return SAMPLE_DIR


def _folder_source(info: DatasetInfo, folder: Path, suffix: str, kind: str) -> Source:
    """A folder of SPLIT<suffix> files; the splits present are the splits available."""
    available = tuple(s for s in SPLITS if (folder / f"{s}{suffix}").is_file())
    if "train" not in available:
        raise DataError(
            f"{kind} {folder} has no train{suffix}; put train{suffix} (and test{suffix}) there, "
            "or remove the folder to use the Hugging Face hub"
        )

    def read(split: str) -> RawSplit:
        raw = read_file(folder / f"{split}{suffix}", info.text_column, info.label_column)
        raw.labels = ids_to_names(raw.labels, info.label_names)
        return raw

    note = f"{info.name}: {kind} {folder}"
    return Source(info.name, available, read, list(info.label_names), [note])


def read_split_texts(info: DatasetInfo, split: str, data_dir: str | None) -> pa.ChunkedArray:
    """The texts alone of one split, labelled or unlabelled (its labels are never read): from
    the bundled sample, a local copy DIR/NAME/SPLIT.parquet, or the hub, as named_source finds
    the labelled ones."""
    if split not in (*info.splits, *info.unlabelled_splits):
        raise DataError(f"{info.name} has no split {split!r}; its splits: "
                        f"{', '.join((*info.splits, *info.unlabelled_splits))}")
    root = None if info.hub_id is None else resolve_data_dir(data_dir)
    if info.hub_id is None or (root is not None and (root / info.name).is_dir()):
        folder, suffix = (_sample_dir(), ".jsonl") if root is None else (root / info.name,
                                                                         ".parquet")
        path = folder / f"{split}{suffix}"
        if not path.is_file():
            raise DataError(f"local copy {folder} has no {split}{suffix}; put it there, or leave "
                            f"{split} out")
        return read_texts(path, info.text_column)
    dataset = _hub_split(info, split, root)
    source = f"{info.name} {split} ({info.hub_id})"
    text = pick_column(dataset.column_names, info.text_column, TEXT_COLUMN_NAMES, "text", source)
    from lstmcli.data.columns import as_text

    return as_text(dataset.select_columns([text]).with_format("arrow")[:].column(text))


def _hub_split(info: DatasetInfo, split: str, root: Path | None) -> Any:
    """One split of a hub dataset through datasets.load_dataset: the Hugging Face cache, else a
    download."""
    datasets = _import_datasets()
    assert info.hub_id is not None
    try:
        return datasets.load_dataset(info.hub_id, info.hub_config, split=split)
    except (ConnectionError, FileNotFoundError):
        looked = root / info.name if root is not None else f"(no --data-dir / {DATA_DIR_ENV} set)"
        layout = "{" + ",".join(info.splits) + "}"
        raise DataError(
            f"dataset {info.name} not found: looked in {looked} and the Hugging Face hub "
            f"({info.hub_id}; offline?); download it once with network, or put "
            f"DIR/{info.name}/{layout}.parquet and pass --data-dir DIR"
        ) from None
    except (OSError, ValueError) as error:
        raise DataError(
            f"could not load the {split} split of {info.hub_id} from the Hugging Face hub: "
            f"{one_line(error)}"
        ) from None


def _read_hub(info: DatasetInfo, split: str, root: Path | None) -> RawSplit:
    """One labelled split from the hub (or its cache)."""
    dataset = _hub_split(info, split, root)
    source = f"{info.name} {split} ({info.hub_id})"
    text, label = pick_columns(dataset.column_names, info.text_column, info.label_column, source)
    # The dataset's own Arrow table (memory-mapped from the cache), never Python lists.
    table = dataset.select_columns([text, label]).with_format("arrow")[:]
    raw = make_raw_split(table.column(text), table.column(label), source)
    raw.labels = ids_to_names(raw.labels, info.label_names)
    return raw


def _import_datasets() -> ModuleType:
    """The `datasets` library (slow to import, so only here), in offline mode when the hub's
    host does not even resolve: online, every call would retry for about 25 s, printing each
    retry, before it gave up or fell back to the cache."""
    if "datasets" not in sys.modules and OFFLINE_ENV not in os.environ and not _hub_resolves():
        os.environ[OFFLINE_ENV] = "1"  # read once, when huggingface_hub is imported
    import datasets

    return datasets


def _hub_resolves() -> bool:
    """Whether the hub's host name resolves (assumed so behind a proxy, which may resolve it)."""
    if any(os.environ.get(name) for name in _PROXY_ENV):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname
    try:
        socket.getaddrinfo(host or "huggingface.co", 443)
    except OSError:
        return False
    return True


def absolute_data_paths(cfg: DataConfig) -> None:
    """Make a DataConfig portable before it is recorded: every data file option (the dataset when
    it is a file, the split files) becomes an absolute path, and the data directory actually used
    (--data-dir, else $LSTM_DATA_DIR) is written down, so that `lstm eval --model RUN` finds the
    same data from any working directory and without the environment of the training."""
    for name in ("train_file", "validation_file", "test_file"):
        value = getattr(cfg, name)
        if value is not None:
            setattr(cfg, name, str(Path(value).expanduser().resolve()))
    if lookup(cfg.dataset) is None and Path(cfg.dataset).expanduser().exists():
        cfg.dataset = str(Path(cfg.dataset).expanduser().resolve())
    root = cfg.data_dir or os.environ.get(DATA_DIR_ENV) or None
    # A directory that does not exist stays as given: reading reports it, naming its origin.
    if root is not None and Path(root).expanduser().is_dir():
        cfg.data_dir = str(Path(root).expanduser().resolve())
