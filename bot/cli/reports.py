"""`chatgate stats` and `chatgate jobs`: the daily figures, and jobs that failed for good.

`jobs` uses REDIS_URL or, when it is unset, the embedded Redis of a running `chatgate up`; `stats`
needs only the database.
"""

from __future__ import annotations

from contextlib import contextmanager

import click

from bot.cli.common import AS_JSON, echo_json, slow, store_context, table, when
from bot.cli.run import redis_settings


@click.command()
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 3660), help="How many days back.")
@click.option("--by", type=click.Choice(["day", "user"]), default="day", show_default=True,
              help="day: the figures of each day; user: the users whose answers cost most over the days.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(0, 1_000_000),
              help="With --by user: how many users; 0 for all.")
@AS_JSON
def stats(days, by, limit, as_json):
    """Figures per day (in CHATGATE_TIMEZONE), today last; or, with --by user, the costliest users.

    Per day, people and questions: new: users first seen; active: users who wrote; trial out: users
    whose last free answer was used; converted: users who became members after their trial (a grant,
    a code or an order; not welcome days); members: memberships active at the end of the day (today:
    now); answered: questions delivered; refused: questions refused for a used-up trial; busy:
    refused for the daily budget or hard cap; limited: refused for a user's rate or a member's daily
    limit; failed: questions given up on (refunded); redeemed: codes used. Question figures count by
    the day the question came in.

    Per day, money (in CHATGATE_CURRENCY): the tokens of the answers produced that day (est.: the
    share estimated because the endpoint reported none), their LLM cost at today's CHATGATE_PRICES,
    revenue (priced codes redeemed, orders paid), margin (revenue minus cost), and cost per active user.
    """
    from bot.stats import costliest, daily, unpriced

    with store_context() as (settings, store), slow("working out the figures…"):
        if by == "user":
            rows = costliest(store, days, settings.tz, settings.prices, limit)
        else:
            rows = daily(store, days, settings.tz, settings.prices)
    missing = unpriced(rows, settings.prices)
    if missing:
        click.echo(f"no price in CHATGATE_PRICES for {', '.join(repr(m) for m in missing)}: counted as costing 0",
                   err=True)
    if as_json:
        echo_json(rows)
    elif by == "user":
        _users_table(settings, rows, days)
    else:
        _days_tables(settings, rows)


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else ""


def _days_tables(settings, rows: list[dict]) -> None:
    table("people and questions", ["day", "new", "active", "trial out", "converted", "members", "answered",
                                   "refused", "busy", "limited", "failed", "redeemed"],
          [[r["day"], r["new_users"], r["active_users"], r["trial_exhausted"], r["conversions"], r["members"],
            r["answered"], r["refused"], r["refused_budget"] + r["refused_hard_cap"],
            r["refused_flood"] + r["refused_member_daily"], r["failed"], r["redeemed"]] for r in rows])
    table(f"money ({settings.currency})", ["day", "tokens in", "tokens out", "est.", "LLM cost", "revenue", "margin",
                                          "cost/active"],
          [[r["day"], r["tokens_in"], r["tokens_out"], _share(r["tokens_estimated"], r["tokens_in"] + r["tokens_out"]),
            r["llm_cost"], r["revenue"], r["margin"], r["cost_per_active_user"]] for r in rows])


def _users_table(settings, rows: list[dict], days: int) -> None:
    if not rows:
        click.echo(f"no answers in the last {days} day(s)")
        return
    table(f"costliest users, last {days} day(s) ({settings.currency})",
          ["user", "member", "answers", "tokens in", "tokens out", "est.", "cost"],
          [[r["ref"], "yes" if r["member"] else "no", r["answers"], r["tokens_in"], r["tokens_out"],
            _share(r["tokens_estimated"], r["tokens_in"] + r["tokens_out"]), r["cost"]] for r in rows])


# -- failed jobs -----------------------------------------------------------------------------------


@contextmanager
def _failed_registry():
    from workers.queue import answer_queue, connect

    settings = redis_settings()
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


@click.group()
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
        echo_json(rows)
        return
    if not rows:
        click.echo("no failed jobs")
        return
    table(None, ["id", "job", "delivery", "user", "failed at", "error"],
          [[r["id"], r["function"], r["delivery_id"], r["user"], when(settings, r["ended_at"]), r["error"]]
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
    with _failed_registry() as (settings, registry), store_context() as (_s, store):
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


COMMANDS = (stats, jobs)
"""The commands of this module, added to the `chatgate` group by `bot/cli/__init__.py`."""
