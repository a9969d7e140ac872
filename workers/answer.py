"""The job of a delivery: answer the question if it waits for a try, then push what it has ready.

Safe to run twice, or side by side: a try is taken with a conditional write (`start_answer`), the
answer is stored only by the try that holds the question, and each page is claimed before it is
sent (see `bot/delivery.py`). A failed try gives the question back for RQ's retry; the last one (or
a permanent error) gives it up: refunded, and the apology is a page like any other.

Many of these jobs run at once in one worker process (`workers/pool.py`), and the limits hold across
all of them:
- one answer in flight per user: a try starts only when no earlier question of the same user is
  still queued or being answered. A question that finds one waits in the store, not in the worker
  (its job ends `deferred`); the earlier one's end queues it again (`wake_next`), and the reconciler
  catches a wake-up that was lost.
- at most CHATGATE_LLM_CONCURRENCY LLM calls at once across all workers (`workers/limits.py`): a job
  waits for a slot before it takes its try, so waiting spends no try (and its job timeout starts over
  once it has one).
- a worker that stops gives back what it holds (`GiveBack`): a try cut short is not counted, and the
  question is queued again at once.
"""

from __future__ import annotations

import logging
import os
import time
from functools import lru_cache

from gevent.event import Event
from rq import get_current_job

from bot import texts
from bot.delivery import IN_FLIGHT, QUEUED
from bot.errors import DeliveryGone, GiveBack, PermanentFailure, TransientFailure
from bot.reminders import with_reminder
from bot.stats import day_of
from bot.store import Store
from config import Settings, load_settings, metrics
from handlers.outbound import sender_for
from workers.deliver import RETRY, log_fields, push_pages
from workers.limits import Slots
from workers.llm import llm_for
from workers.queue import answer_queue, connect, enqueue_answer, first_job_id
from workers.spend import note_spend, usage_of
from workers.timeouts import restart_job_timeout
from workers.wakeups import Wakeups

log = logging.getLogger("chatgate.worker")

BUSY, DEFERRED, ANSWERED, GIVEN_BACK = "busy", "deferred", "answered", "given back"


class Context:
    """What jobs need, built once per process from the settings and shared by every job it runs at
    once: the store (`cooperative` under gevent: it waits for another process's write lock without
    stopping the other jobs), one Redis connection pool, one LLM client, one sender per platform."""

    def __init__(self, settings: Settings, *, cooperative: bool = False):
        self.settings = settings
        self.pid = os.getpid()
        self.store = Store(settings.db_path, migrate=False, cooperative=cooperative)
        self.redis = connect(settings)
        self.wakeups = Wakeups(self.redis)
        self.llm = llm_for(settings, self.redis)
        self.slots = Slots(self.redis, settings.llm_concurrency, lease_s=settings.job_timeout)
        self.queue = answer_queue(settings, self.redis)
        self.stopping = Event()
        """Set when the worker begins to stop: jobs still waiting for their turn give their question back."""
        self._senders: dict = {}

    def close(self) -> None:
        self.llm.close()
        self.store.close()
        self.redis.close()

    def warm_up(self) -> None:
        """Build the senders of the platforms that are set up now, not in the first job of each."""
        settings = self.settings
        for platform, ready in (("wechat", settings.wechat_can_send or not settings.production),
                                ("feishu", settings.feishu_app_id and settings.feishu_app_secret)):
            if ready:
                self.sender(platform)

    def sender(self, platform: str):
        if platform not in self._senders:
            self._senders[platform] = sender_for(platform, self.settings, self.redis)
        return self._senders[platform]


_process: Context | None = None


def open_context(settings: Settings, *, cooperative: bool = False) -> Context:
    """Build this process's context, which `context()` returns from now on (the worker does, at start)."""
    global _process
    _process = Context(settings, cooperative=cooperative)
    return _process


