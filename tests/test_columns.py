"""Data kept columnar: the TextColumn sequence, label rules on distinct values, Arrow readers."""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lstmcli.config import DataConfig
from lstmcli.data import files, textfiles
from lstmcli.data.columns import TextColumn, as_text
from lstmcli.data.labels import label_key, label_keys, threshold_labels
from lstmcli.data.splits import load_splits
from lstmcli.data.tokenizer import Tokenizer, _cache_key, encode_cached
from lstmcli.errors import DataError

TEXTS = ["great film", "awful plot", "Ça va <br /> bien", "", "the end!!!", "x" * 50]


@pytest.fixture
def column() -> TextColumn:
    # Three chunks, so that slices and batches cross chunk boundaries.
    return TextColumn(pa.chunked_array([TEXTS[:2], TEXTS[2:5], TEXTS[5:]]))


# ---------------------------------------------------------------------------------------------
# TextColumn


def test_text_column_reads_like_a_list(column: TextColumn) -> None:
    assert len(column) == 6 and column == TEXTS and list(column) == TEXTS
    assert column[0] == "great film" and column[-1] == "x" * 50 and column[4] == "the end!!!"
    assert column[1:4] == TEXTS[1:4] and column[::2] == TEXTS[::2] and column[4:100] == TEXTS[4:]
    assert column[5:2] == [] and isinstance(column[1:3], list)
    with pytest.raises(IndexError):
        column[6]
    assert [len(b) for b in column.batches(4)] == [4, 2]
    assert sum(column.batches(4), []) == TEXTS
    assert "awful plot" in column and sorted(column) == sorted(TEXTS)


def test_take_selects_rows_without_copying_text(column: TextColumn) -> None:
    picked = column.take(np.array([5, 0, 2]))
    assert picked == [TEXTS[5], TEXTS[0], TEXTS[2]]
    again = picked.take([2, -1, 0])  # a selection of a selection; negative as in numpy
    assert again == [TEXTS[2], TEXTS[2], TEXTS[5]] and again[1:] == [TEXTS[2], TEXTS[5]]
    assert again.to_arrow().to_pylist() == list(again)
    assert [b.to_pylist() for b in again.arrow_batches(2)] == [[TEXTS[2], TEXTS[2]], [TEXTS[5]]]
    assert column.take([]) == [] and len(column.take([])) == 0
    with pytest.raises(IndexError):
        column.take([6])


def test_text_column_equality_and_construction(column: TextColumn) -> None:
    assert column == TextColumn.from_texts(TEXTS) and column != TEXTS[:-1]
    assert column.take([1, 0]) == TextColumn.from_texts([TEXTS[1], TEXTS[0]])
    assert TextColumn.from_texts(column) is column
    assert TextColumn(pa.array(TEXTS, type=pa.large_string())) == TEXTS
    with pytest.raises(ValueError, match="no missing values"):
        TextColumn(pa.array(["a", None]))
    TextColumn(pa.array(["a", None, "b"]), np.array([2, 0]))  # the missing row is not selected
    with pytest.raises(TypeError):
        TextColumn(pa.array([1, 2]))


def test_numbers_in_a_text_column_read_as_python_writes_them() -> None:
    assert as_text(pa.array([1.0, 2.5, None, 3.0])).to_pylist() == ["1.0", "2.5", None, "3.0"]
    assert as_text([1, "a", None, True]).to_pylist() == ["1", "a", None, "True"]


# ---------------------------------------------------------------------------------------------
# Labels: each distinct value once, the same keys as value by value


@pytest.mark.parametrize("values", [
    [1, 0, 0, 1, None, 1],
    [1.0, 0.0, float("nan"), 1.0, None],
    ["1", "0", " 01 ", "+1", "", "  ", None, "pos", "neg", "1.0", "1e0"],
    [True, False, None, True],
])
def test_label_keys_on_distinct_values_match_the_rule_per_value(values: list) -> None:
    expected = [label_key(v) for v in values]
    assert label_keys(pa.array(values), "src").to_pylist() == expected
    assert label_keys(pa.chunked_array([values[:2], values[2:]], type=pa.array(values).type),
                      "src").to_pylist() == expected
    assert label_keys(values, "src").to_pylist() == expected  # a Python list (JSON)
    if not isinstance(values[0], bool):
        encoded = pa.array(values).dictionary_encode()  # a pandas category in parquet
        assert label_keys(encoded, "src").to_pylist() == expected


