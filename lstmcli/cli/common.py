"""The Typer app and what every command shares: consoles, error handling, common options."""


import functools
import io
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from lstmcli import __version__
from lstmcli.errors import LstmError, TrainingInterrupted
from lstmcli.jsonout import dumps

# Where the command keeps the arguments it was called with (click's context meta, which every
# subcommand's context shares).
ARGUMENTS = "lstmcli.arguments"


class _Command(TyperGroup):
    """The app's click group, keeping its own arguments: `--processes N` starts the same command N
    times, and only the group saw them whole, whether they came from the shell (sys.argv) or from
    a caller such as click's CliRunner, which never sets sys.argv."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None,
                     **extra: Any) -> Any:
        given = list(args)  # parsing consumes the list
        context = super().make_context(info_name, args, parent=parent, **extra)
        context.meta[ARGUMENTS] = given
        return context


app = typer.Typer(
    cls=_Command,
    help="Train, evaluate, diagnose and serve recurrent-network sentiment classifiers.",
    no_args_is_help=True,
    add_completion=True,  # `lstm --install-completion`: flags and their choices in the shell
    pretty_exceptions_enable=False,
    # Every command inherits these from the app's context: `lstm train -h` as well as `lstm -h`.
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

# 128 + SIGPIPE (13): what a shell reports for a writer whose reader closed the pipe.
SIGPIPE_EXIT = 141

F = TypeVar("F", bound=Callable[..., Any])


def handles_errors(command: F) -> F:
    """Turn the library's errors into one line on stderr and an exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TrainingInterrupted as error:  # not an error: the line says how to continue
            _say(f"[bold yellow]{escape(str(error))}[/]")
            raise typer.Exit(error.exit_code) from None
        except BrokenPipeError:
            # The reader went away (`lstm predict ... | head -1`): stop quietly with the status
            # a process killed by SIGPIPE has, as `cat` and `grep` do.
            silence_stdout()
            raise typer.Exit(SIGPIPE_EXIT) from None
        except LstmError as error:
            _say(f"[bold red]error:[/] {escape(str(error))}")
            raise typer.Exit(error.exit_code) from None
        except OSError as error:
            where = f" {error.filename}" if error.filename else ""
            _say(f"[bold red]error:[/] cannot access{escape(where)}: "
                 f"{escape(error.strerror or str(error))}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            _say("[bold red]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _say(message: str) -> None:
    """Print an error line, except in the second and later processes that torchrun started on a
    machine: they meet the errors its first one meets (or lose the process that met one), and
    one line says it."""
    from lstmcli.distributed import speaks

    try:
        quiet = not speaks()
    except LstmError:  # torchrun's variables garbled: say it all
        quiet = False
    if not quiet:
        err.print(message)


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's final flush of a closed pipe prints no
    'Exception ignored ... BrokenPipeError'."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):  # no real stdout (a test runner)
        pass


def version_callback(value: bool) -> None:
    if value:
        out.print(f"lstmcli {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option(
        "--version", callback=version_callback, is_eager=True, help="Show the version and exit.")]
    = False,
) -> None:
    """Train, evaluate, diagnose and serve recurrent-network sentiment classifiers."""


# Options shared by the commands that read data ----------------------------------------------
DatasetOpt = Annotated[str | None, typer.Option(
    "--dataset", help="A registered dataset (see `lstm datasets`) or a .csv/.tsv/.jsonl/.parquet "
    "file. Default: sample (bundled).")]
DataDirOpt = Annotated[str | None, typer.Option(
    "--data-dir", help="Local copies laid out as DIR/NAME/SPLIT.parquet (env LSTM_DATA_DIR).")]
TextColumnOpt = Annotated[str | None, typer.Option(
    "--text-column", help="Text column of a local file (default: text/sentence/review).")]
LabelColumnOpt = Annotated[str | None, typer.Option(
    "--label-column", help="Label column of a local file (default: label/sentiment/rating).")]
ThresholdOpt = Annotated[float | None, typer.Option(
    "--positive-threshold", help="Star ratings: a rating >= this is positive.")]
