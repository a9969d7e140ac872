"""`chatgate stats`: the figures of each day, days counted in the configured time zone."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, tzinfo

COLUMNS = ("new_users", "active_users", "answered", "refused", "failed", "redeemed", "members")
"""The figures of a day, in the order they are shown (see `Store.daily_stats`)."""


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


def daily(store, days: int, tz: tzinfo, now: float | None = None) -> list[dict]:
    """One row per day: `day` and the figures of `COLUMNS`."""
    return store.daily_stats(day_windows(days, tz, now))
