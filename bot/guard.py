"""Spend guardrails and per-user limits, decided at admission in the same SQLite transaction as the
charge (`Store.admit`), so a refused question is never charged and a charged one was allowed.

In the order they are checked, for a question that would otherwise be answered (a user whose trial
is used up gets the trial-over text before any of these):

    hard_cap      today's LLM cost reached CHATGATE_DAILY_HARD_CAP: nobody is answered
    budget        today's cost reached CHATGATE_DAILY_BUDGET: trial users are not answered
    flood         the user asked CHATGATE_USER_RATE questions within its window
    member_daily  a member asked CHATGATE_MEMBER_DAILY_LIMIT questions today

Today's cost comes from a running total per day and model (`daily_usage`, added to in the
transaction that stores each answer's usage) priced with CHATGATE_PRICES: one short read. Answers
already admitted are still answered, so the day's cost can pass the budget by what was in flight.
Commands and `继续` are never limited. The reasons are the `refusal` of a refused delivery, the
`reason` label of `chatgate_refused_total`, and columns of `chatgate stats`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

from bot import prices as money
from bot.stats import day_of
from config import Settings
from config.values import RATE_UNITS

TRIAL_OVER, BUDGET, HARD_CAP, FLOOD, MEMBER_DAILY = "trial_over", "budget", "hard_cap", "flood", "member_daily"
REASONS = (TRIAL_OVER, BUDGET, HARD_CAP, FLOOD, MEMBER_DAILY)
"""Why a question was refused."""
BUSY = (BUDGET, HARD_CAP)
"""Refusals for spend (admission outcome `busy`); the others past a user's limit are `limited`."""


@dataclass(frozen=True)
class Guard:
    """The limits in force for one admission: today (its label and start), prices, budget, hard cap,
    the rate windows ((count, seconds), …) and the member's daily limit (0: none)."""

    day: str
    day_start: float
    prices: money.Prices = ()
    budget: Decimal | None = None
    hard_cap: Decimal | None = None
    rates: tuple[tuple[int, int], ...] = ()
    member_daily: int = 0

    @property
    def watches_spend(self) -> bool:
        """True when a budget or a hard cap is set (today's spend must be read)."""
        return self.budget is not None or self.hard_cap is not None

    def spend_level(self, rows) -> str:
        """`hard_cap`, `budget` or '' for today's usage rows of (model, prompt, completion)."""
        spent = money.total_cost(self.prices, rows)
        if self.hard_cap is not None and spent >= self.hard_cap:
            return HARD_CAP
        if self.budget is not None and spent >= self.budget:
            return BUDGET
        return ""


def guard_for(settings: Settings, now: float | None = None) -> Guard:
    """The guard of the settings, for a question arriving at `now`."""
    now = time.time() if now is None else now
    day, start = day_of(now, settings.tz)
    return Guard(day, start, settings.prices, settings.daily_budget, settings.daily_hard_cap, settings.user_rate,
                 settings.member_daily_limit)


def refusal_text(reason: str, settings: Settings) -> str:
    """The reply to a question refused for `reason` (not `trial_over`, which has its own text)."""
    if reason in BUSY:
        return settings.text("busy_text")
    if reason == FLOOD:
        units = {seconds: unit for unit, seconds in RATE_UNITS.items()}
        rate = ", ".join(f"{count}/{units[seconds]}" for count, seconds in settings.user_rate)
        return settings.text("rate_text").replace("{rate}", rate)
    return settings.text("member_limit_text").replace("{limit}", str(settings.member_daily_limit))
