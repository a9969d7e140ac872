"""The gate: what to do with one incoming message, before any LLM money is spent.

`decide()` runs admission in the store (one transaction) and says whether the question goes to the
queue, and which text, if any, the platform should answer at once. In-chat commands are answered
here, from the store, and never queued or charged; a question past a spend guardrail or a user's
limit (`bot/guard.py`) is refused here too, uncharged. A reply may carry the member's expiry
reminder (`bot/reminders.py`). It knows nothing about HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot import commands, texts
from bot.guard import guard_for, refusal_text
from bot.models import MEDIA, SUBSCRIBE, TEXT, Admission, IncomingMessage
from bot.reminders import with_reminder
from bot.store import DAY_S, Store
from config import Settings


@dataclass(frozen=True)
class Decision:
    """Admission's verdict plus the immediate reply (None: just acknowledge), and an afdian order a
    user claimed by number, which the web layer queues to be looked up."""

    admission: Admission
    reply: str | None = None
    check_order: str | None = None

    @property
    def enqueue(self) -> bool:
        return self.admission.queued


def decide(store: Store, msg: IncomingMessage, settings: Settings, *, fetch: bool = False) -> Decision:
    """Admit `msg` and choose the immediate reply. A re-delivery gets no reply and no charge.

    `fetch`: the message asks for answers already on their way (WeChat's `继续`): recorded under the
    command name `fetch`, never charged; what it gets back is the platform's business.
    """
    if fetch:
        return Decision(store.admit(msg, free_trial=settings.free_trial, charge=False, command="fetch",
                                    welcome_days=settings.welcome_days, recheck_s=settings.recheck_s))
    command = commands.parse(msg.text, settings) if msg.kind == TEXT else None
    question = msg.kind == TEXT and command is None
    admission = store.admit(msg, free_trial=settings.free_trial, charge=msg.kind == TEXT,
                            command=command.name if command else None, welcome_days=settings.welcome_days,
                            recheck_s=settings.recheck_s, guard=guard_for(settings) if question else None,
                            remind_s=settings.remind_days * DAY_S if _reminds(msg, command) else 0)
    if admission.outcome == "duplicate":
        return Decision(admission)
    check_order = None
    if admission.outcome == "command":
        answer = commands.run(store, command, admission, settings)
        reply, check_order = answer.text, answer.check_order
    else:
        reply = _reply(msg, admission, settings)
    if reply is None:
        return Decision(admission)
    return Decision(admission, with_reminder(reply, admission.remind_until, settings), check_order)


REPLIED = (TEXT, MEDIA, SUBSCRIBE)
"""Kinds of message that get a reply (or an answer): the ones that may carry an expiry reminder."""


def _reminds(msg: IncomingMessage, command) -> bool:
    """Whether this message's reply may carry the expiry reminder: one that gets a reply, and not a
    redemption (its reply tells the new expiry)."""
    return msg.kind in REPLIED and not (command and command.name == "redeem")


def _reply(msg: IncomingMessage, admission: Admission, settings: Settings) -> str | None:
    if admission.outcome == "exhausted":
        return settings.text("trial_over_text")
    if admission.outcome in ("busy", "limited"):
        return refusal_text(admission.reason, settings)
    if msg.kind == MEDIA:
        return texts.TEXT_ONLY
    if msg.kind == SUBSCRIBE:
        return settings.text("welcome_text")
    return None


def job_facts(msg: IncomingMessage, admission: Admission) -> dict:
    """The JSON-serialisable facts an answer job needs; everything else it reads from the store."""
    return {
        "delivery_id": admission.delivery_id,
        "user_id": admission.user_id,
        "platform": msg.platform,
        "user": msg.user,
        "chat": msg.chat,
        "message_key": msg.message_key,
        "charge": admission.outcome,
    }
