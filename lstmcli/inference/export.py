"""`lstm export`: a trained run as one ONNX or TorchScript file that a service runs without
lstmcli, with the tokenizer and a JSON description beside it.

The exported function is the classifier's: ``ids`` (B, T) int64, right-padded with 0, and
``lengths`` (B,) int64 -> ``logits`` (B, C) float32, for any B and T (softmax gives the
probabilities lstmcli prints). It is built from :class:`lstmcli.nn.portable.PortableClassifier`:
torch's RNN/LSTM/GRU kernels where a cell has one (ONNX's RNN/LSTM/GRU operators), the cell's own
step-wise equations in a loop otherwise (an ONNX Loop), which an exporter can follow for every
cell. Before anything is written, the serialized model is run and its logits compared with the
run's own (within 1e-4 for float32), on batches whose sizes and lengths differ from the traced
example.

``--int8``: TorchScript gets torch's dynamic quantization (:mod:`lstmcli.nn.int8`); ONNX gets
onnxruntime's (``quantize_dynamic``, int8 weights for MatMul and LSTM; a cell with no LSTM kernel
is exported step-wise with MatMul products, inside the loop too, so that every cell is quantized).
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from lstmcli import __version__
from lstmcli.atomic import atomic_write, write_json_atomic
from lstmcli.config import EXPORT_FORMATS as FORMATS
from lstmcli.errors import ConfigError, LstmError
from lstmcli.runload import LoadedRun

SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript"}
# The loop of a step-wise cell needs opset 11; the TorchScript-based exporter writes up to 20.
MIN_OPSET, MAX_OPSET = 11, 20
DEFAULT_OPSET = 17  # onnxruntime >= 1.13, and most other runtimes
TOKENIZER_FILE = "tokenizer.json"
TOLERANCE = 1e-4  # float32 exports: the largest |logit difference| from the run's own model
INSTALL = "pip install 'lstmcli[export]'"
# The kernels onnxruntime's dynamic quantization makes int8 (LSTM -> DynamicQuantizeLSTM); a
# cell with any other kernel runs step-wise, on MatMul products it does quantize.
ONNX_INT8_KERNELS = ("LSTM",)


def plan(output: Path, fmt: str | None, opset: int | None, overwrite: bool
         ) -> tuple[str, int | None]:
    """Every check that needs no model, made before one is loaded: the format (as given, else
    from the output's suffix: .onnx, .pt, .ts), the opset (ONNX only; defaulted) and the output
    paths. An existing export is replaced only with ``overwrite``."""
    if output.is_dir():
        raise ConfigError(f"--output {output} is a directory; pass a file path such as "
                          f"{output / 'model.onnx'}")
    if fmt is None:
        fmt = SUFFIXES.get(output.suffix.lower())
        if fmt is None:
            raise ConfigError(f"cannot tell the format from the name {output.name!r}; pass "
                              f"--format {'|'.join(FORMATS)} or name the file *.onnx or *.pt")
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if opset is not None and fmt != "onnx":
        raise ConfigError("--opset applies to --format onnx only; drop it for torchscript")
    if fmt == "onnx":
        opset = DEFAULT_OPSET if opset is None else opset
        if not MIN_OPSET <= opset <= MAX_OPSET:
            raise ConfigError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")
    if TOKENIZER_FILE in (output.name, sidecar_path(output).name):
        raise ConfigError(f"--output {output.name} would collide with the {TOKENIZER_FILE} "
                          "written beside it; choose another file name")
    for parent in (output.parent, *output.parent.parents):
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"{parent} is a file, not a directory; choose another --output")
    sidecar = sidecar_path(output)
    if sidecar.is_dir():
        raise ConfigError(f"{sidecar} is a directory; choose another --output")
    for path in (output, sidecar):
        if path.exists() and not overwrite:
            raise ConfigError(f"{path} already exists; choose another --output or pass "
                              "--overwrite to replace it")
    return fmt, opset


def sidecar_path(output: Path) -> Path:
    """The JSON description beside FILE: FILE with .json appended (model.onnx.json)."""
    return output.with_name(output.name + ".json")


def require_onnx() -> None:
    """One line naming the extra when the ONNX packages are missing (onnx writes and checks
    the file, onnxruntime verifies it and quantizes it)."""
    for package in ("onnx", "onnxruntime"):
        try:
            __import__(package)
        except ImportError:
            raise ConfigError(f"--format onnx needs the {package} package; install it with: "
                              f"{INSTALL}") from None


def export_run(
    run: LoadedRun, output: Path, fmt: str | None = None, int8: bool = False,
    opset: int | None = None, overwrite: bool = False,
) -> dict[str, Any]:
    """Export a loaded run (torch engine, CPU) to ``output``; returns the sidecar's contents.
    Writes FILE, then tokenizer.json, then FILE.json (which names FILE's SHA-256, so that a
    service can tell a matching pair), each atomically, and only once the serialized model has
    been verified."""
    fmt, opset = plan(output, fmt, opset, overwrite)
    if fmt == "onnx":
        require_onnx()
    tokenizer_path = output.parent / TOKENIZER_FILE
    tokenizer_json = run.tokenizer.to_json().encode("utf-8")
    if (tokenizer_path.is_file() and not overwrite
            and tokenizer_path.read_bytes() != tokenizer_json):
        raise ConfigError(f"{tokenizer_path} holds another vocabulary (another export's); export "
                          "into another directory or pass --overwrite to replace it")
    data = serialize(run, fmt, int8, opset)
    difference, agreement, texts = verify(run, fmt, data)
    if not int8 and difference > TOLERANCE:
        raise LstmError(f"the exported model's logits differ from the run's by {difference:.2e} "
                        f"(more than {TOLERANCE:g}); nothing was written. Please report this "
                        "with the run's config.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, lambda handle: handle.write(data))
    atomic_write(tokenizer_path, lambda handle: handle.write(tokenizer_json))
    sidecar = describe(run, output, fmt, int8, opset)
    sidecar["file_sha256"] = hashlib.sha256(data).hexdigest()
    sidecar["verified"] = {"rows": texts, "max_abs_logit_difference": difference,
                           "argmax_agreement": agreement}
    write_json_atomic(sidecar_path(output), sidecar)
    return sidecar


def describe(run: LoadedRun, output: Path, fmt: str, int8: bool, opset: int | None
             ) -> dict[str, Any]:
    """What a service needs to use the file without lstmcli: inputs, outputs, labels and how
    lstmcli turns a text into ids."""
    import torch

    model = run.config.model
    return {
        "file": output.name,
        "format": fmt,
        "opset": opset,
        "int8": int8,
        "tokenizer": TOKENIZER_FILE,
        "inputs": {
            "ids": "int64 (batch, steps): token ids, each row right-padded with 0 ([PAD])",
            "lengths": "int64 (batch,): the real ids in each row, 1 to steps",
        },
        "outputs": {"logits": "float32 (batch, classes): softmax over them gives the "
                              "probabilities of label_names"},
        "label_names": run.label_names,
        "max_len": run.config.data.max_len,
        "pad_id": run.tokenizer.PAD_ID,
        "unk_id": run.tokenizer.UNK_ID,
        "preprocessing": [
            "replace <br>, <br/> and <br /> (any case) with a space",
            "NFKC-normalise, then lowercase",
            "split into runs of word characters and runs of other non-space characters "
            "(regex \\w+|[^\\w\\s]+)",
            "map each piece through the tokenizer's vocabulary, unknown pieces to unk_id",
            "a text without pieces is [unk_id]; a text longer than max_len keeps the ids "
            "truncation names: head, the first max_len; tail, the last max_len; both, the "
            "first max_len // 2 and the last max_len - max_len // 2",
        ],
        "truncation": run.config.data.truncation,
        "cell": model.cell,
        "layers": model.layers,
        "bidirectional": model.bidirectional,
        "pooling": model.pooling,
        "run_dir": str(run.path.resolve()),
        "weights_sha256": run.meta.get("weights_sha256"),
        "lstmcli_version": __version__,
        "torch_version": torch.__version__,
    }


def serialize(run: LoadedRun, fmt: str, int8: bool, opset: int | None) -> bytes:
    """The model file's bytes."""
    import torch

    from lstmcli.nn.int8 import int8_classifier
    from lstmcli.nn.portable import PortableClassifier, example_inputs, to_torchscript

    model = run.model
    if fmt == "torchscript":
        portable = int8_classifier(model) if int8 else PortableClassifier(model)
    elif int8:
        portable = PortableClassifier(model, kernels=ONNX_INT8_KERNELS, matmul=True)
    else:
        portable = PortableClassifier(model)
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer's notes on Python values it records as constants (the loops' sizes, the
        # pooling choice): constants by design, and the verification below would catch a
        # wrong one.
        warnings.simplefilter("ignore")
        scripted = to_torchscript(portable)
        buffer = io.BytesIO()
        if fmt == "torchscript":
            torch.jit.save(scripted, buffer)
            return buffer.getvalue()
        torch.onnx.export(
            scripted, example_inputs(), buffer, dynamo=False, opset_version=opset,
            input_names=["ids", "lengths"], output_names=["logits"],
            dynamic_axes={"ids": {0: "batch", 1: "steps"}, "lengths": {0: "batch"},
                          "logits": {0: "batch"}},
        )
    data = buffer.getvalue()
    return _onnx_int8(data) if int8 else data


def _onnx_int8(data: bytes) -> bytes:
    """onnxruntime's dynamic quantization of an ONNX model: int8 weights for MatMul (inside
    loops too) and LSTM."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as scratch:
        source, target = Path(scratch) / "model.onnx", Path(scratch) / "int8.onnx"
        source.write_bytes(data)
        # It logs a suggestion to pre-process the model on every call: noise on a CLI's stderr.
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)
        try:
            quantize_dynamic(source, target, op_types_to_quantize=["MatMul", "LSTM"],
                             weight_type=QuantType.QInt8, extra_options={"EnableSubgraph": True})
        finally:
            logging.getLogger().setLevel(level)
        return target.read_bytes()


def verification_batches(vocab_size: int, max_len: int, seed: int = 0
                         ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Padded batches of random ids: one text of min(max_len, 40) ids, then texts of 1 to that
    many ids in one batch (7 where max_len allows): sizes the traced example (2 texts of 3 ids)
    does not have."""
    rng = np.random.default_rng(seed)
    longest = min(max_len, 40)
    mixed = sorted({min(length, longest) for length in (1, 2, 3, 4, 5, longest // 2 or 1,
                                                          longest)}, reverse=True)
    batches = []
    for lengths in ([longest], mixed):
        lengths = np.array(lengths, dtype=np.int64)
        ids = np.zeros((len(lengths), int(lengths.max())), dtype=np.int64)  # (B, T)
        for row, length in enumerate(lengths):
            ids[row, :length] = rng.integers(1, vocab_size, size=length)
        batches.append((ids, lengths))
    return batches


def verify(run: LoadedRun, fmt: str, data: bytes) -> tuple[float, float, int]:
    """Run the serialized model on verification batches: the largest |logit difference| from
    the run's own model, the share of rows with the same top class, and the rows compared."""
    import torch

    runner = load_exported(fmt, data)
    differences, agreements = [], []
    for ids, lengths in verification_batches(run.config.model.vocab_size,
                                             run.config.data.max_len):
        with torch.no_grad():
            expected = run.model(torch.from_numpy(ids), torch.from_numpy(lengths)).numpy()
        got = runner(ids, lengths)  # (B, C)
        differences.append(float(np.abs(got - expected).max()))
        agreements.extend(got.argmax(axis=1) == expected.argmax(axis=1))
    return max(differences), float(np.mean(agreements)), len(agreements)


def load_exported(fmt: str, data: bytes) -> Any:
    """A function (ids, lengths) -> logits, numpy in and out, over an exported file's bytes."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        return lambda ids, lengths: session.run(["logits"], {"ids": ids, "lengths": lengths})[0]
    import torch

    module = torch.jit.load(io.BytesIO(data))

    def run(ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(ids), torch.from_numpy(lengths)).numpy()

    return run
