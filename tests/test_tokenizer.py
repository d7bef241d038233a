"""The word-level tokenizer and the encode cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer as Backend

from lstmcli.data.tokenizer import Tokenizer, cache_root, encode_cached, normalize
from lstmcli.errors import ConfigError, DataError

TRAIN = [
    "A great film!<br /><br />Loved it.",
    "A terrible film, hated it... truly TERRIBLE",
    "great acting, great story",
    "The plot was boring<br/>and slow",
    "Ｆｕｌｌｗｉｄｔｈ text and the ﬁnest ligature",
]


@pytest.fixture
def tok() -> Tokenizer:
    return Tokenizer.train(TRAIN, vocab_size=1000, min_freq=1)


def test_special_ids_come_first(tok: Tokenizer) -> None:
    vocab = json.loads(tok.to_json())["model"]["vocab"]
    assert vocab["[PAD]"] == Tokenizer.PAD_ID == 0
    assert vocab["[UNK]"] == Tokenizer.UNK_ID == 1
    assert sorted(vocab.values()) == list(range(tok.vocab_size))


def test_normalisation_and_punctuation(tok: Tokenizer) -> None:
    assert tok.tokens("Great<br />film<BR/>Loved<br>it") == ["great", "film", "loved", "it"]
    assert tok.tokens("Hated it... TRULY!!") == ["hated", "it", "...", "truly", "!!"]
    assert tok.tokens("Ｆｕｌｌｗｉｄｔｈ ﬁnest") == ["fullwidth", "finest"]
    assert normalize("A<br />B") == "a b"


def test_vocabulary_size_and_min_freq() -> None:
    small = Tokenizer.train(TRAIN, vocab_size=5, min_freq=1)
    assert small.vocab_size == 5
    words = set(json.loads(small.to_json())["model"]["vocab"]) - {"[PAD]", "[UNK]"}
    # The most frequent: "great" (3 times), then two of the words seen twice.
    assert "great" in words and words <= {"great", "film", "terrible", "it", "a", "the", "and", ","}
    frequent = Tokenizer.train(TRAIN, vocab_size=1000, min_freq=3)
    words = set(json.loads(frequent.to_json())["model"]["vocab"]) - {"[PAD]", "[UNK]"}
    assert words == {"great"}
    with pytest.raises(ConfigError):
        Tokenizer.train(TRAIN, vocab_size=2, min_freq=1)


def reference_vocab(texts: list[str], vocab_size: int, min_freq: int) -> dict[str, int]:
    """The vocabulary the library's own WordLevelTrainer learns through the saved pipeline."""
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer

    backend = Backend.from_str(Tokenizer.train(["x"], 10, 1).to_json())
    backend.model = WordLevel(unk_token="[UNK]")
    trainer = WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_freq,
                               special_tokens=["[PAD]", "[UNK]"], show_progress=False)
    backend.train_from_iterator(texts, trainer=trainer)
    return backend.get_vocab()


@pytest.mark.parametrize(("vocab_size", "min_freq"), [(12, 1), (1000, 1), (1000, 2), (7, 3)])
def test_vocabulary_is_what_the_library_trainer_learns(vocab_size: int, min_freq: int) -> None:
    texts = [*TRAIN, "Ça va? ÇA VA! naïve café, café... déjà-vu", "x_y z9 _ __ a\tb\nc",
             "zz yy xx ww vv uu zz yy xx ww", "¿qué? ¡sí! 東京 タワー 東京"] * 2
    ours = json.loads(Tokenizer.train(texts, vocab_size, min_freq).to_json())["model"]["vocab"]
    assert ours == reference_vocab(texts, vocab_size, min_freq)


def test_training_is_deterministic() -> None:
    assert Tokenizer.train(TRAIN, 50, 1).to_json() == Tokenizer.train(TRAIN, 50, 1).to_json()


