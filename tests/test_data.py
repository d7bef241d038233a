"""Loading datasets: file formats, label forms, splits, the registry, the hub path and bad data.

Everything runs on data the tests write into their temporary directory (conftest's `isolated`
fixture chdirs there and unsets LSTM_DATA_DIR); the shared corpora tests skip without ../shared.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lstmcli.config import DataConfig
from lstmcli.data import registry
from lstmcli.data.splits import (
    DatasetInfo,
    DatasetSplits,
    TextSplit,
    dataset_registry,
    load_eval_split,
    load_splits,
    local_copy_dir,
)
from lstmcli.errors import ConfigError, DataError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def rows(count: int = 40, labels: tuple = ("negative", "positive")) -> list[dict]:
    """`count` reviews cycling through `labels`; the label's index is in the text."""
    return [
        {"text": f"review {i} is {labels[i % len(labels)]} number {i % len(labels)}",
         "label": labels[i % len(labels)]}
        for i in range(count)
    ]


def write(path: Path, records: list[dict]) -> Path:
    """Write records in the format the suffix names (json: an array of objects)."""
    suffix = path.suffix
    if suffix in (".csv", ".tsv"):
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]),
                                    delimiter="\t" if suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(records)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(records), encoding="utf-8")
    elif suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    return path


def cfg(dataset: str | Path = "sample", **kwargs) -> DataConfig:
    return DataConfig(dataset=str(dataset), **kwargs)


def error_of(call, *args, kind: type[Exception] = DataError, **kwargs) -> str:
    """The message of the error `call` raises; it must be one line."""
    with pytest.raises(kind) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# Formats and columns


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_every_format_loads_the_same_rows(tmp_path: Path, suffix: str) -> None:
    records = rows(40)
    records[3]["text"] = 'has "quotes", commas,\ttabs and\nnewlines'
    path = write(tmp_path / f"reviews{suffix}", records)
    splits = load_splits(cfg(path, val_fraction=0.25))
    assert isinstance(splits, DatasetSplits)
    assert splits.name == "reviews"
    assert splits.label_names == ["negative", "positive"]
    assert (len(splits.train), len(splits.validation), splits.test) == (30, 10, None)
    everything = list(splits.train.texts) + list(splits.validation.texts)
    labels = np.concatenate([splits.train.labels, splits.validation.labels])
    assert sorted(everything) == sorted(r["text"] for r in records)
    by_text = dict(zip(everything, labels, strict=True))
    assert all(splits.label_names[by_text[r["text"]]] == r["label"] for r in records)
    assert splits.train.labels.dtype == np.int64


def test_json_object_of_columns_and_json_lines_in_a_json_file(tmp_path: Path) -> None:
    records = rows(20)
    columns = {"text": [r["text"] for r in records], "label": [r["label"] for r in records]}
    (tmp_path / "columns.json").write_text(json.dumps(columns), encoding="utf-8")
    write(tmp_path / "lines.jsonl", records).rename(tmp_path / "lines.json")
    for name in ("columns.json", "lines.json"):
        splits = load_splits(cfg(tmp_path / name))
        assert len(splits.train) + len(splits.validation) == 20


@pytest.mark.parametrize(("text", "label"), [("sentence", "sentiment"), ("Review", "Rating"),
                                             ("content", "stars")])
def test_columns_are_found_automatically(tmp_path: Path, text: str, label: str) -> None:
    records = [{"id": i, text: r["text"], label: i % 2} for i, r in enumerate(rows(20))]
    splits = load_splits(cfg(write(tmp_path / "data.csv", records)))
    assert splits.train.texts[0].startswith("review")
    assert splits.label_names == ["0", "1"]


def test_explicit_columns(tmp_path: Path) -> None:
    records = [{"body": r["text"], "text": "decoy", "y": r["label"]} for r in rows(20)]
    path = write(tmp_path / "data.jsonl", records)
    splits = load_splits(cfg(path, text_column="body", label_column="y"))
    assert splits.train.texts[0].startswith("review")


