"""The output layer's share of a language-model training step (`lstm pretrain`), in one process.

Two models are timed on the same batches of real text, in alternation (A, B, B, A, ...): the
language model as `lstm pretrain` builds it, and the same embedding and encoder with the output
layer (projection + softmax) replaced by a free loss (the features' mean). A step is forward,
backward and an Adam update. The output layer's share is 1 - encoder / full; the target is that
it must not dominate (share < 0.5). `--softmax sampled` (the default, `--samples` draws) or
`--softmax adaptive`, whose cutoffs can be set to compare choices (`--cutoffs 2000,10000`); the
share of running tokens each cluster receives is printed too, since a tail cluster costs only for
the tokens that fall in it.

    python benchmarks/bench_lm_head.py --data-dir ../shared/data [--texts 2000] [--rounds 5]
        [--softmax sampled|adaptive] [--samples 256] [--cutoffs 2000,10000] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from lstmcli.data.batching import bucket_batches, iterate_batches
from lstmcli.data.corpus import windows
from lstmcli.data.tokenizer import Tokenizer
from lstmcli.device import resolve_device
from lstmcli.nn import lm_output
from lstmcli.nn.language_model import LanguageModel
from lstmcli.pretrain_config import SOFTMAX_CHOICES, LanguageModelConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="holds imdb/unsupervised.parquet")
    parser.add_argument("--texts", type=int, default=2000, help="reviews to tokenize")
    parser.add_argument("--batches", type=int, default=10, help="batches per timing")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cutoffs", default=None, help="comma-separated; default: lstmcli's")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--vocab-size", type=int, default=30000)
    parser.add_argument("--softmax", choices=SOFTMAX_CHOICES, default="sampled")
    parser.add_argument("--samples", type=int, default=256, help="draws of --softmax sampled")
    args = parser.parse_args()
    device = resolve_device("cpu", args.threads)
    if args.cutoffs:
        lm_output.ADAPTIVE_CUTOFFS = tuple(int(c) for c in args.cutoffs.split(","))

    path = Path(args.data_dir) / "imdb" / "unsupervised.parquet"
    texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()[: args.texts]
    tokenizer = Tokenizer.train(texts, args.vocab_size, 1)
    documents = tokenizer.encode(texts, 100_000)
    pieces = windows(documents, 70)  # configs/imdb_lm.toml's bptt
    lengths = np.array([len(piece) for piece in pieces])
    index_batches = bucket_batches(lengths, 64, np.random.default_rng(0))[: args.batches]
    batches = [(ids, lens) for _, ids, lens, _ in iterate_batches(pieces, index_batches, device)]

    config = LanguageModelConfig(  # configs/imdb_lm.toml's shape
        cell="lstm", embed_dim=128, hidden_size=128, bidirectional=True,
        vocab_size=tokenizer.vocab_size, softmax=args.softmax, samples=args.samples)
    torch.manual_seed(0)
    full = LanguageModel(config).to(device)
    cutoffs = (full.head.cutoffs[:-1] if args.softmax == "adaptive"
               else lm_output.adaptive_cutoffs(tokenizer.vocab_size))
    every = np.concatenate(documents)
    bounds = [0, *cutoffs, tokenizer.vocab_size]
    coverage = [float(((every >= lo) & (every < hi)).mean())
                for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]

    def full_step(model: LanguageModel, ids: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        return model.loss(model(ids, lens), model.targets(ids, lens))

    def encoder_step(model: LanguageModel, ids: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        outputs, _ = model.encoder(model.embedding(ids), lens)  # (B, T, 2H)
        return outputs.mean()

    models = {"full": (full, full_step),
              "encoder only": (LanguageModel(config).to(device),
                               encoder_step)}
    optimizers = {name: torch.optim.Adam(model.parameters(), lr=1e-3)
                  for name, (model, _) in models.items()}
    tokens = int(sum(int(lens.sum()) for _, lens in batches))

    def timed(name: str) -> float:
        model, step = models[name]
        started = time.perf_counter()
        for ids, lens in batches:
            optimizers[name].zero_grad(set_to_none=True)
            step(model, ids, lens).backward()
            optimizers[name].step()
        return time.perf_counter() - started

    for name in models:  # warm-up: oneDNN primitives, allocator
        timed(name)
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(args.rounds):
        order = list(models) if round_ % 2 == 0 else list(reversed(models))
        for name in order:
            seconds[name].append(timed(name))
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(json.dumps({
        "softmax": args.softmax,
        "samples": args.samples if args.softmax == "sampled" else None,
        "cutoffs": list(cutoffs),
        "vocab_size": tokenizer.vocab_size,
        "token_share_per_cluster": [round(share, 4) for share in coverage],
        "threads": torch.get_num_threads(),
        "tokens_per_timing": tokens,
        "tokens_per_second": {name: round(tokens / value) for name, value in median.items()},
        "output_layer_share": round(1 - median["encoder only"] / median["full"], 3),
        "seconds": seconds,
    }, indent=1))


if __name__ == "__main__":
    main()
