"""`--processes N` (`[train] processes`): `lstm train` and `lstm pretrain` start N processes of
themselves, as torchrun would, and wait for them. The processes train as torchrun's do (the
weights of one process, within rounding), a failure in them is their one line and exit status,
a signal to the command stops them resumably, and no process starts more processes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_distributed import (
    MODEL,
    TORCHRUN_ENV,
    assert_same_weights,
    child_environment,
    make_data,
    rows,
)
from typer.testing import CliRunner

from lstmcli import launch
from lstmcli.cli import app
from lstmcli.config import Config, TrainConfig, load_config
from lstmcli.errors import ConfigError
from lstmcli.runs import FORMAT_VERSION
from lstmcli.training.compare_plan import ComparePlan, Variant

runner = CliRunner()


def lstm(arguments: list[str], folder: Path, **popen: object) -> subprocess.Popen:
    """The `lstm` command as a user runs it (a process of its own), in ``folder``."""
    return subprocess.Popen([sys.executable, "-m", "lstmcli", *arguments], cwd=folder,
                            env=child_environment(), text=True, **popen)


def finished(arguments: list[str], folder: Path) -> subprocess.CompletedProcess:
    process = lstm(arguments, folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_a_launch_starts_processes_only_outside_one(monkeypatch):
    assert not launch.wanted(1)
    assert launch.wanted(2)
    for name, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(name, value)
    assert not launch.wanted(2)  # one of a launch's processes: the launch decided their number


def test_a_runs_processes_are_read_from_its_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert launch.stored_processes(run) == 1  # no config.json: resuming says what is wrong
    (run / "config.json").write_text(json.dumps({"format_version": FORMAT_VERSION,
                                                  "train": {"processes": 3}}))
    assert launch.stored_processes(run) == 3
    (run / "config.json").write_text(json.dumps({"format_version": FORMAT_VERSION,
                                                  "train": {"epochs": 3}}))  # before the key
    assert launch.stored_processes(run) == 1
    (run / "config.json").write_text("{not json")
    assert launch.stored_processes(run) == 1


@pytest.mark.parametrize("command", ["train", "pretrain"])
def test_a_bad_number_of_processes_is_one_line(command, tiny_file):
    data = ["--train-file", str(tiny_file)] if command == "train" else ["--text-file",
                                                                        str(tiny_file)]
    result = runner.invoke(app, [command, *data, "--processes", "0"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: processes must be > 0, got 0"
    resumed = runner.invoke(app, [command, "--resume", str(tiny_file.parent), "--processes",
                                  "-1"])
    assert resumed.exit_code == 2
    assert resumed.output.strip() == "error: processes must be > 0, got -1"


@pytest.mark.parametrize("command", ["train", "pretrain"])
def test_the_processes_run_the_command_as_it_was_called(command, tiny_file, monkeypatch):
    """The launch starts the arguments the command was given, also when it is called from Python
    (click's runner leaves sys.argv as the caller's: here, pytest's own arguments)."""
    started = []
    monkeypatch.setattr(launch, "run_processes",
                        lambda processes, args: started.append((processes, args)) or 3)
    data = ["--train-file", str(tiny_file)] if command == "train" else ["--text-file",
                                                                        str(tiny_file)]
    arguments = [command, *data, "--processes", "2", "--epochs", "1"]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 3  # the processes' status is the command's
    assert started == [(2, arguments)]


def test_compare_trains_each_run_in_its_own_process():
    config = Config()
    config.train.processes = 2
    plan = ComparePlan(Path("out"), [Variant("base", config)], [0], baseline="base")
    run_config = plan.run_config(plan.variants[0], 0)
    assert run_config.train.processes == 1  # what config.json of the run will say
    assert config.train.processes == 2  # the variant itself is left as given


@pytest.mark.slow
def test_two_processes_train_to_the_weights_of_one_and_report_once(tmp_path):
    data = make_data(tmp_path / "data")
    two, one = tmp_path / "two", tmp_path / "one"
    arguments = ["train", *data, *MODEL, "--epochs", "2"]
    done = finished([*arguments, "--processes", "2", "--output", str(two)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("best epoch") == 1
    assert done.stderr.count(", 2 processes (gloo)") == 1
    assert "Traceback" not in done.stderr and "torch.distributed" not in done.stderr
    meta = json.loads((two / "config.json").read_text())
    assert meta["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert meta["train"]["processes"] == 2
    alone = runner.invoke(app, [*arguments, "--output", str(one)])
    assert alone.exit_code == 0, alone.output
    assert_same_weights(one, two)


@pytest.mark.slow
def test_a_failure_in_the_processes_is_their_one_line_and_status(tmp_path):
    done = finished(["pretrain", "--text-file", str(tmp_path / "missing.txt"), "--processes",
                     "2"], tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: text file {tmp_path / 'missing.txt'} not found; check the path"]
    assert done.stdout == ""


@pytest.mark.slow
def test_a_signal_stops_the_processes_resumably_and_one_process_finishes_the_run(tmp_path):
    """SIGTERM to the command (as a job scheduler sends it) reaches its processes, which stop
    after the same step and save the run; resumed in one process, it ends on the weights of one
    process that never stopped."""
    data = make_data(tmp_path / "data")
    cut, one = tmp_path / "cut", tmp_path / "one"
    arguments = ["train", *data, *MODEL, "--epochs", "500"]
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        process = lstm([*arguments, "--processes", "2", "--output", str(cut)], tmp_path,
                       stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 120
        while "epoch 1/500" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 128 + signal.SIGTERM
    said = log.read_text()
    stop = re.findall(r"interrupted at epoch (\d+), step \d+; resume with: lstm train "
                      rf"--resume {re.escape(str(cut))}", said)
    assert len(stop) == 1, said
    assert "Traceback" not in said and "torch.distributed" not in said
    assert (cut / "resume.json").is_file() and not (cut / ".lock").exists()
    epochs = str(int(stop[0]) + 1)

    resumed = finished(["train", "--resume", str(cut), "--epochs", epochs, "--processes", "1",
                        "--json"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "processes" not in resumed.stderr  # one process: no process group
    assert [row["epoch"] for row in rows(cut)] == list(range(1, int(epochs) + 1))
    alone = runner.invoke(app, [*arguments[:-1], epochs, "--output", str(one)])
    assert alone.exit_code == 0, alone.output
    assert_same_weights(one, cut)


def test_processes_is_a_config_key(tmp_path):
    config_file = tmp_path / "recipe.toml"
    config_file.write_text("[train]\nprocesses = 0\n")
    result = runner.invoke(app, ["train", "--config", str(config_file)])
    assert result.exit_code == 2 and "processes must be > 0" in result.output
    config_file.write_text("[train]\nprocesses = 2\n")
    assert load_config(config_file).train.processes == 2
    with pytest.raises(ConfigError, match="processes must be > 0"):
        TrainConfig(processes=-1).validate()
