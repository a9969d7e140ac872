"""The job of a delivery: answer the question if it waits for a try, then push what it has ready.

Safe to run twice, or side by side: a try is taken with a conditional write (`start_answer`), the
answer is stored only by the try that holds the question, and each page is claimed before it is
sent (see `bot/delivery.py`). A failed try gives the question back for RQ's retry; the last one (or
a permanent error) gives it up: refunded, and the apology is a page like any other.
"""

from __future__ import annotations

import logging
import os
import time
from functools import lru_cache

from rq import get_current_job

from bot import texts
from bot.delivery import IN_FLIGHT
from bot.errors import DeliveryGone, PermanentFailure, TransientFailure
from bot.reminders import with_reminder
from bot.stats import day_of
from bot.store import Store
from config import Settings, load_settings, metrics
from handlers.outbound import sender_for
from workers.deliver import RETRY, log_fields, push_pages
from workers.llm import llm_for
from workers.queue import answer_queue, connect
from workers.spend import note_spend, usage_of
from workers.wakeups import Wakeups

log = logging.getLogger("chatgate.worker")


class Context:
    """What a job needs, built once per process (after RQ's fork) from the settings."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.store = Store(settings.db_path, migrate=False)
        self.redis = connect(settings)
        self.wakeups = Wakeups(self.redis)
        self.llm = llm_for(settings)
        self.queue = answer_queue(settings, self.redis)
        self._senders: dict = {}

    def close(self) -> None:
        self.store.close()
        self.redis.close()

    def sender(self, platform: str):
        if platform not in self._senders:
            self._senders[platform] = sender_for(platform, self.settings, self.redis)
        return self._senders[platform]


@lru_cache(maxsize=4)
def _context_for(pid: int, settings: Settings) -> Context:
    return Context(settings)


def context() -> Context:
    """This process's context (RQ forks a work-horse per job; connections must not cross a fork)."""
    return _context_for(os.getpid(), load_settings())


def build_messages(settings: Settings, history: list[dict], question: str) -> list[dict]:
    """System prompt, the bounded history, then the question."""
    messages = [{"role": "system", "content": settings.system_prompt}] if settings.system_prompt else []
    return messages + history + [{"role": "user", "content": question}]


def answer_job(facts: dict) -> str:
    """Answer one delivery's question if it waits for a try, then push its ready pages. Returns what
    happened, for RQ's result: answered and `delivered`/`waiting`/`retry`, or `busy` (another try
    holds it), `stale` (this try lost its lease), `failed`."""
    ctx = context()
    delivery_id = facts["delivery_id"]
    d = ctx.store.delivery(delivery_id)
    if d is None:
        raise DeliveryGone(f"delivery {delivery_id} is not in the store")
    if d["status"] in IN_FLIGHT:
        outcome = answer(ctx, d)
        if outcome != "answered":
            return outcome
    return deliver(ctx, delivery_id)


def answer(ctx: Context, d: dict) -> str:
    """One try at the question: `answered`, `busy`, `stale`; a failed try raises after settling."""
    settings = ctx.settings
    attempt = ctx.store.start_answer(d["id"], job_timeout=settings.job_timeout)
    if attempt is None:
        log.info("delivery %s is being answered by another try; nothing to do", d["id"], extra=log_fields(d, "busy"))
        return "busy"
    try:
        history = ctx.store.history(d["user_id"], d["chat"], turns=settings.history_turns,
                                    max_chars=settings.history_chars)
        messages = build_messages(settings, history, d["question"])
        text = ctx.llm.complete(messages)
    except Exception as exc:
        settle_failed_try(ctx, d["id"], attempt, exc)
        raise
    sender = ctx.sender(d["platform"])
    usage = usage_of(ctx.llm, messages, text)
    pages = sender.paginate(with_reminder(text, d["remind_until"], settings))
    day = ctx.store.record_answer(d["id"], attempt, text, pages, keep_s=sender.keep_s, recheck_s=settings.recheck_s,
                                  usage=usage, day=day_of(time.time(), settings.tz)[0])
    if day is None:
        log.warning("delivery %s: try %s lost the question to another try; its answer is dropped", d["id"], attempt,
                    extra=log_fields(d, "stale", attempt=attempt))
        return "stale"
    ctx.wakeups.notify(d["id"])
    log.info("delivery %s answered by %s (%d chars, try %s)", d["id"], ctx.llm.model, len(text), attempt,
             extra=log_fields(d, "answered", model=ctx.llm.model, chars=len(text), attempt=attempt,
                              prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                              tokens_estimated=usage.estimated, **ctx.llm.timing.ms()))
    note_spend(settings, day, log_fields(d, "answered"))
    return "answered"


