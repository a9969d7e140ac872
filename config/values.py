"""Parsers of the settings' values: each takes the raw string of one variable and returns the typed
value or raises `ValueError` saying what is wrong (`config/checks.py` adds the variable's name).

Private to `config/`: `config/settings.py` names them in `VARIABLES`.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable
from decimal import Decimal, InvalidOperation


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _at_most(limit: int) -> Callable[[str], int]:
    """A whole number from 0 to `limit` (the bounds of `bot/limits.py`: nothing can be stored that
    the store or the calendar cannot hold)."""
    def parse(raw: str) -> int:
        value = _positive_int(raw)
        if value > limit:
            raise ValueError(f"must be at most {limit}")
        return value
    return parse


MAX_WELCOME_DAYS = 36_500
"""`bot.limits.MAX_DAYS`: the most days of membership one grant gives."""
MAX_FREE_TRIAL = 1_000_000
"""`bot.limits.MAX_TRIAL_ADD`: the most free answers one trial addition gives."""


def _at_least_one(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _between(low: int, high: int) -> Callable[[str], int]:
    """A whole number from `low` to `high`."""
    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value
    return parse


def _whole_seconds(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be a whole number of seconds, at least 1")
    return value


def _seconds(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError("must be a positive number of seconds")
    return value


def _delays(raw: str) -> tuple[int, ...]:
    """Comma-separated retry delays in seconds, e.g. `10,30,60`; empty means no retry."""
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    values = tuple(int(p) for p in parts)
    if any(v < 0 for v in values):
        raise ValueError("delays must not be negative")
    return values


def _timezone(raw: str) -> str:
    """An IANA time zone name such as `Asia/Shanghai` or `UTC`."""
    name = raw.strip()
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Asia/Shanghai or UTC)") from None
    return name


def _words(raw: str) -> tuple[str, ...]:
    """Comma-separated command words, e.g. `我的,me`; each a single word (no spaces)."""
    words = tuple(w.strip() for w in raw.split(",") if w.strip())
    if not words:
        raise ValueError("expected at least one word")
    if any(len(w.split()) > 1 for w in words):
        raise ValueError("a command word must not contain spaces")
    return words


def _reply_mode(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("push", "passive", "auto"):
        raise ValueError("expected push, passive or auto")
    return value


def _reply_wait(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 4.8:
        raise ValueError("must be between 0 and 4.8 seconds (WeChat gives up at 5)")
    return value


def _log_format(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("text", "json"):
        raise ValueError("expected text or json")
    return value


def _text(raw: str) -> str:
    # `.env` files cannot hold a literal newline easily; allow "\n" in texts.
    return raw.replace("\\n", "\n")


# -- money and limits ------------------------------------------------------------------------------

MAX_MONEY = Decimal("1000000000")
"""The largest amount of money a setting may hold (a budget, a price per million tokens)."""


def _decimal(raw: str, what: str) -> Decimal:
    """A non-negative decimal number written plainly (`19.9`, `0.14`), exact: no floats."""
    text = raw.strip()
    if not re.fullmatch(r"\d+(\.\d+)?|\.\d+", text):
        raise ValueError(f"{what} must be a plain non-negative number such as 19.9, not {text!r}")
    try:
        value = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        raise ValueError(f"{what} is not a number: {text!r}") from None
    if value > MAX_MONEY:
        raise ValueError(f"{what} must be at most {MAX_MONEY}")
    return value


def _money(raw: str) -> Decimal | None:
    """An amount in CHATGATE_CURRENCY (`50`, `12.5`); empty: none."""
    return _decimal(raw, "the amount") if raw.strip() else None


def _prices(raw: str) -> tuple[tuple[str, Decimal, Decimal], ...]:
    """Comma-separated `model=input/output`, each a price per million tokens in CHATGATE_CURRENCY,
    e.g. `deepseek-chat=2/8,gpt-4o-mini=1.1/4.4`; the model `*` prices every model not listed."""
    prices = []
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        model, sep, pair = item.rpartition("=")
        parts = pair.split("/")
        if not sep or not model.strip() or len(parts) != 2:
            raise ValueError(f"expected model=input/output (per million tokens), not {item!r}")
        model = model.strip()
        if any(m == model for m, _, _ in prices):
            raise ValueError(f"model {model!r} is priced twice")
        prices.append((model, _decimal(parts[0], f"the input price of {model}"),
                       _decimal(parts[1], f"the output price of {model}")))
    return tuple(prices)


def _currency(raw: str) -> str:
    """A short currency name shown beside amounts: `CNY`, `USD`, `元`."""
    value = raw.strip()
    if not value or len(value) > 8 or any(ch.isspace() for ch in value):
        raise ValueError("expected a short currency name without spaces, such as CNY")
    return value


RATE_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
"""The windows a rate may be counted in."""
_UNIT_WORDS = {"s": "second", "sec": "second", "secs": "second", "seconds": "second", "m": "minute", "min": "minute",
               "mins": "minute", "minutes": "minute", "h": "hour", "hours": "hour", "d": "day", "days": "day",
               **{unit: unit for unit in RATE_UNITS}}


def _rates(raw: str) -> tuple[tuple[int, int], ...]:
    """Comma-separated `N/unit` limits, e.g. `6/minute` or `6/minute,30/hour` (units: second, minute,
    hour, day; `s`, `min`, `h`, `d` and plurals too): (count, seconds) each."""
    rates = []
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        m = re.fullmatch(r"(\d+)\s*/\s*([a-z]+)", item.lower())
        unit = _UNIT_WORDS.get(m.group(2)) if m else None
        if unit is None:
            raise ValueError(f"expected N/second, N/minute, N/hour or N/day, not {item!r}")
        count = int(m.group(1))
        if count < 1:
            raise ValueError(f"{item!r}: the count must be at least 1")
        rates.append((count, RATE_UNITS[unit]))
    return tuple(rates)