MaxEvalOpt = Annotated[int | None, typer.Option(
    "--max-eval-samples", help="Cap validation/test examples (seeded subsample); 0: all.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object for machines.")]
ModelDirOpt = Annotated[str | None, typer.Option(
    "--model", "-m", help="Run directory written by `lstm train` (default: the latest run).")]

# Options shared by the commands that train (`lstm train`, `lstm compare`) --------------------
ConfigFileOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="TOML file with \\[model], \\[data], \\[train] sections; flags "
    "override it.")]
MaxTrainOpt = Annotated[int | None, typer.Option(
    "--max-train-samples", help="Cap training examples (seeded, stratified).")]
EmbedDimOpt = Annotated[int | None, typer.Option(
    "--embed-dim", help="Embedding size. \\[default: 64]")]
HiddenSizeOpt = Annotated[int | None, typer.Option(
    "--hidden-size", help="Hidden units per direction. \\[default: 64]")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="\\[default: 10]")]
BatchSizeOpt = Annotated[int | None, typer.Option("--batch-size", help="\\[default: 32]")]
LrOpt = Annotated[float | None, typer.Option(
    "--lr", help="Learning rate. \\[default: 0.003]")]
# The regularisers of [model] and the optimiser of [train] (lstmcli.nn.dropout,
# lstmcli.training.optim): `lstm train` and `lstm pretrain` take them alike.
EmbedInitOpt = Annotated[float | None, typer.Option(
    "--embed-init", help="Start the embedding uniform in [-A, A] (AWD-LSTM: 0.1). \\[default: "
    "torch's N(0, 1)]", metavar="A")]
EmbedDropoutOpt = Annotated[float | None, typer.Option(
    "--embed-dropout", help="Drop whole words of the vocabulary per batch (AWD-LSTM's "
    "dropoute). \\[default: 0.0]")]
InputDropoutOpt = Annotated[float | None, typer.Option(
    "--input-dropout", help="Locked dropout on the embedded text: one mask per text, the "
    "same at every step. \\[default: 0.0]")]
HiddenDropoutOpt = Annotated[float | None, typer.Option(
    "--hidden-dropout", help="Locked dropout between stacked layers (needs --layers 2 or "
    "more). \\[default: 0.0]")]
WeightDropoutOpt = Annotated[float | None, typer.Option(
    "--weight-dropout", help="DropConnect on the recurrent weights W_hh, a fresh mask per "
    "batch (AWD-LSTM's weight drop). \\[default: 0.0]")]

ThreadsOpt = Annotated[int | None, typer.Option(
    "--threads", help="CPU threads for torch. \\[default: the CPUs this process may use "
    "(affinity and cgroup quota)]")]
ProcessesOpt = Annotated[int | None, typer.Option(
    "--processes", help="Train as N processes on this machine (torchrun's, each with its share "
    "of the batch and of the CPUs): faster than N threads for small recurrent models. "
    "\\[default: 1]")]
WeightDecayOpt = Annotated[float | None, typer.Option(
    "--weight-decay", help="Weight decay (L2 for adam, decoupled for adamw). \\[default: 0.0]")]
EmaDecayOpt = Annotated[float | None, typer.Option(
    "--ema-decay", help="Validate, keep and test a moving average of the weights with this "
    "decay per step (0.99: about the last 100 steps); 0 turns it off. \\[default: 0.0]",
    metavar="DECAY")]
ClipNormOpt = Annotated[float | None, typer.Option(
    "--clip-norm", help="Clip the global gradient norm to this; 0 disables. \\[default: 5.0]")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="\\[default: 0]")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Replace an existing --output run directory.")]
DiagnosticsOpt = Annotated[bool | None, typer.Option(
    "--diagnostics/--no-diagnostics", help="Per-step gradient statistics per parameter group "
    "and the per-epoch gradient flow; off for raw speed (the global norm, clipping and the "
    "divergence guard stay). \\[default: on]")]


