"""`lstm export` and int8: an exported file gives the run's own logits for every cell, direction,
depth and pooling, on batches the exporter never saw; int8 agrees on the labels; the README's
serving script runs as printed; bad requests are one line and write nothing."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lstmcli.cli import app
from lstmcli.config import POOLING_CHOICES, Config, ModelConfig
from lstmcli.data.batching import pad_arrays
from lstmcli.data.tokenizer import Tokenizer
from lstmcli.inference import export as export_module
from lstmcli.inference import onnx_int8
from lstmcli.inference.export import FORMATS, export_run, load_exported
from lstmcli.inference.predictor import Predictor, choose_engine
from lstmcli.nn.cells import Cell, Ops, State, cell_names, register_cell, unregister_cell
from lstmcli.nn.classifier import SentimentClassifier, predict_logits
from lstmcli.runload import load_run
from lstmcli.runs import TOKENIZER_FILE, save_checkpoint

from helpers import make_reviews

runner = CliRunner()
README = Path(__file__).resolve().parents[1] / "README.md"
LABELS = ["negative", "neutral", "positive"]  # three classes: softmax, not a sigmoid
CORPUS = [row["text"] for row in make_reviews(60)]
# 9 texts (the exporter traced 2), 1 to 40 tokens, unknown words, punctuation runs.
TEXTS = ["great", "the plot was awful and the staff quite boring", "it", "superb!!!",
         " ".join(CORPUS[:5]), "zyzzyva movie", "loved it " * 4, "a " * 3 + "dreadful",
         "battery and service"]
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
# TorchScript is what was asked for, and torch still ships it (in maintenance, as it says).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


def needs(fmt: str) -> None:
    """ONNX tests need the export extra; TorchScript needs torch alone."""
    if fmt == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")


def save_random_run(run_dir: Path, seed: int = 0, **model: Any) -> Path:
    """A classifier with every parameter drawn at random (nothing trivially zero), saved by the
    project's own save path."""
    tokenizer = Tokenizer.train(CORPUS, vocab_size=200, min_freq=1)
    config = Config()
    config.model = ModelConfig(vocab_size=tokenizer.vocab_size, num_classes=len(LABELS),
                               embed_dim=7, hidden_size=5, **model)
    config.data.max_len = 40
    torch.manual_seed(seed)
    network = SentimentClassifier(config.model)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.normal_(0.0, 0.7)
        network.classifier.weight.mul_(4.0)  # confident: logits move with every upstream number
    run_dir.mkdir(parents=True)
    save_checkpoint(run_dir, network, config, LABELS)
    tokenizer.save(run_dir / TOKENIZER_FILE)
    return run_dir


