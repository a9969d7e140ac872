"""The answer job: history → LLM → store the answer → send it → mark delivered.

Safe to run twice: a delivery that is already answered is only (re)sent from the first part not
yet sent, and a finished one is left alone. `answer_failed` is RQ's failure callback; it acts only
on the last try, when it refunds the reserved trial answer and tells the user.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from functools import lru_cache

from rq import get_current_job

from bot import texts
from bot.errors import DeliveryGone, PermanentFailure
from bot.store import Store
from config import Settings, load_settings
from handlers.senders import sender_for
from workers.llm import llm_for
from workers.queue import EXPIRE_JOB, answer_queue, connect

log = logging.getLogger("chatgate.worker")

FINISHED = ("delivered", "failed", "refused", "reverted", "recorded")


class Context:
    """What a job needs, built once per process (after RQ's fork) from the settings."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.store = Store(settings.db_path, migrate=False)
        self.redis = connect(settings)
        self.llm = llm_for(settings)
        self.queue = answer_queue(settings, self.redis)
        self._senders: dict = {}

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


def fit_parts(sender, answer: str) -> list[str]:
    """The parts an answer goes out as, within the sender's per-question message budget."""
    parts = sender.split(answer)
    if len(parts) <= sender.max_parts:
        return parts
    kept = parts[:sender.max_parts]
    last = kept[-1]
    while last and len(sender.split(last + texts.TRUNCATED)) > 1:  # make room for the note
        last = last[:-20]
    return kept[:-1] + [last + texts.TRUNCATED]


def answer_job(facts: dict) -> str:
    """Answer one admitted question (see module docstring). Returns what happened, for RQ's result."""
    ctx = context()
    delivery_id = facts["delivery_id"]
    d = ctx.store.delivery(delivery_id)
    if d is None:
        raise DeliveryGone(f"delivery {delivery_id} is not in the store")
    if d["status"] in FINISHED:
        log.info("delivery %s already %s; nothing to do", delivery_id, d["status"])
        return d["status"]
    sender = ctx.sender(d["platform"])
    try:
        if d["status"] == "queued":
            history = ctx.store.history(d["user_id"], d["chat"], turns=ctx.settings.history_turns,
                                        max_chars=ctx.settings.history_chars)
            answer = ctx.llm.complete(build_messages(ctx.settings, history, d["question"]))
            ctx.store.record_answer(delivery_id, answer)
            d = ctx.store.delivery(delivery_id)
            log.info("delivery %s answered by %s (%d chars)", delivery_id, ctx.llm.model, len(answer))
        if hasattr(sender, "deliver"):  # platforms with their own delivery rules; may return "pending"
            outcome = sender.deliver(ctx.store, d)
        else:
            outcome = send_parts(ctx.store, sender, d)
    except PermanentFailure:
        job = get_current_job()
        if job is not None:
            job.retries_left = 0  # no point in trying again; the failure callback gives up now
        raise
    if outcome == "pending":
        ctx.queue.enqueue_in(timedelta(seconds=sender.pending_ttl), EXPIRE_JOB,
                             {"delivery_id": delivery_id}, job_id=f"expire-{delivery_id}", result_ttl=600)
        log.info("delivery %s answered; waiting for the platform to take it (reply or fetch)", delivery_id)
    else:
        log.info("delivery %s delivered to %s:u%s", delivery_id, d["platform"], d["user_id"])
    return outcome


def send_parts(store: Store, sender, d: dict) -> str:
    """Send an answer as parts, resuming after the parts an earlier try already sent."""
    parts = fit_parts(sender, d["answer"])
    for i in range(d["parts_sent"], len(parts)):
        sender.send(d["user_external_id"], parts[i], chat=d["chat"], message_key=d["message_key"])
        store.add_parts_sent(d["id"], 1)
    store.mark_delivered(d["id"])
    return "delivered"


def expire_pending(facts: dict) -> str:
    """An answer nobody fetched within the pending TTL: refunded if no page of it reached the user."""
    ctx = context()
    d = ctx.store.delivery(facts["delivery_id"])
    if d is None or d["status"] != "answered":
        return "nothing to do"
    sender = ctx.sender(d["platform"])
    if hasattr(sender, "forget_pending"):
        sender.forget_pending(d["user_external_id"], d["id"])
    if d["parts_sent"] > 0:
        ctx.store.mark_delivered(d["id"])
        return "partly delivered"
    ctx.store.fail_delivery(d["id"], "answer expired unfetched")
    log.info("delivery %s expired unfetched; refunded", d["id"])
    return "refunded"


def give_up(ctx: Context, delivery_id: int, reason: str) -> bool:
    """Mark a delivery failed, refund its trial answer and apologise to the user, once.

    Returns False when the delivery had already finished (a second call does nothing).
    """
    charge = ctx.store.fail_delivery(delivery_id, reason)
    if charge is None:
        return False
    d = ctx.store.delivery(delivery_id)
    log.warning("delivery %s failed for good (%s); %s", delivery_id, reason,
                "trial answer refunded" if charge == "trial" else "nothing was charged")
    apology = texts.APOLOGY if charge == "trial" else texts.APOLOGY_MEMBER
    sender = ctx.sender(d["platform"])
    try:
        sender.send(d["user_external_id"], apology, chat=d["chat"], message_key=d["message_key"])
    except Exception as exc:
        if hasattr(sender, "leave"):  # cannot push: it goes with the user's next reply
            sender.leave(d["user_external_id"], apology)
        log.warning("could not send the apology for delivery %s (%s)", delivery_id, exc)
    return True


def answer_failed(job, connection, exc_type, exc_value, tb) -> None:
    """RQ failure callback: runs after every failed try; acts only when no retry is left."""
    if job.retries_left:
        log.info("job %s failed (%s: %s); %d retries left", job.id, exc_type.__name__, exc_value,
                 job.retries_left)
        return
    facts = job.args[0] if job.args else {}
    if "delivery_id" in facts:
        give_up(context(), facts["delivery_id"], f"{exc_type.__name__}: {exc_value}")


def notice_job(facts: dict) -> str:
    """Send a short, already-decided text (trial over, text only, a command's answer)."""
    ctx = context()
    ctx.sender(facts["platform"]).send(facts["user"], facts["text"], chat=facts.get("chat", ""),
                                       message_key=facts.get("message_key", ""))
    log.info("notice sent to %s msg=%s", facts["platform"], facts.get("message_key"))
    return "sent"