def test_encode_truncates_and_never_returns_empty(tok: Tokenizer) -> None:
    ids = tok.encode(["great film", "", "   <br />  ", "zebra quokka", "great " * 50], max_len=8)
    assert all(a.dtype == np.int64 and 1 <= len(a) <= 8 for a in ids)
    assert ids[1].tolist() == ids[2].tolist() == [Tokenizer.UNK_ID]
    assert ids[3].tolist() == [Tokenizer.UNK_ID] * 2  # words never seen in training
    assert len(ids[4]) == 8
    assert tok.encode([], 8) == []
    with pytest.raises(ConfigError):
        tok.encode(["x"], 0)


def test_tokens_align_with_ids(tok: Tokenizer) -> None:
    for text in [*TRAIN, "", "unknown words here!", "tabs\tand\nnewlines"]:
        ids = tok.encode([text], max_len=1000)[0]
        words = tok.tokens(text)
        assert len(words) == len(ids)
        vocab = json.loads(tok.to_json())["model"]["vocab"]
        assert [vocab.get(w, Tokenizer.UNK_ID) for w in words] == ids.tolist()


@pytest.mark.parametrize("few", [0, 1000])
def test_encode_matches_the_library_pipeline(tok: Tokenizer, monkeypatch, few: int) -> None:
    # encode() normalises in Python and works on distinct chunks (or, for a few texts, calls the
    # library directly); either way it must give what the saved pipeline gives.
    monkeypatch.setattr("lstmcli.data.tokenizer._FEW", few)
    reference = Backend.from_str(tok.to_json())
    texts = [
        *TRAIN,
        "ÉCOLE Straße ǅ İstanbul café <Br  /> x",
        "a  double  spaced  text  with  runs   of    spaces " * 10,
        "great. " * 30,
        "great film " * 40 + "<br /> the end",
        "  leading and trailing spaces  ",
        "\u00a0non-breaking\u00a0spaces and \u2003em spaces",
        "Ça va? ÇA VA! naïve café, déjà-vu 東京タワー x_y __ a\tb\nc\x1cd",
        "",
        "!!!",
    ]
    for max_len in (3, 10, 1000):
        reference.enable_truncation(max_len)
        expected = [e.ids or [Tokenizer.UNK_ID] for e in reference.encode_batch(texts)]
        assert [a.tolist() for a in tok.encode(texts, max_len)] == expected


def test_save_and_load_round_trip(tmp_path: Path, tok: Tokenizer) -> None:
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]  # no temp file left
    loaded = Tokenizer.load(path)
    assert loaded.to_json() == tok.to_json() and loaded.vocab_size == tok.vocab_size
    assert [a.tolist() for a in loaded.encode(TRAIN, 20)] == [
        a.tolist() for a in tok.encode(TRAIN, 20)]
    assert Backend.from_file(str(path)).get_vocab_size() == tok.vocab_size  # the library's format
    tok.save(path)  # replacing an existing file
    assert Tokenizer.load(path).to_json() == tok.to_json()


def test_load_errors(tmp_path: Path, tok: Tokenizer) -> None:
    with pytest.raises(DataError, match="not found"):
        Tokenizer.load(tmp_path / "missing.json")
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"version": "1.0", "model": ', encoding="utf-8")
    with pytest.raises(DataError, match="is corrupt") as caught:
        Tokenizer.load(corrupt)
    assert "\n" not in str(caught.value)
    swapped = json.loads(tok.to_json())
    vocab = swapped["model"]["vocab"]
    vocab["[PAD]"], vocab["[UNK]"] = vocab["[UNK]"], vocab["[PAD]"]
    swapped["model"]["unk_token"] = "[UNK]"
    (tmp_path / "swapped.json").write_text(json.dumps(swapped), encoding="utf-8")
    with pytest.raises(DataError, match=r"\[PAD\] to 0"):
        Tokenizer.load(tmp_path / "swapped.json")
    foreign = json.loads(tok.to_json())
    foreign["normalizer"] = None  # a tokenizer that would not lowercase
    (tmp_path / "foreign.json").write_text(json.dumps(foreign), encoding="utf-8")
    with pytest.raises(DataError, match="not written by lstmcli"):
        Tokenizer.load(tmp_path / "foreign.json")


