"""What an answer used, as the worker stores it, and the operator's warning when the day's LLM cost
passes CHATGATE_DAILY_BUDGET or CHATGATE_DAILY_HARD_CAP (`bot/guard.py` refuses at admission)."""

from __future__ import annotations

import logging

from bot import prices as money
from bot.usage import DayUsage, Usage, measured
from config import Settings, metrics

log = logging.getLogger("chatgate.worker")


def usage_of(llm, messages: list[dict], answer: str) -> Usage:
    """The answer's tokens as the endpoint reported them, else estimated (marked so), counting the
    model's thinking as completion tokens (providers bill it so)."""
    timing = llm.timing
    return measured(llm.model, getattr(timing, "reported", None), messages, answer,
                    thinking=getattr(timing, "thinking", ""))


def note_spend(settings: Settings, day: DayUsage, fields: dict) -> None:
    """Log a WARNING (and count `chatgate_spend_limits_reached_total`) when this answer took the day's
    cost to a limit. The day's rows were read in the answer's own transaction, so exactly one answer
    per day and limit sees the crossing."""
    if settings.daily_budget is None and settings.daily_hard_cap is None:
        return
    before, after = money.total_cost(settings.prices, day.before()), money.total_cost(settings.prices, day.rows)
    for limit, amount, what in (("budget", settings.daily_budget, "trial users are refused until tomorrow"),
                                ("hard_cap", settings.daily_hard_cap, "nobody is answered until tomorrow")):
        if amount is not None and before < amount <= after:
            metrics.SPEND_LIMITS.labels(limit).inc()
            log.warning("LLM cost of %s reached the daily %s: %s of %s %s; %s", day.day,
                        "budget" if limit == "budget" else "hard cap", money.shown(after, 4), amount,
                        settings.currency, what,
                        extra={**fields, "outcome": f"{limit} reached", "day": day.day, "cost": money.shown(after, 4)})
