"""Time one full training step of the classifier for every cell in every training precision
(fp32, bf16, fp16) on every device at hand, in one process, and compare each precision's
throughput with fp32's for the same cell on the same device.

Usage: python benchmarks/bench_precision.py [--devices cpu,cuda] [--precisions fp32,bf16,fp16]
       [--cells rnn,lstm,...] [--batch 64] [--steps 256] [--embed 128] [--hidden 256]
       [--vocab 20000] [--rounds 7] [--warmup 2] [--threads 1] [--json results.json]

A step is what `lstm train --precision P` runs (lstmcli.training.precision.Precision): the
forward pass and loss under autocast, backward (fp16: of the scaled loss), unscaling, clipping
the global norm at 5, the Adam step. Each round runs one step of every (device, cell,
precision), in an order rotated from round to round, so that a neighbour's load falls on all
alike; GPU steps are synchronised before the clock stops, and the median over rounds is
reported. A precision a device cannot train in (lstmcli's own check) is listed as refused.
--json also writes every sample and the settings, for the figures in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from lstmcli.config import PRECISION_CHOICES, ModelConfig  # noqa: E402
from lstmcli.device import describe_device, mps_available  # noqa: E402
from lstmcli.errors import ConfigError  # noqa: E402
from lstmcli.nn.cells import cell_names  # noqa: E402
from lstmcli.nn.classifier import SentimentClassifier  # noqa: E402
from lstmcli.training.precision import Precision, check_precision  # noqa: E402

Key = tuple[str, str, str]  # device, cell, precision


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default=",".join(available_devices()))
    parser.add_argument("--precisions", default=",".join(PRECISION_CHOICES))
    parser.add_argument("--cells", default=",".join(cell_names()))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=256, help="sequence length")
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    if "fp32" not in args.precisions.split(","):
        parser.error("--precisions must include fp32: every ratio is against it")

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as lstm train does on CPU
    steps: dict[Key, Step] = {}
    refused: dict[Key, str] = {}
    for device_name in args.devices.split(","):
        device = torch.device(device_name)
        for cell in args.cells.split(","):
            for precision in args.precisions.split(","):
                try:
                    check_precision(precision, device)
                except ConfigError as error:
                    refused[(device_name, cell, precision)] = str(error)
                    continue
                steps[(device_name, cell, precision)] = Step(cell, precision, device, args)

    print(f"batch {args.batch}, {args.steps} steps, embed {args.embed}, hidden {args.hidden}, "
          f"vocab {args.vocab}; torch {torch.__version__}, {args.threads} CPU thread(s); "
          f"devices {', '.join(describe_device(torch.device(d)) for d in args.devices.split(','))}"
          f"; load average {load()} at start")
    samples: dict[Key, list[float]] = {key: [] for key in steps}
    order = list(steps)
    for round_index in range(args.warmup + args.rounds):
        shift = round_index % len(order)
        for key in order[shift:] + order[:shift]:
            seconds = steps[key].run()
            if round_index >= args.warmup:
                samples[key].append(seconds)

    tokens = args.batch * args.steps
    rows = []
    for key, times in samples.items():
        device, cell, precision = key
        median = statistics.median(times)
        base = statistics.median(samples[(device, cell, "fp32")])
        rows.append({"device": device, "cell": cell, "precision": precision,
                     "seconds_per_step": median, "tokens_per_second": tokens / median,
                     "vs_fp32": base / median, "samples": times,
                     "skipped_steps": steps[key].skipped})
    print(f"{'device':8s} {'cell':10s} {'precision':9s} {'s/step':>8s} {'tokens/s':>10s} "
          f"{'vs fp32':>8s}")
    for row in rows:
        print(f"{row['device']:8s} {row['cell']:10s} {row['precision']:9s} "
              f"{row['seconds_per_step']:8.4f} {row['tokens_per_second']:10,.0f} "
              f"{row['vs_fp32']:7.2f}x")
    for (device, cell, precision), reason in refused.items():
        print(f"{device:8s} {cell:10s} {precision:9s} refused: {reason}")
    print(f"load average {load()} at end (1, 5, 15 min; {os.cpu_count()} CPUs)")
    if args.json is not None:
        payload: dict[str, Any] = {
            "settings": {key: value for key, value in vars(args).items() if key != "json"},
            "torch": torch.__version__, "rows": rows,
            "devices": {d: describe_device(torch.device(d)) for d in args.devices.split(",")},
            "refused": [{"device": d, "cell": c, "precision": p, "reason": reason}
                        for (d, c, p), reason in refused.items()]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def available_devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if mps_available():
        found.append("mps")
    return found


class Step:
    """One training step of one cell in one precision on one device, on a fixed batch."""

    def __init__(self, cell: str, precision: str, device: torch.device,
                 args: argparse.Namespace) -> None:
        torch.manual_seed(0)  # the same weights and batch for every precision of a cell
        config = ModelConfig(cell=cell, embed_dim=args.embed, hidden_size=args.hidden,
                             vocab_size=args.vocab, pooling="last")
        self.model = SentimentClassifier(config).to(device).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.precision = Precision(precision, device)
        self.device = device
        self.ids = torch.randint(1, args.vocab, (args.batch, args.steps), device=device)  # (B, T)
        self.lengths = torch.full((args.batch,), args.steps, dtype=torch.long,
                                  device=device)  # (B,)
        self.labels = torch.randint(0, 2, (args.batch,), device=device)  # (B,)
        self.skipped = 0

    def run(self) -> float:
        """Seconds for forward, backward, unscaling, clipping and the Adam step."""
        synchronize(self.device)
        start = time.perf_counter()
        with self.precision.autocast():
            logits = self.model(self.ids, self.lengths)  # (B, C)
            loss = torch.nn.functional.cross_entropy(logits, self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.backward(loss)
        self.precision.unscale(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        if torch.isfinite(norm):
            self.precision.step(self.optimizer)
        elif self.precision.skip():
            self.skipped += 1
        synchronize(self.device)
        return time.perf_counter() - start


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