def test_encode_cached_reuses_the_entry(tmp_path: Path, tok: Tokenizer, monkeypatch) -> None:
    texts = TRAIN * 3
    cold = encode_cached(tok, texts, 6, tmp_path)
    entries = list((tmp_path / "tokens").glob("*.npy"))
    assert len(entries) == 1
    stored = np.load(entries[0], allow_pickle=False)  # a plain integer array
    assert stored.dtype.kind == "i" and stored.ndim == 1

    def no_encoding(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(Tokenizer, "encode", no_encoding)
    warm = encode_cached(tok, texts, 6, tmp_path)
    assert [a.tolist() for a in warm] == [a.tolist() for a in cold]
    assert all(a.dtype == np.int64 for a in warm)
    monkeypatch.undo()
    # Another max_len, other texts or another vocabulary is another entry.
    encode_cached(tok, texts, 7, tmp_path)
    encode_cached(tok, texts[:-1], 6, tmp_path)
    encode_cached(Tokenizer.train(TRAIN, 10, 1), texts, 6, tmp_path)
    encode_cached(tok, ["ab", "c"], 6, tmp_path)
    encode_cached(tok, ["a", "bc"], 6, tmp_path)
    assert len(list((tmp_path / "tokens").glob("*.npy"))) == 6


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong shape", "bad ids", "pickle"])
def test_a_corrupt_cache_entry_is_rewritten(tmp_path: Path, tok: Tokenizer, damage: str) -> None:
    texts = TRAIN * 2
    expected = [a.tolist() for a in encode_cached(tok, texts, 6, tmp_path)]
    entry = next((tmp_path / "tokens").glob("*.npy"))
    good = entry.read_bytes()
    if damage == "garbage":
        entry.write_bytes(b"\x93NUMPY not really")
    elif damage == "truncated":
        entry.write_bytes(good[: len(good) // 2])
    elif damage == "wrong shape":
        np.save(entry, np.zeros((3, 2), dtype=np.int32))
    elif damage == "bad ids":
        stored = np.load(entry)
        stored[-1] = 10**6
        np.save(entry, stored)
    else:
        np.save(entry, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    assert [a.tolist() for a in encode_cached(tok, texts, 6, tmp_path)] == expected
    assert entry.read_bytes() == good


def test_cache_location(tmp_path: Path, tok: Tokenizer, monkeypatch) -> None:
    monkeypatch.setenv("LSTM_CACHE_DIR", str(tmp_path / "env-cache"))
    assert cache_root() == tmp_path / "env-cache"
    encode_cached(tok, TRAIN, 5)
    assert list((tmp_path / "env-cache" / "tokens").glob("*.npy"))
    monkeypatch.delenv("LSTM_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "lstmcli"


def test_an_unusable_cache_is_no_error(tmp_path: Path, tok: Tokenizer) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x", encoding="utf-8")
    ids = encode_cached(tok, TRAIN, 5, blocker)
    assert [a.tolist() for a in ids] == [a.tolist() for a in tok.encode(TRAIN, 5)]
    assert encode_cached(tok, [], 5, tmp_path) == []


def test_encoding_in_batches_changes_nothing(tok: Tokenizer, monkeypatch) -> None:
    texts = TRAIN * 3
    monkeypatch.setattr("lstmcli.data.tokenizer._FEW", 0)
    whole = [a.tolist() for a in tok.encode(texts, 4)]
    monkeypatch.setattr("lstmcli.data.tokenizer._BATCH", 2)
    assert [a.tolist() for a in tok.encode(texts, 4)] == whole
