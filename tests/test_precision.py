"""--device and --precision: bad values and absent devices refused in one line; every cell trains
in bfloat16 and float16 on the CPU with float32 weights; fp16's gradient scaler unscales before
the norms are measured, skips overflowing steps, and its state survives an interrupt; a 16-bit
run is recorded as such and predicted in float32."""

from __future__ import annotations

import functools
import json
import math
import signal

import pytest
import torch
from test_cli import assert_clean_error
from test_pretrain import corpus_file, pretrain
from test_resume import assert_resumes_bitwise, interrupt_at, rows
from typer.testing import CliRunner

from lstmcli import device
from lstmcli.cli import app
from lstmcli.config import ModelConfig
from lstmcli.errors import ConfigError
from lstmcli.nn.cells import cell_names
from lstmcli.nn.classifier import SentimentClassifier
from lstmcli.training.callbacks import Callbacks
from lstmcli.training.monitor import GradientMonitor
from lstmcli.training.precision import Precision, check_precision
from lstmcli.training.trainer import Batch, Diverged, Trainer

runner = CliRunner()
TINY = ["--hidden-size", "8", "--embed-dim", "8", "--batch-size", "8", "--threads", "1",
        "--seed", "3", "--epochs", "2"]


def train(data, run, *extra: str):
    return runner.invoke(app, ["train", "--dataset", str(data), "--output", str(run), *TINY,
                               *extra])


def refused(result, message: str) -> None:
    """Exactly one line, ``message``, exit code 2 (a bad setting), no traceback."""
    assert_clean_error(result, message)
    assert result.exit_code == 2
    assert result.output.strip() == message