def test_missing_column_lists_the_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "data.csv", [{"body": "x", "y": "pos"}, {"body": "z", "y": "neg"}])
    message = error_of(load_splits, cfg(path))
    assert "'body', 'y'" in message and "--text-column" in message
    message = error_of(load_splits, cfg(path, text_column="body", label_column="label"))
    assert "no column 'label'" in message and "'body', 'y'" in message


# ---------------------------------------------------------------------------------------------
# Label forms


@pytest.mark.parametrize(
    ("labels", "names"),
    [
        (("pos", "neg"), ["neg", "pos"]),
        (("positive", "negative"), ["negative", "positive"]),
        (("Good", "bad"), ["bad", "Good"]),
        (("+", "-"), ["-", "+"]),
        (("sadness", "joy", "anger"), ["anger", "joy", "sadness"]),
        ((1, 0), ["0", "1"]),
        (("1", "0"), ["0", "1"]),
        ((1.0, 0.0), ["0", "1"]),
        ((5, 1, 3, 10), ["1", "3", "5", "10"]),
    ],
)
def test_label_names(tmp_path: Path, labels: tuple, names: list[str]) -> None:
    path = write(tmp_path / "data.jsonl", rows(40, labels))
    splits = load_splits(cfg(path))
    assert splits.label_names == names
    texts = list(splits.train.texts) + list(splits.validation.texts)
    ids = np.concatenate([splits.train.labels, splits.validation.labels])
    for text, label in zip(texts, ids, strict=True):
        original = labels[int(text.split()[-1])]
        assert splits.label_names[label] == str(original).removesuffix(".0")


def test_integer_labels_in_csv_and_parquet_agree(tmp_path: Path) -> None:
    records = [{"text": r["text"], "label": i % 2} for i, r in enumerate(rows(20))]
    write(tmp_path / "train.parquet", records)
    write(tmp_path / "test.csv", records)
    splits = load_splits(cfg(tmp_path / "train.parquet", test_file=str(tmp_path / "test.csv")))
    assert splits.label_names == ["0", "1"]
    assert splits.test is not None and len(splits.test) == 20


def test_star_ratings_with_a_threshold(tmp_path: Path) -> None:
    ratings = [1, 2, 3, 4, 5, "4", "2.5", 4.5]
    records = [{"text": f"text {i}", "rating": r} for i, r in enumerate(ratings * 5)]
    path = write(tmp_path / "stars.jsonl", records)
    splits = load_splits(cfg(path, positive_threshold=4, val_fraction=0.2))
    assert splits.label_names == ["negative", "positive"]
    labels = {t: splits.label_names[i] for t, i in zip(
        list(splits.train.texts) + list(splits.validation.texts),
        np.concatenate([splits.train.labels, splits.validation.labels]), strict=True)}
    assert [labels[f"text {i}"] for i in range(8)] == [
        "negative", "negative", "negative", "positive", "positive", "positive", "negative",
        "positive"]


def test_many_integer_classes_suggest_a_threshold(tmp_path: Path) -> None:
    splits = load_splits(cfg(write(tmp_path / "stars.jsonl", rows(50, (1, 2, 3, 4, 5)))))
    assert splits.label_names == ["1", "2", "3", "4", "5"]
    assert any("5 classes (1, 2, 3, 4, 5)" in n and "--positive-threshold" in n
               for n in splits.notes)


def test_fractional_labels_without_threshold_suggest_one(tmp_path: Path) -> None:
    path = write(tmp_path / "stars.csv", [{"text": "a", "label": 3.5}, {"text": "b", "label": 1}])
    assert "--positive-threshold" in error_of(load_splits, cfg(path))


def test_threshold_needs_numbers(tmp_path: Path) -> None:
    path = write(tmp_path / "stars.csv", rows(10))
    message = error_of(load_splits, cfg(path, positive_threshold=3))
    assert "not a number" in message and "'negative'" in message


# ---------------------------------------------------------------------------------------------
# Splits: carving, files per split, caps


