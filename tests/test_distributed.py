"""Distributed training under torchrun: two gloo processes on the CPU train to the weights one
process reaches with the same global batch and seed; rank 0 alone writes the run and reports it;
an interrupted distributed run resumes exactly; a distributed run predicts as any other."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import lstmcli
from lstmcli.cli import app
from lstmcli.pretrain_config import PretrainConfig
from lstmcli.training.loop import process_parts
from lstmcli.training.pretrain import LanguageModelTask
from lstmcli.training.resume import StopFlag

from helpers import make_reviews, write_jsonl

runner = CliRunner()
ROOT = Path(lstmcli.__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2"]
# 61 training texts in batches of 5: parts of 3 and 2, and a last batch of one text, whose
# second part is empty (a stand-in at weight 0). No dropout: the processes draw their own masks.
MODEL = ["--batch-size", "5", "--hidden-size", "8", "--embed-dim", "8", "--threads", "1",
         "--seed", "3"]
TORCHRUN_ENV = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"}


def make_data(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: write_jsonl(folder / f"{name}.jsonl", make_reviews(count, seed=seed))
             for name, count, seed in (("train", 61, 1), ("validation", 20, 2), ("test", 20, 3))}
    return ["--train-file", str(files["train"]), "--validation-file", str(files["validation"]),
            "--test-file", str(files["test"])]


def child_environment(**env: str) -> dict[str, str]:
    """This environment for a child process that imports lstmcli from this checkout (the tests
    run without installing it), plus ``env``."""
    path = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path)), **env}


def torchrun(arguments: list[str], folder: Path, script: list[str] | None = None,
             processes: int = 2, **env: str) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node PROCESSES -m lstmcli ARGUMENTS`, with the runs, state and cache
    in ``folder``."""
    environment = child_environment(LSTM_RUNS_DIR=str(folder / "runs"),
                                    LSTM_STATE_DIR=str(folder / "state"),
                                    LSTM_CACHE_DIR=str(folder / "cache"), **env)
    launcher = [*TORCHRUN[:-1], str(processes)]
    return subprocess.run([*launcher, *(script or ["-m", "lstmcli"]), *arguments],
                          capture_output=True, text=True, env=environment, cwd=folder,
                          timeout=300)


