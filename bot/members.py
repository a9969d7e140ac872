"""Users as people see them: references (`wechat:<openid>`, `feishu:<open_id>`, `42`), membership
status and dates in the configured time zone."""

from __future__ import annotations

import re
import time
from datetime import datetime, tzinfo

from bot.errors import UnknownUser

REF_HELP = "a user reference is <platform>:<id> (wechat:<openid>, feishu:<open_id>) or the numeric id"


def ref(user: dict) -> str:
    """The reference that names this user everywhere: `<platform>:<platform's id>`."""
    return f"{user['platform']}:{user['external_id']}"


def resolve(store, reference: str) -> dict:
    """The user a reference names; `UnknownUser` if it names nobody or is not a reference.

    Accepts `<platform>:<id>`, the internal id (`42`), and `u42` as the logs write it.
    """
    text = reference.strip()
    if m := re.fullmatch(r"u?(\d+)", text):
        user = store.user(int(m.group(1)))
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
    """`2026-12-23 16:05` in the given time zone ('' for None)."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def membership(user: dict, tz: tzinfo, now: float | None = None) -> str:
    """`member until …`, `expired …` or `none`, for operators."""
    if is_member(user, now):
        return f"until {local_time(user['member_until'], tz)}"
    if user["member_until"] is not None:
        return f"ended {local_time(user['member_until'], tz)}"
    return "none"
