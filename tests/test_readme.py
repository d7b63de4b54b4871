"""The README and the CLI stay in step: its set-up commands, and every command it shows."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest
import typer

from edgeclass.device.cli import app

from .conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")
SH_BLOCKS = re.findall(r"```sh\n(.*?)```", README, flags=re.S)


def test_readme_opens_with_the_two_fresh_machine_commands():
    first, second = (block.strip() for block in SH_BLOCKS[:2])
    assert first == "python3 -m venv .venv && .venv/bin/pip install '.[device,train]' && .venv/bin/edgeclass demo"
    assert second == "python3 -m venv .venv && .venv/bin/pip install '.[device,train,test]' && .venv/bin/python -m pytest"
    # Nothing but prose and the picture comes before them.
    assert README.index(first) < README.index("## Install")


def test_ci_runs_exactly_the_readme_test_command():
    found = subprocess.run(["bash", "-c", "grep -m 1 -E '^python3 -m venv \\.venv && .*pytest' README.md"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    assert found == SH_BLOCKS[1].strip()
    ci = (REPO / ".ci" / "run").read_text()
    assert "grep -m 1 -E '^python3 -m venv \\.venv && .*pytest' README.md" in ci
    assert 'bash -c "$TEST_COMMAND"' in ci


def _readme_commands() -> list[list[str]]:
    """Every `edgeclass ...` invocation in the README's shell blocks, as argv after 'edgeclass'."""
    commands = []
    for block in SH_BLOCKS:
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            for part in line.split("&&"):
                words = shlex.split(part)
                if words[:1] == ["sudo"]:
                    words = words[1:]
                if words and (words[0] == "edgeclass" or words[0].endswith("/edgeclass")):
                    commands.append(words[1:])
    return commands


def _context(command):
    # Typer vendors its own click; go through the command's own context class.
    return command.context_class(command)


def _resolve(argv: list[str]):
    command = typer.main.get_command(app)
    rest = list(argv)
    while hasattr(command, "get_command") and rest and not rest[0].startswith("-"):
        sub = command.get_command(_context(command), rest[0])
        assert sub is not None, f"README shows 'edgeclass {' '.join(argv)}' but there is no command {rest[0]!r}"
        command, rest = sub, rest[1:]
    return command, rest


@pytest.mark.parametrize("argv", _readme_commands(), ids=lambda a: " ".join(a)[:60])
def test_every_readme_command_parses_with_the_real_cli(argv):
    command, rest = _resolve(argv)
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for word in rest:
        if word.startswith("--") or (word.startswith("-") and len(word) == 2):
            assert word.split("=", 1)[0] in known, f"README uses {word} with 'edgeclass {' '.join(argv)}'; --help has {sorted(known)}"
    # And the parser accepts the whole line (types, required arguments, choices);
    # only the example files themselves do not exist here.
    try:
        command.make_context("edgeclass", list(rest), resilient_parsing=False)
    except Exception as exc:  # typer's vendored click exceptions
        if "does not exist" not in str(exc):
            raise


def test_readme_shows_every_top_level_command():
    group = typer.main.get_command(app)
    shown = {argv[0] for argv in _readme_commands() if argv}
    missing = set(group.list_commands(_context(group))) - shown
    assert not missing, f"commands not shown in README: {sorted(missing)}"
