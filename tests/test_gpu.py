"""Training on a CUDA device: every cell in every precision, float32 that matches the CPU, and
runs that record the GPU and load on the CPU. Skipped without a CUDA device; on a GPU machine,
``pytest -m gpu`` runs them alone."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_precision import fixed_batch, tiny_model, train_steps
from typer.testing import CliRunner

from lstmcli.cli import app
from lstmcli.nn.cells import cell_names
from lstmcli.training.precision import Precision

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
runner = CliRunner()
# No dropout: the CPU's and the GPU's generators draw different masks.
TINY = ["--hidden-size", "16", "--embed-dim", "16", "--batch-size", "8", "--seed", "3",
        "--epochs", "2", "--threads", "1", "--json"]


def exact_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TF32 (10-bit mantissas) in matrix products or cuDNN: float32 as the CPU computes it."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def on_cuda(batches):
    return [type(batch)(tuple(t.cuda() for t in batch.inputs), batch.targets.cuda(),
                        batch.tokens) for batch in batches]


@pytest.mark.parametrize("name", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("cell", cell_names())
def test_every_cell_trains_on_cuda(cell, name):
    model = tiny_model(cell).cuda()
    stats, losses, _ = train_steps(model, Precision(name, "cuda"), on_cuda(fixed_batch(15)))
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(p.dtype == torch.float32 and p.is_cuda for p in model.parameters())


@pytest.mark.parametrize("cell", cell_names())
def test_cuda_float32_matches_the_cpu(cell, monkeypatch):
    """The same weights and batch: one step's loss and gradients agree with the CPU's."""
    exact_float32(monkeypatch)
    results = []
    for where in ("cpu", "cuda"):
        model = tiny_model(cell).to(where)
        for recurrence in model.encoder.recurrences():
            recurrence.cell.weight_dropout = 0.0  # no mask to draw from two generators
        batch = fixed_batch(1) if where == "cpu" else on_cuda(fixed_batch(1))
        ids, lengths = batch[0].inputs
        loss = torch.nn.functional.cross_entropy(model(ids, lengths), batch[0].targets)
        loss.backward()
        results.append((float(loss), [p.grad.cpu() for p in model.parameters()]))
    (cpu_loss, cpu_grads), (gpu_loss, gpu_grads) = results
    assert gpu_loss == pytest.approx(cpu_loss, rel=1e-5)
    for cpu_grad, gpu_grad in zip(cpu_grads, gpu_grads, strict=True):
        torch.testing.assert_close(gpu_grad, cpu_grad, rtol=1e-4, atol=1e-6)


def test_a_cuda_run_matches_a_cpu_run(tiny_file, tmp_path, monkeypatch):
    exact_float32(monkeypatch)
    histories = []
    for where in ("cpu", "cuda"):
        result = runner.invoke(app, ["train", "--dataset", str(tiny_file), "--device", where,
                                     "--output", str(tmp_path / where), *TINY])
        assert result.exit_code == 0, result.output
        histories.append(json.loads(result.output)["epochs"])
    for cpu, gpu in zip(*histories, strict=True):
        assert gpu["train_loss"] == pytest.approx(cpu["train_loss"], rel=1e-3)
        assert gpu["val_loss"] == pytest.approx(cpu["val_loss"], rel=1e-3)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_16_bit_cuda_run_records_the_gpu_and_predicts_on_the_cpu(precision, tiny_file,
                                                                   tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--dataset", str(tiny_file), "--device", "cuda",
                                 "--precision", precision, "--output", str(run), *TINY])
    assert result.exit_code == 0, result.output
    meta = json.loads((run / "config.json").read_text())
    assert meta["train"]["precision"] == precision
    assert meta["device"] == f"cuda ({torch.cuda.get_device_name()})"
    predicted = runner.invoke(app, ["predict", "--model", str(run), "--device", "cpu",
                                    "--json", "a wonderful story"])
    assert predicted.exit_code == 0, predicted.output
