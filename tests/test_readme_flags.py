"""The README tells the truth about flags: every flag its tables name exists in that command's
--help, and every flag a command's --help lists is named in the README's section for it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lstmcli.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = re.compile(r"^#{2,4} ")
COMMAND = re.compile(r"`lstm ([a-z]+)`")
FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
# Commands whose flags the README describes in prose, in a chapter of their own.
CHAPTERS = {"diagnose": "## Gradient diagnostics", "explain": "## Gradient diagnostics"}
# Commands with no flags but --json and --data-dir, said in one line of prose.
PROSE_ONLY = {"cells", "datasets"}


def sections() -> dict[str, str]:
    """The text under each heading that names exactly one command (`### \\`lstm train\\``)."""
    found: dict[str, str] = {}
    heading, body = "", []
    for line in [*README.read_text(encoding="utf-8").splitlines(), "## end"]:
        if HEADING.match(line):
            commands = COMMAND.findall(heading)
            if len(commands) == 1:
                found[commands[0]] = "\n".join(body)
            heading, body = line, []
        else:
            body.append(line)
    return found


def table_flags(section: str) -> set[str]:
    """The flags in the first column of the section's `| flag | default | meaning |` tables."""
    flags, in_table = set(), False
    for line in section.splitlines():
        if line.startswith("| flag |"):
            in_table = True
        elif in_table and line.startswith("|"):
            first = line.split("|")[1]
            for span in re.findall(r"`([^`]*)`", first):
                flags |= set(FLAG.findall(span))
        else:
            in_table = False
    return flags - {"-"}


def named_flags(section: str) -> set[str]:
    """Every flag named in backticks anywhere in the section."""
    return {flag for span in re.findall(r"`([^`]*)`", section) for flag in FLAG.findall(span)}


def help_flags(command: str) -> set[str]:
    """The options `lstm COMMAND --help` lists, read from the command itself and checked
    against the rendered help."""
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    flags = {opt for param in click_command.params if param.param_type_name == "option"
             for opt in (*param.opts, *param.secondary_opts)}
    shown = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200",
                                                              "TERMINAL_WIDTH": "200"}).output
    for flag in flags:
        assert flag in shown, f"{flag} missing from `lstm {command} --help`"
    return flags | {"--help", "-h"}


def chapter(title: str) -> str:
    """The text from a `## ` heading that starts with ``title`` to the next `## ` heading."""
    text = README.read_text(encoding="utf-8")
    start = text.index("\n" + title)
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


SECTIONS = sections()


def test_the_readme_has_flag_tables():
    assert {"train", "predict", "runs"} <= {name for name, text in SECTIONS.items()
                                             if table_flags(text)}


@pytest.mark.parametrize("command", sorted(SECTIONS))
def test_every_flag_in_the_readme_tables_exists(command):
    missing = table_flags(SECTIONS[command]) - help_flags(command)
    assert not missing, f"README's `lstm {command}` table names flags it lacks: {missing}"


@pytest.mark.parametrize("command", sorted(set(SECTIONS) - PROSE_ONLY))
def test_every_flag_in_help_is_in_the_readme(command):
    text = chapter(CHAPTERS[command]) if command in CHAPTERS else SECTIONS[command]
    missing = help_flags(command) - {"--help", "-h"} - named_flags(text)
    assert not missing, f"`lstm {command} --help` has flags the README does not name: {missing}"


def test_a_wrong_flag_would_be_caught():
    fake = "### `lstm predict`\n\n| flag | default | meaning |\n| --- | --- | --- |\n" \
           "| `--colour` | | no such flag |\n"
    assert table_flags(fake) - help_flags("predict") == {"--colour"}
