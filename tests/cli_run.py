"""Running `chatgate` commands in-process for the CLI tests (click's CliRunner, the real entry point)."""

from __future__ import annotations

from click.testing import CliRunner

from bot.cli import main


def cli(*args, input=None):
    """Run `chatgate ARGS…`; the result, whatever its exit status."""
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def ok(*args, input=None):
    """Run `chatgate ARGS…` and expect exit status 0."""
    result = cli(*args, input=input)
    assert result.exit_code == 0, result.output
    return result