def choice_option(
    *names: str, choices: Callable[[], Sequence[str]], help: str, **settings: Any
) -> Any:
    """An option whose help shows its choices as click does (`[a|b|c]`) and whose shell
    completion offers them. The values are still checked by the library, so that a bad one stays
    the library's one line naming the choices (click's own check prints a boxed, multi-line
    usage error). ``choices`` is called lazily for completion: a cell registered by a plugin
    after this module was imported is offered too."""
    def complete(incomplete: str) -> list[str]:
        return [choice for choice in choices() if choice.startswith(incomplete)]

    return typer.Option(*names, help=help, metavar="[" + "|".join(choices()) + "]",
                        autocompletion=complete, **settings)


def device_option(default_help: str = "") -> Any:
    from lstmcli.config import DEVICE_CHOICES

    return choice_option("--device", choices=lambda: DEVICE_CHOICES,
                         help=f"Where the model runs.{default_help}")


def _precision_choices() -> tuple[str, ...]:
    from lstmcli.config import PRECISION_CHOICES

    return PRECISION_CHOICES


PrecisionOpt = Annotated[str | None, choice_option(
    "--precision", choices=_precision_choices, help="Arithmetic of the training steps and of "
    "training's validation: autocast to bfloat16 or float16 (with loss scaling); the weights "
    "stay float32, and predict/eval run float32. \\[default: fp32]")]


def _optimizer_choices() -> tuple[str, ...]:
    from lstmcli.config import OPTIMIZER_CHOICES

    return OPTIMIZER_CHOICES


OptimizerOpt = Annotated[str | None, choice_option(
    "--optimizer", choices=_optimizer_choices, help="adamw decouples the weight decay from the "
    "adaptive step. \\[default: adam]")]


QuietOpt = Annotated[bool, typer.Option(
    "--quiet", "-q", help="Print nothing but errors (--json output is still printed).")]

# What --resume leaves to the command (the resumed run keeps its own config), and the spellings
# of flags whose parameter names differ from them.
# --processes too: the batches depend on the global batch only, so a run resumes on any number.
RESUME_KEEPS = {"resume", "epochs", "as_json", "quiet", "processes"}
FLAG_NAMES = {"config_file": "--config", "bidirectional": "--bidirectional/--unidirectional",
              "diagnostics": "--diagnostics/--no-diagnostics",
              "gradual_unfreeze": "--gradual-unfreeze/--no-gradual-unfreeze",
              "text_files": "--text-file"}


def refuse_with_resume(options: dict[str, Any]) -> None:
    """One line naming every flag given beside --resume that would change the run (None: not
    given; 0 and --unidirectional are given; --overwrite alone defaults to False)."""
    given = [name for name, value in options.items() if name not in RESUME_KEEPS
             and (value if name == "overwrite" else value is not None)]
    if given:
        from lstmcli.errors import ConfigError

        flags = ", ".join(FLAG_NAMES.get(name, "--" + name.replace("_", "-")) for name in given)
        raise ConfigError(f"--resume continues a run with its own config; {flags} cannot "
                          "change it (only --epochs can)")


def start_processes(context: typer.Context, processes: int | None,
                    run_dir: Path | None = None) -> None:
    """Run this command, with the arguments ``context`` was given, as ``processes`` processes
    (``[train] processes``; for --resume the run's own, unless given) and exit with their status,
    when more than one is asked for and this is not already one of them (lstmcli.launch)."""
    from lstmcli.launch import run_processes, stored_processes, wanted

    if processes is None and run_dir is not None:
        processes = stored_processes(run_dir)
    if processes is not None:
        from lstmcli.config import _positive

        _positive("processes", processes)  # [train] processes's own check, for --resume's flag
    if processes is not None and wanted(processes):
        raise typer.Exit(run_processes(processes, context.meta[ARGUMENTS]))


def print_json(payload: Any) -> None:
    sys.stdout.write(dumps(payload) + "\n")
    sys.stdout.flush()


def undecodable_byte(text: str) -> int | None:
    """The first byte that was not UTF-8 in a text decoded with surrogateescape (it arrives as a
    lone surrogate, which no tokenizer can read), or None."""
    bad = next((char for char in text if "\ud800" <= char <= "\udfff"), None)
    if bad is None:
        return None
    return ord(bad) - 0xDC00 if ord(bad) >= 0xDC80 else 0
