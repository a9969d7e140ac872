"""The operator's commands of `chatgate`: users, memberships, codes, figures and failed jobs.

Each command loads the settings, opens the store, calls one library function and prints the result
(a rich table for people, `--json` for scripts). Named errors (`UnknownUser`, `CodeInvalid`…) become
a clear message and exit status 1; bad arguments are click's usage errors (exit status 2). Every
change is a ledger row whose actor is `cli:<login name>`.
"""

from __future__ import annotations

import csv
import getpass
import json
import os
import sys
import time
from contextlib import contextmanager
from datetime import datetime

import click
from rich.console import Console
from rich.table import Table

from bot import codes as codes_mod
from bot import members
from bot.cli import _settings, main, with_running_redis
from bot.errors import ChatgateError

NOTE = click.option("--note", default="", help="Why: kept in the ledger row.")
AS_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name (some containers)
        return "cli"


@contextmanager
def _store():
    """The settings and an open store; chatgate's named errors become a clear message and exit 1."""
    from bot.store import Store

    settings = _settings()
    store = Store(settings.db_path)
    try:
        yield settings, store
    except ChatgateError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()


def _console() -> Console:
    # Tables fit a terminal; piped into a file or grep they are not squeezed into 80 columns.
    wide = not sys.stdout.isatty() and not os.environ.get("COLUMNS")
    return Console(markup=False, highlight=False, emoji=False, width=200 if wide else None)


def _echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _table(title: str | None, columns: list[str], rows: list[list]) -> None:
    table = Table(title=title, title_justify="left", header_style="bold")
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    _console().print(table)


def _until(settings, ts: float | None) -> str:
    return members.local_time(ts, settings.tz)


# -- users and memberships -------------------------------------------------------------------------


def _user_json(user: dict) -> dict:
    return {"ref": members.ref(user), **user, "trial_left": members.trial_left(user),
            "member": members.is_member(user)}


@main.command("users")
@click.option("--members", "members_only", is_flag=True, help="Only users whose membership is active.")
@click.option("--platform", type=click.Choice(["wechat", "feishu"]), default=None, help="Only this platform's users.")
@click.option("--search", default="", help="Only users whose openid / open_id contains this.")
@click.option("--sort", type=click.Choice(["new", "active"]), default="new", show_default=True,
              help="new: newest first; active: most recently active first.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=0), help="How many; 0 for all.")
@AS_JSON
def list_users(members_only, platform, search, sort, limit, as_json):
    """List users: reference, free answers, membership, first and last contact."""
    with _store() as (settings, store):
        rows = store.users(members_only=members_only, limit=limit, platform=platform or "", search=search, sort=sort)
    if as_json:
        _echo_json([_user_json(u) for u in rows])
        return
    _table(None, ["id", "user", "free answers", "membership", "since", "last seen"],
           [[u["id"], members.ref(u), f"{u['trial_used']}/{u['trial_limit']} used",
             members.membership(u, settings.tz), _until(settings, u["created_at"]),
             _until(settings, u["last_seen_at"])] for u in rows])


@main.command("user")
@click.argument("ref")
@AS_JSON
def show_user(ref, as_json):
    """Show one user and their ledger: every change to what they may ask, with who, why and when.

    REF is wechat:<openid>, feishu:<open_id> or the numeric id (u42 as the logs write it works too).
    """
    with _store() as (settings, store):
        user = members.resolve(store, ref)
        ledger = store.ledger(user["id"])
    if as_json:
        _echo_json({"user": _user_json(user), "ledger": ledger})
        return
    click.echo(f"user          {members.ref(user)} (id {user['id']})")
    click.echo(f"free answers  {members.trial_left(user)} left ({user['trial_used']} of {user['trial_limit']} used)")
    click.echo(f"membership    {members.membership(user, settings.tz)}")
    click.echo(f"since         {_until(settings, user['created_at'])}, last seen "
               f"{_until(settings, user['last_seen_at'])}"
               + (f", unsubscribed {_until(settings, user['unsubscribed_at'])}" if user["unsubscribed_at"] else ""))
    _table(f"ledger ({settings.timezone})", ["at", "kind", "answers", "days", "member until", "by", "note"],
           [[members.local_time(r["at"], settings.tz, seconds=True), r["kind"], f"{r['answers']:+d}" if r["answers"]
             else "", f"+{r['days']}" if r["days"] else "", _until(settings, r["member_until"]), r["actor"],
             " ".join(filter(None, [r["note"], f"(delivery {r['delivery_id']})" if r["delivery_id"] else ""]))]
            for r in ledger])


@main.command()
@click.argument("ref")
@click.option("--days", required=True, type=click.IntRange(min=1), help="Days of membership to add.")
@NOTE
def grant(ref, days, note):
    """Give REF N more days of membership: from the current expiry if it is still active, else from now."""
    with _store() as (settings, store):
        user = members.resolve(store, ref)
        until = store.grant(user["id"], days, actor=_actor(), note=note)
    click.echo(f"{members.ref(user)}: +{days} days, member until {_until(settings, until)} ({settings.timezone})")


@main.command()
@click.argument("ref")
@NOTE
def revoke(ref, note):
    """End REF's membership now (the ledger keeps the row; the free trial is not touched)."""
    with _store() as (settings, store):
        user = members.resolve(store, ref)
        ended = store.revoke(user["id"], actor=_actor(), note=note)
    click.echo(f"{members.ref(user)}: membership ended" if ended else
               f"{members.ref(user)} is not a member; nothing to revoke")


@main.command()
@click.argument("ref")
@click.option("--add", "answers", required=True, type=click.IntRange(min=1), help="Free answers to add.")
@NOTE
def trial(ref, answers, note):
    """Give REF N more free answers (raises their trial size)."""
    with _store() as (settings, store):
        user = members.resolve(store, ref)
        limit = store.add_trial(user["id"], answers, actor=_actor(), note=note)
        left = members.trial_left(store.user(user["id"]))
    click.echo(f"{members.ref(user)}: +{answers} free answers, {left} left (trial size {limit})")


@main.command("grant-all")
@click.option("--days", required=True, type=click.IntRange(min=1), help="Days of membership to add to each.")
@click.option("--members-only", is_flag=True, help="Only users whose membership is active now.")
@click.option("--active-since", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="Only users who wrote on or after this date (YYYY-MM-DD, in CHATGATE_TIMEZONE).")
@NOTE
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(min=1),
              help="Users per transaction.")