def close_context() -> None:
    """Close the context `open_context` built."""
    global _process
    if _process is not None:
        _process.close()
        _process = None


@lru_cache(maxsize=4)
def _context_for(pid: int, settings: Settings) -> Context:
    return Context(settings)


def context() -> Context:
    """This process's context: the worker's own, else one built from the settings and kept (a job run
    outside `chatgate worker`, e.g. by RQ's own worker)."""
    if _process is not None and _process.pid == os.getpid():
        return _process
    return _context_for(os.getpid(), load_settings())


def build_messages(settings: Settings, history: list[dict], question: str) -> list[dict]:
    """System prompt, the bounded history, then the question."""
    messages = [{"role": "system", "content": settings.system_prompt}] if settings.system_prompt else []
    return messages + history + [{"role": "user", "content": question}]


def answer_job(facts: dict) -> str:
    """Answer one delivery's question if it waits for a try, then push its ready pages. Returns what
    happened, for RQ's result: answered and `delivered`/`waiting`/`retry`, or `busy` (another try
    holds it), `deferred` (an earlier question of the user goes first), `stale` (this try lost its
    lease), `given back` (the worker stopped first), `failed`."""
    ctx = context()
    delivery_id = facts["delivery_id"]
    d = ctx.store.delivery(delivery_id)
    if d is None:
        raise DeliveryGone(f"delivery {delivery_id} is not in the store")
    answered = False
    try:
        held = None
        if d["status"] in IN_FLIGHT:
            outcome = answer(ctx, d)
            if outcome != ANSWERED:
                return outcome
            answered = True
            held = ctx.wakeups.notify(delivery_id)  # a webhook holding the question takes it now
        return deliver(ctx, delivery_id, held=held)
    except GiveBack:
        return give_back(ctx, delivery_id)
    finally:
        if answered:  # its pages are on their way: the user's next question may start
            wake_next(ctx, d["user_id"])


def answer(ctx: Context, d: dict) -> str:
    """One try at the question: `answered`, `busy`, `deferred`, `stale`; a failed try raises after
    settling, and `GiveBack` gives the try back before it goes on."""
    settings = ctx.settings
    slot = ctx.slots.acquire(ctx.stopping)
    try:
        restart_job_timeout()  # the wait for a slot was queueing, not work
        attempt = take_try(ctx, d)
        if isinstance(attempt, str):
            return attempt
        try:
            history = ctx.store.history(d["user_id"], d["chat"], turns=settings.history_turns,
                                        max_chars=settings.history_chars)
            messages = build_messages(settings, history, d["question"])
            progress = ctx.sender(d["platform"]).progress(d, ctx.store)
            try:
                text = ctx.llm.complete(messages, on_delta=progress.update)
            finally:
                progress.stop()
        except GiveBack:
            ctx.store.give_back(d["id"], attempt)
            raise
        except Exception as exc:
            settle_failed_try(ctx, d["id"], attempt, exc)
            raise
    finally:
        ctx.slots.release(slot)
    sender = ctx.sender(d["platform"])
    usage = usage_of(ctx.llm, messages, text)
    pages = sender.paginate(with_reminder(text, d["remind_until"], settings))
    try:
        day = ctx.store.record_answer(d["id"], attempt, text, pages, keep_s=sender.keep_s,
                                      recheck_s=settings.recheck_s, usage=usage,
                                      day=day_of(time.time(), settings.tz)[0])
    except GiveBack:  # stopped while waiting for the write lock: the answer is lost, not the try
        ctx.store.give_back(d["id"], attempt)
        raise
    if day is None:
        log.warning("delivery %s: try %s lost the question to another try; its answer is dropped", d["id"], attempt,
                    extra=log_fields(d, "stale", attempt=attempt))
        return "stale"
    log.info("delivery %s answered by %s (%d chars, try %s)", d["id"], ctx.llm.model, len(text), attempt,
             extra=log_fields(d, "answered", model=ctx.llm.model, chars=len(text), attempt=attempt,
                              prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                              tokens_estimated=usage.estimated, thinking_chars=len(ctx.llm.timing.thinking),
                              **ctx.llm.timing.ms()))
    note_spend(settings, day, log_fields(d, "answered"))
    return ANSWERED


