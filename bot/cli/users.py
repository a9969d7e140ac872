"""`chatgate users`, `user`, `grant`, `revoke`, `trial`, `grant-all`: users and what they may ask.

Each command opens the store, calls one library function and prints the result. Every change is a
ledger row whose actor is `cli:<login name>`. Numbers are bounded (`bot/limits.py`): at most 36500
days and 1,000,000 free answers at once; no membership runs past 3000-01-01.
"""

from __future__ import annotations

import time

import click

from bot import members
from bot.cli.common import AS_JSON, DAYS, NOTE, actor, echo_json, store_context, table, when
from bot.limits import MAX_TRIAL_ADD

MAX_LISTED = 1_000_000
"""Most users `chatgate users --limit` lists (0 lists all)."""
MAX_BATCH = 100_000
"""Most users one transaction of `chatgate grant-all` reaches."""


@click.command("users")
@click.option("--members", "members_only", is_flag=True, help="Only users whose membership is active.")
@click.option("--platform", type=click.Choice(["wechat", "feishu"]), default=None, help="Only this platform's users.")
@click.option("--search", default="", help="Only users whose openid / open_id contains this.")
@click.option("--sort", type=click.Choice(["new", "active"]), default="new", show_default=True,
              help="new: newest first; active: most recently active first.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(0, MAX_LISTED), help="How many; 0 for all.")
@AS_JSON
def list_users(members_only, platform, search, sort, limit, as_json):
    """List users: reference, free answers, membership, first and last contact."""
    with store_context() as (settings, store):
        rows = store.users(members_only=members_only, limit=limit, platform=platform or "", search=search, sort=sort)
    if as_json:
        echo_json([members.summary(u) for u in rows])
        return
    table(None, ["id", "user", "free answers", "membership", "since", "last seen"],
          [[u["id"], members.ref(u), f"{u['trial_used']}/{u['trial_limit']} used",
            members.membership(u, settings.tz), when(settings, u["created_at"]),
            when(settings, u["last_seen_at"])] for u in rows])


@click.command("user")
@click.argument("ref")
@AS_JSON
def show_user(ref, as_json):
    """Show one user, what their answers used and cost, and their ledger: every change to what they
    may ask, with who, why and when.

    REF is wechat:<openid>, feishu:<open_id> or the numeric id (u42 as the logs write it works too).
    Cost is at today's CHATGATE_PRICES, in CHATGATE_CURRENCY.
    """
    from bot.stats import user_costs

    with store_context() as (settings, store):
        user = members.resolve(store, ref)
        ledger = store.ledger(user["id"])
        usage = user_costs(store, user["id"], settings.prices)
    if as_json:
        echo_json({"user": members.summary(user), "usage": {**usage, "currency": settings.currency}, "ledger": ledger})
        return
    click.echo(f"user          {members.ref(user)} (id {user['id']})")
    click.echo(f"free answers  {members.trial_left(user)} left ({user['trial_used']} of {user['trial_limit']} used)")
    click.echo(f"membership    {members.membership(user, settings.tz)}")
    click.echo(f"since         {when(settings, user['created_at'])}, last seen "
               f"{when(settings, user['last_seen_at'])}"
               + (f", unsubscribed {when(settings, user['unsubscribed_at'])}" if user["unsubscribed_at"] else ""))
    tokens = usage["tokens_in"] + usage["tokens_out"]
    estimated = f", {100 * usage['tokens_estimated'] / tokens:.0f}% estimated" if usage["tokens_estimated"] else ""
    click.echo(f"answers       {usage['answers']}: {usage['tokens_in']} tokens in, {usage['tokens_out']} out"
               f"{estimated}; cost {usage['cost']} {settings.currency}")
    table(f"ledger ({settings.timezone})", ["at", "kind", "answers", "days", "member until", "by", "note"],
          [[members.local_time(r["at"], settings.tz, seconds=True), r["kind"], f"{r['answers']:+d}" if r["answers"]
            else "", f"+{r['days']}" if r["days"] else "", when(settings, r["member_until"]), r["actor"],
            " ".join(filter(None, [r["note"], f"(delivery {r['delivery_id']})" if r["delivery_id"] else ""]))]
           for r in ledger])


@click.command()
@click.argument("ref")
@click.option("--days", required=True, type=DAYS, help="Days of membership to add (at most 36500).")
@NOTE
def grant(ref, days, note):
    """Give REF N more days of membership: from the current expiry if it is still active, else from now."""
    with store_context() as (settings, store):
        user = members.resolve(store, ref)
        until = store.grant(user["id"], days, actor=actor(), note=note)
    click.echo(f"{members.ref(user)}: +{days} days, member until {when(settings, until)} ({settings.timezone})")


@click.command()
@click.argument("ref")
@NOTE
def revoke(ref, note):
    """End REF's membership now (the ledger keeps the row; the free trial is not touched)."""
    with store_context() as (settings, store):
        user = members.resolve(store, ref)
        ended = store.revoke(user["id"], actor=actor(), note=note)
    click.echo(f"{members.ref(user)}: membership ended" if ended else
               f"{members.ref(user)} is not a member; nothing to revoke")


@click.command()
@click.argument("ref")
@click.option("--add", "answers", required=True, type=click.IntRange(1, MAX_TRIAL_ADD),
              help="Free answers to add (at most 1,000,000).")
@NOTE
def trial(ref, answers, note):
    """Give REF N more free answers (raises their trial size)."""
    with store_context() as (settings, store):
        user = members.resolve(store, ref)
        limit = store.add_trial(user["id"], answers, actor=actor(), note=note)
        left = members.trial_left(store.user(user["id"]))
    click.echo(f"{members.ref(user)}: +{answers} free answers, {left} left (trial size {limit})")


@click.command("grant-all")
@click.option("--days", required=True, type=DAYS, help="Days of membership to add to each (at most 36500).")
@click.option("--members-only", is_flag=True, help="Only users whose membership is active now.")
@click.option("--active-since", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="Only users who wrote on or after this date (YYYY-MM-DD, in CHATGATE_TIMEZONE).")
@NOTE
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, MAX_BATCH),
              help="Users per transaction.")
def grant_all(days, members_only, active_since, note, yes, batch_size):
    """Give N days of membership to every user still subscribed (or only to active members).

    Runs in batches, each one transaction with its ledger rows; stopping half-way leaves whole
    batches done. Users who arrive while it runs are not included, nor a user whose membership would
    run past 3000-01-01.
    """
    with store_context() as (settings, store):
        now = time.time()
        since = active_since.replace(tzinfo=settings.tz).timestamp() if active_since else 0
        total = store.count_grantees(members_only=members_only, active_since=since, days=days, now=now)
        who = "active members" if members_only else "subscribed users"
        if active_since:
            who += f" active since {active_since:%Y-%m-%d}"
        if total == 0:
            click.echo(f"no {who}; nothing to do")
            return
        if not yes:
            click.confirm(f"Give {days} days of membership to {total} {who}?", abort=True)
        done = 0
        with click.progressbar(length=total, label="granting", file=click.get_text_stream("stderr")) as bar:
            for n in store.grant_all(days, actor=actor(), note=note, members_only=members_only,
                                     active_since=since, batch_size=batch_size, now=now):
                done += n
                bar.update(n)
    click.echo(f"granted {days} days to {done} {who}")


COMMANDS = (list_users, show_user, grant, revoke, trial, grant_all)
"""The commands of this module, added to the `chatgate` group by `bot/cli/__init__.py`."""
