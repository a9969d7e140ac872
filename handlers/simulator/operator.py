"""The simulator's side panel: one user as the operator sees them (`chatgate user`), and the operator's
usual moves on them (`chatgate grant`, `chatgate trial`, `chatgate codes create`), through the same
functions of `bot/` the CLI calls. Every change is a ledger row whose actor is `simulator`."""

from __future__ import annotations

from datetime import datetime

from bot import codes, members
from bot.errors import ChatgateError

ACTOR = "simulator"
"""Who the ledger says made a change from the simulator's panel."""
ACTIONS = ("grant", "trial", "code")


class BadAction(ValueError):
    """An operator move the panel refuses (400): the message says why."""


def panel(store, settings, platform: str, user: str) -> dict:
    """The user (None until they first wrote) and their ledger, newest first, as `chatgate user` shows them."""
    row = store.find_user(platform, user)
    if row is None:
        return {"user": None, "ledger": [], "trial_size": settings.free_trial}
    shown = members.summary(row)
    shown.update(trial_size=row["trial_limit"], member_until=row["member_until"],
                 membership=members.membership(row, settings.tz))
    ledger = [{**r, "at_text": members.local_time(r["at"], settings.tz, seconds=True),
               "member_until_text": members.local_time(r["member_until"], settings.tz) if r["member_until"] else ""}
              for r in sorted(store.ledger(row["id"]), key=lambda r: (r["at"], r["id"]), reverse=True)]
    return {"user": shown, "ledger": ledger, "trial_size": settings.free_trial}


def _number(body: dict, name: str) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadAction(f"{name} must be a whole number")
    return value


def act(store, body: dict) -> dict:
    """Apply one operator move (`body`: action, platform, user, days or count); returns what it made."""
    action = body.get("action")
    if action not in ACTIONS:
        raise BadAction(f"action must be one of {', '.join(ACTIONS)}")
    try:
        if action == "code":
            batch = "simulator-" + datetime.now().strftime("%Y%m%d-%H%M%S-%f")
            made = codes.create(store, days=_number(body, "days"), count=1, batch=batch, actor=ACTOR,
                                note="made in the simulator")
            return {"code": made[0], "batch": batch}
        row = store.find_user(str(body.get("platform", "")), str(body.get("user", "")))
        if row is None:
            raise BadAction("no such user yet: they appear once they first write or follow")
        if action == "grant":
            store.grant(row["id"], _number(body, "days"), actor=ACTOR, note="granted in the simulator")
        else:
            store.add_trial(row["id"], _number(body, "count"), actor=ACTOR, note="added in the simulator")
    except (ValueError, ChatgateError) as exc:
        if isinstance(exc, BadAction):
            raise
        raise BadAction(str(exc)) from None
    return {}
