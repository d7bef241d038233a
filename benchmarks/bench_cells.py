"""Time one full training step (forward, cross-entropy backward, Adam) of the classifier for
every registered cell, interleaved in one process, and compare each cell's throughput with the
LSTM's.

Usage: python benchmarks/bench_cells.py [--batch 64] [--steps 256] [--embed 128] [--hidden 256]
       [--vocab 20000] [--rounds 7] [--threads 1] [--cells rnn,lstm,...] [--reference]

Each round runs one step of every cell, in an order rotated from round to round, so that a
neighbour's load on a shared machine falls on all cells alike; the median over rounds is reported.
--reference also times the step-wise reference path of every cell that has a faster one. The
figures are only as steady as the machine: the load average is printed beside them.

Measured (defaults, --rounds 9) on the project's shared 2-core machine, load average 0.7-0.8:
seconds per step rnn 0.262, lstm 0.846, gru 0.679, peephole 0.820, coupled 0.875; throughput
against the LSTM 3.22x, 1.00x, 1.25x, 1.03x, 0.97x. With --reference (3 rounds, load 0.7-0.8)
the step-wise paths ran lstm 0.87x, peephole 0.77x, coupled 1.08x (three weight blocks to the
kernel's four). At --hidden 64 --embed 64 (7 rounds, load 0.6) the fused peephole ran 0.75x
and its step-wise path 0.53x: at small sizes the per-step operator dispatch, not the matrix
products, sets the pace.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from lstmcli.config import ModelConfig  # noqa: E402
from lstmcli.nn.cells import DEFAULT_CELL, cell_names, get_cell  # noqa: E402
from lstmcli.nn.classifier import SentimentClassifier  # noqa: E402

Step = tuple[SentimentClassifier, torch.optim.Optimizer]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=256, help="sequence length")
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--cells", default=",".join(cell_names()))
    parser.add_argument("--baseline", default=DEFAULT_CELL, help="the cell ratios refer to")
    parser.add_argument("--reference", action="store_true",
                        help="also time the step-wise reference path of the fast cells")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormals in decaying states cost 100x per operation
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, args.vocab, (args.batch, args.steps), generator=generator)  # (B, T)
    lengths = torch.full((args.batch,), args.steps, dtype=torch.long)  # (B,)
    labels = torch.randint(0, 2, (args.batch,), generator=generator)  # (B,)

    runs: dict[str, Step] = {}
    for name in args.cells.split(","):
        runs[name] = build(name, args, stepwise=False)
        if args.reference and get_cell(name).fast_path() is not None:
            runs[f"{name} (step-wise)"] = build(name, args, stepwise=True)
    if args.baseline not in runs:
        parser.error(f"--baseline {args.baseline} is not among --cells")

    print(f"batch {args.batch}, {args.steps} steps, embed {args.embed}, hidden {args.hidden}, "
          f"vocab {args.vocab}; torch {torch.__version__}, {args.threads} thread(s); "
          f"load average {load()} at start")
    times: dict[str, list[float]] = {label: [] for label in runs}
    labels_order = list(runs)
    for round_index in range(args.warmup + args.rounds):
        shift = round_index % len(labels_order)
        for label in labels_order[shift:] + labels_order[:shift]:
            seconds = train_step(*runs[label], ids, lengths, labels)
            if round_index >= args.warmup:
                times[label].append(seconds)

    base = statistics.median(times[args.baseline])
    tokens = int(lengths.sum())
    print(f"{'cell':22s} {'path':34s} {'s/step':>8s} {'tokens/s':>9s} {'vs ' + args.baseline:>8s}")
    for label, samples in times.items():
        median = statistics.median(samples)
        name = label.split()[0]
        path = "step-wise" if label != name else get_cell(name).fast_path() or "step-wise"
        print(f"{label:22s} {path:34s} {median:8.3f} {tokens / median:9,.0f} "
              f"{base / median:7.2f}x")
    print(f"load average {load()} at end (1, 5, 15 min; {os.cpu_count()} CPUs)")
    return 0


def build(name: str, args: argparse.Namespace, stepwise: bool) -> Step:
    torch.manual_seed(0)
    config = ModelConfig(cell=name, embed_dim=args.embed, hidden_size=args.hidden,
                         vocab_size=args.vocab, pooling="last")
    model = SentimentClassifier(config).train()
    model.encoder.set_stepwise(stepwise)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def train_step(model: SentimentClassifier, optimizer: torch.optim.Optimizer, ids: torch.Tensor,
               lengths: torch.Tensor, labels: torch.Tensor) -> float:
    """Seconds for one forward, cross-entropy backward and Adam step."""
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(ids, lengths), labels)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
