"""`chatgate stats`: the figures of each day, days counted in the configured time zone, and what the
answers cost and the bot earned.

Costs are worked out here, from the tokens the store keeps and the prices of CHATGATE_PRICES, each
time a report is made: a price change applies to the past too. Amounts are exact (`Decimal`); in
rows they are strings (`"12.3456"`: costs to 4 decimals, revenue to the cent) so that JSON carries
them without float rounding.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal

from bot import prices as money

COLUMNS = ("new_users", "active_users", "answered", "refused", "failed", "redeemed", "members")
"""The figures of a day about people and questions, as `chatgate stats` showed them first."""
FUNNEL = ("trial_exhausted", "conversions")
"""Users whose free trial ran out, and users who became members after their trial, that day."""
REFUSALS = ("refused_budget", "refused_hard_cap", "refused_flood", "refused_member_daily")
"""Questions refused by a guardrail that day, by reason (`bot/guard.py`); `refused` is the used-up trial."""
ECONOMICS = ("tokens_in", "tokens_out", "tokens_estimated", "llm_cost", "revenue", "margin", "cost_per_active_user")
"""Tokens of the answers produced that day (and how many of them were estimated), their LLM cost,
revenue (priced codes redeemed, orders paid), revenue minus cost, and cost per active user."""


def day_of(ts: float, tz: tzinfo) -> tuple[str, float]:
    """The local day of the moment `ts`: its date (`2026-11-24`) and the moment it started."""
    day = datetime.fromtimestamp(ts, tz).date()
    return day.isoformat(), datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()


def day_windows(days: int, tz: tzinfo, now: float | None = None) -> list[tuple[str, float, float]]:
    """The last `days` local days, oldest first, as (date, start, end); today ends now."""
    now = time.time() if now is None else now
    today = datetime.fromtimestamp(now, tz).date()
    windows = []
    for back in range(days - 1, -1, -1):
        day = today - timedelta(days=back)
        start = datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()
        nxt = day + timedelta(days=1)
        end = min(datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).timestamp(), now)
        windows.append((day.isoformat(), start, end))
    return windows


def _priced(prices: money.Prices, usage: list[dict]) -> Decimal:
    """Adds each model's `cost` (text) to its usage rows; returns the total (exact)."""
    total = Decimal(0)
    for u in usage:
        cost = money.cost(prices, u["model"], u["prompt_tokens"], u["completion_tokens"])
        u["cost"] = money.shown(cost, 4)
        total += cost
    return total


def daily(store, days: int, tz: tzinfo, prices: money.Prices = (), now: float | None = None) -> list[dict]:
    """One row per day: `day`, the figures of `COLUMNS`, `FUNNEL`, `REFUSALS` and `ECONOMICS`, and
    `usage`, the answers, tokens and cost of each model."""
    rows = store.daily_stats(day_windows(days, tz, now))
    for r in rows:
        cost = _priced(prices, r["usage"])
        revenue = money.from_cents(r.pop("code_cents") + r.pop("order_cents"))
        r["tokens_in"] = sum(u["prompt_tokens"] for u in r["usage"])
        r["tokens_out"] = sum(u["completion_tokens"] for u in r["usage"])
        r["tokens_estimated"] = sum(u["estimated_tokens"] for u in r["usage"])
        r["llm_cost"] = money.shown(cost, 4)
        r["revenue"] = money.shown(revenue)
        r["margin"] = money.shown(revenue - cost, 4)
        r["cost_per_active_user"] = money.shown(cost / r["active_users"], 4) if r["active_users"] else None
    return rows


def unpriced(rows: list[dict], prices: money.Prices) -> list[str]:
    """The models that answered in `rows` (daily or per-user) but have no price: they count as 0."""
    models = [u["model"] for r in rows for u in r.get("usage", [])] + [m for r in rows for m in r.get("models", [])]
    return money.unpriced(prices, models)


def costliest(store, days: int, tz: tzinfo, prices: money.Prices = (), limit: int = 20,
              now: float | None = None) -> list[dict]:
    """The users whose answers cost most over the last `days` days (today included), costliest first:
    their id and reference, answers, tokens (and estimated tokens), cost, whether they are a member
    now, and the models that answered them."""
    now = time.time() if now is None else now
    start = day_windows(days, tz, now)[0][1]
    users: dict[int, dict] = {}
    for row in store.usage_by_user(start, now):
        u = users.setdefault(row["user_id"], {
            "user_id": row["user_id"], "ref": f"{row['platform']}:{row['external_id']}", "answers": 0,
            "tokens_in": 0, "tokens_out": 0, "tokens_estimated": 0, "cost": Decimal(0),
            "member": row["member_until"] is not None and row["member_until"] > now, "models": []})
        u["answers"] += row["answers"]
        u["tokens_in"] += row["prompt_tokens"] or 0
        u["tokens_out"] += row["completion_tokens"] or 0
        u["tokens_estimated"] += row["estimated_tokens"] or 0
        u["cost"] += money.cost(prices, row["model"], row["prompt_tokens"] or 0, row["completion_tokens"] or 0)
        u["models"].append(row["model"])
    ranked = sorted(users.values(), key=lambda u: (-u["cost"], -(u["tokens_in"] + u["tokens_out"]), u["user_id"]))
    ranked = ranked[:limit] if limit else ranked
    for u in ranked:
        u["cost"] = money.shown(u["cost"], 4)
    return ranked


def user_costs(store, user_id: int, prices: money.Prices = ()) -> dict:
    """One user's answers, tokens (and estimated tokens) and cost over all time, and per model."""
    usage = store.user_usage(user_id)
    cost = _priced(prices, usage)
    return {"answers": sum(u["answers"] for u in usage), "tokens_in": sum(u["prompt_tokens"] or 0 for u in usage),
            "tokens_out": sum(u["completion_tokens"] or 0 for u in usage),
            "tokens_estimated": sum(u["estimated_tokens"] or 0 for u in usage), "cost": money.shown(cost, 4),
            "usage": usage}
