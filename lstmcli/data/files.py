"""Reading one local data file (CSV, TSV, JSON lines, JSON, parquet) as a text and a label column,
or (for `lstm pretrain`) its text column alone, which a plain-text file also gives: one document
per line.

pyarrow's own readers parse the files (the text formats in :mod:`lstmcli.data.textfiles`), and
only the text and label columns are kept, so a corpus of millions of rows never becomes Python
objects. Every problem a user can cause raises :class:`DataError` with a one-line message that
names the file, the line where there is one, and the fix. Labels leave this module as canonical
keys (:mod:`lstmcli.data.labels`). pyarrow is imported where it is used: listing datasets stays
quick.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmcli.data.labels import (  # noqa: F401  (re-exported: their home used to be here)
    NEGATIVE_NAMES,
    POSITIVE_NAMES,
    infer_label_names,
    label_key,
    label_keys,
    polarity,
    threshold_labels,
)
from lstmcli.data.textfiles import (
    Pick,
    check_text,
    is_json_document,
    one_line,
    read_delimited,
    read_json_document,
    read_json_lines,
)
from lstmcli.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

    from lstmcli.data.columns import Column

SUPPORTED_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
TEXT_SUFFIXES = (".txt", *SUPPORTED_SUFFIXES)  # what read_texts reads
# Auto-detected column names, in order of preference (compared case-insensitively).
TEXT_COLUMN_NAMES = ("text", "sentence", "review", "content")
LABEL_COLUMN_NAMES = ("label", "sentiment", "rating", "stars")
_PARQUET_BATCH = 8192  # rows decoded at once; each batch becomes one chunk of the column
_LINES_BATCH = 65536  # lines of a plain-text file per chunk of its column


@dataclass
class RawSplit:
    """One split as read: texts (Arrow strings) and canonical label keys, null where missing."""

    texts: pa.ChunkedArray
    labels: pa.ChunkedArray
    source: str  # for messages: a file path or "imdb train (hub)"


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

    def pick(names: list[str]) -> tuple[str, str]:
        return pick_columns(names, text_column, label_column, source)

    if suffix == ".parquet":
        texts, labels = _read_parquet(path, pick)
    else:
        check = check_text(path, json_lines=suffix in (".json", ".jsonl"))
        if suffix in (".csv", ".tsv"):
            texts, labels = read_delimited(path, pick)
        elif suffix == ".json" and is_json_document(path, check.first):
            texts, labels = read_json_document(path, pick)
        else:
            texts, labels = read_json_lines(path, pick, check)
    if len(texts) == 0:
        raise DataError(f"data file {path} has no rows; it needs at least one example")
    return make_raw_split(texts, labels, source, positive_threshold)


def read_texts(path: Path, text_column: str | None = None) -> pa.ChunkedArray:
    """The texts of one local file, labels (if any) never read: a .txt file's non-blank lines, or
    the text column of a data file. Missing and blank texts are left for the caller to drop."""
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise DataError(f"text file {path} has an unsupported extension {path.suffix or '(none)'!r}"
                        f"; use .txt (one document per line) or one of: "
                        f"{', '.join(SUPPORTED_SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"text file {path} not found; check the path" if not path.exists()
                        else f"{path} is not a file; pass a text or data file")
    if path.stat().st_size == 0:
        raise DataError(f"text file {path} is empty; it needs at least one document")
    source = str(path)

    def pick(names: list[str]) -> tuple[str, str]:  # the text column twice: no label is read
        text = pick_column(names, text_column, TEXT_COLUMN_NAMES, "text", source)
        return text, text

    if suffix == ".txt":
        texts = _read_lines(path)
    elif suffix == ".parquet":
        texts, _ = _read_parquet(path, pick)
    else:
        check = check_text(path, json_lines=suffix in (".json", ".jsonl"))
        if suffix in (".csv", ".tsv"):
            texts, _ = read_delimited(path, pick)
        elif suffix == ".json" and is_json_document(path, check.first):
            texts, _ = read_json_document(path, pick)
        else:
            texts, _ = read_json_lines(path, pick, check)
    from lstmcli.data.columns import as_text

    return as_text(texts)


def _read_lines(path: Path) -> pa.ChunkedArray:
    """The non-blank lines of a UTF-8 text file, streaming (a batch of lines at a time)."""
    import pyarrow as pa

    chunks, lines, number = [], [], 0
    with path.open(encoding="utf-8-sig") as handle:
        try:
            for number, line in enumerate(handle, start=1):  # noqa: B007  (read in except)
                if line.strip():
                    lines.append(line.rstrip("\r\n"))
                if len(lines) == _LINES_BATCH:
                    chunks.append(pa.array(lines, type=pa.string()))
                    lines = []
        except UnicodeDecodeError:
            # Decoded a block at a time: the bad byte is at this line or a little after it.
            raise DataError(f"text file {path} is not valid UTF-8 (near line {number + 1}); "
                            "re-save it with UTF-8 encoding") from None
    chunks.append(pa.array(lines, type=pa.string()))
    if not sum(map(len, chunks)):
        raise DataError(f"text file {path} has only blank lines; it needs at least one document")
    return pa.chunked_array(chunks, type=pa.string())


def make_raw_split(
    texts: Column | list[Any], labels: Column | list[Any], source: str,
    positive_threshold: float | None = None,
) -> RawSplit:
    """A RawSplit from raw columns: texts as strings, labels made canonical (or thresholded)."""
    from lstmcli.data.columns import as_text

    if positive_threshold is None:
        keys = label_keys(labels, source)
    else:
        keys = threshold_labels(labels, positive_threshold, source)
    return RawSplit(texts=as_text(texts), labels=keys, source=source)


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
# Parquet


def _read_parquet(path: Path, pick: Pick) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """The two columns only, the others never read from disk.

    Read in batches: decoding a whole row group at once (read_table) holds about twice the
    memory at its peak, and read_table's import of pyarrow.dataset alone takes half a second."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as parquet:
            text_name, label_name = pick(list(parquet.schema_arrow.names))
            columns = [text_name, label_name]
            batches = list(parquet.iter_batches(batch_size=_PARQUET_BATCH, columns=columns))
            table = pa.Table.from_batches(batches) if batches else parquet.read(columns=columns)
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"data file {path} is not valid parquet: {one_line(error)}") from None
    return table.column(text_name), table.column(label_name)