def test_validation_is_carved_seeded_and_stratified(tmp_path: Path) -> None:
    path = write(tmp_path / "data.jsonl", rows(200, ("a", "b", "b", "b")))
    first = load_splits(cfg(path, val_fraction=0.2), seed=3)
    again = load_splits(cfg(path, val_fraction=0.2), seed=3)
    other = load_splits(cfg(path, val_fraction=0.2), seed=4)
    assert len(first.validation) == 40 and len(first.train) == 160
    assert np.bincount(first.validation.labels).tolist() == [10, 30]
    assert first.validation.texts == again.validation.texts
    assert first.validation.texts != other.validation.texts
    assert not set(first.validation.texts) & set(first.train.texts)
    assert any("40 rows carved from train (seed 3, stratified" in n for n in first.notes)


def test_eval_split_reproduces_the_carved_validation(tmp_path: Path) -> None:
    path = write(tmp_path / "data.csv", rows(100, ("pos", "neg")))
    config = cfg(path, val_fraction=0.3, max_train_samples=20)
    splits = load_splits(config, seed=7)
    validation = load_eval_split(config, "validation", splits.label_names, seed=7)
    assert validation.texts == splits.validation.texts
    assert validation.labels.tolist() == splits.validation.labels.tolist()
    # The checkpoint's names may differ in spelling or order: the rows are the same.
    renamed = load_eval_split(config, "validation", ["negative", "positive"], seed=7)
    assert renamed.texts == splits.validation.texts
    train = load_eval_split(config, "train", splits.label_names, seed=7)
    assert len(train) == 70 and not set(train.texts) & set(validation.texts)
    with pytest.raises(DataError, match="has no test split; choose one of: train, validation"):
        load_eval_split(config, "test", splits.label_names, seed=7)
    assert "unknown split" in error_of(load_eval_split, config, "dev", splits.label_names)


