"""Reading local data files (CSV, TSV, JSON lines, JSON, parquet) and turning raw labels into names.

Every problem a user can cause raises :class:`DataError` with a one-line message that names the
file and the fix. Labels leave this module as canonical strings ("0", "pos", "negative"), so that
the integers of a parquet file and the same integers in a CSV file compare equal.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lstmcli.errors import DataError

SUPPORTED_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
# Auto-detected column names, in order of preference (compared case-insensitively).
TEXT_COLUMN_NAMES = ("text", "sentence", "review", "content")
LABEL_COLUMN_NAMES = ("label", "sentiment", "rating", "stars")
# A two-class label set made of one word from each side is ordered [negative, positive].
NEGATIVE_NAMES = frozenset({"negative", "neg", "bad", "-", "0"})
POSITIVE_NAMES = frozenset({"positive", "pos", "good", "+", "1"})

_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass
class RawSplit:
    """One split as read: texts and canonical label keys, None where a value is missing."""

    texts: list[Any]
    labels: list[str | None]
    source: str  # for messages: a file path or "imdb train (hub)"


def one_line(error: object) -> str:
    """A library's error message squeezed onto one line, for DataError messages."""
    return " ".join(str(error).split())


def read_file(
    path: Path,
    text_column: str | None = None,
    label_column: str | None = None,
    positive_threshold: float | None = None,
) -> RawSplit:
    """Read the text and label columns of one local data file, chosen by its extension."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(
            f"data file {path} has an unsupported extension {path.suffix or '(none)'!r}; "
            f"use one of: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if not path.exists():
        raise DataError(f"data file {path} not found; check the path")
    if not path.is_file():
        raise DataError(f"{path} is not a file; pass a {'/'.join(SUPPORTED_SUFFIXES)} file")
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty; it needs a text and a label for each example")
    source = str(path)
    if suffix == ".parquet":
        text_name, label_name = pick_columns(
            _parquet_column_names(path), text_column, label_column, source
        )
        columns = _read_parquet(path, [text_name, label_name])
    else:
        content = _decode(path)
        if suffix in (".csv", ".tsv"):
            columns = _read_delimited(path, content, "\t" if suffix == ".tsv" else ",")
        elif suffix == ".json" and content.lstrip()[:1] in ("[", "{"):
            columns = _read_json_document(path, content)
        else:
            columns = _records_to_columns(_read_json_lines(path, content))
        text_name, label_name = pick_columns(list(columns), text_column, label_column, source)
    if not columns[text_name]:
        raise DataError(f"data file {path} has no rows; it needs at least one example")
    return make_raw_split(columns[text_name], columns[label_name], source, positive_threshold)


def make_raw_split(
    texts: list[Any], labels: list[Any], source: str, positive_threshold: float | None = None
) -> RawSplit:
    """A RawSplit from raw column values, labels made canonical (or thresholded)."""
    if positive_threshold is None:
        keys = label_keys(labels, source)
    else:
        keys = threshold_labels(labels, positive_threshold, source)
    return RawSplit(texts=texts, labels=keys, source=source)


def pick_columns(
    columns: list[str], text_column: str | None, label_column: str | None, source: str
) -> tuple[str, str]:
    """The (text, label) column names: as requested, else auto-detected."""
    text_name = pick_column(columns, text_column, TEXT_COLUMN_NAMES, "text", source)
    label_name = pick_column(columns, label_column, LABEL_COLUMN_NAMES, "label", source)
    if text_name == label_name:
        raise DataError(
            f"{source}: the text and label columns are both {text_name!r}; "
            "pass different --text-column and --label-column"
        )
    return text_name, label_name


def pick_column(
    columns: list[str], requested: str | None, candidates: tuple[str, ...], kind: str, source: str
) -> str:
    """The requested column, or the first well-known name present; DataError listing the columns."""
    listed = ", ".join(repr(c) for c in columns) or "(none)"
    flag = f"--{kind}-column"
    if requested is not None:
        if requested in columns:
            return requested
        raise DataError(
            f"{source} has no column {requested!r} (columns: {listed}); "
            f"pass {flag} with one of them"
        )
    by_lower = {c.lower(): c for c in reversed(columns)}  # reversed: the first spelling wins
    for name in candidates:
        if name in by_lower:
            return by_lower[name]
    raise DataError(
        f"{source} has no {kind} column named {'/'.join(candidates)} (columns: {listed}); "
        f"pass {flag} NAME"
    )


# ---------------------------------------------------------------------------------------------
# Labels


def label_key(value: Any) -> str | None:
    """Canonical string for one raw label: integers (1, 1.0, "1") all become "1"; None if missing.

    Raises ValueError for a non-integer number, which only makes sense as a rating.
    """
    if value is None:
        return None
    if isinstance(value, bool):  # before the integers: bool is a subclass of int
        return str(value).lower()
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
        if _INTEGER.fullmatch(value):
            return str(int(value))
        if not _NUMBER.fullmatch(value):
            return value
        value = float(value)
    if hasattr(value, "is_integer"):  # float or numpy floating
        if math.isnan(value):
            return None
        if not value.is_integer():
            raise ValueError(value)
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return str(value)


def label_keys(values: list[Any], source: str) -> list[str | None]:
    """label_key for a whole column, with a DataError that suggests --positive-threshold."""
    try:
        return [label_key(v) for v in values]
    except ValueError as error:
        raise DataError(
            f"{source}: label {error} is not a whole number; for star ratings pass "
            "--positive-threshold T (ratings >= T are positive)"
        ) from None


def threshold_labels(values: list[Any], threshold: float, source: str) -> list[str | None]:
    """Ratings to "negative"/"positive": a rating >= threshold is positive."""
    keys: list[str | None] = []
    for row, value in enumerate(values, start=1):
        if value is None or (isinstance(value, str) and not value.strip()):
            keys.append(None)
            continue
        try:
            rating = float(value)
        except (TypeError, ValueError):
            raise DataError(
                f"{source}: label {value!r} (row {row}) is not a number; --positive-threshold "
                "needs numeric ratings, or drop it to use the labels as class names"
            ) from None
        if math.isnan(rating):
            keys.append(None)
        else:
            keys.append("positive" if rating >= threshold else "negative")
    return keys


def polarity(name: str) -> str | None:
    """The side ("negative" or "positive") of a recognised sentiment label name, else None."""
    lowered = name.lower()
    if lowered in NEGATIVE_NAMES:
        return "negative"
    if lowered in POSITIVE_NAMES:
        return "positive"
    return None


def infer_label_names(keys: set[str]) -> list[str]:
    """Class names in id order: integers numerically, a negative/positive pair in that order,
    any other set of names sorted (case-insensitively)."""
    if all(_INTEGER.fullmatch(k) for k in keys):
        return sorted(keys, key=int)
    names = sorted(keys, key=lambda k: (k.lower(), k))
    if len(names) == 2 and [polarity(n) for n in names] == ["positive", "negative"]:
        names.reverse()
    return names


# ---------------------------------------------------------------------------------------------
# Formats


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        content = data.decode("utf-8-sig")  # -sig: drop the byte-order mark that Excel writes
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(
            f"data file {path} is not valid UTF-8 (line {line}, byte {error.start}); "
            "re-save it with UTF-8 encoding"
        ) from None
    if not content.strip():
        raise DataError(f"data file {path} is empty; it needs a text and a label for each example")
    return content


def _read_delimited(path: Path, content: str, delimiter: str) -> dict[str, list[Any]]:
    """CSV/TSV with a header row; quoting as Python's csv module and pandas write it."""
    csv.field_size_limit(2**31 - 1)  # the default (128 KiB) is shorter than some reviews
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    rows: list[list[str]] = []
    try:
        header = next(row for row in reader if row)  # content is not blank: a header exists
        for row in reader:
            if not row:
                continue  # a blank line
            if len(row) != len(header):
                raise DataError(
                    f"data file {path} line {reader.line_num} has {len(row)} fields but the "
                    f"header has {len(header)}; quote fields that contain {_delimiter_name(path)}"
                )
            rows.append(row)
    except csv.Error as error:
        raise DataError(
            f"data file {path} is not valid {_kind(path)} near line {reader.line_num}: "
            f"{one_line(error)}"
        ) from None
    # An empty field is a missing value; any other field stays text ("NA" is a fine review).
    return {
        name.strip(): [row[i] if row[i] != "" else None for row in rows]
        for i, name in enumerate(header)
    }


