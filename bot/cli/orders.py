"""`chatgate orders`: afdian orders and their state; `orders bind` and `orders check` act on one."""

from __future__ import annotations

import json

import click

from bot import members, payments
from bot.cli.common import AS_JSON, DATABASE_ONLY, actor, echo_json, load_checked, store_context, table, when
from bot.errors import ChatgateError
from config.afdian import money

STATUSES = ("pending", "granted", "unclaimed", "refused")
AFDIAN = ("AFDIAN_USER_ID", "AFDIAN_TOKEN")
"""What looking an order up at afdian needs."""


def _open(need=DATABASE_ONLY):
    from bot.store import Store

    settings = load_checked(need=need)
    return settings, Store(settings.db_path)


def _api(settings):
    from handlers.afdian.api import AfdianAPI

    if not settings.afdian_enabled:
        raise click.ClickException("AFDIAN_USER_ID and AFDIAN_TOKEN are needed to look an order up at afdian")
    return AfdianAPI(settings)


def _said(settings, row: dict) -> str:
    outcome = row["status"] if row.get("outcome") in (None, "settled") else row["outcome"]
    paid = f"{money(row['amount_cents'])} paid, " if row.get("amount_cents") else ""
    if outcome == "granted":
        until = f", member until {when(settings, row['until'])}" if row.get("until") else ""
        return f"granted: {paid}{row['days']} days to {row.get('user_ref') or 'u' + str(row['user_id'])}{until}"
    if outcome == "unclaimed":
        return f"unclaimed: {paid}bound to no user" + (f" ({row['reason']})" if row.get("reason") else "")
    if outcome == "refused":
        return f"refused: {row['reason']}"
    return str(outcome)


@click.group(invoke_without_command=True)
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only orders in this state.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(0, 1_000_000), help="How many; 0 for all.")
@AS_JSON
@click.pass_context
def orders(ctx, status, limit, as_json):
    """List afdian orders, newest first: pending (being looked up), granted (to whom), unclaimed (paid,
    bound to no user yet) or refused (why), with the amount paid and the days.

    `chatgate orders bind ORDER REF` gives an order to a user; `chatgate orders check ORDER` looks it up
    at afdian again now.
    """
    if ctx.invoked_subcommand:
        return
    with store_context() as (settings, store):
        rows = store.orders(status=status, limit=limit)
    if as_json:
        echo_json([{**{k: v for k, v in r.items() if k != "raw"}, "afdian": json.loads(r["raw"]) if r["raw"] else None}
                   for r in rows])
        return
    table(None, ["order", "status", "paid", "plan", "days", "user", "how / why", "paid at", "noted"],
          [[r["out_trade_no"], r["status"], money(r["amount_cents"]) if r["amount_cents"] is not None else "",
            r["plan_id"], r["days"], r["user_ref"], r["bound_by"] if r["status"] == "granted" else r["reason"],
            when(settings, r["paid_at"]), when(settings, r["created_at"])] for r in rows])


@orders.command("bind")
@click.argument("order")
@click.argument("ref")
def orders_bind(order, ref):
    """Give the afdian order ORDER to the user REF, who is told.

    An unclaimed order is granted at once. One not settled yet (pending, refused, or never seen: its
    webhook was lost) is looked up at afdian first, which needs AFDIAN_USER_ID and AFDIAN_TOKEN; if it
    is paid it goes to REF, unless it carries another user's bind code. A granted order stays as it is.
    """
    settings, store = _open()
    try:
        user = members.resolve(store, ref)
        row = store.order(order)
        if row is not None and row["status"] == "granted":
            raise click.ClickException(f"order {order} was granted to {row['user_ref']} already")
        if row is not None and row["status"] == "unclaimed":
            result = store.bind_order(order, user["id"], actor=actor(), tell=payments.teller(settings),
                                      recheck_s=settings.recheck_s)
        else:
            settings = load_checked(need=AFDIAN)
            api = _api(settings)
            store.note_order(order, recheck_s=settings.recheck_s, claimant=user["id"])
            result = payments.check(store, order, api.query_order, settings)
        result = {**result, "user_ref": members.ref(store.user(result["user_id"])) if result.get("user_id") else None}
    except ChatgateError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    click.echo(f"order {order}: {_said(settings, result)}")
    if result.get("outcome") not in ("granted", "settled"):
        raise SystemExit(1)


@orders.command("check")
@click.argument("order")
def orders_check(order):
    """Look the afdian order ORDER up at afdian now and settle it, as the webhook's job does: granted
    (to the user its bind code or a claim names), unclaimed, or refused (and why). A settled order is
    left as it is."""
    settings = load_checked(need=AFDIAN)
    api = _api(settings)
    _, store = _open()
    try:
        store.note_order(order, recheck_s=settings.recheck_s)
        result = payments.check(store, order, api.query_order, settings)
        result = {**result, "user_ref": store.order(order)["user_ref"]}
    except ChatgateError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    click.echo(f"order {order}: {_said(settings, result)}")


COMMANDS = (orders,)
"""The commands of this module, added to the `chatgate` group by `bot/cli/__init__.py`."""
