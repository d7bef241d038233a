"""Columns of data kept in Arrow: the texts of a split, and value-by-value mapping of a column.

A corpus of millions of reviews stays one Arrow string array (no Python object per text);
:class:`TextColumn` hands out Python strings a slice at a time, which is how the tokenizer and the
encode cache read texts. ``map_values`` applies a Python rule to each *distinct* value of a column
(label rules, number-to-text), so a million rows with two labels cost two calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Column = pa.Array | pa.ChunkedArray
BATCH = 65536  # texts converted to Python at once when iterating


class TextColumn(Sequence[str]):
    """A read-only sequence of strings over an Arrow string array, converted lazily.

    ``column[i]`` is one str, ``column[a:b]`` a list of just those strings, iteration converts
    BATCH strings at a time. ``take`` selects rows without copying any text: the column keeps the
    row numbers and reads through them, so carving and capping a split cost an index array.
    """

    __slots__ = ("_rows", "_values")

    def __init__(self, values: Column, rows: np.ndarray | None = None) -> None:
        if isinstance(values, pa.Array):
            values = pa.chunked_array([values])
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            raise TypeError(f"a TextColumn holds strings, not {values.type}")
        self._values = values
        self._rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        # Missing values may sit in rows the column does not select (a cleaned split's).
        if values.null_count and _selects_missing(values, self._rows):
            raise ValueError("a TextColumn holds no missing values; drop them first")

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> TextColumn:
        """A column of Python strings (a list, say); an existing TextColumn is returned as is."""
        if isinstance(texts, TextColumn):
            return texts
        values = pa.array(list(texts), type=pa.string())
        return cls(values)

    def __len__(self) -> int:
        return len(self._values) if self._rows is None else len(self._rows)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return self._arrow(np.arange(start, stop, step)).to_pylist()
            return self._arrow_slice(start, max(stop - start, 0)).to_pylist()
        position = range(len(self))[index]  # IndexError and negative indices as a list has them
        row = position if self._rows is None else int(self._rows[position])
        return self._values[row].as_py()

    def __iter__(self) -> Iterator[str]:
        for batch in self.batches():
            yield from batch

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TextColumn):
            return len(self) == len(other) and all(
                a == b for a, b in zip(self.batches(), other.batches(), strict=True))
        if isinstance(other, list | tuple):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to a list, so not hashable

    def __repr__(self) -> str:
        shown = ", ".join(repr(text[:30]) for text in self[:3])
        return f"TextColumn([{shown}{', ...' if len(self) > 3 else ''}], {len(self):,} texts)"

    def batches(self, size: int = BATCH) -> Iterator[list[str]]:
        """The texts as lists of at most `size` Python strings, in order."""
        for batch in self.arrow_batches(size):
            yield batch.to_pylist()

    def arrow_batches(self, size: int = BATCH) -> Iterator[pa.Array]:
        """The texts as contiguous Arrow arrays of at most `size` strings, in order."""
        for start in range(0, len(self), size):
            yield self._arrow_slice(start, min(size, len(self) - start)).combine_chunks()

    def take(self, indices: Sequence[int] | np.ndarray) -> TextColumn:
        """The texts at `indices`, in that order (no text is copied)."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < -len(self) or indices.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} texts")
        indices = np.where(indices < 0, indices + len(self), indices)
        return TextColumn(self._values, indices if self._rows is None else self._rows[indices])

    def to_arrow(self) -> pa.ChunkedArray:
        """The texts as one Arrow column (a copy when the column selects rows)."""
        return self._values if self._rows is None else self._values.take(self._rows)

    def _arrow_slice(self, start: int, length: int) -> pa.ChunkedArray:
        if self._rows is None:
            return self._values.slice(start, length)
        return self._values.take(self._rows[start : start + length])

    def _arrow(self, positions: np.ndarray) -> pa.ChunkedArray:
        rows = positions if self._rows is None else self._rows[positions]
        return self._values.take(rows)


def _selects_missing(values: pa.ChunkedArray, rows: np.ndarray | None) -> bool:
    missing = pc.is_null(values)
    return bool(pc.any(missing if rows is None else missing.take(rows)).as_py())


def map_values(values: Column | list[Any], rule: Callable[[Any], str | None]) -> pa.ChunkedArray:
    """rule(value) for every value, as an Arrow string column (null where rule gives None).

    Arrow columns are mapped through their distinct values (first-appearance order, so the first
    value that makes `rule` raise is the first such row); Python lists of mixed types (JSON can
    hold 4 and "4.5" in one column) value by value, since Arrow would coerce them.
    """
    if isinstance(values, list):
        arrow = arrow_or_none(values)
        if arrow is None:
            return pa.chunked_array([pa.array([rule(v) for v in values], type=pa.string())])
        values = arrow
    values = plain(values)
    try:
        distinct = pc.unique(values)
    except pa.ArrowNotImplementedError:  # lists, structs: no hashing kernel; rare and odd data
        return map_values_by_row(values, rule)
    mapped = pa.array([rule(v) for v in distinct.to_pylist()], type=pa.string())
    keys = pc.take(mapped, pc.index_in(values, value_set=distinct))
    return keys if isinstance(keys, pa.ChunkedArray) else pa.chunked_array([keys])


def map_values_by_row(values: Column, rule: Callable[[Any], str | None]) -> pa.ChunkedArray:
    """map_values one row at a time, for the types Arrow cannot hash."""
    values = pa.chunked_array([values]) if isinstance(values, pa.Array) else values
    chunks = [pa.array([rule(v) for v in chunk.to_pylist()], type=pa.string())
              for chunk in values.chunks]
    return pa.chunked_array(chunks, type=pa.string())


def arrow_or_none(values: list[Any]) -> pa.ChunkedArray | None:
    """The list as an Arrow column when its values share one type; None for a mixed list.

    Arrow would turn [1.5, True] into [1.5, 1.0], losing the label "true"; ints mixed with
    floats are fine (the label rules read 1 and 1.0 alike).
    """
    kinds = {type(v) for v in values if v is not None}
    if len(kinds) > 1 and kinds != {int, float}:
        return None
    try:
        return pa.chunked_array([pa.array(values)])
    except (pa.ArrowException, OverflowError):  # an integer past int64, say
        return None


def plain(values: Column) -> pa.ChunkedArray:
    """A chunked column, dictionary-encoded values (a pandas category) decoded."""
    if isinstance(values, pa.Array):
        values = pa.chunked_array([values])
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    return values


def as_text(values: Column | list[Any]) -> pa.ChunkedArray:
    """A text column as Arrow strings; numbers where text was expected read as text (str(4.5))."""
    if isinstance(values, list):
        texts = [v if v is None or isinstance(v, str) else str(v) for v in values]
        return pa.chunked_array([pa.array(texts, type=pa.string())])
    values = plain(values)
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return values
    # Arrow's cast writes 1.0 as "1" where Python writes "1.0": str() keeps today's texts.
    return map_values(values, lambda v: None if v is None else str(v))
