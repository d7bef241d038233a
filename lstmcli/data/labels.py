"""Raw labels to canonical label keys, and the order of the class names they make.

Keys are strings ("0", "pos", "negative"), so that the integers of a parquet file and the same
integers in a CSV file compare equal. Whole columns are mapped through their distinct values
(:func:`lstmcli.data.columns.map_values`): a rule runs once per distinct label, never per row.
pyarrow is imported inside the column functions, so that listing datasets stays quick.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from lstmcli.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

    from lstmcli.data.columns import Column

# A two-class label set made of one word from each side is ordered [negative, positive].
NEGATIVE_NAMES = frozenset({"negative", "neg", "bad", "-", "0"})
POSITIVE_NAMES = frozenset({"positive", "pos", "good", "+", "1"})

_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


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


def label_keys(values: Column | list[Any], source: str) -> pa.ChunkedArray:
    """label_key for a whole column (an Arrow string column of keys, null where missing), with a
    DataError that suggests --positive-threshold for fractional labels."""
    from lstmcli.data.columns import map_values

    def key(value: Any) -> str | None:
        try:
            return label_key(value)
        except ValueError as error:  # ValueError(3.5): the number as label_key read it
            raise _BadLabel(error.args[0]) from None

    try:
        return map_values(values, key)
    except _BadLabel as bad:  # distinct values go in order of appearance: the first such row
        raise DataError(
            f"{source}: label {bad.value} is not a whole number; for star ratings pass "
            "--positive-threshold T (ratings >= T are positive)"
        ) from None


class _BadLabel(Exception):
    """A label value a rule cannot read (kept apart from Arrow's own ValueErrors)."""

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self.value = value


def threshold_labels(values: Column | list[Any], threshold: float, source: str) -> pa.ChunkedArray:
    """Ratings to "negative"/"positive" keys: a rating >= threshold is positive."""
    from lstmcli.data.columns import map_values

    def key(value: Any) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        try:
            rating = float(value)
        except (TypeError, ValueError):
            raise _BadLabel(value) from None
        if math.isnan(rating):
            return None
        return "positive" if rating >= threshold else "negative"

    try:
        return map_values(values, key)
    except _BadLabel as bad:
        raise DataError(
            f"{source}: label {bad.value!r} (row {_first_row(values, bad.value)}) is not a "
            "number; --positive-threshold needs numeric ratings, or drop it to use the labels as "
            "class names"
        ) from None


def ids_to_names(keys: Column, names: tuple[str, ...] | list[str]) -> pa.ChunkedArray:
    """Integer label keys become those names ("1" -> names[1]); any other key stays as it is."""
    from lstmcli.data.columns import map_values

    lookup = {str(i): name for i, name in enumerate(names)}
    return map_values(keys, lambda key: lookup.get(key, key) if key is not None else None)


def distinct_keys(keys: Column) -> list[str]:
    """The distinct non-missing keys of a column, in order of first appearance."""
    import pyarrow.compute as pc

    return [key for key in pc.unique(keys).to_pylist() if key is not None]


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


def _first_row(values: Column | list[Any], value: Any) -> int:
    """The 1-based row where `value` first occurs (for messages; only on the error path)."""
    if isinstance(values, list):
        return next(row for row, v in enumerate(values, start=1)
                    if type(v) is type(value) and v == value)
    import pyarrow as pa
    import pyarrow.compute as pc

    from lstmcli.data.columns import plain

    try:
        return int(pc.index(plain(values), value).as_py()) + 1
    except pa.ArrowException:  # a type Arrow cannot search (lists): look row by row
        return next(row for row, v in enumerate(plain(values).to_pylist(), start=1) if v == value)
