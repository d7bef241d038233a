"""`lstm predict --int8` on onnxruntime: the run exported as `lstm export --int8` exports it (int8
weights for every matrix product, :mod:`lstmcli.inference.export`), run in an onnxruntime session.

Why not torch's own int8: on CPUs without int8 dot-product instructions (this project's AVX2
machine) torch's dynamic int8 LSTM is slower than its float32 oneDNN kernel (0.70x on IMDB
reviews), while onnxruntime's int8 graph runs at 1.9x torch float32 (benchmarks/README.md).
torch's int8 (:mod:`lstmcli.nn.int8`) remains the path when onnxruntime is not installed.

Exporting, quantizing and verifying take seconds, so the int8 file is cached, keyed by the
weights' SHA-256 and the versions that made it, in the ``int8/`` folder of the cache that encoded
texts use (``$LSTM_CACHE_DIR``, else ``~/.cache/lstmcli``). The run directory is never written.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lstmcli import __version__
from lstmcli.atomic import atomic_write
from lstmcli.data.batching import bucket_batches, pad_arrays
from lstmcli.data.tokenizer import cache_root

PAD_MULTIPLE = 16  # as lstmcli.nn.classifier.predict_logits: few shapes, bounded memory


def available() -> bool:
    """Whether onnx and onnxruntime (the `export` extra) are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def cache_file(run: Any) -> Path:
    """Where the run's int8 file is cached: named by what determines its bytes."""
    import onnxruntime
    import torch

    weights = run.meta.get("weights_sha256") if isinstance(run.meta, dict) else None
    if not weights:
        weights = hashlib.sha256((Path(run.path) / "model.safetensors").read_bytes()).hexdigest()
    key = f"{weights}-{__version__}-torch{torch.__version__}-ort{onnxruntime.__version__}"
    return cache_root() / "int8" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.onnx"


class OnnxInt8Model:
    """logits(sequences) -> (N, C) float32 in input order, from the run's int8 ONNX graph."""

    def __init__(self, run: Any, threads: int | None = None) -> None:
        import onnxruntime

        from lstmcli.inference.export import DEFAULT_OPSET, serialize

        path = cache_file(run)
        try:
            data = path.read_bytes()
        except OSError:  # not cached yet (or unreadable): make it, and cache it when we can
            data = serialize(run, "onnx", True, DEFAULT_OPSET)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, lambda handle: handle.write(data))
            except OSError:
                pass  # a read-only home: the next call exports again, nothing is lost
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(data, options,
                                                    providers=["CPUExecutionProvider"])

    def logits(self, sequences: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
        out: np.ndarray | None = None
        for index in bucket_batches([len(s) for s in sequences], batch_size):
            ids, lengths = pad_arrays([sequences[i] for i in index], PAD_MULTIPLE)  # (B, T), (B,)
            logits = self.session.run(["logits"], {"ids": ids, "lengths": lengths})[0]  # (B, C)
            if out is None:
                out = np.empty((len(sequences), logits.shape[1]), dtype=np.float32)
            out[index] = logits
        assert out is not None  # callers never pass no sequences
        return out
