"""Training beside a busy neighbour on a small machine: tokens/s with one competing busy process
against tokens/s on a quiet machine, for lstmcli's CPU settings and for torch's defaults.

Each measurement runs in a fresh interpreter (OpenMP reads its wait policy when torch loads), on
the project's LSTM classifier (batch 32, 128 steps, embedding 64, hidden 128, forward, backward
and Adam). The competitor is `python -c "while True: pass"`, started and stopped by this script.
Target: with lstmcli's settings, busy/quiet >= 0.3. lstmcli's default thread count leaves out
the CPUs that other processes keep busy when it starts (lstmcli.device.default_threads).

    python benchmarks/bench_threads.py [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

WORKER = r"""
import json, os, sys, time
settings = sys.argv[1]
if settings == "torch-default":
    os.environ["OMP_WAIT_POLICY"] = "ACTIVE"  # what libgomp does when nothing says otherwise
import torch
import lstmcli  # noqa: F401  (sets OMP_WAIT_POLICY=PASSIVE unless already set)
from lstmcli.config import ModelConfig
from lstmcli.device import resolve_device, usable_cpus
from lstmcli.nn.classifier import SentimentClassifier
if settings == "lstmcli":
    resolve_device("cpu")
else:
    torch.set_num_threads(os.cpu_count())
torch.manual_seed(0)
model = SentimentClassifier(ModelConfig(vocab_size=5000, embed_dim=64, hidden_size=128))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
ids = torch.randint(2, 5000, (32, 128))
lengths = torch.full((32,), 128)
labels = torch.randint(0, 2, (32,))
def step():
    loss = torch.nn.functional.cross_entropy(model(ids, lengths), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
for _ in range(3):
    step()
steps = int(sys.argv[2])
started = time.perf_counter()
for _ in range(steps):
    step()
seconds = time.perf_counter() - started
print(json.dumps({"tokens_per_second": steps * 32 * 128 / seconds,
                  "threads": torch.get_num_threads(), "usable": usable_cpus()}))
"""


def measure(settings: str, steps: int) -> dict:
    done = subprocess.run([sys.executable, "-c", WORKER, settings, str(steps)],
                          capture_output=True, text=True, check=True, timeout=900)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for settings in ("lstmcli", "torch-default"):
        quiet = measure(settings, args.steps)
        competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            busy = measure(settings, args.steps)
        finally:
            competitor.kill()
            competitor.wait()
        ratio = busy["tokens_per_second"] / quiet["tokens_per_second"]
        print(f"{settings:>13}: quiet {quiet['tokens_per_second']:,.0f} tok/s "
              f"({quiet['threads']} threads), beside a busy process "
              f"{busy['tokens_per_second']:,.0f} tok/s ({busy['threads']} threads), "
              f"ratio {ratio:.2f}"
              + (" (target >= 0.3)" if settings == "lstmcli" else ""))


if __name__ == "__main__":
    main()