# ---------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize("command", ["train", "pretrain"])
@pytest.mark.parametrize("flags, message", [
    (["--precision", "fp8"], "error: unknown precision 'fp8'; choose one of: fp32, bf16, fp16"),
    (["--device", "tpu"], "error: unknown device 'tpu'; choose one of: auto, cpu, cuda, mps"),
])
def test_bad_values_are_refused_in_one_line(command, flags, message, tmp_path):
    refused(runner.invoke(app, [command, "--output", str(tmp_path / "run"), *flags]), message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("toml, message", [
    ('precision = "half"', "unknown precision 'half'; choose one of: fp32, bf16, fp16"),
    ("precision = 16", "[train]: precision must be str, got 16"),
])
def test_a_bad_toml_precision_is_refused_in_one_line(toml, message, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f"[train]\n{toml}\n")
    assert_clean_error(runner.invoke(app, ["train", "--config", str(config)]), message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_gpu_is_refused_in_one_line(tiny_file, tmp_path):
    refused(train(tiny_file, tmp_path / "run", "--device", "cuda"),
            "error: --device cuda asked for, but torch sees no CUDA device; use --device cpu")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(device.mps_available(), reason="this machine has MPS")
def test_mps_without_apple_silicon_is_refused_in_one_line(tiny_file, tmp_path):
    refused(train(tiny_file, tmp_path / "run", "--device", "mps", "--precision", "bf16"),
            "error: --device mps asked for, but torch cannot use Apple's MPS here (it needs Apple "
            "silicon, a recent macOS and a torch built with MPS); use --device cpu")


def test_auto_takes_cuda_then_mps_then_the_cpu(monkeypatch):
    threads = torch.get_num_threads()
    for cuda, mps, expected in ((True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        monkeypatch.setattr(device, "mps_available", lambda mps=mps: mps)
        assert device.resolve_device("auto", threads).type == expected


def test_a_precision_the_device_lacks_is_refused(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(ConfigError, match=r"^--precision bf16 needs a GPU with bfloat16 .*Tesla "
                                          r"T4 has none; use --precision fp16 or fp32$"):
        check_precision("bf16", cuda)
    check_precision("fp16", cuda)
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: False)
    with pytest.raises(ConfigError, match="on MPS needs macOS 14"):
        check_precision("bf16", torch.device("mps"))
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda kind: False)
    with pytest.raises(ConfigError, match="offer on cpu; use --precision fp32$"):
        check_precision("fp16", cpu)
    check_precision("fp32", cpu)


def test_an_unsupported_precision_is_refused_before_the_run_exists(tiny_file, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda kind: False)
    refused(train(tiny_file, tmp_path / "run", "--precision", "bf16", "--device", "cpu"),
            "error: --precision bf16 needs torch's autocast, which this torch does not offer on "
            "cpu; use --precision fp32")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# Training in 16 bits


class Losses(Callbacks):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_step(self, step: int, loss: float) -> None:
        self.losses.append(loss)


def tiny_model(cell: str) -> SentimentClassifier:
    """Every path a cell's recurrence has: two layers, both directions, weight dropout."""
    torch.manual_seed(0)
    return SentimentClassifier(ModelConfig(
        cell=cell, vocab_size=40, embed_dim=8, hidden_size=8, num_classes=2, layers=2,
        bidirectional=True, weight_dropout=0.2, pooling="concat"))


def fixed_batch(steps: int) -> list[Batch]:
    """One batch, ``steps`` times: its label is whether token 5 occurs."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(6, 40, (8, 12), generator=generator)  # (B, T)
    lengths = torch.tensor([12, 12, 10, 9, 7, 6, 4, 3])  # (B,)
    ids[::2, 1] = 5
    ids[torch.arange(12) >= lengths.unsqueeze(1)] = 0
    labels = torch.tensor([1, 0] * 4)  # (B,)
    return [Batch((ids, lengths), labels, int(lengths.sum()))] * steps


def train_steps(model, precision: Precision, batches, loss_fn=torch.nn.functional.cross_entropy):
    losses, monitor = Losses(), GradientMonitor(model, 5.0)
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), loss_fn, monitor,
                      losses, precision=precision)
    stats = trainer.train_epoch(batches, epoch=1, steps=len(batches))
    return stats, losses.losses, monitor


@pytest.mark.parametrize("name", ["bf16", "fp16"])
@pytest.mark.parametrize("cell", cell_names())
def test_every_cell_trains_in_16_bits_on_the_cpu(cell, name):
    model = tiny_model(cell)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    stats, losses, monitor = train_steps(model, Precision(name, "cpu"), fixed_batch(15))
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.8 * losses[0], losses
    assert stats.skipped == 0 and len(monitor.norms) == 15
    for key, value in model.state_dict().items():
        assert value.dtype == torch.float32, key  # the master weights stay float32
        assert not torch.equal(value, before[key]), f"{key} never changed"


def test_fp16_norms_are_measured_unscaled():
    """The monitor and clipping see the true gradient, not the loss scale (65536) times it."""
    _, _, plain = train_steps(tiny_model("gru"), Precision(), fixed_batch(1))
    _, _, scaled = train_steps(tiny_model("gru"), Precision("fp16", "cpu"), fixed_batch(1))
    assert scaled.norms[0] == pytest.approx(plain.norms[0], rel=0.02)


def test_an_fp16_overflow_skips_the_step_and_halves_the_scale():
    model, precision = tiny_model("lstm"), Precision("fp16", "cpu")
    precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 40)  # float16 overflows
    before = {key: value.clone() for key, value in model.state_dict().items()}
    stats, losses, monitor = train_steps(model, precision, fixed_batch(1))
    assert stats.skipped == 1 and len(losses) == 1 and math.isfinite(losses[0])
    assert precision.scaler.get_scale() == 2.0 ** 39
    assert monitor.norms == []  # a skipped step's infinite norm is not a statistic
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_a_gradient_that_overflows_unscaled_is_divergence():
    """sqrt at 0: a finite loss whose gradient is infinite at any scale. fp16 halves the scale
    and skips while it is >= 1, then stops; fp32 stops at once."""
    def loss_fn(logits, targets):
        first = logits[0, 0].float()
        return torch.nn.functional.cross_entropy(logits, targets) + (first - first.detach()).sqrt()

    precision = Precision("fp16", "cpu")
    precision.scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    with pytest.raises(Diverged) as stopped:
        train_steps(tiny_model("rnn"), precision, fixed_batch(10), loss_fn)
    assert (stopped.value.step, stopped.value.what) == (3, "gradient norm")  # 4 -> 2 -> 1 -> stop
    with pytest.raises(Diverged) as stopped:
        train_steps(tiny_model("rnn"), Precision(), fixed_batch(10), loss_fn)
    assert stopped.value.step == 1


# ---------------------------------------------------------------------------------------------
# Runs


def test_a_bf16_run_is_recorded_and_predicted_in_float32(tiny_file, tmp_path):
    from safetensors import safe_open

    run = tmp_path / "run"
    result = train(tiny_file, run, "--precision", "bf16", "--cell", cell_names()[-1])
    assert result.exit_code == 0, result.output
    assert "parameters, cpu bf16" in result.output  # the headline
    meta = json.loads((run / "config.json").read_text())
    assert (meta["train"]["precision"], meta["device"]) == ("bf16", "cpu")
    assert "- trained on cpu, precision bf16 (float32 weights)" in (run / "README.md").read_text()
    with safe_open(str(run / "model.safetensors"), framework="numpy") as stored:
        assert {stored.get_slice(key).get_dtype() for key in stored.keys()} == {"F32"}  # noqa: SIM118
    probabilities = []
    for engine in ("torch", "numpy"):
        predicted = runner.invoke(app, ["predict", "--model", str(run), "--engine", engine,
                                        "--json", "a wonderful story"])
        assert predicted.exit_code == 0, predicted.output
        probabilities.append(json.loads(predicted.output)["probability"])
    assert probabilities[0] == pytest.approx(probabilities[1], abs=1e-5)
    evaluated = runner.invoke(app, ["eval", "--model", str(run), "--split", "validation"])
    assert evaluated.exit_code == 0, evaluated.output


def test_an_interrupted_fp16_run_resumes_its_loss_scale_bitwise(tiny_file, tmp_path,
                                                                monkeypatch):
    """The scale doubles after every good step here, so it overflows every few steps and its
    value at the interrupt decides which later steps are skipped: resuming with a fresh scaler
    would not end bitwise equal."""
    monkeypatch.setattr(torch.amp, "GradScaler",
                        functools.partial(torch.amp.GradScaler, growth_interval=1))
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    fp16 = ["--precision", "fp16", "--epochs", "3", "--dropout", "0.3", "--json"]
    assert train(tiny_file, whole, *fp16).exit_code == 0
    assert sum(row["skipped_steps"] for row in rows(whole)) > 0
    with monkeypatch.context() as patch:
        interrupt_at(patch, epoch=2, step=5, number=signal.SIGINT)
        assert train(tiny_file, parts, *fp16).exit_code == 130
    scaler = json.loads((parts / "resume.json").read_text())["scaler"]
    assert scaler["scale"] != 65536.0 and scaler["growth_interval"] == 1
    assert_resumes_bitwise(parts, whole)


def test_a_language_model_pretrains_in_bf16(tmp_path):
    run = tmp_path / "lm"
    result = pretrain(corpus_file(tmp_path), run, "--precision", "bf16", "--epochs", "2")
    assert result.exit_code == 0, result.output
    history = json.loads(result.output)["epochs"]
    assert all(math.isfinite(row["val_perplexity"]) for row in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert json.loads((run / "config.json").read_text())["train"]["precision"] == "bf16"
