"""`chatgate config`: every setting as the operator may see it, what is wrong with it, and whether
chatgate would start.

It never stops half-way: a malformed value, a missing or placeholder secret is printed in its place
and marked with what is wrong, and the exit status is 1 when chatgate would refuse to start. It
judges as `chatgate up` starts: REDIS_URL may be unset, since `up` starts an embedded Redis (noted,
with whether one is running).
"""

from __future__ import annotations

import json

import click

from bot.cli.run import embedded_redis_dir, with_running_redis
from config import VARIABLES, check_settings

WIDTH = max(len(var.name) for var in VARIABLES)
"""The names' column."""


def _redis_note(settings) -> str:
    url = with_running_redis(settings).redis_url
    if url:
        return f"`chatgate up` runs its embedded Redis at {url}"
    return (f"`chatgate up` starts an embedded Redis in {embedded_redis_dir(settings.db_path)}; "
            "web and worker started on their own need REDIS_URL")


@click.command("config")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: values, problems, notes, ready (true or false).")
def show_config(as_json):
    """Print every setting (secrets only as set or unset) and mark each missing, placeholder or
    malformed one with what is wrong. Exits with status 1 when chatgate would refuse to start."""
    check = check_settings(embedded_redis=True)
    settings = check.settings
    notes = {} if settings.redis_url else {"REDIS_URL": _redis_note(settings)}
    names = list(dict.fromkeys(name for p in check.problems for name in p.variables))
    if as_json:
        click.echo(json.dumps({
            "env": settings.env, "ready": check.ready, "values": check.shown,
            "problems": [{"variables": list(p.variables), "problem": p.message,
                          "kind": "production" if p.readiness else "value"} for p in check.problems],
            "notes": notes}, indent=2, ensure_ascii=False))
    else:
        for name, value in check.shown.items():
            marks = [f"  ! {p.message}" + (f": set {' or '.join(p.variables)}" if len(p.variables) > 1 else "")
                     for p in check.problems_of(name)]
            if name in notes:
                marks.append(f"  note: {notes[name]}")
            click.echo(f"{name:{WIDTH}} {value or '(unset)'}{''.join(marks)}")
    if not check.ready:
        n = len(check.problems)
        raise click.ClickException(f"chatgate would refuse to start ({settings.env}): {n} problem{'s' * (n != 1)}, "
                                   f"in {', '.join(names)}")
    if not as_json:
        click.echo(f"ready: chatgate would start ({settings.env})")


COMMANDS = (show_config,)
"""The commands of this module, added to the `chatgate` group by `bot/cli/__init__.py`."""
