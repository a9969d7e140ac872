"""Bounds on what an operator, a code or a setting can give, so that no input can store a value the
rest of chatgate cannot handle (a date Python's calendar cannot show, an integer SQLite cannot hold).

The CLI refuses a number outside these bounds as a usage error; the store refuses it too (`ValueError`),
so no other caller can get past them. `config/settings.py` bounds `CHATGATE_WELCOME_DAYS` and
`CHATGATE_FREE_TRIAL` with the same numbers (a test keeps them in step: config does not import bot).
"""

from __future__ import annotations

from datetime import UTC, datetime

MAX_DAYS = 36_500
"""Days of membership one grant, one grant-all or one code may give: 100 years."""

MAX_TRIAL_ADD = 1_000_000
"""Free answers one `chatgate trial --add` may add (and the largest `CHATGATE_FREE_TRIAL`)."""

MAX_CODES = 100_000
"""Codes one `chatgate codes create` may make."""

MAX_EXPIRY = datetime(3000, 1, 1, tzinfo=UTC).timestamp()
"""No membership runs past 3000-01-01 00:00 UTC: a grant or a code that would take one further is
refused (`MembershipTooLong`). Far inside the calendar in every time zone, and out of reach of a
century-long grant for the next nine hundred years."""

MAX_ID = 2**63 - 1
"""SQLite's largest integer: a user id or REF number beyond it names nobody."""


def check_days(days: int) -> int:
    """`days` if it is a whole number of membership days within 1–`MAX_DAYS`, else `ValueError`."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be a whole number from 1 to {MAX_DAYS}")
    return days


def check_trial_add(answers: int) -> int:
    """`answers` if it is within 1–`MAX_TRIAL_ADD`, else `ValueError`."""
    if isinstance(answers, bool) or not isinstance(answers, int) or not 1 <= answers <= MAX_TRIAL_ADD:
        raise ValueError(f"answers must be a whole number from 1 to {MAX_TRIAL_ADD}")
    return answers