def grant_all(days, members_only, active_since, note, yes, batch_size):
    """Give N days of membership to every user still subscribed (or only to active members).

    Runs in batches, each one transaction with its ledger rows; stopping half-way leaves whole
    batches done. Users who arrive while it runs are not included.
    """
    with _store() as (settings, store):
        now = time.time()
        since = active_since.replace(tzinfo=settings.tz).timestamp() if active_since else 0
        total = store.count_grantees(members_only=members_only, active_since=since, now=now)
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
            for n in store.grant_all(days, actor=_actor(), note=note, members_only=members_only,
                                     active_since=since, batch_size=batch_size, now=now):
                done += n
                bar.update(n)
    click.echo(f"granted {days} days to {done} {who}")


# -- redemption codes ------------------------------------------------------------------------------


@main.group()
def codes():
    """Redemption codes: users send `兑换 CODE` (or `redeem CODE`) in chat to get membership days."""


@codes.command("create")
@click.option("--days", required=True, type=click.IntRange(min=1), help="Days of membership each code gives.")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 100_000), help="How many codes.")
@click.option("--batch", default=None, help="Batch name (letters, digits, _ . -); default: the date and time.")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also write the codes to this CSV file (created owner-only; refuses an existing file).")
@NOTE
@AS_JSON
def codes_create(days, count, batch, csv_file, note, as_json):
    """Make a batch of single-use codes and print them, one per line.

    They are shown only now: the database keeps their hashes. Redirect them to a file
    (`> codes.txt`); the summary goes to stderr.
    """
    batch = batch or datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        codes_mod.check_batch(batch)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--batch") from None
    made = [codes_mod.generate() for _ in range(count)]
    fd = None
    if csv_file:
        try:
            fd = os.open(csv_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise click.BadParameter(f"{csv_file} exists", param_hint="--csv") from None
    with _store() as (_settings_, store):
        store.create_codes([codes_mod.code_hash(c) for c in made], batch=batch, days=days, actor=_actor(), note=note)
    if fd is not None:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["code", "days", "batch"])
            writer.writerows([c, days, batch] for c in made)
    if as_json:
        _echo_json({"batch": batch, "days": days, "codes": made})
    else:
        click.echo("\n".join(made))
    click.echo(f"batch {batch}: {count} code(s) of {days} days; they are not shown again", err=True)


@codes.command("list")
@AS_JSON
def codes_list(as_json):
    """List the batches of codes: days, when made, how many used, disabled and left."""
    with _store() as (settings, store):
        batches = store.code_batches()
    if as_json:
        _echo_json(batches)
        return
    _table(None, ["batch", "days", "created", "by", "codes", "used", "disabled", "left", "note"],
           [[b["batch"], b["days"], _until(settings, b["created_at"]), b["created_by"], b["codes"], b["used"],
             b["disabled"], b["available"], b["note"]] for b in batches])


@codes.command("check")
@click.argument("code")
@AS_JSON
def codes_check(code, as_json):
    """Say whether CODE exists, its batch, and whether it was used (by whom, when) or disabled."""
    with _store() as (settings, store):
        row = store.code(codes_mod.code_hash(code))
        if row is None:
            raise click.ClickException("no such code")
    if as_json:
        _echo_json(row)
        return
    state = (f"used by {row['used_by_ref']} at {_until(settings, row['used_at'])}" if row["used_by"] else
             f"disabled at {_until(settings, row['disabled_at'])}" if row["disabled_at"] else "not used")
    click.echo(f"batch {row['batch']}, {row['days']} days: {state}")


