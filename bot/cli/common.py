"""What the `chatgate` commands share: settings checked for what a command uses, the store, the actor
of ledger rows, bounded options, and output (rich tables for people, JSON for scripts).

Settings: a malformed value stops every command. Production's gaps (missing or placeholder secrets,
REDIS_URL unset) stop the processes (`load_checked()`, as the web app does); an operator command
passes the variables it uses (`load_checked(need=...)`), so reading users needs no LLM key and no
Redis. Named errors (`UnknownUser`, `MembershipTooLong`…) become a one-line message and exit status
1; bad arguments are click's usage errors (exit status 2).
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import threading
from collections.abc import Iterable
from contextlib import contextmanager

import click
from rich.console import Console
from rich.table import Table

from bot import members
from bot.errors import ChatgateError
from bot.limits import MAX_DAYS
from config import Settings, SettingsError, load_settings, validate

NOTE = click.option("--note", default="", help="Why: kept in the ledger row.")
AS_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
DAYS = click.IntRange(1, MAX_DAYS)
"""Days of membership an operator may give at once: 1 to 36500 (100 years)."""

DATABASE_ONLY: tuple[str, ...] = ()
"""`need` of the commands that only read and write the database: well-formed values are enough."""


def load_checked(need: Iterable[str] | None = None) -> Settings:
    """The settings; malformed values, and the production gaps in the variables `need` (None: every
    gap, as the processes start), are a clear error and exit status 1."""
    try:
        return load_settings(need=need)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def require(settings: Settings, need: Iterable[str] | None) -> Settings:
    """`settings` if nothing in the variables `need` keeps production from using them (checked again
    after a change, e.g. REDIS_URL filled in with a running embedded Redis)."""
    try:
        validate(settings, need)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    return settings


def actor() -> str:
    """Who a ledger row says made the change: `cli:<login name>`."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name (some containers)
        return "cli"


@contextmanager
def store_context():
    """The settings (database only) and an open store; chatgate's named errors become a clear
    message and exit status 1."""
    from bot.store import Store

    settings = load_checked(need=DATABASE_ONLY)
    store = Store(settings.db_path)
    try:
        yield settings, store
    except ChatgateError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()


def console() -> Console:
    """A rich console; tables fit a terminal, and piped into a file or grep they are not squeezed
    into 80 columns."""
    wide = not sys.stdout.isatty() and not os.environ.get("COLUMNS")
    return Console(markup=False, highlight=False, emoji=False, width=200 if wide else None)


def echo_json(value) -> None:
    """Print `value` as indented JSON (non-ASCII kept readable)."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def table(title: str | None, columns: list[str], rows: list[list]) -> None:
    """Print a table: a header row and one line per row (None shown empty)."""
    out = Table(title=title, title_justify="left", header_style="bold")
    for name in columns:
        out.add_column(name, overflow="fold")
    for row in rows:
        out.add_row(*["" if v is None else str(v) for v in row])
    console().print(out)


def when(settings: Settings, ts: float | None) -> str:
    """A moment in CHATGATE_TIMEZONE, to the minute ('' for None; the calendar's edge beyond it)."""
    return members.local_time(ts, settings.tz)


@contextmanager
def slow(label: str, after_s: float = 1.0):
    """A spinner on stderr, on a terminal only, once the work inside has taken `after_s` seconds
    (a quick report shows none; piped output never does)."""
    err = Console(stderr=True)
    if not err.is_terminal:
        yield
        return
    status = err.status(label)
    lock, done = threading.Lock(), threading.Event()

    def start():
        with lock:
            if not done.is_set():
                status.start()

    timer = threading.Timer(after_s, start)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            done.set()
            timer.cancel()
            status.stop()
