"""`chatgate codes`: batches of single-use redemption codes (made, listed, checked, disabled)."""

from __future__ import annotations

import csv
import os
from datetime import datetime

import click

from bot import codes as codes_mod
from bot.cli.common import AS_JSON, DAYS, NOTE, actor, echo_json, store_context, table, when
from bot.limits import MAX_CODES
from bot.prices import from_cents, to_cents


@click.group()
def codes():
    """Redemption codes: users send `兑换 CODE` (or `redeem CODE`) in chat to get membership days."""


@codes.command("create")
@click.option("--days", required=True, type=DAYS, help="Days of membership each code gives (at most 36500).")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, MAX_CODES),
              help="How many codes (at most 100,000).")
@click.option("--batch", default=None, help="Batch name (letters, digits, _ . -); default: the date and time.")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also write the codes to this CSV file (created owner-only; refuses an existing file).")
@click.option("--price", default=None, metavar="AMOUNT",
              help="What each code sells for, in CHATGATE_CURRENCY (e.g. 19.9): revenue in `chatgate stats` "
                   "on the day it is redeemed.")
@NOTE
@AS_JSON
def codes_create(days, count, batch, csv_file, price, note, as_json):
    """Make a batch of single-use codes and print them, one per line.

    They are shown only now: the database keeps their hashes. Redirect them to a file
    (`> codes.txt`); the summary goes to stderr.
    """
    try:
        price_cents = None if price is None else to_cents(price)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--price") from None
    batch = batch or datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        codes_mod.check_batch(batch)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--batch") from None
    fd = None
    if csv_file:
        try:
            fd = os.open(csv_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise click.BadParameter(f"{csv_file} exists", param_hint="--csv") from None
    price_text = "" if price_cents is None else str(from_cents(price_cents))
    with store_context() as (settings, store):
        made = codes_mod.create(store, days=days, count=count, batch=batch, actor=actor(), note=note,
                                price_cents=price_cents)
    if fd is not None:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["code", "days", "batch", "price"])
            writer.writerows([c, days, batch, price_text] for c in made)
    if as_json:
        echo_json({"batch": batch, "days": days, "price": price_text or None, "codes": made})
    else:
        click.echo("\n".join(made))
    priced = f" at {price_text} {settings.currency} each" if price_text else ""
    click.echo(f"batch {batch}: {count} code(s) of {days} days{priced}; they are not shown again", err=True)


@codes.command("list")
@AS_JSON
def codes_list(as_json):
    """List the batches of codes: days, price, when made, how many used, disabled and left."""
    with store_context() as (settings, store):
        batches = store.code_batches()
    if as_json:
        echo_json(batches)
        return
    table(None, ["batch", "days", f"price ({settings.currency})", "created", "by", "codes", "used", "disabled", "left",
                 "note"],
          [[b["batch"], b["days"], "" if b["price_cents"] is None else from_cents(b["price_cents"]),
            when(settings, b["created_at"]), b["created_by"], b["codes"], b["used"], b["disabled"], b["available"],
            b["note"]] for b in batches])


@codes.command("check")
@click.argument("code")
@AS_JSON
def codes_check(code, as_json):
    """Say whether CODE exists, its batch, and whether it was used (by whom, when) or disabled."""
    with store_context() as (settings, store):
        row = store.code(codes_mod.code_hash(code))
        if row is None:
            raise click.ClickException("no such code")
    if as_json:
        echo_json(row)
        return
    state = (f"used by {row['used_by_ref']} at {when(settings, row['used_at'])}" if row["used_by"] else
             f"disabled at {when(settings, row['disabled_at'])}" if row["disabled_at"] else "not used")
    click.echo(f"batch {row['batch']}, {row['days']} days: {state}")


@codes.command("disable")
@click.argument("code", nargs=-1)
@click.option("--batch", default=None, help="Disable every unused code of this batch.")
def codes_disable(code, batch):
    """Disable unused codes, given as CODE... or a whole --batch; used codes stay as they are."""
    if bool(code) == bool(batch):
        raise click.UsageError("give CODE... or --batch NAME (not both)")
    with store_context() as (_settings, store):
        if batch and not any(b["batch"] == batch for b in store.code_batches()):
            raise click.ClickException(f"no batch {batch!r}")
        n = store.disable_codes(batch=batch) if batch else store.disable_codes(
            hashes=[codes_mod.code_hash(c) for c in code])
    click.echo(f"disabled {n} code(s)")


COMMANDS = (codes,)
"""The commands of this module, added to the `chatgate` group by `bot/cli/__init__.py`."""
