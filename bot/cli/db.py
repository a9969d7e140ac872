"""`chatgate db`: schema migrations and online backups of the SQLite database (no Redis, no secrets)."""

from __future__ import annotations

from pathlib import Path

import click

from bot.cli.common import DATABASE_ONLY, load_checked


@click.group()
def db():
    """The SQLite database."""


@db.command("migrate")
def db_migrate():
    """Apply pending schema migrations (start-up does this too)."""
    from bot.store import Store

    settings = load_checked(need=DATABASE_ONLY)
    store = Store(settings.db_path, migrate=False)
    try:
        applied = store.migrate()
    finally:
        store.close()
    click.echo(f"applied {', '.join(applied)}" if applied else "the database is up to date")


@db.command("backup")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
def db_backup(file, force):
    """Copy the database to FILE (mode 600) while the bot runs: one consistent snapshot.

    Uses SQLite's online backup API, so web and worker processes keep writing meanwhile. The copy is
    a complete database on its own; restore by stopping chatgate and putting it in place of CHATGATE_DB.
    """
    from bot.store import Store

    settings = load_checked(need=DATABASE_ONLY)
    target = Path(file)
    if target.exists() and not force:
        raise click.ClickException(f"{file} exists (use --force to overwrite it)")
    if target.resolve() == Path(settings.db_path).resolve():
        raise click.ClickException("FILE is the database itself")
    store = Store(settings.db_path)
    try:
        copy = store.backup(target)
    finally:
        store.close()
    if copy["check"] != "ok":
        raise click.ClickException(f"the copy in {file} does not check out: {copy['check']}")
    click.echo(f"backed up {settings.db_path} to {file}: {target.stat().st_size // 1024} KiB, "
               f"{copy['users']} users, {copy['ledger']} ledger rows, integrity ok")


COMMANDS = (db,)
"""The commands of this module, added to the `chatgate` group by `bot/cli/__init__.py`."""