def take_try(ctx: Context, d: dict) -> int | str:
    """Start a try (its number), or say why not: `busy` (another try holds it, or it is done) or
    `deferred` (an earlier question of the same user is in flight: this one waits behind it)."""
    for _ in range(3):
        attempt = ctx.store.start_answer(d["id"], job_timeout=ctx.settings.job_timeout)
        if attempt is not None:
            return attempt
        behind = ctx.store.wait_behind(d["id"], recheck_s=ctx.settings.recheck_s)
        if behind is None:
            log.info("delivery %s is being answered by another try; nothing to do", d["id"],
                     extra=log_fields(d, BUSY))
            return BUSY
        if behind:
            log.info("delivery %s waits for delivery %s of the same user to be answered first", d["id"], behind,
                     extra=log_fields(d, DEFERRED, behind=behind))
            return DEFERRED
    return BUSY  # the earlier question came and went three times: the reconciler looks again


def wake_next(ctx: Context, user_id: int) -> None:
    """A question of this user has been answered or given up: queue the next one if it waits behind."""
    waiting = ctx.store.next_waiting(user_id)
    if waiting is None:
        return
    try:
        requeue(ctx, waiting, time.time())
    except Exception as exc:  # the reconciler finds it
        log.warning("delivery %s could not be queued after the question before it (%s)", waiting["id"], exc,
                    extra=log_fields(waiting, "not woken"))


def give_back(ctx: Context, delivery_id: int) -> str:
    """The worker stopped before this job was done: a question given back is queued again at once (RQ
    is told not to retry this job); pages half-pushed are left to the reconciler."""
    job = get_current_job()
    if job is not None:
        job.retries_left = 0
    d = ctx.store.delivery(delivery_id)
    if d["status"] == QUEUED:
        try:
            requeue(ctx, d, time.time())
        except Exception as exc:  # due now: the reconciler queues it
            log.warning("delivery %s could not be queued again (%s)", delivery_id, exc)
    log.info("delivery %s given back: the worker is stopping", delivery_id, extra=log_fields(d, GIVEN_BACK))
    return GIVEN_BACK


def requeue(ctx: Context, d: dict, now: float) -> str:
    """Queue a new job for the delivery (under a new id: RQ runs a re-used id twice) and remember it."""
    job_id = f"{first_job_id(d['platform'], d['message_key'])[:100]}-r{int(now * 1000) % 10**12}"
    enqueue_answer(ctx.queue, ctx.settings, {"delivery_id": d["id"], "platform": d["platform"],
                                             "user": d["user_external_id"], "message_key": d["message_key"]},
                   job_id=job_id)
    ctx.store.set_due(d["id"], now + ctx.settings.recheck_s, job_id=job_id)
    return job_id


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
    if d["status"] in IN_FLIGHT:
        wake_next(ctx, d["user_id"])
    if not push:
        return True
    try:
        deliver(ctx, delivery_id)
    except Exception as exc:  # the reconciler pushes the apology later
        log.warning("delivery %s: the apology did not go out yet (%s)", delivery_id, exc,
                    extra=log_fields(d, "apology not sent"))
    return True


def deliver(ctx: Context, delivery_id: int, *, held: bool | None = None) -> str:
    """Push the delivery's ready pages; an answer the platform refuses for good is given up. `held`:
    whether a webhook holds the question, if just learnt."""
    d = ctx.store.delivery(delivery_id)
    try:
        outcome = push_pages(ctx.store, ctx.sender(d["platform"]), ctx.wakeups, delivery_id,
                             retry_s=ctx.settings.recheck_s, held=held)
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
