"""The gate: what to do with one incoming message, before any LLM money is spent.

`decide()` runs admission in the store (one transaction) and says whether the question goes to the
queue, and which text, if any, the platform should answer at once. In-chat commands are answered
here, from the store, and never queued or charged. It knows nothing about HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot import commands, texts
from bot.models import MEDIA, SUBSCRIBE, TEXT, Admission, IncomingMessage
from bot.store import Store
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
    admission = store.admit(msg, free_trial=settings.free_trial, charge=msg.kind == TEXT,
                            command=command.name if command else None, welcome_days=settings.welcome_days,
                            recheck_s=settings.recheck_s)
    if admission.outcome == "duplicate":
        return Decision(admission)
    if admission.outcome == "command":
        reply = commands.run(store, command, admission, settings)
        return Decision(admission, reply.text, reply.check_order)
    if admission.outcome == "exhausted":
        return Decision(admission, settings.text("trial_over_text"))
    if msg.kind == MEDIA:
        return Decision(admission, texts.TEXT_ONLY)
    if msg.kind == SUBSCRIBE:
        return Decision(admission, settings.text("welcome_text"))
    return Decision(admission)


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
