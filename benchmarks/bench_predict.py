"""Bulk prediction: `lstm predict --file` over the 25,000 IMDB test reviews against a bare
`torch.nn.LSTM` forward pass over the same reviews, in one run; and the peak memory of `lstm
predict` for 5,000 and for 25,000 reviews (it must not grow with the number of texts).

The model has the shape of `configs/imdb.toml` (embedding 128, bidirectional LSTM 128, max
pooling, max_len 400, vocabulary 30,000) with random weights; its speed does not depend on them.

* lstm predict: a fresh `python -m lstmcli predict --model RUN --file REVIEWS --json` process,
  wall time from start to its last output line: interpreter start, imports, loading the run,
  tokenization, the forward passes and writing 25,000 JSON lines.
* bare nn.LSTM: in this process, torch already imported, the reviews already tokenized: only
  `nn.Embedding -> nn.LSTM -> max over time -> nn.Linear` on padded batches of 256 reviews in file
  order, under torch.inference_mode, with the same threads.

    python benchmarks/bench_predict.py --data-dir ../shared/data [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
from torch import nn

from lstmcli.config import Config, ModelConfig
from lstmcli.data.tokenizer import Tokenizer
from lstmcli.device import usable_cpus
from lstmcli.nn.classifier import SentimentClassifier
from lstmcli.runs import TOKENIZER_FILE, save_checkpoint

MAX_LEN = 400


def make_run(run_dir: Path, texts: list[str]) -> Tokenizer:
    tokenizer = Tokenizer.train(texts, vocab_size=30000, min_freq=2)
    config = Config()
    config.model = ModelConfig(embed_dim=128, hidden_size=128, bidirectional=True,
                               pooling="max", vocab_size=tokenizer.vocab_size)
    config.data.max_len = MAX_LEN
    torch.manual_seed(0)
    run_dir.mkdir()
    save_checkpoint(run_dir, SentimentClassifier(config.model).eval(), config,
                    ["negative", "positive"])
    tokenizer.save(run_dir / TOKENIZER_FILE)
    return tokenizer


def time_cli(run_dir: Path, reviews: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one `lstm predict --file` process."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "started = time.perf_counter()\n"
        "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)\n"
        "print(time.perf_counter() - started, "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    command = [sys.executable, "-m", "lstmcli", "predict", "--model", str(run_dir), "--file",
               str(reviews), "--json"]
    done = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True,
                          text=True, check=True)
    seconds, peak = done.stdout.split()
    return float(seconds), int(peak)


def time_bare(ids: list, hidden: int = 128) -> float:
    torch.manual_seed(0)
    embedding = nn.Embedding(30000, 128, padding_idx=0)
    lstm = nn.LSTM(128, hidden, batch_first=True, bidirectional=True)
    head = nn.Linear(2 * hidden, 2)
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(ids), 256):
            batch = ids[start:start + 256]
            longest = max(len(row) for row in batch)
            padded = torch.zeros(len(batch), longest, dtype=torch.long)
            for row, sequence in enumerate(batch):
                padded[row, :len(sequence)] = torch.as_tensor(sequence)
            outputs, _ = lstm(embedding(padded))  # (B, T, 2H)
            head(outputs.amax(dim=1)).softmax(dim=1)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(usable_cpus())  # what lstm predict uses
    torch.set_flush_denormal(True)
    texts = pq.read_table(Path(args.data_dir) / "imdb" / "test.parquet",
                          columns=["text"]).column("text").to_pylist()
    texts = [" ".join(text.split()) for text in texts]  # one review per line
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        tokenizer = make_run(root / "run", texts)
        ids = tokenizer.encode(texts, MAX_LEN)
        files = {}
        for count in (5000, len(texts)):
            files[count] = root / f"reviews-{count}.txt"
            files[count].write_text("\n".join(texts[:count]) + "\n", encoding="utf-8")
        os.environ["LSTM_STATE_DIR"] = str(root / "state")
        time_cli(root / "run", files[5000])  # warm the page cache
        cli, bare, peaks = [], [], {}
        for _ in range(args.rounds):
            seconds, peaks[len(texts)] = time_cli(root / "run", files[len(texts)])
            cli.append(seconds)
            bare.append(time_bare(ids))
        _, peaks[5000] = time_cli(root / "run", files[5000])
    n = len(texts)
    print(f"{n:,} IMDB test reviews, {args.rounds} rounds, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"lstm predict --file: median {statistics.median(cli):.1f} s "
          f"({n / statistics.median(cli):,.0f} reviews/s, everything included)")
    print(f"bare nn.LSTM forward: median {statistics.median(bare):.1f} s "
          f"({n / statistics.median(bare):,.0f} reviews/s, forward passes only)")
    ratio = statistics.median(b / c for b, c in zip(bare, cli, strict=True))
    print(f"ratio (lstm predict reviews/s / bare reviews/s): {ratio:.2f} (target >= 1.0)")
    print("peak RSS of lstm predict: " + ", ".join(
        f"{count:,} reviews {kib / 1024:.0f} MB" for count, kib in sorted(peaks.items())))
    print(json.dumps({"cli_seconds": cli, "bare_seconds": bare, "peak_kib": peaks}))


if __name__ == "__main__":
    main()
