"""What the gradient diagnostics cost: `lstm train` with every measurement on against
`--no-diagnostics`, in one process, interleaved.

Both sides run the same data, model and seed for the same epochs; the figure is the wall time of
the epochs (training steps, the per-step gradient statistics, the per-epoch flow measurement and a
small validation set), summed per run, median over rounds. Target: diagnostics cost at most 15%
(ratio <= 1.15).

    python benchmarks/bench_diagnostics.py [--data-dir ../shared/data] [--rounds 3]

With --data-dir it trains on 4,000 IMDB reviews (max_len 256); without, on the bundled sample.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from lstmcli.config import Config
from lstmcli.training.run import train


def run_once(base: Config, diagnostics: bool, output: Path) -> float:
    config = Config.from_dict(base.to_dict())
    config.train.diagnostics = diagnostics
    config.train.output = str(output)
    result = train(config)
    return sum(row["seconds"] for row in result.history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cell", default=None)
    args = parser.parse_args()

    base = Config()
    base.train.epochs = 1
    base.data.max_eval_samples = 200
    if args.cell:
        base.model.cell = args.cell
    if args.data_dir:
        base.data.dataset, base.data.data_dir = "imdb", args.data_dir
        base.data.max_train_samples, base.data.max_len = 4000, 256
        base.model.embed_dim, base.model.hidden_size = 128, 128
        base.train.batch_size = 64
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["LSTM_STATE_DIR"] = str(Path(scratch) / "state")
        run_once(base, True, Path(scratch) / "warmup")  # token cache, kernels, page cache
        on, off = [], []
        for index in range(args.rounds):
            on.append(run_once(base, True, Path(scratch) / f"on{index}"))
            off.append(run_once(base, False, Path(scratch) / f"off{index}"))
    ratio = statistics.median(a / b for a, b in zip(on, off, strict=True))
    print(f"dataset {base.data.dataset}, cell {base.model.cell}, {args.rounds} rounds, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"diagnostics on:  median {statistics.median(on):.2f} s per epoch")
    print(f"diagnostics off: median {statistics.median(off):.2f} s per epoch")
    print(f"ratio on/off: {ratio:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