def batch(run_dir: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The texts as lstmcli feeds them: ids (B, T) right-padded with 0, lengths (B,)."""
    run = load_run(run_dir)
    return pad_arrays(run.tokenizer.encode(texts, run.config.data.max_len))


def run_logits(run_dir: Path, texts: list[str]) -> np.ndarray:
    """What `lstm predict` computes, as logits (its own batching and padding)."""
    run = load_run(run_dir)
    return predict_logits(run.model, run.tokenizer.encode(texts, run.config.data.max_len)).numpy()


def export(run_dir: Path, output: Path, fmt: str, **options: Any) -> dict[str, Any]:
    return export_run(load_run(run_dir), output, fmt, **options)


def exported(output: Path, fmt: str) -> Any:
    return load_exported(fmt, output.read_bytes())


def invoke(*args: str):
    return runner.invoke(app, list(args))


def assert_clean_error(result, *fragments: str) -> None:
    """One line naming the problem, a non-zero exit code, no traceback."""
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:"), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# One small and one deep model per cell; the pooling turns with the cell, so every pooling
# meets both shapes.
SHAPES = [{"layers": 1, "bidirectional": False}, {"layers": 2, "bidirectional": True}]


@pytest.mark.slow  # 20 exports: about a second each
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", [0, 1])
@pytest.mark.parametrize("cell", cell_names())
def test_export_gives_the_runs_logits(cell, shape, fmt, tmp_path):
    needs(fmt)
    pooling = POOLING_CHOICES[(cell_names().index(cell) + shape) % len(POOLING_CHOICES)]
    run = save_random_run(tmp_path / "run", cell=cell, pooling=pooling, **SHAPES[shape])
    output = tmp_path / "out" / f"model{SUFFIX[fmt]}"
    sidecar = export(run, output, fmt)
    model = exported(output, fmt)
    ids, lengths = batch(run, TEXTS)
    logits = model(ids, lengths)  # (9, 3): a batch size and lengths no export saw
    assert logits.shape == (len(TEXTS), len(LABELS))
    assert np.abs(logits - run_logits(run, TEXTS)).max() < 1e-4
    # Variable length: each text alone, unpadded, gives its row of the padded batch.
    for row, length in enumerate(lengths):
        alone = model(ids[row:row + 1, :length], lengths[row:row + 1])
        assert np.abs(alone[0] - logits[row]).max() < 1e-5
    assert sidecar["verified"]["max_abs_logit_difference"] < 1e-4


def op_types(graph: Any) -> list[str]:
    """Every operator of an ONNX graph, those inside loops included."""
    found = []
    for node in graph.node:
        found.append(node.op_type)
        for attribute in node.attribute:
            if attribute.g.node:
                found.extend(op_types(attribute.g))
    return found


@pytest.mark.slow  # 10 exports
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cell", cell_names())
def test_int8_export_is_int8_and_agrees(cell, fmt, tmp_path):
    needs(fmt)
    run = save_random_run(tmp_path / "run", cell=cell, bidirectional=True)
    output = tmp_path / f"int8{SUFFIX[fmt]}"
    sidecar = export(run, output, fmt, int8=True)
    assert sidecar["int8"] is True
    texts = TEXTS + CORPUS[:31]
    logits = exported(output, fmt)(*batch(run, texts))
    expected = run_logits(run, texts)
    # Random weights of size 5 are harder on int8 than trained ones (chaotic, and one scale per
    # matrix); bench_int8.py measures trained models.
    assert (logits.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.8
    if fmt == "onnx":
        import onnx

        ops = op_types(onnx.load_from_string(output.read_bytes()).graph)
        # Every recurrence's products in int8: the LSTM operator's own, or MatMul ones.
        assert "DynamicQuantizeLSTM" in ops or ops.count("MatMulInteger") >= 4, ops
        assert "MatMul" not in ops, ops
    else:
        code = torch.jit.load(io.BytesIO(output.read_bytes())).inlined_graph
        assert "quantized::" in str(code)


@pytest.mark.parametrize("cell", cell_names())
def test_predict_int8_quantizes_every_cell_and_agrees(cell, tmp_path, monkeypatch):
    # torch's int8 path: what --int8 runs without the export extra.
    monkeypatch.setattr(onnx_int8, "available", lambda: False)
    run = save_random_run(tmp_path / "run", cell=cell, bidirectional=True, pooling="mean")
    predictor = Predictor.from_run(run, int8=True)
    assert predictor.engine == "torch"
    modules = list(predictor.run.model.modules())
    quantized = [m for m in modules if "quantized" in type(m).__module__]
    float_layers = [m for m in modules if type(m) in (torch.nn.Linear, torch.nn.LSTM,
                                                      torch.nn.GRU, torch.nn.RNN)]
    assert quantized and not float_layers, modules
    texts = TEXTS + CORPUS[:31]
    int8 = predictor.probabilities(texts)
    fp32 = Predictor.from_run(run).probabilities(texts)
    assert (int8.argmax(axis=1) == fp32.argmax(axis=1)).mean() >= 0.8
    assert np.abs(int8 - fp32).max() < 0.2

    result = invoke("predict", "--model", str(run), "--int8", *TEXTS[:3])
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 3


@pytest.mark.parametrize("cell", cell_names())
def test_predict_int8_runs_the_onnx_int8_graph_cached_outside_the_run(cell, tmp_path,
                                                                     monkeypatch):
    needs("onnx")
    run = save_random_run(tmp_path / "run", cell=cell, bidirectional=True, pooling="concat")
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    predictor = Predictor.from_run(run, int8=True)
    assert predictor.engine == "onnx-int8"
    texts = TEXTS + CORPUS[:31]
    int8 = predictor.probabilities(texts)
    fp32 = Predictor.from_run(run).probabilities(texts)
    assert int8.shape == fp32.shape and np.allclose(int8.sum(axis=1), 1, atol=1e-5)
    # Random weights are harder on int8 than trained ones (see the export test above): the
    # labels mostly agree; bench_int8.py measures accuracy on trained runs.
    assert (int8.argmax(axis=1) == fp32.argmax(axis=1)).mean() >= 0.8
    # The graph went to the cache, keyed by the weights; the run directory is untouched.
    cached = list((Path(os.environ["LSTM_CACHE_DIR"]) / "int8").glob("*.onnx"))
    assert len(cached) == 1
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before
    # The next call loads it instead of exporting again.
    monkeypatch.setattr(export_module, "serialize", lambda *args: pytest.fail("exported again"))
    again = Predictor.from_run(run, int8=True).probabilities(texts)
    np.testing.assert_array_equal(again, int8)
    result = invoke("predict", "--model", str(run), "--int8", *TEXTS[:3])
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 3


class MinimalGatedCell(Cell):
    """A plugin's cell (minimal gated unit): one forget gate, no torch kernel.

        f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)
        n_t = tanh(W_in x_t + b_in + W_hn h_{t-1} + b_hn)
        h_t = f_t * h_{t-1} + (1 - f_t) * n_t
    """

    name = "minimalgated"
    chunks = ("forget", "new")
    gate_names = ("forget", "new")
    candidates = ("new",)
    memory_gate = "forget"

    @staticmethod
    def step(ops: Ops, params: Any, x_projected: Any, state: State) -> tuple[State, dict]:
        (h_prev,) = state
        x_forget, x_new = ops.split(x_projected, 2)
        h_forget, h_new = ops.split(ops.linear(h_prev, params.weight_hh, params.bias_hh), 2)
        forget = ops.sigmoid(x_forget + h_forget)  # (B, H)
        new = ops.tanh(x_new + h_new)
        return (forget * h_prev + (1.0 - forget) * new,), {"forget": forget, "new": new}


@pytest.fixture
def plugin_cell():
    register_cell(MinimalGatedCell)
    yield MinimalGatedCell.name
    unregister_cell(MinimalGatedCell.name)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_plugin_cell_exports_and_runs_in_int8(plugin_cell, fmt, tmp_path):
    needs(fmt)
    run = save_random_run(tmp_path / "run", cell=plugin_cell, bidirectional=True, layers=2)
    output = tmp_path / f"model{SUFFIX[fmt]}"
    export(run, output, fmt)
    ids, lengths = batch(run, TEXTS)
    unregister_cell(plugin_cell)  # the file runs without the plugin
    logits = exported(output, fmt)(ids, lengths)
    register_cell(MinimalGatedCell)
    assert np.abs(logits - run_logits(run, TEXTS)).max() < 1e-4
    int8 = Predictor.from_run(run, int8=True).probabilities(TEXTS)
    assert (int8.argmax(axis=1) == run_logits(run, TEXTS).argmax(axis=1)).mean() >= 0.8


def test_int8_refuses_the_numpy_engine_and_the_gpu(tmp_path):
    run = save_random_run(tmp_path / "run")
    assert_clean_error(invoke("predict", "--model", str(run), "--int8", "--engine", "numpy",
                              "great"), "--int8", "--engine numpy")
    assert choose_engine("auto", "cpu", 3, int8=True) == "torch"  # never numpy for --int8
    with pytest.raises(Exception, match="CPU only"):
        choose_engine("torch", "cuda", 3, int8=True)


def test_export_cli_writes_the_model_tokenizer_and_sidecar(tmp_path):
    needs("onnx")
    run = save_random_run(tmp_path / "run", cell=cell_names()[-1], bidirectional=True)
    output = tmp_path / "served" / "sentiment.onnx"
    result = invoke("export", "--model", str(run), "--output", str(output), "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    sidecar = json.loads((tmp_path / "served" / "sentiment.onnx.json").read_text())
    assert printed["sidecar"].endswith("sentiment.onnx.json")
    assert sidecar["label_names"] == LABELS
    assert sidecar["max_len"] == 40 and sidecar["pad_id"] == 0 and sidecar["unk_id"] == 1
    assert sidecar["format"] == "onnx" and sidecar["opset"] == 17 and sidecar["int8"] is False
    assert sidecar["cell"] == cell_names()[-1] and sidecar["lstmcli_version"]
    assert sidecar["file_sha256"] == hashlib.sha256(output.read_bytes()).hexdigest()
    assert (tmp_path / "served" / sidecar["tokenizer"]).read_text() == \
        (run / TOKENIZER_FILE).read_text()
    # A second run's export beside it would need another vocabulary: refused, not overwritten.
    other = save_random_run(tmp_path / "other", cell=cell_names()[0])
    (tmp_path / "served" / "tokenizer.json").write_text('{"another": "vocabulary"}')
    assert_clean_error(invoke("export", "-m", str(other), "-o", str(tmp_path / "served" / "b.pt")),
                       "another vocabulary")
    assert not (tmp_path / "served" / "b.pt").exists()


def test_a_failed_verification_writes_nothing(tmp_path, monkeypatch):
    import lstmcli.inference.export as export_module

    run = save_random_run(tmp_path / "run")
    monkeypatch.setattr(export_module, "verify", lambda *args: (0.5, 1.0, 8))
    result = invoke("export", "-m", str(run), "-o", str(tmp_path / "out" / "model.pt"))
    assert_clean_error(result, "differ from the run's by 5.00e-01")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arguments, fragments", [
    (["--format", "tflite"], ["unknown format 'tflite'", "onnx, torchscript"]),
    (["-o", "model.bin"], ["cannot tell the format", "--format"]),
    (["-o", "model.pt", "--opset", "17"], ["--opset applies to --format onnx only"]),
    (["-o", "model.onnx", "--opset", "9"], ["--opset must be between 11 and 20"]),
    (["-o", "tokenizer.json", "--format", "onnx"], ["collide with the tokenizer.json"]),
    (["-m", "nowhere"], ["run directory nowhere does not exist"]),
])
def test_bad_requests_are_one_line_and_write_nothing(arguments, fragments, tmp_path):
    run = save_random_run(tmp_path / "run")
    if "-o" not in arguments:
        arguments = [*arguments, "-o", "model.onnx"]
    if "-m" not in arguments:
        arguments = ["-m", str(run), *arguments]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_clean_error(invoke("export", *arguments), *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_export_asks_for_an_output(tmp_path):
    run = save_random_run(tmp_path / "run")
    assert_clean_error(invoke("export", "-m", str(run)), "pass --output FILE")


def test_an_existing_export_or_a_directory_is_never_replaced(tmp_path):
    run = save_random_run(tmp_path / "run")
    (tmp_path / "exports").mkdir()
    assert_clean_error(invoke("export", "-m", str(run), "-o", str(tmp_path / "exports")),
                       "is a directory", "exports/model.onnx")
    existing = tmp_path / "model.pt"
    existing.write_bytes(b"somebody's model")
    assert_clean_error(invoke("export", "-m", str(run), "-o", str(existing)),
                       "already exists", "--overwrite")
    assert existing.read_bytes() == b"somebody's model"
    result = invoke("export", "-m", str(run), "-o", str(existing), "--overwrite")
    assert result.exit_code == 0, result.output
    assert "verified on 8 rows" in result.output
    assert torch.jit.load(str(existing)) is not None


def test_missing_onnx_packages_name_the_extra(tmp_path, monkeypatch):
    run = save_random_run(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    assert_clean_error(invoke("export", "-m", str(run), "-o", str(tmp_path / "m.onnx")),
                       "onnxruntime", "pip install 'lstmcli[export]'")
    assert not (tmp_path / "m.onnx").exists()


# The README's serving script -------------------------------------------------------------------


def readme_snippet() -> str:
    """The Python block of the README's "Serving without lstmcli" section."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("#### Serving without lstmcli"):]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def run_snippet() -> tuple[dict[str, Any], str]:
    """Execute the snippet in the current directory; its namespace and what it printed."""
    namespace: dict[str, Any] = {"__name__": "readme"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(readme_snippet(), "README.md", "exec"), namespace)  # noqa: S102
    return namespace, printed.getvalue()


