"""Expiry reminders: within CHATGATE_REMIND_DAYS of a membership's end, the member's next reply (an
answer, a command's reply, a refusal) carries one reminder of how to renew.

Admission decides which delivery carries it (`Store.admit`, `remind_until`: the expiry it warns
about, unique per user and expiry, so it is sent once per membership period and an extension, a new
expiry, arms it again). Immediate replies get it from the gate; answers from the worker, which adds it
to the answer's pages (not to the conversation history). A question that fails or expires unfetched
gives its reminder back: the next reply carries it.
"""

from __future__ import annotations

import math
import time

from bot.members import local_time
from config import Settings

DAY_S = 86400


def renew_words(settings: Settings) -> str:
    """What the user sends to renew, for `{renew}`: the buy words when memberships are sold on afdian
    (they answer with the purchase link), else the redeem words (codes sold elsewhere)."""
    return " / ".join(settings.command_buy if settings.afdian_enabled else settings.command_redeem)


def reminder(settings: Settings, until: float, now: float | None = None) -> str:
    """The reminder text for a membership ending at `until`."""
    now = time.time() if now is None else now
    days = max(1, math.ceil((until - now) / DAY_S))
    return (settings.remind_text.replace("{until}", local_time(until, settings.tz)).replace("{days}", str(days))
            .replace("{renew}", renew_words(settings)))


def with_reminder(text: str, until: float | None, settings: Settings) -> str:
    """`text`, followed by the reminder when the delivery carries one (`until` is its expiry)."""
    return text if until is None else f"{text}\n\n{reminder(settings, until)}"