def test_label_errors_name_the_first_bad_row() -> None:
    with pytest.raises(DataError, match="label 2.5 is not a whole number"):
        label_keys(pa.array(["1", "x", "2.5", "3.5", "2.5"]), "src")
    with pytest.raises(DataError, match=r"label 'bad' \(row 3\) is not a number"):
        threshold_labels(pa.array(["4", None, "bad", "worse", "bad"]), 3, "src")
    with pytest.raises(DataError, match=r"label 'bad' \(row 2\) is not a number"):
        threshold_labels([4, "bad", 4.5], 3, "src")  # mixed types, as JSON holds them
    keys = threshold_labels(pa.array([1.0, 4.5, None, float("nan"), 3.0]), 3, "src")
    assert keys.to_pylist() == ["negative", "positive", None, None, "positive"]


@pytest.mark.parametrize("labels", [[0, 1, 1, 0], [0.0, 1.0, 1.0, 0.0], ["0", "1", "01", "00"]])
def test_integer_float_and_string_labels_give_the_same_ids(tmp_path: Path, labels: list) -> None:
    texts = [f"review {i}" for i in range(40)]
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": texts, "label": labels * 10}), path)
    splits = load_splits(DataConfig(dataset=str(path), val_fraction=0.25))
    assert splits.label_names == ["0", "1"]
    ids = dict(zip(list(splits.train.texts) + list(splits.validation.texts), np.concatenate(
        [splits.train.labels, splits.validation.labels]).tolist(), strict=True))
    assert [ids[t] for t in texts] == [0, 1, 1, 0] * 10


# ---------------------------------------------------------------------------------------------
# Files through Arrow's readers