def test_separate_files_per_split(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", rows(30))
    validation = write(tmp_path / "dev.jsonl", rows(10))
    test = write(tmp_path / "test.parquet", rows(12))
    config = DataConfig(train_file=str(train), validation_file=str(validation),
                        test_file=str(test))
    splits = load_splits(config)
    assert (len(splits.train), len(splits.validation)) == (30, 10)
    assert splits.test is not None and len(splits.test) == 12
    assert splits.name == "train"
    assert len(load_eval_split(config, "test", splits.label_names)) == 12
    both = DataConfig(dataset="imdb", train_file=str(train))
    assert "not both" in error_of(load_splits, both, kind=ConfigError)


def test_labels_of_other_splits_map_onto_the_training_names(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", rows(20, ("negative", "positive")))
    test = write(tmp_path / "test.csv", rows(10, (0, 1)))
    splits = load_splits(cfg(train, test_file=str(test)))
    assert splits.test is not None and splits.test.labels.tolist() == [0, 1] * 5
    assert any("labels read as 0 -> negative, 1 -> positive" in n for n in splits.notes)
    strange = write(tmp_path / "strange.csv", rows(10, ("negative", "neutral")))
    message = error_of(load_splits, cfg(train, test_file=str(strange)))
    assert "neutral" in message and "negative, positive" in message


def test_eval_maps_labels_onto_the_model_and_rejects_unknown_ones(tmp_path: Path) -> None:
    path = write(tmp_path / "data.csv", rows(20, ("pos", "neg")))
    split = load_eval_split(cfg(path), "train", ["negative", "positive"])
    assert len(split) == 18  # the 2 carved validation rows are not training rows
    assert all(("is pos" in t) == (y == 1) for t, y in zip(split.texts, split.labels, strict=True))
    message = error_of(load_eval_split, cfg(path), "train", ["joy", "anger"])
    assert "the model does not know" in message and "joy, anger" in message


def test_max_samples_cap_stratified_and_leave_validation_alone(tmp_path: Path) -> None:
    path = write(tmp_path / "data.jsonl", rows(400, ("a", "b", "b", "b")))
    full = load_splits(cfg(path))
    capped = load_splits(cfg(path, max_train_samples=40, max_eval_samples=8))
    assert len(capped.train) == 40 and np.bincount(capped.train.labels).tolist() == [10, 30]
    assert len(capped.validation) == 8 and np.bincount(capped.validation.labels).tolist() == [2, 6]
    assert set(capped.validation.texts) <= set(full.validation.texts)
    assert set(capped.train.texts) <= set(full.train.texts)
    assert any("40 of 360 rows (--max-train-samples" in n for n in capped.notes)
    # Every class keeps a row even when the cap is tiny.
    tiny = load_splits(cfg(path, max_train_samples=2))
    assert sorted(tiny.train.labels.tolist()) == [0, 1]


def test_a_cap_that_leaves_one_class_says_so(tmp_path: Path) -> None:
    path = write(tmp_path / "data.jsonl", rows(40))
    assert "--max-train-samples" in error_of(load_splits, cfg(path, max_train_samples=1))


def test_empty_texts_and_missing_labels_are_skipped_and_counted(tmp_path: Path) -> None:
    records = rows(20) + [{"text": "", "label": "positive"}, {"text": "   ", "label": "negative"},
                          {"text": None, "label": "positive"}, {"text": "no label", "label": None},
                          {"label": "positive"}]
    splits = load_splits(cfg(write(tmp_path / "data.jsonl", records)))
    assert len(splits.train) + len(splits.validation) == 20
    assert "skipped 4 rows with an empty or missing text in train" in splits.notes
    assert "skipped 1 rows with a missing label in train" in splits.notes
    csv_path = write(tmp_path / "data.csv", [*rows(10), {"text": "", "label": "negative"},
                                             {"text": "unlabelled", "label": ""}])
    notes = load_splits(cfg(csv_path)).notes
    assert any("1 rows with an empty" in n for n in notes)
    assert any("1 rows with a missing label" in n for n in notes)


# ---------------------------------------------------------------------------------------------
# Bad data: one line, the fix named, nothing written


def test_bad_files(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_text("\n  \n", encoding="utf-8")
    (tmp_path / "header.csv").write_text("text,label\n", encoding="utf-8")
    (tmp_path / "latin1.csv").write_bytes(b"text,label\ngood,pos\ncaf\xe9 bad,neg\n")
    (tmp_path / "broken.jsonl").write_text('{"text": "a", "label": 1}\n{"text": \n',
                                           encoding="utf-8")
    (tmp_path / "list.jsonl").write_text('{"text": "a", "label": 1}\n[1, 2]\n', encoding="utf-8")
    (tmp_path / "ragged.csv").write_text("text,label\na,1\nb,0,extra\n", encoding="utf-8")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "data.xlsx").write_bytes(b"x")
    (tmp_path / "folder.csv").mkdir()
    one_class = write(tmp_path / "one.csv", rows(10, ("positive",)))
    before = sorted(p.name for p in tmp_path.iterdir())
    expected = {
        "empty.csv": "is empty",
        "blank.jsonl": "is empty",
        "header.csv": "has no rows",
        "latin1.csv": "latin1.csv is not valid UTF-8 (line 3",
        "broken.jsonl": "broken.jsonl line 2 is not valid JSON",
        "list.jsonl": "line 2 is not a JSON object",
        "ragged.csv": "line 3 has 3 fields but the header has 2",
        "junk.parquet": "is not valid parquet",
        "data.xlsx": "unsupported extension '.xlsx'",
        "folder.csv": "is not a file",
        "missing.csv": "missing.csv not found",
        one_class.name: "only one class ('positive', 10 rows)",
    }
    for name, fragment in expected.items():
        assert fragment in error_of(load_splits, cfg(tmp_path / name)), name
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_unknown_dataset_name() -> None:
    message = error_of(load_splits, cfg("imbd"))
    assert "unknown dataset 'imbd'" in message and "imdb" in message and ".csv" in message


def test_config_is_validated() -> None:
    error_of(load_splits, cfg("sample", val_fraction=1.5), kind=ConfigError)


def test_threshold_does_not_apply_to_named_datasets() -> None:
    error_of(load_splits, cfg("sst2", positive_threshold=3), kind=ConfigError)


# ---------------------------------------------------------------------------------------------
# Registry, local copies, the hub


def test_registry_entries() -> None:
    entries = dataset_registry()
    assert {"sample", "imdb", "sst2", "rotten_tomatoes", "yelp_polarity",
            "amazon_polarity"} <= set(entries)
    for name, info in entries.items():
        assert isinstance(info, DatasetInfo) and info.name == name
        assert info.label_names == ("negative", "positive")
        assert "train" in info.splits and info.description and "\n" not in info.description
    assert entries["sample"].hub_id is None
    assert entries["imdb"].hub_id == "stanfordnlp/imdb"
    assert (entries["sst2"].hub_id, entries["sst2"].hub_config) == ("nyu-mll/glue", "sst2")
    assert entries["sst2"].splits == ("train", "validation")
    entries.pop("imdb")
    assert "imdb" in dataset_registry()  # a copy


def local_tree(root: Path, name: str = "imdb", splits: tuple = ("train", "test"),
               text: str = "text") -> Path:
    """DIR/NAME/SPLIT.parquet with integer labels, as the hub stores them."""
    (root / name).mkdir(parents=True)
    for split in splits:
        records = [{text: f"{split} review {i}", "label": i % 2} for i in range(30)]
        write(root / name / f"{split}.parquet", records)
    return root


def test_local_copy_via_flag_and_environment(tmp_path: Path, monkeypatch) -> None:
    root = local_tree(tmp_path / "corpora")
    splits = load_splits(DataConfig(dataset="imdb", data_dir=str(root)))
    assert splits.label_names == ["negative", "positive"]
    assert (len(splits.train), len(splits.validation)) == (27, 3)
    assert splits.test is not None and len(splits.test) == 30
    assert splits.test.labels.tolist() == [0, 1] * 15
    assert any("local copy" in n for n in splits.notes)
    monkeypatch.setenv("LSTM_DATA_DIR", str(root))
    assert len(load_splits(DataConfig(dataset="imdb")).train) == 27
    assert local_copy_dir("imdb") == root / "imdb"
    assert local_copy_dir("sst2") is None


def test_local_copy_with_its_own_validation(tmp_path: Path) -> None:
    root = local_tree(tmp_path, "sst2", ("train", "validation"), text="sentence")
    config = DataConfig(dataset="sst2", data_dir=str(root))
    splits = load_splits(config)
    assert (len(splits.train), len(splits.validation), splits.test) == (30, 30, None)
    assert "has no test split" in error_of(load_eval_split, config, "test", splits.label_names)


def test_local_copy_problems(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "corpora" / "imdb").mkdir(parents=True)
    message = error_of(load_splits, DataConfig(dataset="imdb", data_dir=str(tmp_path / "corpora")))
    assert "has no train.parquet" in message
    message = error_of(load_splits, DataConfig(dataset="imdb", data_dir=str(tmp_path / "nope")))
    assert "does not exist" in message and "--data-dir" in message
    monkeypatch.setenv("LSTM_DATA_DIR", str(tmp_path / "nope"))
    assert "LSTM_DATA_DIR" in error_of(load_splits, DataConfig(dataset="imdb"))


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch) -> Path:
    """Keep the `datasets` library's cache in the test's directory."""
    import datasets

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def point_hub_at(monkeypatch, name: str, hub_id: str) -> None:
    info = dataclasses.replace(registry.lookup(name), hub_id=hub_id, hub_config=None)
    monkeypatch.setitem(registry._REGISTRY, name, info)


def test_hub_path_reads_through_load_dataset(tmp_path: Path, monkeypatch, hub_cache) -> None:
    # A local folder stands in for the hub repository: the same load_dataset call reads it.
    folder = local_tree(tmp_path / "hub") / "imdb"
    point_hub_at(monkeypatch, "imdb", str(folder))
    splits = load_splits(DataConfig(dataset="imdb"))
    assert (len(splits.train), len(splits.validation)) == (27, 3)
    assert splits.test is not None and splits.test.texts[0] == "test review 0"
    assert any("Hugging Face hub" in n for n in splits.notes)
    assert hub_cache.is_dir()
    validation = load_eval_split(DataConfig(dataset="imdb"), "validation", splits.label_names)
    assert validation.texts == splits.validation.texts


def test_hub_unreachable_gives_one_clear_error(tmp_path: Path, monkeypatch, hub_cache) -> None:
    point_hub_at(monkeypatch, "imdb", str(tmp_path / "no-such-repo"))
    message = error_of(load_splits, DataConfig(dataset="imdb"))
    assert message.startswith("dataset imdb not found: looked in (no --data-dir / LSTM_DATA_DIR")
    assert "Hugging Face hub" in message and "DIR/imdb/{train,test}.parquet" in message

    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'stanfordnlp/imdb' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    (tmp_path / "corpora").mkdir()
    message = error_of(load_splits, DataConfig(dataset="imdb", data_dir=str(tmp_path / "corpora")))
    assert f"looked in {tmp_path / 'corpora' / 'imdb'} and the Hugging Face hub" in message


def test_hub_dataset_without_the_expected_column(tmp_path: Path, monkeypatch, hub_cache) -> None:
    folder = local_tree(tmp_path / "hub", text="body") / "imdb"
    point_hub_at(monkeypatch, "imdb", str(folder))
    message = error_of(load_splits, DataConfig(dataset="imdb"))
    assert "no column 'text'" in message and "'body', 'label'" in message


# ---------------------------------------------------------------------------------------------
# The bundled sample and the shared corpora


def test_bundled_sample_loads() -> None:
    if not (registry.SAMPLE_DIR / "train.jsonl").is_file():
        pytest.skip("data/sample is not there yet")
    splits = load_splits(DataConfig())
    assert splits.name == "sample" and splits.label_names == ["negative", "positive"]
    assert len(splits.train) > 0 and len(splits.validation) > 0 and splits.test is not None
    assert local_copy_dir("sample") == registry.SAMPLE_DIR


def test_missing_sample_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(registry, "SAMPLE_DIR", tmp_path / "gone")
    assert "bundled sample dataset is missing" in error_of(load_splits, DataConfig())


def test_loading_imports_neither_torch_nor_datasets(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", rows(10))
    code = ("import sys; from lstmcli.config import DataConfig; from lstmcli.data.splits import "
            f"load_splits; load_splits(DataConfig(dataset={str(path)!r})); "
            "import lstmcli.data.tokenizer; "
            "assert 'torch' not in sys.modules and 'datasets' not in sys.modules, 'imported'")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_text_split_length_and_subset() -> None:
    split = TextSplit(["a", "b", "c"], np.array([0, 1, 0], dtype=np.int64))
    assert len(split) == 3
    assert split.subset(np.array([2, 0])).texts == ["c", "a"]


needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")


@needs_shared
def test_shared_imdb() -> None:
    splits = load_splits(DataConfig(dataset="imdb", data_dir=str(SHARED_DATA)))
    assert len(splits.train) + len(splits.validation) == 25_000
    assert np.bincount(splits.train.labels).tolist() == [11_250, 11_250]
    assert np.bincount(splits.validation.labels).tolist() == [1_250, 1_250]
    assert splits.test is not None and np.bincount(splits.test.labels).tolist() == [12_500] * 2


@needs_shared
def test_shared_sst2() -> None:
    splits = load_splits(DataConfig(dataset="sst2", data_dir=str(SHARED_DATA)))
    assert (len(splits.train), len(splits.validation), splits.test) == (67_349, 872, None)
    assert np.bincount(splits.train.labels).tolist() == [29_780, 37_569]
    assert np.bincount(splits.validation.labels).tolist() == [428, 444]


@pytest.mark.slow  # a fresh interpreter importing `datasets`: a few seconds
def test_offline_hub_fails_at_once_with_one_line(tmp_path: Path) -> None:
    # A host name that does not resolve switches `datasets` to offline mode before its import,
    # so there are no 25 s of retries, each printed, before the error.
    code = (
        "import socket, sys\n"
        "def unresolvable(*args, **kwargs): raise socket.gaierror('no network')\n"
        "socket.getaddrinfo = unresolvable\n"
        "from lstmcli.config import DataConfig\n"
        "from lstmcli.data.splits import load_splits\n"
        "from lstmcli.errors import DataError\n"
        "try: load_splits(DataConfig(dataset='rotten_tomatoes'))\n"
        "except DataError as error: print(error); sys.exit(2)\n"
    )
    env = {k: v for k, v in os.environ.items()
           if k != "HF_HUB_OFFLINE" and "PROXY" not in k.upper()}
    env["HF_HOME"] = str(tmp_path / "hf-home")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert done.returncode == 2
    assert done.stdout.startswith("dataset rotten_tomatoes not found: looked in (no --data-dir")
    assert "Retrying" not in done.stderr
