"""Cold-start wall time of `lstm predict "great movie"` against `python -c "import numpy"`.

Usage: python benchmarks/bench_cold_start.py [--rounds 21] [--torch-rounds 3] [--run RUN_DIR]

Trains a tiny run (default model size, one epoch on 200 synthetic reviews) into a temporary
directory unless --run names one, then times fresh processes of this interpreter:

    A  python -m lstmcli predict --model RUN "great movie"   (the numpy engine, auto)
    B  python -c "import numpy"                             (the floor: numpy itself)

in interleaved rounds (A B, then B A, ...) after two warm-up rounds, and prints the median of
each, the ratio A / B (the issue's target: at most 2) and the load average before and after.
--torch-rounds adds a few rounds of `predict --engine torch` for scale. Only subprocess and
time.perf_counter are used; the children see this checkout first on PYTHONPATH.

Measured on the project's shared 2-core machine (load average 1.3, 21 rounds): predict 363 ms
against import numpy 182 ms, ratio 2.00; predict --engine torch about 3.0 s. typer is pinned
below 0.29 because 0.29 coerces every option value through a pydantic TypeAdapter, which imports
pydantic (with typer 0.29 the ratio was 2.6 at load 0.9). Of what predict imports beyond numpy,
the largest parts are typer, rich.console and tokenizers; lstmcli's own modules take about 10 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = {"positive": ["great", "wonderful", "superb", "loved"],
         "negative": ["awful", "boring", "terrible", "hated"]}
FILLER = ["the", "movie", "plot", "was", "and", "really", "quite", "this", "a", "story", "it"]


def child_env(state: Path) -> dict[str, str]:
    """This checkout first on the path; lstmcli's state, runs and bytecode in the temporary
    folder. An installed lstmcli has its bytecode cached, so a PYTHONDONTWRITEBYTECODE inherited
    from a development shell would time compiling lstmcli, not starting it; the warm-up rounds
    fill the cache (for numpy's side too)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(state / "pycache")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["LSTM_STATE_DIR"] = str(state / "state")
    env["LSTM_RUNS_DIR"] = str(state / "runs")
    env["LSTM_CACHE_DIR"] = str(state / "cache")
    return env


def train_tiny_run(folder: Path, env: dict[str, str]) -> Path:
    rng = random.Random(0)
    rows = []
    for index in range(200):
        label = "positive" if index % 2 == 0 else "negative"
        words = rng.sample(FILLER, rng.randint(3, 8))
        words.insert(rng.randint(0, len(words)), rng.choice(WORDS[label]))
        rows.append(json.dumps({"text": " ".join(words), "label": label}))
    data = folder / "reviews.jsonl"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    run = folder / "run"
    subprocess.run([sys.executable, "-m", "lstmcli", "train", "--dataset", str(data),
                    "--output", str(run), "--epochs", "1", "--json"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    return run


def wall_time(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--torch-rounds", type=int, default=3)
    parser.add_argument("--run", type=Path, help="an existing run directory (default: train one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lstm-cold-") as temp:
        env = child_env(Path(temp))
        run = args.run or train_tiny_run(Path(temp), env)
        commands = {
            "predict": [sys.executable, "-m", "lstmcli", "predict", "--model", str(run),
                        "great movie"],
            "numpy": [sys.executable, "-c", "import numpy"],
        }
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; "
              f"{sys.executable}")
        times: dict[str, list[float]] = {name: [] for name in commands}
        for round_ in range(args.rounds + 2):
            order = list(commands) if round_ % 2 == 0 else list(reversed(commands))
            for name in order:
                elapsed = wall_time(commands[name], env)
                if round_ >= 2:  # the first two rounds warm the file cache
                    times[name].append(elapsed)
        predict, numpy = (statistics.median(times[name]) for name in ("predict", "numpy"))
        print(f"median of {args.rounds} rounds: predict {predict * 1000:.0f} ms, "
              f"import numpy {numpy * 1000:.0f} ms, ratio {predict / numpy:.2f} (target <= 2)")
        if args.torch_rounds:
            torch_command = commands["predict"] + ["--engine", "torch"]
            torch_times = [wall_time(torch_command, env) for _ in range(args.torch_rounds)]
            print(f"for scale, predict --engine torch: median of {args.torch_rounds} "
                  f"{statistics.median(torch_times) * 1000:.0f} ms")
        print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