def _delimiter_name(path: Path) -> str:
    return "tabs" if path.suffix.lower() == ".tsv" else "commas"


def _read_json_lines(path: Path, content: str) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(
                f"data file {path} line {number} is not valid JSON ({error.msg}); "
                "each line must be one JSON object"
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"data file {path} line {number} is not a JSON object; "
                'each line must look like {"text": ..., "label": ...}'
            )
        records.append(record)
    return records


def _read_json_document(path: Path, content: str) -> dict[str, list[Any]]:
    """A .json file: an array of records, an object of columns, or (failing those) JSON lines."""
    try:
        document = json.loads(content)
    except json.JSONDecodeError:
        return _records_to_columns(_read_json_lines(path, content))
    if isinstance(document, list) and all(isinstance(r, dict) for r in document):
        return _records_to_columns(document)
    if isinstance(document, dict):
        if document and all(isinstance(v, list) for v in document.values()):
            if len({len(v) for v in document.values()}) > 1:
                raise DataError(f"data file {path}: the column lists have different lengths")
            return {str(k): v for k, v in document.items()}
        return _records_to_columns([document])  # a one-line JSON lines file
    raise DataError(
        f"data file {path} must hold an array of objects, an object of column lists, "
        "or one JSON object per line"
    )


def _records_to_columns(records: list[dict[str, Any]]) -> dict[str, list[Any]]:
    names: dict[str, None] = {}  # ordered set: columns in order of first appearance
    for record in records:
        names.update(dict.fromkeys(record))
    return {name: [r.get(name) for r in records] for name in names}


def _parquet_column_names(path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"data file {path} is not valid parquet: {one_line(error)}") from None


def _read_parquet(path: Path, names: list[str]) -> dict[str, list[Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=names)
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"data file {path} is not valid parquet: {one_line(error)}") from None
    return {name: table.column(name).to_pylist() for name in names}


def _kind(path: Path) -> str:
    return "TSV" if path.suffix.lower() == ".tsv" else "CSV"
