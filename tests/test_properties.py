"""Property-based tests: arbitrary Unicode, control characters, empty and 1 MB texts, invalid
UTF-8 and CSV quoting with embedded newlines. Each input gives a result or a clean error."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_numpy_inference import LABELS, save_random_run

from lstmcli.config import DataConfig
from lstmcli.data.splits import load_splits
from lstmcli.data.tokenizer import Tokenizer
from lstmcli.errors import DataError
from lstmcli.inference.predictor import Predictor

from helpers import make_reviews

QUICK = settings(max_examples=40, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])
# Any Unicode a file or a terminal can carry (surrogates cannot be encoded, so they are left out).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
MAX_LEN = 400


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.train([row["text"] for row in make_reviews(200)], vocab_size=100, min_freq=1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return save_random_run(tmp_path_factory.mktemp("property") / "run")


@QUICK
@given(st.lists(TEXT, min_size=1, max_size=70))
def test_any_text_encodes_to_valid_ids_the_same_way_on_both_paths(tokenizer, texts):
    """Fewer than 64 texts go straight through the tokenizers library, more through the fast
    pyarrow path: both must give the same ids, all in range, at least one per text."""
    few = [tokenizer.encode([text], MAX_LEN)[0] for text in texts]
    many = tokenizer.encode(texts * (64 // len(texts) + 1), MAX_LEN)[: len(texts)]
    for one, other in zip(few, many, strict=True):
        assert np.array_equal(one, other)
        assert 1 <= len(one) <= MAX_LEN
        assert one.min() >= 0 and one.max() < tokenizer.vocab_size


@QUICK
@given(TEXT)
def test_any_text_gets_a_prediction_or_a_clean_error(run_dir, text):
    predictor = Predictor.from_run(run_dir, "cpu", "numpy")
    if not text.strip():
        with pytest.raises(DataError, match="is empty"):
            predictor.predict([text])
        return
    (result,) = predictor.predict([text])
    assert result.label in LABELS
    assert abs(sum(result.probabilities.values()) - 1) < 1e-5
    json.dumps(result.to_dict(), allow_nan=False)


def test_a_one_megabyte_text_is_cut_to_max_len(run_dir):
    text = ("superb food and awful service \x1b[2J \u202e " * 30_000)[:1_000_000]
    for engine in ("numpy", "torch"):
        (result,) = Predictor.from_run(run_dir, "cpu", engine).predict([text])
        assert result.label in LABELS


@QUICK
@given(st.lists(TEXT.filter(lambda t: t.strip()), min_size=4, max_size=12))
def test_csv_with_any_quoting_and_newlines_reads_back_the_same_texts(tmp_path, texts):
    path = tmp_path / "data.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for index, text in enumerate(texts):
            writer.writerow([text, "positive" if index % 2 else "negative"])
    try:
        splits = load_splits(DataConfig(dataset=str(path), val_fraction=0.25))
    except DataError as error:  # e.g. a text of only spaces and control characters
        assert "\n" not in str(error)
        return
    read = sorted([*splits.train.texts, *splits.validation.texts])
    # csv.writer writes "\r" as is and readers give it back; only blank texts may be dropped.
    assert read == sorted(texts)


@QUICK
@given(st.binary(min_size=1, max_size=200))
def test_arbitrary_bytes_in_a_data_file_give_a_clean_error_or_rows(tmp_path, data):
    path = tmp_path / "data.jsonl"
    rows = b"".join(b'{"text": "%s", "label": %d}\n' % (word, index % 2)
                    for index, word in enumerate((b"good", b"bad", b"fine", b"poor")))
    path.write_bytes(rows + data)
    try:
        splits = load_splits(DataConfig(dataset=str(path), val_fraction=0.25))
    except DataError as error:
        assert "\n" not in str(error)  # one line, naming the problem
        return
    assert len(splits.train) + len(splits.validation) >= 4
