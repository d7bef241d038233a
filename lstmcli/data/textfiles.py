"""Parsing the text formats (CSV, TSV, JSON lines, JSON) with pyarrow, naming the line of a problem.

Arrow's readers parse the files and keep only the text and label columns. Their error messages
carry no line numbers, so when a reader fails, a cheap streaming pass over the file (only then)
finds the line to name, with the same messages as Python's own parsers would give. Before Arrow
reads a file, a streaming check makes sure it is UTF-8 and not blank.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from lstmcli.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

    from lstmcli.data.columns import Column

# Arrow parses a file in blocks, and a row longer than a block is an error: 16 MiB is longer
# than any review, and only blocks being parsed are held at once.
_BLOCK = 16 << 20
_CHUNK = 1 << 20  # bytes per step of the streaming checks

Pick = Callable[[list[str]], tuple[str, str]]  # column names -> (text, label) names


def one_line(error: object) -> str:
    """A library's error message squeezed onto one line, for DataError messages."""
    return " ".join(str(error).split())


class TextCheck(NamedTuple):
    """What the streaming check of a text file saw."""

    first: str  # the first non-blank character
    lines: int  # how many lines the file has
    null_line: bool  # a line starts with a bare `null` (JSON lines only; see read_json_lines)


def check_text(path: Path, json_lines: bool = False) -> TextCheck:
    """Check a text file as a stream, a chunk at a time (never held whole): DataError if it is
    not UTF-8, naming the line, or is blank. A byte-order mark (Excel writes one) is no content.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    first, decoded, null_line, last = "", False, False, b""
    offset = lines = 0  # bytes and newlines before the current chunk
    carry = b""  # the end of the last chunk from its last line break, for a `null` cut in two
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            pending = len(decoder.getstate()[0])  # bytes of a character cut by the last chunk
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:
                # error.object is the pending bytes and this chunk; a newline is never pending.
                line = lines + error.object.count(b"\n", 0, error.start) + 1
                raise DataError(
                    f"data file {path} is not valid UTF-8 (line {line}, byte "
                    f"{offset - pending + error.start}); re-save it with UTF-8 encoding"
                ) from None
            if not first and text:
                if not decoded:  # the file's first character: a byte-order mark is no content
                    text, decoded = text.removeprefix("\ufeff"), True
                first = text.lstrip()[:1]
            if json_lines and not null_line:
                window = carry + chunk
                null_line = b"null" in window and _starts_a_line_with_null(window)
                # A line break and what follows it (bounded: a line of text cannot hide one).
                carry = window[max(window.rfind(b"\n"), window.rfind(b"\r"), len(window) - 64):]
            if not chunk:
                break
            offset += len(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if not first:
        raise DataError(f"data file {path} is empty; it needs a text and a label for each example")
    return TextCheck(first, lines + (last not in (b"\n", b"")), null_line)


_NULL_AFTER_LF = re.compile(rb"\n[ \t\r]*null")  # a literal first byte: a fast search
_NULL_AFTER_CR = re.compile(rb"\r[ \t]*null")


def _starts_a_line_with_null(data: bytes) -> bool:
    return bool(_NULL_AFTER_LF.search(data) or (b"\r" in data and _NULL_AFTER_CR.search(data)))


def read_delimited(path: Path, pick: Pick) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """CSV/TSV with a header row; quoting as Python's csv module and pandas write it."""
    import pyarrow as pa
    import pyarrow.csv as pv

    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    header = _header(path, delimiter)
    by_name: dict[str, str] = {}
    for raw in header:
        by_name.setdefault(raw.strip(), raw)  # names are compared stripped: " label" is "label"
    wanted = [by_name[name] for name in pick(list(by_name))]
    convert = pv.ConvertOptions(
        include_columns=wanted,
        # Every value as text: the label rules, not Arrow's type guess, read "01" or "4.5".
        column_types=dict.fromkeys(wanted, pa.string()),
        # An empty field is a missing value; any other field stays text ("NA" is a fine review).
        null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=True,
        check_utf8=False,  # check_text has checked the whole file
    )
    try:
        table = pv.read_csv(
            path,
            read_options=pv.ReadOptions(block_size=_BLOCK),
            parse_options=pv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=convert,
        )
    except pa.ArrowException as error:
        _find_bad_row(path, delimiter)  # raises the line-numbered error where Python sees one
        raise DataError(
            f"data file {path} is not valid {_kind(path)}: {one_line(error)}"
        ) from None
    return table.column(0), table.column(1)


