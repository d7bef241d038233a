"""Word-level tokenizer on the Hugging Face `tokenizers` library, plus an on-disk cache of ids.

Text is normalised (HTML line breaks as spaces, NFKC, lowercase) and split on whitespace and
punctuation (punctuation runs stay as tokens: "!!!" carries sentiment). The vocabulary comes from
the training texts only; [PAD] is id 0 and [UNK] id 1. Kept free of torch so that prediction
can run without it.

The saved tokenizer.json is the library's full pipeline. Training and bulk encoding take exact
shortcuts through it (normalising in Python, tokenizing each distinct chunk of text once), several
times faster than the library on its own; the tests check both against the library.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Regex, normalizers, pre_tokenizers
from tokenizers import Tokenizer as Backend
from tokenizers.models import WordLevel

from lstmcli.atomic import atomic_write
from lstmcli.config import TRUNCATION_CHOICES
from lstmcli.errors import ConfigError, DataError

PAD = "[PAD]"
UNK = "[UNK]"
CACHE_ENV = "LSTM_CACHE_DIR"
_CACHE_VERSION = b"lstmcli-encoded-v1"
_LINE_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_BATCH = 65536  # texts encoded at once; bounds the memory of a large corpus
_FEW = 64  # fewer texts than this go straight through the library (no pyarrow import)
# The Whitespace pre-tokenizer's pattern (\w+|[^\w\s]+); on ASCII, Python's classes are the same.
_ASCII_WORDS = re.compile(r"\w+|[^\w\s]+", re.ASCII).findall


class Tokenizer:
    """Texts to int64 id arrays of 1..max_len tokens; ids index the vocabulary."""

    PAD_ID = 0
    UNK_ID = 1

    def __init__(self, backend: Backend) -> None:
        vocab = backend.get_vocab()
        if vocab.get(PAD) != self.PAD_ID or vocab.get(UNK) != self.UNK_ID:
            raise DataError(
                f"tokenizer vocabulary must map {PAD} to {self.PAD_ID} and {UNK} to "
                f"{self.UNK_ID}; retrain the model with lstmcli"
            )
        # The JSON is the tokenizer's identity (for the encode cache) and what save() writes.
        self._json = backend.to_str()
        # Encoding runs on a copy without the normaliser: normalize() does the same job first.
        self._fast = Backend.from_str(self._json)
        self._fast.normalizer = None
        self._vocab = self._fast.get_vocab()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_freq: int) -> Tokenizer:
        """Learn the vocabulary: the most frequent words seen at least min_freq times, up to
        vocab_size entries including [PAD] and [UNK]."""
        if vocab_size < 3:
            raise ConfigError(
                f"vocab_size must be at least 3 ([PAD], [UNK] and a word), got {vocab_size}"
            )
        if min_freq < 1:
            raise ConfigError(f"min_freq must be >= 1, got {min_freq}")
        counts = _token_counts(texts)
        # WordLevelTrainer's choice (tests check it): most frequent first, ties alphabetical.
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        words = [word for word, count in ranked if count >= min_freq][: vocab_size - 2]
        vocab = {PAD: cls.PAD_ID, UNK: cls.UNK_ID}
        vocab.update((word, i) for i, word in enumerate(words, start=2))
        return cls(_backend(WordLevel(vocab, unk_token=UNK)))

    def encode(
        self, texts: Sequence[str], max_len: int, truncation: str = "head"
    ) -> list[np.ndarray]:
        """Id arrays of at most max_len ids, a longer text cut as :func:`truncate` says; a text
        without tokens becomes [UNK_ID]."""
        if max_len < 1:
            raise ConfigError(f"max_len must be > 0, got {max_len}")
        _check_truncation(truncation)
        ids: list[np.ndarray] = []
        for start in range(0, len(texts), _BATCH):
            ids.extend(self._encode_batch(texts[start : start + _BATCH], max_len, truncation))
        return ids

    def _encode_batch(
        self, texts: Sequence[str], max_len: int, truncation: str
    ) -> list[np.ndarray]:
        """encode() for one batch, through the batch's distinct space-separated chunks.

        The library spends about a microsecond per token, so a corpus goes another way: no token
        spans a space, so a text's ids are its chunks' ids one after another, and a corpus has
        few distinct chunks ("movie", "film.", "it's"). Arrow splits and deduplicates, each
        distinct chunk is tokenized once, numpy stitches the ids back together.
        """
        # The library cuts at the head itself; other modes need every id first.
        limit = max_len if truncation == "head" else None
        if len(texts) < _FEW:
            unknown = [self.UNK_ID]
            rows = self._library_ids([normalize(text) for text in texts], limit)
            return [np.array(truncate(row, max_len, truncation) or unknown, dtype=np.int64)
                    for row in rows]
        import pyarrow as pa
        import pyarrow.compute as pc

        normalized = pa.array([normalize(text) for text in texts], type=pa.large_string())
        chunks = pc.split_pattern(normalized, " ")
        distinct = chunks.flatten().dictionary_encode()
        chunk_ids = self._chunk_ids(distinct.dictionary.to_pylist(), limit)
        sizes = np.fromiter(map(len, chunk_ids), dtype=np.int64, count=len(chunk_ids))
        pool = np.fromiter(itertools.chain.from_iterable(chunk_ids), np.int64, int(sizes.sum()))
        # Every chunk occurrence copies its chunk's ids out of the pool.
        which = distinct.indices.to_numpy()
        lengths = sizes[which]
        ends = np.cumsum(lengths)
        first = (np.cumsum(sizes) - sizes)[which]
        tokens = pool[np.arange(ends[-1]) + np.repeat(first - (ends - lengths), lengths)]
        chunk_offsets = chunks.offsets.to_numpy()
        bounds = np.concatenate([[0], ends])[chunk_offsets - chunk_offsets[0]]
        unknown = np.array([self.UNK_ID], dtype=np.int64)
        return [
            truncate(tokens[a:b], max_len, truncation) if b > a else unknown.copy()
            for a, b in itertools.pairwise(bounds.tolist())
        ]

    def _chunk_ids(self, chunks: list[str], max_len: int | None) -> list[list[int]]:
        """The ids of each space-free chunk: ASCII ones by the pre-tokenizer's own pattern, the
        rest by the library (its Unicode classes are not Python's)."""
        vocab = self._vocab
        ids: list[list[int]] = []
        unicode_rows: list[int] = []
        for row, chunk in enumerate(chunks):
            if chunk.isascii():
                ids.append([vocab.get(token, self.UNK_ID) for token in _ASCII_WORDS(chunk)])
            else:
                ids.append([])
                unicode_rows.append(row)
        library_ids = self._library_ids([chunks[row] for row in unicode_rows], max_len)
        for row, chunk_ids in zip(unicode_rows, library_ids, strict=True):
            ids[row] = chunk_ids
        return ids

    def _library_ids(self, texts: list[str], max_len: int | None) -> list[list[int]]:
        """Ids of normalised texts straight from the library, at most max_len each (None: all)."""
        if not texts:
            return []
        if max_len is None:
            self._fast.no_truncation()
        else:
            self._fast.enable_truncation(max_len)
        # encode_batch_fast (tokenizers >= 0.21) skips the character offsets nobody here reads.
        encode_batch = getattr(self._fast, "encode_batch_fast", self._fast.encode_batch)
        return [encoding.ids for encoding in encode_batch(texts)]

    def tokens(self, text: str) -> list[str]:
        """The words of one text as the vocabulary sees them (normalised), one per id of encode().

        Unknown words keep their own spelling here (their id is UNK_ID); a text with no words
        gives ["[UNK]"], matching encode()."""
        pieces = self._fast.pre_tokenizer.pre_tokenize_str(normalize(text))
        return [word for word, _ in pieces] or [UNK]

    @property
    def vocab_size(self) -> int:
        """Number of ids, [PAD] and [UNK] included."""
        return self._fast.get_vocab_size()

    def to_json(self) -> str:
        """The tokenizer in the `tokenizers` library's own JSON format."""
        return self._json

    def save(self, path: Path) -> None:
        """Write tokenizer.json atomically: a reader sees the old file or the new, never half."""
        data = self._json.encode("utf-8")
        atomic_write(Path(path), lambda handle: handle.write(data))

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        """Read a file written by save(); DataError if it is missing or not a tokenizer."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"tokenizer file {path} not found; the run directory is incomplete")
        try:
            backend = Backend.from_str(path.read_text(encoding="utf-8"))
        # The library raises plain Exception on any malformed JSON, so nothing narrower works.
        except Exception as error:
            message = " ".join(str(error).split())
            raise DataError(
                f"tokenizer file {path} is corrupt ({message}); retrain the model"
            ) from None
        ours = _backend(WordLevel({}, unk_token=UNK))
        if _pipeline(backend.to_str()) != _pipeline(ours.to_str()):
            # encode() relies on normalize() doing what the file's normaliser does.
            raise DataError(
                f"tokenizer file {path} was not written by lstmcli (its normaliser, "
                "pre-tokeniser or model differ); retrain the model with lstmcli"
            )
        return cls(backend)


def truncate(ids: Any, max_len: int, truncation: str = "head") -> Any:
    """The max_len ids (or words: a list or a 1-D array) that a longer sequence keeps: "head",
    the first; "tail", the last; "both", the first max_len // 2 and the last
    max_len - max_len // 2 (a long review often ends with its verdict)."""
    if len(ids) <= max_len or truncation == "head":
        return ids[:max_len]
    if truncation == "tail":
        return ids[len(ids) - max_len :]
    head, tail = ids[: max_len // 2], ids[len(ids) - (max_len - max_len // 2) :]
    return np.concatenate([head, tail]) if isinstance(ids, np.ndarray) else head + tail


def _check_truncation(truncation: str) -> None:
    if truncation not in TRUNCATION_CHOICES:
        raise ConfigError(f"unknown truncation {truncation!r}; choose one of: "
                          f"{', '.join(TRUNCATION_CHOICES)}")


def encode_cached(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    max_len: int,
    cache_dir: Path | None = None,
    truncation: str = "head",
) -> list[np.ndarray]:
    """tokenizer.encode(texts, max_len, truncation), reused between runs from an .npy file in the
    cache.

    The entry is keyed by the tokenizer's JSON, max_len, truncation and the texts (a list, or a
    TextColumn whose bytes are hashed straight from Arrow: the same key either way); cache_dir
    defaults to $LSTM_CACHE_DIR, else ~/.cache/lstmcli (entries go in its `tokens/` folder). A
    corrupt or unwritable cache is passed over silently: the cache only ever saves time.
    """
    if not texts:
        return []
    _check_truncation(truncation)
    key = _cache_key(tokenizer, texts, max_len, truncation)
    path = cache_root(cache_dir) / "tokens" / f"{key}.npy"
    cached = _read_cache(path, len(texts), max_len, tokenizer.vocab_size)
    if cached is not None:
        return cached
    ids = tokenizer.encode(texts, max_len, truncation)
    _write_cache(path, ids)
    return ids


def cache_root(cache_dir: Path | None = None) -> Path:
    """cache_dir, else $LSTM_CACHE_DIR, else ~/.cache/lstmcli."""
    if cache_dir is not None:
        return Path(cache_dir)
    from_env = os.environ.get(CACHE_ENV)
    return Path(from_env).expanduser() if from_env else Path.home() / ".cache" / "lstmcli"


def normalize(text: str) -> str:
    """What the saved normaliser does (<br> to a space, NFKC, lowercase), in Python's C string
    code: the library's own tracks every character's alignment and is many times slower."""
    if "<" in text:
        text = _LINE_BREAK.sub(" ", text)
    return unicodedata.normalize("NFKC", text).lower()


def _token_counts(texts: Iterable[str]) -> Counter[str]:
    """How often each token occurs; each distinct space-separated chunk is split only once."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pre_tokenize = pre_tokenizers.Whitespace().pre_tokenize_str
    counts: Counter[str] = Counter()
    for batch in _batches(texts):
        normalized = pa.array([normalize(text) for text in batch], type=pa.large_string())
        chunks = pc.split_pattern(normalized, " ").flatten().value_counts()
        for chunk, count in zip(
            chunks.field("values").to_pylist(), chunks.field("counts").to_pylist(), strict=True
        ):
            if chunk.isascii():
                tokens = _ASCII_WORDS(chunk)
            else:
                tokens = [token for token, _ in pre_tokenize(chunk)]
            for token in tokens:
                counts[token] += count
    return counts


def _batches(texts: Iterable[str]) -> Iterator[Sequence[str]]:
    """The texts _BATCH at a time: a TextColumn (lstmcli.data.columns) converts only the batch."""
    if hasattr(texts, "batches"):  # duck-typed: importing the column would import pyarrow
        yield from texts.batches(_BATCH)
        return
    iterator = iter(texts)
    while batch := list(itertools.islice(iterator, _BATCH)):
        yield batch


def _backend(model: WordLevel) -> Backend:
    backend = Backend(model)
    backend.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex(r"(?i)<br\s*/?>"), " "),  # IMDB's line breaks; see normalize()
        normalizers.NFKC(),
        normalizers.Lowercase(),
    ])
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # \w+ and runs of punctuation
    return backend


def _pipeline(tokenizer_json: str) -> tuple[object, object, object]:
    """The parts of a tokenizer.json that decide how text is cut into words."""
    spec = json.loads(tokenizer_json)
    return spec.get("normalizer"), spec.get("pre_tokenizer"), spec.get("model", {}).get("type")


def _cache_key(
    tokenizer: Tokenizer, texts: Sequence[str], max_len: int, truncation: str = "head"
) -> str:
    digest = hashlib.blake2b(_CACHE_VERSION, digest_size=20)
    digest.update(tokenizer.to_json().encode("utf-8"))
    digest.update(np.array([max_len, len(texts)], dtype=np.int64).tobytes())
    if truncation != "head":  # head's keys are those written before truncation had a choice
        digest.update(truncation.encode("ascii"))
    if hasattr(texts, "arrow_batches"):  # a TextColumn: hash Arrow's bytes, no Python strings
        for batch in texts.arrow_batches(_BATCH):
            lengths, data = _arrow_parts(batch)
            digest.update(lengths.tobytes())
            digest.update(data)
        return digest.hexdigest()
    for start in range(0, len(texts), _BATCH):
        batch = texts[start : start + _BATCH]
        # The lengths make the concatenation unambiguous ("ab","c" differs from "a","bc").
        digest.update(np.fromiter(map(len, batch), dtype=np.int64, count=len(batch)).tobytes())
        digest.update("".join(batch).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _arrow_parts(batch: Any) -> tuple[np.ndarray, memoryview]:
    """What _cache_key hashes for a batch of texts, read from an Arrow string array: the length
    of each text in characters (int64) and all the texts' UTF-8 bytes, as for a list."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lengths = pc.utf8_length(batch).to_numpy(zero_copy_only=False).astype(np.int64)
    _, offsets_buffer, data_buffer = batch.buffers()
    width = np.int64 if pa.types.is_large_string(batch.type) else np.int32
    start = batch.offset  # a slice shares its parent's buffers
    offsets = np.frombuffer(offsets_buffer, dtype=width)[start : start + len(batch) + 1]
    data = memoryview(data_buffer if data_buffer is not None else b"")
    return lengths, data[int(offsets[0]) : int(offsets[-1])]


def _read_cache(path: Path, count: int, max_len: int, vocab_size: int) -> list[np.ndarray] | None:
    """The cached arrays, or None when the entry is absent or does not check out."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    # Layout: offsets (count + 1 of them) then all ids, in one integer array.
    if data.ndim != 1 or data.dtype.kind != "i" or data.size < count + 1:
        return None
    offsets = data[: count + 1].astype(np.int64)
    ids = data[count + 1 :].astype(np.int64)
    lengths = np.diff(offsets)
    if offsets[0] != 0 or offsets[-1] != ids.size or lengths.min() < 1 or lengths.max() > max_len:
        return None
    if ids.min() < 0 or ids.max() >= vocab_size:
        return None
    return np.split(ids, offsets[1:-1])


def _write_cache(path: Path, ids: list[np.ndarray]) -> None:
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    dtype = np.int32 if offsets[-1] < np.iinfo(np.int32).max else np.int64
    data = np.concatenate([offsets.astype(dtype), *(a.astype(dtype) for a in ids)])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda handle: np.save(handle, data, allow_pickle=False))
    except OSError:
        pass  # a read-only or full disk costs the next run some seconds, nothing more