@pytest.fixture
def served(tmp_path) -> Path:
    """A trained-shaped run exported where the README's script looks (./export/)."""
    needs("onnx")
    run = save_random_run(tmp_path / "run", cell=cell_names()[0], bidirectional=True)
    export(run, Path("export") / "sentiment.onnx", "onnx")
    return run


def test_the_readme_serving_script_prints_what_lstm_predict_prints(served):
    namespace, printed = run_snippet()
    texts = namespace["texts"]
    predicted = invoke("predict", "--model", str(served), *texts)
    assert predicted.exit_code == 0, predicted.output
    assert printed == predicted.output


def test_the_readme_tokenizer_is_lstmclis(served):
    namespace, _ = run_snippet()
    encode = namespace["encode"]
    tokenizer = load_run(served).tokenizer
    texts = ["Great movie!!! Loved it.", "The plot<br />was AWFUL<BR>and boring", "Café crème",
             "zyzzyva, qwerty", "   ", "?!", "ﬁne ｆｕｌｌ ｗｉｄｔｈ", "it's the plot... really",
             "movie " * 60]
    for text, ids in zip(texts, tokenizer.encode(texts, 40), strict=True):
        assert encode(text) == ids.tolist(), text
    # A run that keeps a long text's head and tail: the script reads the sidecar's truncation.
    long_text = " ".join(f"word{i}" for i in range(100)) + " great"
    for truncation in ("tail", "both"):
        namespace["meta"]["truncation"] = truncation
        expected = tokenizer.encode([long_text], 40, truncation=truncation)[0].tolist()
        assert encode(long_text) == expected, truncation