def test_csv_quoted_newlines_and_na_stay_text(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text(
        '\ufefftext,label\n"a review\nover two lines, with a comma",1\nNA,0\nnull,01\nN/A,1\n'
        '"say ""hi""",0\n,1\nno label,\n"",0\n',
        encoding="utf-8",
    )
    raw = files.read_file(path)
    assert raw.texts.to_pylist() == ["a review\nover two lines, with a comma", "NA", "null", "N/A",
                                     'say "hi"', None, "no label", None]
    assert raw.labels.to_pylist() == ["1", "0", "1", "1", "0", "1", None, "0"]
    splits = load_splits(DataConfig(dataset=str(path), val_fraction=0.2))
    assert "skipped 2 rows with an empty or missing text in train" in splits.notes
    assert "skipped 1 rows with a missing label in train" in splits.notes
    assert sorted(list(splits.train.texts) + list(splits.validation.texts)) == sorted(
        ["a review\nover two lines, with a comma", "NA", "null", "N/A", 'say "hi"'])


def test_utf8_errors_name_the_line_across_chunks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(textfiles, "_CHUNK", 5)  # characters and lines cut by chunk boundaries
    good = tmp_path / "good.tsv"
    good.write_text("text\tlabel\ncafé crème déjà\t1\n東京タワー\t0\n", encoding="utf-8")
    assert files.read_file(good).texts.to_pylist() == ["café crème déjà", "東京タワー"]
    bad = tmp_path / "bad.csv"
    data = "text,label\ncafé,1\nfine,0\n".encode() + b"caf\xe9,1\n"
    bad.write_bytes(data)
    byte = data.index(0xE9, 20)  # the stray Latin-1 é, after the good UTF-8 ones
    with pytest.raises(DataError, match=rf"not valid UTF-8 \(line 4, byte {byte}\)"):
        files.read_file(bad)


@pytest.mark.parametrize("chunk", [1 << 20, 3])
def test_json_lines_arrow_would_misread_are_named(tmp_path: Path, monkeypatch, chunk: int) -> None:
    # Arrow reads a bare `null` line as a row (and crashes where one starts a block), and two
    # objects on one line as two rows; Python's json module names the line, as before.
    monkeypatch.setattr(textfiles, "_CHUNK", chunk)  # 3: a `null` cut by chunk boundaries
    row = '{"text": "a", "label": 1}'
    cases = {f"{row}\n  null \r\n{row}\n": "line 2 is not a JSON object",
             f"{row}\rnull\r": "line 2 is not a JSON object",
             f"{row}\n{row} {row}\n": "line 2 is not valid JSON (Extra data)"}
    for number, (content, message) in enumerate(cases.items()):
        path = tmp_path / f"data{number}.jsonl"
        path.write_text(content, encoding="utf-8", newline="")
        with pytest.raises(DataError, match=re.escape(message)):
            files.read_file(path)
    path.write_text(f'{row}\n{{"text": "null", "label": null}}\n\n', encoding="utf-8")
    raw = files.read_file(path)  # null as a value is fine
    assert raw.texts.to_pylist() == ["a", "null"] and raw.labels.to_pylist() == ["1", None]


def test_a_large_parquet_file_never_becomes_python_lists(tmp_path: Path) -> None:
    count = 100_000
    filler = "and the rest of a long review " * 6  # texts of about 220 characters
    texts = [f"review number {i} was {'good' if i % 2 else 'bad'} {filler}" for i in range(count)]
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"text": texts, "label": [i % 2 for i in range(count)]}), path)
    del texts
    load_splits(DataConfig(dataset=str(path)))  # imports and caches warmed up
    tracemalloc.start()
    splits = load_splits(DataConfig(dataset=str(path)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # Python objects and numpy arrays (not Arrow's memory): the texts as str would be 26 MB;
    # the index arrays of carving validation take about 5.
    assert peak < 10_000_000, peak
    assert isinstance(splits.train.texts, TextColumn) and len(splits.train) == 90_000
    validation = splits.validation.texts
    assert isinstance(validation, TextColumn) and validation[0].startswith("review number")
    tokenizer = Tokenizer.train(validation, vocab_size=100, min_freq=1)
    assert tokenizer.to_json() == Tokenizer.train(list(validation), 100, 1).to_json()
    ids = tokenizer.encode(validation, 8)
    assert [a.tolist() for a in ids] == [a.tolist() for a in tokenizer.encode(list(validation), 8)]
    assert _cache_key(tokenizer, splits.train.texts, 8) == _cache_key(
        tokenizer, list(splits.train.texts), 8)
    cached = encode_cached(tokenizer, validation, 8, tmp_path / "cache")
    assert [a.tolist() for a in cached] == [a.tolist() for a in ids]


@pytest.mark.parametrize("few", [0, 1000])
def test_tokenizer_reads_a_column_as_it_reads_a_list(column: TextColumn, monkeypatch,
                                                     few: int) -> None:
    monkeypatch.setattr("lstmcli.data.tokenizer._FEW", few)
    monkeypatch.setattr("lstmcli.data.tokenizer._BATCH", 4)  # batches cross chunks and rows
    tokenizer = Tokenizer.train(column, vocab_size=100, min_freq=1)
    assert tokenizer.to_json() == Tokenizer.train(TEXTS, 100, 1).to_json()
    wide = TextColumn(pa.array(TEXTS, type=pa.large_string()))
    for texts in (column, column.take([5, 3, 1, 0, 4]), wide.take([2, 2, 4]), wide):
        texts_list = list(texts)
        assert _cache_key(tokenizer, texts, 5) == _cache_key(tokenizer, texts_list, 5)
        assert [a.tolist() for a in tokenizer.encode(texts, 5)] == [
            a.tolist() for a in tokenizer.encode(texts_list, 5)]
    assert _cache_key(tokenizer, column, 5) != _cache_key(tokenizer, column.take([1, 0]), 5)
