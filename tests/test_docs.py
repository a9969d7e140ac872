"""The README is the newcomer's door: every setting and every command is in it."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from bot.cli import main
from config import VARIABLES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
EXAMPLE_ENV = (ROOT / "config" / "example.env").read_text()


def commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from commands(cmd, prefix + (name,))


@pytest.mark.parametrize("var", VARIABLES, ids=lambda v: v.name)
def test_every_setting_is_documented(var):
    assert f"`{var.name}`" in README
    assert f"{var.name}=" in EXAMPLE_ENV


@pytest.mark.parametrize("path,cmd", list(commands(main)), ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_every_command_has_help_and_is_in_the_readme(path, cmd):
    assert cmd.help and cmd.help.strip()
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert f"chatgate {' '.join(path)}" in README


def test_the_readme_names_the_two_commands_and_ci_runs_the_test_one():
    assert "python3 dev.py up" in README and "python3 dev.py test" in README
    assert "python3 dev.py test" in (ROOT / ".ci" / "run").read_text()
