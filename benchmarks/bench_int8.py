"""Int8 against float32 prediction of one trained run: reviews/s and accuracy, in one process.

Both models are the same run loaded twice: as `lstm predict` loads it, and with torch's dynamic
int8 weight matrices (lstmcli.nn.int8: what `lstm predict --int8` runs without the `export` extra;
with it, --int8 runs the onnxruntime int8 graph that --onnx times). Both score the same texts,
tokenized once, with the same batching (lstmcli.nn.classifier.predict_logits, batches of 256 sorted
by length): the timed part is the model alone, which is what --int8 changes. Repeats alternate
between the two models (fp32, int8, then int8, fp32, ...), so a change in the machine's load
reaches both; medians are reported. Accuracy is each model's on the same rows (IMDB test or SST-2
validation unless --split says otherwise). Targets: int8 >= 1.5x the float32 reviews/s, accuracy
within 0.5 points.

--onnx adds the run exported by `lstm export` (float32 and --int8) on onnxruntime, same batches,
same number of threads, in the same alternation.

    python benchmarks/bench_int8.py --model RUN --data-dir ../shared/data --dataset imdb \
        [--limit N] [--rounds 3] [--threads N] [--onnx]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from lstmcli.config import DataConfig
from lstmcli.data.batching import bucket_batches, pad_arrays
from lstmcli.data.splits import load_eval_rows
from lstmcli.device import resolve_device, usable_cpus
from lstmcli.inference.export import export_run
from lstmcli.inference.predictor import Predictor
from lstmcli.nn.classifier import PAD_MULTIPLE, predict_logits
from lstmcli.nn.int8 import int8_classifier

DEFAULT_SPLIT = {"sst2": "validation"}  # GLUE's SST-2 test split has no labels
Model = Callable[[Sequence[np.ndarray]], np.ndarray]  # token ids -> logits (N, C)


def torch_model(model: torch.nn.Module) -> Model:
    return lambda ids: predict_logits(model, ids).numpy()


def onnx_model(path: Path, threads: int) -> Model:
    """An exported file on onnxruntime, batched exactly as predict_logits batches."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])

    def run(ids: Sequence[np.ndarray]) -> np.ndarray:
        logits = None
        for index in bucket_batches([len(row) for row in ids], 256):
            batch, lengths = pad_arrays([ids[i] for i in index], PAD_MULTIPLE)
            out = session.run(["logits"], {"ids": batch, "lengths": lengths})[0]  # (B, C)
            if logits is None:
                logits = np.empty((len(ids), out.shape[1]), dtype=np.float32)
            logits[index] = out
        return logits

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="run directory")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--dataset", default="imdb")
    parser.add_argument("--split", default=None, help="default: test (sst2: validation)")
    parser.add_argument("--limit", type=int, default=0, help="score this many rows (0: all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="default: what lstm uses")
    parser.add_argument("--onnx", action="store_true", help="also the exported ONNX files")
    args = parser.parse_args()
    fp32 = Predictor.from_run(args.model, "cpu", "torch")
    int8 = Predictor.from_run(args.model, "cpu", "torch")
    int8.run.model = int8_classifier(int8.run.model)  # torch's int8, whatever is installed
    # After loading, which fits the threads to the machine's load at that instant.
    resolve_device("cpu", args.threads)  # denormals flushed, as `lstm predict`
    run = fp32.run
    data = DataConfig(dataset=args.dataset, data_dir=args.data_dir,
                      max_len=run.config.data.max_len, val_fraction=run.config.data.val_fraction,
                      max_eval_samples=args.limit or None)
    split = args.split or DEFAULT_SPLIT.get(args.dataset, "test")
    rows = load_eval_rows(data, split, fp32.label_names, seed=run.config.train.seed).rows
    labels = np.asarray(rows.labels)
    ids = run.tokenizer.encode(rows.texts, run.config.data.max_len, run.config.data.truncation)

    models = {"fp32": torch_model(fp32.run.model), "int8": torch_model(int8.run.model)}
    scratch = tempfile.TemporaryDirectory()
    if args.onnx:
        for name, quantized in (("onnx fp32", False), ("onnx int8", True)):
            path = Path(scratch.name) / f"{name.replace(' ', '-')}.onnx"
            export_run(run, path, "onnx", int8=quantized)
            models[name] = onnx_model(path, torch.get_num_threads())
    seconds: dict[str, list[float]] = {name: [] for name in models}
    predictions: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for model in models.values():
            model(ids[:256])  # first-call setup out of the timings
        for round_ in range(args.rounds):
            order = list(models) if round_ % 2 == 0 else list(reversed(models))
            for name in order:
                started = time.perf_counter()
                logits = models[name](ids)
                seconds[name].append(time.perf_counter() - started)
                predictions[name] = logits.argmax(axis=1)
    scratch.cleanup()

    n = len(rows)
    speed = {name: n / statistics.median(values) for name, values in seconds.items()}
    accuracy = {name: float((predictions[name] == labels).mean()) for name in models}
    agreement = float((predictions["fp32"] == predictions["int8"]).mean())
    ratio = speed["int8"] / speed["fp32"]
    drop = 100 * (accuracy["fp32"] - accuracy["int8"])
    print(f"{n:,} {args.dataset} {split} rows, run {args.model} ({run.config.model.cell}), "
          f"{args.rounds} rounds, {torch.get_num_threads()} threads (usable {usable_cpus()}), "
          f"load average {os.getloadavg()[0]:.2f}")
    for name in models:
        print(f"{name}: median {statistics.median(seconds[name]):.2f} s, "
              f"{speed[name]:,.0f} reviews/s, accuracy {accuracy[name]:.4f}")
    print(f"int8/fp32 reviews/s: {ratio:.2f} (target >= 1.5); accuracy change "
          f"{-drop:+.2f} points (target within 0.5); same label on {agreement:.2%} of rows")
    if args.onnx:
        print(f"onnx int8 / torch fp32 reviews/s: {speed['onnx int8'] / speed['fp32']:.2f}; "
              f"onnx int8 / onnx fp32: {speed['onnx int8'] / speed['onnx fp32']:.2f}")
    print(json.dumps({"rows": n, "seconds": seconds, "reviews_per_second": speed,
                      "accuracy": accuracy, "agreement": agreement, "ratio": ratio}))


if __name__ == "__main__":
    main()