def weights(run: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(run / "model.safetensors")


def assert_same_weights(one: Path, two: Path) -> None:
    first, second = weights(one), weights(two)
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_allclose(first[key], second[key], rtol=1e-4, atol=1e-5, err_msg=key)


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# The arithmetic, without processes


def test_weighted_parts_average_to_the_global_batch_gradient():
    """Each process's loss is weighted by its share of the global batch; DDP's average of the
    gradients is then the single process's mean over the whole batch, whatever the parts' sizes
    (a stand-in for an empty part contributes nothing)."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    inputs, targets = torch.randn(12, 3), torch.randint(0, 2, (12,))
    batches = [np.arange(0, 7), np.arange(7, 11), np.array([11])]
    task = SimpleNamespace(loss_terms=len)

    def gradient(index: np.ndarray, weight: float = 1.0) -> torch.Tensor:
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(inputs[index]), targets[index])
        (loss * weight).backward()
        return model.weight.grad.clone()

    for world in (2, 3):
        shares = [process_parts(task, batches, SimpleNamespace(rank=rank, world_size=world))
                  for rank in range(world)]
        assert all(len(parts) == len(batches) for parts, _ in shares)  # the same step count
        for position, batch in enumerate(batches):
            averaged = sum(gradient(parts[position], weights[position])
                           for parts, weights in shares) / world
            torch.testing.assert_close(averaged, gradient(batch), rtol=0, atol=1e-6)
        # The one-text batch: rank 0 has it, the others a stand-in at weight 0.
        assert [weights[2] for _, weights in shares] == [world] + [0.0] * (world - 1)


def test_a_language_model_weights_its_parts_by_predicted_tokens():
    config = PretrainConfig()
    config.model.vocab_size, config.model.num_classes = 40, 0
    config.model.embed_dim = config.model.hidden_size = 8
    config.model.bidirectional = True
    windows = [np.arange(2, 2 + n) for n in (2, 5, 9)]
    task = LanguageModelTask(config, windows, windows, torch.device("cpu"))
    for index in (np.array([0]), np.array([1, 2]), np.arange(3)):
        batch = next(task.batches([index]))
        assert task.loss_terms(index) == batch.targets.numel()


def test_a_second_interrupt_under_torchrun_does_not_abort(monkeypatch):
    """torchrun passes each signal it gets on to its processes: one Ctrl-C arrives twice."""
    flag = StopFlag()
    flag._handle(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):
        flag._handle(signal.SIGINT, None)
    for name, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(name, value)
    flag = StopFlag()
    flag._handle(signal.SIGINT, None)
    flag._handle(signal.SIGINT, None)
    assert flag() and flag.signal_number == signal.SIGINT


def test_an_error_every_process_meets_is_printed_by_the_first_only(tiny_file, monkeypatch):
    """Under torchrun each process meets a bad option; the first process on the machine says
    so, once; every process exits non-zero, before any process group is joined."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    arguments = ["train", "--dataset", str(tiny_file), "--device", "cuda", "--epochs", "1"]
    for name, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(name, value)
    second = runner.invoke(app, arguments)
    assert second.exit_code == 2 and second.output == ""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    first = runner.invoke(app, arguments)
    assert first.exit_code == 2
    assert first.output.count("error:") == 1 and "--device cuda" in first.output
    assert not torch.distributed.is_initialized()


def test_compare_refuses_torchrun(tiny_file, tmp_path, monkeypatch):
    for name, value in {**TORCHRUN_ENV, "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    result = runner.invoke(app, ["compare", "--cells", "rnn", "--dataset", str(tiny_file),
                                 "--epochs", "1", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "without torchrun" in result.output
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Real processes: torchrun and gloo


def _two_processes(rank: int, port: int) -> None:
    """One of two processes joined over gloo (as torchrun would start them): rank 0's answers
    and errors reach rank 1; sums agree; rank 1 then dies, and rank 0 stops with PeerLost."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from lstmcli import distributed
    from lstmcli.errors import ConfigError

    def refuse() -> None:
        raise ConfigError("--output runs/x already exists and is not empty")

    @distributed.entry
    def run() -> None:
        group = distributed.start()
        assert group.place(torch.device("cpu"), 1) == torch.device("cpu")
        assert group.sums([0.1 * (rank + 1), 1]) == [0.1 + 0.2, 2.0]
        assert group.from_rank0(lambda: f"chosen by {rank}") == "chosen by 0"
        with pytest.raises(ConfigError if rank == 0 else distributed.Relayed) as refused:
            group.from_rank0(refuse)
        assert refused.value.exit_code == 2 and "not empty" in str(refused.value)
        if rank == 1:
            os._exit(0)  # gone without a word, as a killed process
        group.sums([1.0])  # the next collective finds no one

    if rank == 0:
        with pytest.raises(distributed.PeerLost):
            run()
    else:
        run()
    assert not torch.distributed.is_initialized()  # left even on the error


@pytest.mark.slow
def test_rank_0_answers_and_errors_reach_the_others_and_a_lost_peer_stops_them():
    import socket

    from torch import multiprocessing

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = multiprocessing.start_processes(_two_processes, (port,), nprocs=2, join=False,
                                              start_method="spawn")
    for _ in range(120):  # a hang fails the test instead of stalling the suite
        if context.join(timeout=1):
            break
    else:
        for process in context.processes:
            process.kill()
        pytest.fail("the processes did not finish within 120 s")


@pytest.fixture(scope="module")
def distributed_run(tmp_path_factory) -> SimpleNamespace:
    """One `lstm train` under torchrun with two processes, and its data."""
    folder = tmp_path_factory.mktemp("ddp")
    data = make_data(folder / "data")
    run = folder / "two"
    done = torchrun(["train", *data, *MODEL, "--epochs", "2", "--output", str(run)], folder)
    return SimpleNamespace(folder=folder, data=data, run=run, done=done)


@pytest.mark.slow
def test_two_processes_train_to_the_weights_of_one(distributed_run, tmp_path):
    assert distributed_run.done.returncode == 0, distributed_run.done.stderr
    one = tmp_path / "one"
    alone = runner.invoke(app, ["train", *distributed_run.data, *MODEL, "--epochs", "2",
                                "--output", str(one), "--json"])
    assert alone.exit_code == 0, alone.output
    assert not torch.distributed.is_initialized()  # no torchrun, no process group
    assert_same_weights(one, distributed_run.run)
    for single, double in zip(rows(one), rows(distributed_run.run), strict=True):
        assert single["steps"] == double["steps"] == 13  # the global batches, not half
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy",
                    "grad_norm_mean", "update_ratio"):
            assert double[key] == pytest.approx(single[key], rel=1e-5, abs=1e-6), key
    tested = json.loads((distributed_run.run / "config.json").read_text())["test_accuracy"]
    assert tested == pytest.approx(json.loads(alone.output)["test_accuracy"])


@pytest.mark.slow
def test_rank_0_alone_writes_the_run_and_reports_it(distributed_run):
    done, run = distributed_run.done, distributed_run.run
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("best epoch") == 1 and done.stdout.count("saved ") == 1
    assert done.stderr.count("run directory:") == 1
    assert done.stderr.count(", 2 processes (gloo)") == 1  # the headline
    assert done.stderr.count("epoch 2/2") == 1  # the plain progress lines: rank 0's
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr
    assert sorted(path.name for path in run.iterdir()) == [
        "README.md", "config.json", "metrics.jsonl", "model.safetensors", "tokenizer.json"]
    assert len(rows(run)) == 2  # each epoch once
    meta = json.loads((run / "config.json").read_text())
    assert meta["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert "trained by 2 processes under torchrun (gloo)" in (run / "README.md").read_text()
    assert [path.name for path in (distributed_run.folder / "runs").glob("*")] == []


@pytest.mark.slow
def test_a_distributed_run_predicts_and_evaluates_as_any(distributed_run):
    assert distributed_run.done.returncode == 0, distributed_run.done.stderr
    run = str(distributed_run.run)
    keys = set(weights(distributed_run.run))
    from lstmcli.nn.layout import expected_shapes
    from lstmcli.runs import read_run_config

    assert keys == set(expected_shapes(read_run_config(distributed_run.run)[0].model))
    for engine in ("torch", "numpy"):
        predicted = runner.invoke(app, ["predict", "--model", run, "--engine", engine,
                                        "--json", "wonderful superb food"])
        assert predicted.exit_code == 0, predicted.output
        assert set(json.loads(predicted.output)["probabilities"]) == {"negative", "positive"}
    evaluated = runner.invoke(app, ["eval", "--model", run, "--split", "validation", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    best = json.loads((distributed_run.run / "config.json").read_text())["best"]
    assert json.loads(evaluated.output)["accuracy"] == pytest.approx(best["val_accuracy"])


@pytest.mark.slow
def test_an_interrupted_distributed_run_resumes_under_torchrun_exactly(tmp_path):
    """Rank 1 alone asks to stop mid-epoch: both stop after the same step, rank 0 saves the
    state and prints the resume line once; resumed under torchrun, the run ends with the weights
    of one process that never stopped."""
    data = make_data(tmp_path / "data")
    cut, one = tmp_path / "cut", tmp_path / "one"
    arguments = ["train", *data, *MODEL, "--epochs", "3", "--output", str(cut)]
    # Asked before each epoch and after each of its 13 steps: the 20th is epoch 2's 5th step.
    stopped = torchrun(arguments, tmp_path, [str(ROOT / "tests" / "torchrun_worker.py")],
                       STOP_AFTER="19")
    assert stopped.returncode != 0
    assert stopped.stderr.count("interrupted at epoch 2, step 5; resume with: lstm train "
                                f"--resume {cut}") == 1, stopped.stderr
    assert (cut / "resume.json").is_file() and not (cut / ".lock").exists()
    assert [row["epoch"] for row in rows(cut)] == [1]

    resumed = torchrun(["train", "--resume", str(cut), "--json"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert [row["epoch"] for row in json.loads(resumed.stdout)["epochs"]] == [1, 2, 3]
    assert not (cut / "resume.json").exists()
    alone = runner.invoke(app, [*arguments[:-1], str(one), "--json"])
    assert alone.exit_code == 0, alone.output
    assert_same_weights(one, cut)


@pytest.mark.slow
@pytest.mark.parametrize("softmax", [
    # Every process draws the same words per step (the same seed): one process's draws.
    ["--softmax", "sampled", "--samples", "5"],
    # A batch's part may use no word of a tail cluster: averaged apart from DDP.
    ["--softmax", "adaptive"]], ids=["sampled", "adaptive"])
def test_pretraining_under_torchrun_matches_one_process(softmax, tmp_path):
    # 2,400 words seen once each beside a few frequent ones: the vocabulary's last 300 or so
    # are the adaptive softmax's tail cluster (ids from 2,000), which some parts of some
    # batches predict and most do not.
    filler = ["the", "movie", "was", "really", "quite", "good", "and"]
    texts = [" ".join(word for index in range(start, start + 30)
                      for word in (f"w{index}", filler[index % len(filler)]))
             for start in range(0, 2400, 30)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n")
    arguments = ["pretrain", "--text-file", str(corpus), *MODEL, "--bptt", "30", "--epochs",
                 "2", *softmax]
    two, one = tmp_path / "two", tmp_path / "one"
    done = torchrun([*arguments, "--output", str(two), "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and done.stdout.count('"run_dir"') == 1
    alone = runner.invoke(app, [*arguments, "--output", str(one), "--json"])
    assert alone.exit_code == 0, alone.output
    assert_same_weights(one, two)
    assert json.loads(done.stdout)["best_val_perplexity"] == pytest.approx(
        json.loads(alone.output)["best_val_perplexity"], rel=1e-5)


# ---------------------------------------------------------------------------------------------
# CUDA: NCCL between GPUs (run on a GPU machine: pytest -m gpu)

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(GPUS < 2, reason="needs two CUDA devices")
def test_two_gpus_over_nccl_train_to_the_weights_of_one(tmp_path, monkeypatch):
    # No TF32: the parts' products must round as the whole batch's do.
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    data = make_data(tmp_path / "data")
    arguments = ["train", *data, *MODEL, "--epochs", "2", "--device", "cuda"]
    done = torchrun([*arguments, "--output", str(tmp_path / "two")], tmp_path,
                    NVIDIA_TF32_OVERRIDE="0")
    assert done.returncode == 0, done.stderr
    assert "2 processes (nccl)" in done.stderr
    alone = runner.invoke(app, [*arguments, "--output", str(tmp_path / "one"), "--json"])
    assert alone.exit_code == 0, alone.output
    first, second = weights(tmp_path / "one"), weights(tmp_path / "two")
    for key in first:  # cuDNN's kernels sum in their own order
        np.testing.assert_allclose(first[key], second[key], rtol=1e-3, atol=1e-4, err_msg=key)
    meta = json.loads((tmp_path / "two" / "config.json").read_text())
    assert meta["distributed"] == {"world_size": 2, "backend": "nccl"}


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(GPUS < 1, reason="needs a CUDA device")
def test_more_processes_than_gpus_is_one_line(tmp_path):
    data = make_data(tmp_path / "data")
    done = torchrun(["train", *data, *MODEL, "--epochs", "1", "--device", "cuda", "--output",
                     str(tmp_path / "run")], tmp_path, processes=GPUS + 1)
    assert done.returncode != 0
    assert done.stderr.count(f"torchrun started {GPUS + 1} processes on this machine, but "
                             f"torch sees {GPUS} CUDA device(s)") == 1, done.stderr
    assert not (tmp_path / "run").exists()