def _csv_rows(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank row, by Python's csv module, streaming."""
    csv.field_size_limit(2**31 - 1)  # the default (128 KiB) is shorter than some reviews
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            for row in reader:
                if row:  # not a blank line
                    yield reader.line_num, row
        except csv.Error as error:
            raise DataError(
                f"data file {path} is not valid {_kind(path)} near line {reader.line_num}: "
                f"{one_line(error)}"
            ) from None


def _header(path: Path, delimiter: str) -> list[str]:
    with closing(_csv_rows(path, delimiter)) as rows:
        return next(rows)[1]  # the file is not blank (check_text): a header exists


def _find_bad_row(path: Path, delimiter: str) -> None:
    """Raise the line-numbered error for the first row whose field count differs from the
    header's (or that Python cannot parse); return if there is none."""
    with closing(_csv_rows(path, delimiter)) as rows:
        _, header = next(rows)
        for line, row in rows:
            if len(row) != len(header):
                raise DataError(
                    f"data file {path} line {line} has {len(row)} fields but the header has "
                    f"{len(header)}; quote fields that contain {_delimiter_name(path)}"
                )


def _delimiter_name(path: Path) -> str:
    return "tabs" if path.suffix.lower() == ".tsv" else "commas"


def _kind(path: Path) -> str:
    return "TSV" if path.suffix.lower() == ".tsv" else "CSV"


# ---------------------------------------------------------------------------------------------
# JSON


def read_json_lines(
    path: Path, pick: Pick, check: TextCheck
) -> tuple[Column | list[Any], Column | list[Any]]:
    """One JSON object per line, read by Arrow; Python's json module where Arrow cannot."""
    import pyarrow as pa
    import pyarrow.json as pj

    # A `null` line crashes Arrow's reader (pyarrow 26) where it starts a block, and Arrow reads
    # one elsewhere as a row; a first line that is no object is an error. Python names the line.
    if check.first != "{" or check.null_line:
        return _json_lines_by_python(path, pick(_json_lines_names(path)))
    try:
        table = pj.read_json(path, read_options=pj.ReadOptions(block_size=_BLOCK))
    except pa.ArrowException:
        # A bad line (named by the pass below), or good lines Arrow refuses: a column whose
        # type changes from row to row (4, then "4.5"), which the label rules read fine.
        return _json_lines_by_python(path, pick(_json_lines_names(path)))
    if table.num_rows > check.lines:  # Arrow also reads two objects on one line: an error
        _json_lines_names(path)
    text_name, label_name = pick(table.column_names)
    texts, labels = table.column(text_name), table.column(label_name)
    if not (_plain_type(texts.type) and _plain_type(labels.type)):
        # Arrow reads date-like strings as timestamps: read the values as they are written.
        return _json_lines_by_python(path, (text_name, label_name))
    return texts, labels


def _plain_type(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return any(check(kind) for check in (pa.types.is_string, pa.types.is_large_string,
                                         pa.types.is_integer, pa.types.is_floating,
                                         pa.types.is_boolean, pa.types.is_null))


def _json_records(path: Path) -> Iterator[dict[str, Any]]:
    """The objects of a JSON lines file, streaming; DataError naming the first bad line."""
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
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
            yield record


def _json_lines_names(path: Path) -> list[str]:
    names: dict[str, None] = {}  # ordered set: columns in order of first appearance
    for record in _json_records(path):
        names.update(dict.fromkeys(record))
    return list(names)


def _json_lines_by_python(path: Path, names: tuple[str, str]) -> tuple[list[Any], list[Any]]:
    texts, labels = [], []
    for record in _json_records(path):
        texts.append(record.get(names[0]))
        labels.append(record.get(names[1]))
    return texts, labels


def is_json_document(path: Path, first: str) -> bool:
    """Whether a .json file is one JSON document rather than JSON lines.

    "[" starts a document; "{" starts one if its first line is not a whole object (a document
    over several lines) or that line is all there is (a one-line document)."""
    if first != "{":
        return first == "["
    with path.open(encoding="utf-8-sig") as handle:
        lines = (line for line in handle if line.strip())
        try:
            json.loads(next(lines))
        except json.JSONDecodeError:
            return True
        return next(lines, None) is None


def read_json_document(path: Path, pick: Pick) -> tuple[list[Any], list[Any]]:
    """An array of records or an object of column lists (a document is small: json does it)."""
    with path.open(encoding="utf-8-sig") as handle:
        try:
            document = json.load(handle)
        except json.JSONDecodeError:  # not one document: JSON lines, or a line to name
            return _json_lines_by_python(path, pick(_json_lines_names(path)))
    if isinstance(document, list) and all(isinstance(r, dict) for r in document):
        records = document
    elif isinstance(document, dict):
        if document and all(isinstance(v, list) for v in document.values()):
            if len({len(v) for v in document.values()}) > 1:
                raise DataError(f"data file {path}: the column lists have different lengths")
            columns = {str(k): v for k, v in document.items()}
            text_name, label_name = pick(list(columns))
            return columns[text_name], columns[label_name]
        records = [document]  # a one-line JSON lines file
    else:
        raise DataError(
            f"data file {path} must hold an array of objects, an object of column lists, "
            "or one JSON object per line"
        )
    names: dict[str, None] = {}  # ordered set: columns in order of first appearance
    for record in records:
        names.update(dict.fromkeys(record))
    text_name, label_name = pick(list(names))
    return [r.get(text_name) for r in records], [r.get(label_name) for r in records]
