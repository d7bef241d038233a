"""CPU settings: denormals flushed without changing results, threads that fit the CPUs the
process may use, waiting threads that sleep; and `--no-diagnostics` for raw speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from lstmcli import device
from lstmcli.cli import app
from lstmcli.config import ModelConfig
from lstmcli.nn.classifier import SentimentClassifier

runner = CliRunner()


@pytest.fixture
def restore_torch_cpu():
    threads = torch.get_num_threads()
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)


def vanishing_gradients(flush: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """An RNN over 300 steps: on its way back to the first tokens the gradient passes through
    float32's subnormal range; returns the logits, the gradient per embedded token (B, T, E) and
    every parameter's gradient. On one thread: set_flush_denormal sets the calling thread's
    floating-point mode, and torch's worker threads keep the mode they started with (flushing,
    if an earlier test started them inside a training), so two threads mix the two modes."""
    torch.set_num_threads(1)  # restore_torch_cpu puts the count back
    torch.set_flush_denormal(flush)
    torch.manual_seed(0)
    model = SentimentClassifier(ModelConfig(cell="rnn", vocab_size=30, embed_dim=8,
                                            hidden_size=16, num_classes=2))
    seen: list[torch.Tensor] = []

    def keep_gradient(module, inputs, output) -> None:
        output.register_hook(seen.append)

    model.embedding.register_forward_hook(keep_gradient)
    ids = torch.randint(2, 30, (4, 300))
    logits = model(ids, torch.full((4,), 300))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 1])).backward()
    return logits.detach(), [seen[0], *(p.grad.clone() for p in model.parameters())]


def test_flushing_denormals_changes_neither_outputs_nor_gradients(restore_torch_cpu):
    assert torch.set_flush_denormal(True), "this CPU cannot flush denormals"
    logits, grads = vanishing_gradients(flush=False)
    tiny = torch.finfo(torch.float32).tiny
    per_token = grads[0]  # (B, T, E)
    assert ((per_token != 0) & (per_token.abs() < tiny)).any(), "no denormal to flush"
    flushed_logits, flushed_grads = vanishing_gradients(flush=True)
    assert torch.equal(logits, flushed_logits)
    # What flushing changes lives at the bottom of float32's range (about 1e-38), some 36 orders
    # of magnitude below the gradients that train the model.
    for plain, flushed in zip(grads, flushed_grads, strict=True):
        assert (plain - flushed).abs().max() < 1e-30
        assert float(plain.abs().max()) > 1e-6


def test_resolve_device_flushes_and_sets_threads_on_cpu(restore_torch_cpu):
    torch.set_flush_denormal(False)
    assert device.resolve_device("cpu", threads=1).type == "cpu"
    assert torch.get_num_threads() == 1
    assert torch.tensor([1e-40]).item() == 0.0  # flushed: a subnormal literal reads as zero
    device.resolve_device("cpu")
    assert 1 <= torch.get_num_threads() <= device.usable_cpus()


def test_usable_cpus_follow_affinity_and_the_cgroup_quota(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(device, "_cgroup_quota", lambda: None)
    assert device.usable_cpus() == 4
    monkeypatch.setattr(device, "_cgroup_quota", lambda: 1.5)  # "150000 100000"
    assert device.usable_cpus() == 2
    monkeypatch.setattr(device, "_cgroup_quota", lambda: 0.2)
    assert device.usable_cpus() == 1


def test_waiting_threads_sleep_unless_the_user_says_otherwise():
    code = "import lstmcli, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True)
    assert done.stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True)
    assert done.stdout.strip() == "ACTIVE"


def test_no_diagnostics_keeps_the_norms_and_drops_the_rest(tiny_file, tmp_path):
    args = ["train", "--dataset", str(tiny_file), "--epochs", "2", "--hidden-size", "8",
            "--embed-dim", "8", "--threads", "1"]
    result = runner.invoke(app, [*args, "--output", str(tmp_path / "a"), "--no-diagnostics",
                                 "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)["epochs"][0]
    assert {"grad_norm_mean", "grad_norm_median", "grad_norm_max", "clipped_fraction",
            "tokens_per_second", "val_accuracy"} <= set(row)
    assert not {"grad_norm_groups", "update_ratio", "flow", "gates"} & set(row)
    shown = runner.invoke(app, [*args, "--output", str(tmp_path / "b"), "--no-diagnostics"])
    assert shown.exit_code == 0, shown.output
    assert "Training" in shown.output and "Parameter groups" not in shown.output
    with_all = runner.invoke(app, [*args, "--output", str(tmp_path / "c"), "--json"])
    assert {"grad_norm_groups", "update_ratio", "flow", "gates"} <= set(
        json.loads(with_all.output)["epochs"][0])


def test_threads_must_be_positive(tiny_file):
    result = runner.invoke(app, ["train", "--dataset", str(tiny_file), "--threads", "0"])
    assert result.exit_code == 2
    assert "threads must be > 0" in result.output


def test_default_threads_leave_the_cpus_that_others_keep_busy(monkeypatch):
    monkeypatch.setattr(device, "usable_cpus", lambda: 2)
    monkeypatch.setattr(device, "_others_running", lambda: 0)
    assert device.default_threads() == 2
    monkeypatch.setattr(device, "_others_running", lambda: 1)
    assert device.default_threads() == 1
    monkeypatch.setattr(device, "_others_running", lambda: 5)
    assert device.default_threads() == 1


def test_a_busy_neighbour_is_seen(tmp_path):
    """A process spinning on a core shows in the runnable count at every sample."""
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        assert device._others_running() >= 1
    finally:
        competitor.kill()
        competitor.wait()
