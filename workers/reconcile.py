"""The reconciler: finishes what crashes, lost jobs and outages leave half-done, from the store alone.

One pass looks at every delivery whose `due_at` has passed (see `bot/delivery.py`) and at pages left
`pushing`, and only moves states and queues jobs (the jobs do the slow work):

  queued     its job is not in Redis any more (Redis lost it, or RQ gave up on it) → queued again,
             unless it waits behind an earlier question of its user (whose end queues it)
  answering  the try's lease ran out (its worker died) → queued again, or, when the
             tries are spent, given up: refunded, the apology left as a page
  answered   past `expires_at` with no page taken → expired (refunded, a note left); pages ready on
             an account that may push → a job pushes them again
  finished   a notice (apology, immediate reply) ready and pushable → a job pushes it
  pushing    a page claimed by a sender that died → ready again
  orders     an afdian order still pending whose look-up is due (its job lost, afdian down) → looked up
             again (`workers/orders.py`)

It runs every CHATGATE_RECONCILE_INTERVAL seconds inside `chatgate worker` (one pass at a time across
all workers, by a Redis key), and on demand as `chatgate reconcile`. It needs nothing from Redis but
the queue, so it repairs a Redis that was wiped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from rq.job import Job, JobStatus

from bot import texts
from bot.delivery import ANSWERED, ANSWERING, PUSH_LEASE_S, QUEUED
from config import metrics
from workers.answer import Context, give_up, requeue
from workers.deliver import log_fields
from workers.orders import recheck_orders
from workers.queue import first_job_id

log = logging.getLogger("chatgate.reconcile")

LOCK_KEY = "chatgate:reconcile"
BEAT_S = 90
"""A started job whose worker has not beaten for it this long is taken for dead (the worker beats for
every job it runs each 30 s, `workers/pool.py`)."""


def reconcile(ctx: Context, now: float | None = None) -> Counter:
    """One pass; returns how many deliveries and pages each action touched."""
    now = time.time() if now is None else now
    store = ctx.store
    counts: Counter = Counter()
    counts["pushes released"] = store.release_stale_pushes(now - PUSH_LEASE_S, now)
    counts["old notices dropped"] = store.drop_old_notices(now - ctx.settings.wechat_pending_ttl, now)
    due = store.due(now)
    alive = _alive(ctx, [_job_id(d) for d in due])
    for d in due:
        try:
            counts[_act(ctx, d, _job_id(d) in alive, now)] += 1
        except Exception:  # one delivery that cannot be acted on must not hold up the others
            log.exception("delivery %s could not be reconciled", d["id"], extra=log_fields(d, "error"))
            counts["errors"] += 1
    counts.update(recheck_orders(ctx, now))
    done = {k: v for k, v in counts.items() if v}
    if done:
        metrics.reconciled(done)
        log.info("reconciled: %s", ", ".join(f"{k} {v}" for k, v in sorted(done.items())),
                 extra={"outcome": "reconciled", "actions": done})
    return counts


def run_if_due(ctx: Context, interval: float) -> Counter | None:
    """A pass, unless another worker ran one within `interval` seconds (a Redis key says so)."""
    if not ctx.redis.set(LOCK_KEY, 1, nx=True, px=max(int(interval * 1000) - 100, 100)):
        return None
    return reconcile(ctx)


def _act(ctx: Context, d: dict, job_alive: bool, now: float) -> str:
    store, status = ctx.store, d["status"]
    if status == QUEUED:
        if job_alive:
            store.set_due(d["id"], now + ctx.settings.recheck_s)
            return "still in the queue"
        if d["waits"] and d["behind"] is not None:
            store.set_due(d["id"], now + ctx.settings.recheck_s)
            return "waiting behind an earlier question"
        requeue(ctx, d, now)
        return "lost jobs queued again"
    if status == ANSWERING:
        if d["attempts"] < ctx.settings.max_tries:
            if store.release_answer(d["id"], d["attempts"], error="the try's lease ran out", retry_at=now):
                requeue(ctx, dict(d, status=QUEUED), now)
            return "dead tries restarted"
        if give_up(ctx, d["id"], "the last try's lease ran out (its worker died)", attempt=d["attempts"],
                   push=False):
            requeue(ctx, store.delivery(d["id"]), now)  # its job pushes the apology
        return "dead last tries given up"
    if status == ANSWERED and d["expires_at"] is not None and d["expires_at"] <= now:
        outcome = store.expire(d["id"], note=texts.expired(d["question"]), now=now)
        if outcome == "expired" and d["charge"] == "trial":
            metrics.refunded(d["platform"], "expired")
        if outcome:
            log.info("delivery %s: %s (its answer was not fetched in time)", d["id"], outcome,
                     extra=log_fields(d, outcome))
        if outcome == "expired" and ctx.sender(d["platform"]).may_push():
            requeue(ctx, store.delivery(d["id"]), now)
        return f"answers {outcome or 'not expired yet'}"
    if d["pages_ready"] and ctx.sender(d["platform"]).may_push():
        if job_alive:
            store.set_due(d["id"], now + ctx.settings.recheck_s)
            return "pushes still in the queue"
        requeue(ctx, d, now)
        return "pushes queued again"
    store.set_due(d["id"], d["expires_at"] if status == ANSWERED else None)
    return "waiting for the user"


def _job_id(d: dict) -> str:
    return d["job_id"] or first_job_id(d["platform"], d["message_key"])


def _alive(ctx: Context, job_ids: list[str]) -> set[str]:
    """The jobs that will still run: queued, deferred, scheduled and not overdue (a scheduler that died
    leaves its retries in RQ's registry), or started and alive: its worker beat for it lately (a
    started job whose worker died stays "started" until RQ cleans its registry), or it started within
    the job timeout (a worker that does not beat for its jobs)."""
    if not job_ids:
        return set()
    jobs = Job.fetch_many(job_ids, connection=ctx.redis, serializer=ctx.queue.serializer)
    now = datetime.now(UTC)
    alive = set()
    for job in jobs:
        status = job.get_status(refresh=False) if job is not None else None
        if status in (JobStatus.QUEUED, JobStatus.DEFERRED):
            alive.add(job.id)
        elif status == JobStatus.SCHEDULED:
            try:
                due = _utc(ctx.queue.scheduled_job_registry.get_scheduled_time(job))
            except Exception:  # no longer in the registry: it is being moved to the queue
                due = now
            if due > now - timedelta(seconds=ctx.settings.recheck_s):
                alive.add(job.id)
        elif status == JobStatus.STARTED:
            beat = job.last_heartbeat or job.started_at
            if beat is not None and _utc(beat) > now - timedelta(seconds=max(ctx.settings.job_timeout, BEAT_S)):
                alive.add(job.id)
    return alive


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