@codes.command("disable")
@click.argument("code", nargs=-1)
@click.option("--batch", default=None, help="Disable every unused code of this batch.")
def codes_disable(code, batch):
    """Disable unused codes, given as CODE... or a whole --batch; used codes stay as they are."""
    if bool(code) == bool(batch):
        raise click.UsageError("give CODE... or --batch NAME (not both)")
    with _store() as (_settings_, store):
        if batch and not any(b["batch"] == batch for b in store.code_batches()):
            raise click.ClickException(f"no batch {batch!r}")
        n = store.disable_codes(batch=batch) if batch else store.disable_codes(
            hashes=[codes_mod.code_hash(c) for c in code])
    click.echo(f"disabled {n} code(s)")


# -- figures ---------------------------------------------------------------------------------------


@main.command()
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 3660), help="How many days back.")
@AS_JSON
def stats(days, as_json):
    """Figures per day (in CHATGATE_TIMEZONE), today last.

    new: users first seen; active: users who wrote; answered: questions delivered; refused: questions
    refused for a used-up trial; failed: questions given up on (refunded); redeemed: codes used;
    members: memberships active at the end of the day (today: now). Question figures count by the
    day the question came in.
    """
    from bot.stats import COLUMNS, daily

    with _store() as (settings, store):
        rows = daily(store, days, settings.tz)
    if as_json:
        _echo_json(rows)
        return
    _table(None, ["day", "new", "active", "answered", "refused", "failed", "redeemed", "members"],
           [[r["day"], *(r[c] for c in COLUMNS)] for r in rows])


# -- failed jobs -----------------------------------------------------------------------------------


@contextmanager
def _failed_registry():
    from workers.queue import answer_queue, connect

    settings = with_running_redis(_settings())
    try:
        connection = connect(settings)
        connection.ping()
    except Exception as exc:
        raise click.ClickException(f"cannot reach Redis: {exc}") from None
    yield settings, answer_queue(settings, connection).failed_job_registry


def _failed_jobs(registry, ids=None):
    from rq.job import Job

    ids = list(ids) if ids else registry.get_job_ids()
    jobs = Job.fetch_many(ids, connection=registry.connection, serializer=registry.serializer)
    return [(job_id, job) for job_id, job in zip(ids, jobs, strict=True)]


def _job_facts(job) -> dict:
    return job.args[0] if job.args and isinstance(job.args[0], dict) else {}


def _job_error(job) -> str:
    result = job.latest_result()
    text = (result.exc_string or "") if result is not None else ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


@main.group()
def jobs():
    """Jobs of the RQ queue that failed for good (kept 7 days).

    Uses REDIS_URL or, when it is unset, the embedded Redis of a running `chatgate up`.
    """


@jobs.command("failed")
@AS_JSON
def jobs_failed(as_json):
    """List the jobs that failed for good: id, what, which delivery and user, when, and the error."""
    with _failed_registry() as (settings, registry):
        found = [(job_id, job) for job_id, job in _failed_jobs(registry) if job is not None]
    rows = [{"id": job_id, "function": (job.func_name or "").rsplit(".", 1)[-1],
             "delivery_id": _job_facts(job).get("delivery_id"),
             "user": f"{_job_facts(job).get('platform', '?')}:{_job_facts(job).get('user', '?')}",
             "ended_at": job.ended_at.timestamp() if job.ended_at else None, "error": _job_error(job)}
            for job_id, job in found]
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("no failed jobs")
        return
    _table(None, ["id", "job", "delivery", "user", "failed at", "error"],
           [[r["id"], r["function"], r["delivery_id"], r["user"], _until(settings, r["ended_at"]), r["error"]]
            for r in rows])


@jobs.command("retry")
@click.argument("job_id", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Retry every failed job.")
def jobs_retry(job_id, retry_all):
    """Put failed jobs (JOB_ID... or --all) back on the queue, with their retries renewed.

    A question that had failed is answered late and free of charge: its free answer was refunded when
    it failed. Run after fixing the cause (an LLM key, the network, the account's permissions).
    """
    if bool(job_id) == retry_all:
        raise click.UsageError("give JOB_ID... or --all (not both)")
    with _failed_registry() as (settings, registry), _store() as (_s, store):
        found = _failed_jobs(registry, job_id or None)
        missing = [jid for jid, job in found if job is None or jid not in registry]
        if missing:
            raise click.ClickException(f"not a failed job: {', '.join(missing)}")
        for jid, job in found:
            delivery_id = _job_facts(job).get("delivery_id")
            if delivery_id is not None:
                store.reopen(delivery_id, recheck_s=settings.recheck_s)
            job.retries_left = len(job.retry_intervals or [])
            registry.requeue(job)
            click.echo(f"requeued {jid}" + (f" (delivery {delivery_id})" if delivery_id is not None else ""))
    if not found:
        click.echo("no failed jobs")
