"""Users as people see them: references (`wechat:<openid>`, `feishu:<open_id>`, `42`), membership
status and dates in the configured time zone."""

from __future__ import annotations

import re
import time
from datetime import datetime, tzinfo

from bot.errors import UnknownUser
from bot.limits import MAX_ID

REF_HELP = "a user reference is <platform>:<id> (wechat:<openid>, feishu:<open_id>) or the numeric id"


def ref(user: dict) -> str:
    """The reference that names this user everywhere: `<platform>:<platform's id>`."""
    return f"{user['platform']}:{user['external_id']}"


def summary(user: dict) -> dict:
    """A user as the operator's JSON shows them: the row, its reference, free answers left, and whether
    their membership is active."""
    return {"ref": ref(user), **user, "trial_left": trial_left(user), "member": is_member(user)}


def resolve(store, reference: str) -> dict:
    """The user a reference names; `UnknownUser` if it names nobody or is not a reference.

    Accepts `<platform>:<id>`, the internal id (`42`), and `u42` as the logs write it.
    """
    text = reference.strip()
    if m := re.fullmatch(r"u?(\d+)", text):
        number = int(m.group(1))
        user = store.user(number) if number <= MAX_ID else None  # beyond SQLite's integers: nobody
    elif ":" in text and all(text.split(":", 1)):
        user = store.find_user(*text.split(":", 1))
    else:
        raise UnknownUser(f"{reference!r} is not a user reference: {REF_HELP}")
    if user is None:
        raise UnknownUser(f"no user {text}")
    return user


def is_member(user: dict, now: float | None = None) -> bool:
    """True while the user's membership runs."""
    now = time.time() if now is None else now
    return user["member_until"] is not None and user["member_until"] > now


def trial_left(user: dict) -> int:
    """Free answers the user has left."""
    return max(user["trial_limit"] - user["trial_used"], 0)


def local_time(ts: float | None, tz: tzinfo, *, seconds: bool = False) -> str:
    """`2026-12-23 16:05` in the given time zone ('' for None).

    A moment beyond the calendar (an expiry stored before grants were bounded, years past 9999) is
    shown as the calendar's last (or first) minute, `9999-12-31 23:59`, instead of failing.
    """
    if ts is None:
        return ""
    return _datetime(ts, tz).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def beyond_calendar(ts: float | None, tz: tzinfo) -> bool:
    """True when `ts` cannot be shown as a date in `tz` (and `local_time` shows the calendar's edge)."""
    if ts is None:
        return False
    try:
        datetime.fromtimestamp(ts, tz)
    except (OverflowError, OSError, ValueError):
        return True
    return False


def _datetime(ts: float, tz: tzinfo) -> datetime:
    try:
        return datetime.fromtimestamp(ts, tz)
    except (OverflowError, OSError, ValueError):
        return datetime.max if ts > 0 else datetime.min


def membership(user: dict, tz: tzinfo, now: float | None = None) -> str:
    """`until …`, `ended …` or `none`, for operators; an expiry beyond the calendar also shows the
    stored number."""
    until = user["member_until"]
    shown = local_time(until, tz) + (f" (stored {until:.0f}: beyond the calendar)" if beyond_calendar(until, tz)
                                     else "")
    if is_member(user, now):
        return f"until {shown}"
    if until is not None:
        return f"ended {shown}"
    return "none"
