"""Every test runs in its own temporary directory, with every lstmcli path pointed into it."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import make_reviews, write_jsonl


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LSTM_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("LSTM_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LSTM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LSTM_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def tiny_file(tmp_path: Path) -> Path:
    """A 120-review JSONL file (text, label) that small models learn in a few epochs."""
    return write_jsonl(tmp_path / "tiny.jsonl", make_reviews(120))
