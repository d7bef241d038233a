"""Time tokenization of the 25,000 IMDB training reviews: vocabulary, cold encode, warm cache.

Usage: python benchmarks/bench_tokenize.py [--data-dir ../shared/data] [--max-len 400]
       [--vocab-size 20000] [--repeat 3]

Reads DIR/imdb/train.parquet (default: ../shared/data beside the project, or $LSTM_DATA_DIR).
Each step runs --repeat times and the best wall time is reported (with the process CPU time of
that run, which tells contention apart: CPU > wall means both cores worked). The cache lives in
a temporary folder, so the cold run never finds an old entry.

Measured (--repeat 3, defaults) on the project's 2-core machine, with another process using about
one core (load average 3): vocabulary 2.10 s, encode 1.96 s, encode_cached miss 2.52 s, hit
0.23 s (warm / cold 0.09). Tokenizing the 25,000 reviews thus takes about 2 s, 4 s with the
vocabulary, against the issue's limit of 5 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lstmcli.data.tokenizer import Tokenizer, encode_cached  # noqa: E402


def main() -> int:
    default_dir = os.environ.get("LSTM_DATA_DIR") or ROOT.parent / "shared" / "data"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(default_dir))
    parser.add_argument("--max-len", type=int, default=400)
    parser.add_argument("--vocab-size", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    path = args.data_dir / "imdb" / "train.parquet"
    if not path.is_file():
        print(f"bench_tokenize: {path} not found; pass --data-dir DIR holding imdb/train.parquet "
              "(the shared corpora live in ../shared/data)", file=sys.stderr)
        return 2
    import pyarrow.parquet as pq

    texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()
    print(f"{len(texts):,} IMDB training reviews, {sum(map(len, texts)) / 1e6:.1f} M characters; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")

    tokenizer, _ = timed("train vocabulary", args.repeat,
                         lambda: Tokenizer.train(texts, args.vocab_size, 1))
    ids, _ = timed("encode (Tokenizer.encode)", args.repeat,
                   lambda: tokenizer.encode(texts, args.max_len))
    tokens = sum(map(len, ids))
    print(f"  -> {tokens:,} tokens kept at max_len {args.max_len}, "
          f"vocabulary {tokenizer.vocab_size:,}")

    with tempfile.TemporaryDirectory() as cache:
        def cold() -> list[Any]:
            for entry in Path(cache).rglob("*.npy"):
                entry.unlink()
            return encode_cached(tokenizer, texts, args.max_len, Path(cache))

        _, cold_s = timed("encode_cached, cold (miss: hash, encode, write)", args.repeat, cold)
        warm_ids, warm_s = timed("encode_cached, warm (hit: hash, read)", args.repeat,
                                 lambda: encode_cached(tokenizer, texts, args.max_len, Path(cache)))
        assert all((a == b).all() for a, b in zip(warm_ids, ids, strict=True))
    print(f"warm / cold = {warm_s / cold_s:.3f}")
    return 0


def timed(label: str, repeat: int, step: Callable[[], Any]) -> tuple[Any, float]:
    """Run step `repeat` times; print the best wall time and that run's CPU time; return the
    last result and the best wall time."""
    best: tuple[float, float] | None = None
    result = None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = step()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if best is None or wall < best[0]:
            best = (wall, cpu)
    assert best is not None
    print(f"{label:50s} {best[0]:6.2f} s wall  {best[1]:6.2f} s CPU")
    return result, best[0]


if __name__ == "__main__":
    sys.exit(main())
