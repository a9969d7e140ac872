"""The `chatgate` command: run the bot and operate it.

A thin layer over the library: each command loads the settings it needs, opens what it uses, calls
one function and turns a named error into a clear message and a non-zero exit. One module per noun:

    common.py    settings checked for what a command uses, the store, output helpers
    run.py       up, worker, reconcile, feishu-connect (and finding the embedded Redis of `up`)

    users.py     users, user, grant, revoke, trial, grant-all
    codes.py     codes create / list / check / disable
    orders.py    orders, orders bind / check (afdian)
    reports.py   stats, jobs failed / retry
    db.py        db migrate / backup
    config.py    config
    ask.py       ask

The modules define their commands without knowing the group; this package adds them to `main` (so
nothing imports back up: no import circle).

`chatgate worker` runs its answers on gevent, so this module patches the process (`workers/green.py`)
at its very top when that is the command, before click, ssl, redis or anything else is imported.
"""

from __future__ import annotations

import sys

if sys.argv[1:2] == ["worker"]:  # `chatgate worker` answers on gevent: patched before anything imports ssl & co.
    from workers.green import patch

    patch()

import click  # noqa: E402

from bot.cli import ask, codes, config, db, orders, reports, run, users  # noqa: E402
from bot.cli.run import embedded_redis_dir, with_running_redis  # noqa: E402

__all__ = ["embedded_redis_dir", "main", "with_running_redis"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="chatgate")
def main():
    """chatgate: an LLM behind a WeChat Official Account, with free trials and memberships.

    Settings come from the environment and a `.env` file in the current directory; see the README.
    """


for _module in (run, config, db, ask, users, codes, orders, reports):
    for _command in _module.COMMANDS:
        main.add_command(_command)