def settle_failed_try(ctx: Context, delivery_id: int, attempt: int, exc: Exception, *, job=None,
                      push: bool = True) -> None:
    """A try failed: give the question back for the next try, or give it up after the last one or a
    permanent error (then RQ is told not to retry `job`, by default the current one)."""
    reason = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, PermanentFailure) or attempt >= ctx.settings.max_tries:
        job = job or get_current_job()
        if job is not None:
            job.retries_left = 0
        give_up(ctx, delivery_id, reason, attempt=attempt, push=push)
        return
    delay = ctx.settings.retry_delays[min(attempt, len(ctx.settings.retry_delays)) - 1]
    ctx.store.release_answer(delivery_id, attempt, error=reason, retry_at=time.time() + delay + ctx.settings.recheck_s)
    log.info("delivery %s: try %s of %s failed (%s); trying again in %ss", delivery_id, attempt,
             ctx.settings.max_tries, reason, delay,
             extra={"delivery_id": delivery_id, "outcome": "retry", "attempt": attempt, "reason": reason})


def give_up(ctx: Context, delivery_id: int, reason: str, *, attempt: int | None = None, push: bool = True) -> bool:
    """Give the question up, once: refunded, and the apology left as a page, which a webhook holding
    the question takes or which is pushed now (`push`) or by a job the caller queues. False if it had
    already finished."""
    d = ctx.store.delivery(delivery_id)
    charge = ctx.store.give_up(delivery_id, reason=reason, apology=texts.apology(d["question"]), attempt=attempt)
    if charge is None:
        return False
    if charge == "trial":
        metrics.refunded(d["platform"], "failed")
    log.warning("delivery %s failed for good (%s); %s", delivery_id, reason,
                "trial answer refunded" if charge == "trial" else "nothing was charged",
                extra=log_fields(d, "failed", reason=reason, charge=charge))
    ctx.wakeups.notify(delivery_id)
    if not push:
        return True
    try:
        deliver(ctx, delivery_id)
    except Exception as exc:  # the reconciler pushes the apology later
        log.warning("delivery %s: the apology did not go out yet (%s)", delivery_id, exc,
                    extra=log_fields(d, "apology not sent"))
    return True


def deliver(ctx: Context, delivery_id: int) -> str:
    """Push the delivery's ready pages; an answer the platform refuses for good is given up."""
    d = ctx.store.delivery(delivery_id)
    try:
        outcome = push_pages(ctx.store, ctx.sender(d["platform"]), ctx.wakeups, delivery_id,
                             retry_s=ctx.settings.recheck_s)
    except PermanentFailure as exc:
        give_up(ctx, delivery_id, f"{type(exc).__name__}: {exc}")
        return "failed"
    log.info("delivery %s: %s (%s:u%s)", delivery_id, outcome, d["platform"], d["user_id"],
             extra=log_fields(d, outcome, age_ms=round((time.time() - d["received_at"]) * 1000)))
    job = get_current_job()
    if outcome == RETRY and job is not None and job.retries_left:
        raise TransientFailure(f"delivery {delivery_id}: a push failed; RQ tries again")  # on its back-off
    return outcome


# -- jobs queued by earlier versions ---------------------------------------------------------------


def answer_failed(job, connection, exc_type, exc_value, tb) -> None:
    """The failure callback earlier versions attached to answer jobs: tries are settled in the store now."""


def expire_pending(facts: dict) -> str:
    """Earlier versions scheduled one expiry job per answer; the reconciler expires answers now."""
    return "the reconciler expires answers"


def notice_job(facts: dict) -> str:
    """A short text queued by an earlier version: sent as it was."""
    ctx = context()
    ctx.sender(facts["platform"]).send(facts["user"], facts["text"], chat=facts.get("chat", ""),
                                       message_key=facts.get("message_key", ""))
    return "sent"
