"""Admission (each delivery recorded once, each question charged once) and the conversation history."""

from __future__ import annotations

import time

from bot.guard import BUSY, FLOOD, HARD_CAP, MEMBER_DAILY, TRIAL_OVER, Guard
from bot.models import SUBSCRIBE, TEXT, UNSUBSCRIBE, Admission, IncomingMessage
from bot.store.base import extend_membership


def _refusal(c, guard: Guard, user_id: int, member: bool, now: float) -> str:
    """Why the guard refuses this user's question now ('' if it does not). In the admission's
    transaction: the counts include every question admitted before this one."""
    if guard.watches_spend:
        level = guard.spend_level(c.execute("SELECT model, prompt_tokens, completion_tokens FROM daily_usage "
                                            "WHERE day = ?", (guard.day,)).fetchall())
        if level == HARD_CAP or (level and not member):
            return level
    for count, seconds in guard.rates:
        asked = c.execute("SELECT COUNT(*) FROM deliveries WHERE user_id = ? AND received_at > ? "
                          "AND charge IN ('trial', 'member')", (user_id, now - seconds)).fetchone()[0]
        if asked >= count:
            return FLOOD
    if member and guard.member_daily:
        asked = c.execute("SELECT COUNT(*) FROM deliveries WHERE user_id = ? AND received_at >= ? "
                          "AND charge = 'member' AND status NOT IN ('failed', 'expired')",
                          (user_id, guard.day_start)).fetchone()[0]
        if asked >= guard.member_daily:
            return MEMBER_DAILY
    return ""


class Conversations:
    """Part of `Store`: admission, and the history a question goes to the model with."""

    # -- admission ---------------------------------------------------------------------------

    def admit(self, msg: IncomingMessage, *, free_trial: int, charge: bool, command: str | None = None,
              welcome_days: int = 0, recheck_s: float = 60, guard: Guard | None = None, remind_s: float = 0,
              now: float | None = None) -> Admission:
        """Record one delivery and decide its fate, in one transaction.

        Find or create the user (a new one gets the free trial and `welcome_days` of membership, each
        with a ledger row); record the delivery (a re-delivery stops here with `duplicate`). An in-chat
        `command` is recorded under its name, without its text (a code must not be stored in clear),
        and is never charged. For a chargeable question, pass a member, or reserve one trial answer
        with a conditional update, or refuse with `exhausted`. Non-questions are `recorded`. A queued
        question is due for the reconciler `recheck_s` from now (by then its job should have run).

        `guard` (`bot/guard.py`): a question that would be answered may be refused instead (budget,
        hard cap, flood, a member's daily limit): status `refused` with its `refusal`, outcome `busy`
        or `limited`, never charged. `remind_s`: a member whose membership ends within that many
        seconds gets one reminder per expiry; this delivery carries it (`remind_until`) unless an
        earlier one did for the same expiry (not on the admission that created the user).
        """
        now = time.time() if now is None else now
        with self.write() as c:
            new_user = bool(c.execute(
                "INSERT INTO users (platform, external_id, created_at, last_seen_at, trial_limit) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (platform, external_id) DO NOTHING",
                (msg.platform, msg.user, now, now, free_trial)).rowcount)
            user_id, trial_limit, trial_used, member_until = c.execute(
                "UPDATE users SET last_seen_at = ? WHERE platform = ? AND external_id = ? "
                "RETURNING id, trial_limit, trial_used, member_until",
                (now, msg.platform, msg.user)).fetchone()
            if new_user:
                c.execute("INSERT INTO ledger (user_id, at, kind, answers, actor, note) "
                          "VALUES (?, ?, 'trial_start', ?, 'system', 'free trial for a new user')",
                          (user_id, now, trial_limit))
                if welcome_days > 0:
                    member_until = extend_membership(c, user_id, welcome_days, now=now, kind="member_grant",
                                                     actor="system", note="welcome days for a new user")
            cur = c.execute(
                "INSERT INTO deliveries (platform, message_key, user_id, kind, chat, question, "
                "received_at, status, charge, command) VALUES (?, ?, ?, ?, ?, ?, ?, 'new', 'none', ?) "
                "ON CONFLICT (platform, message_key) DO NOTHING RETURNING id",
                (msg.platform, msg.message_key, user_id, msg.kind, msg.chat, "" if command else msg.text, now,
                 command))
            got = cur.fetchone()
            if got is None:  # a re-delivery: count the post (WeChat's reply rules depend on it)
                first, post = c.execute(
                    "UPDATE deliveries SET posts = posts + 1 WHERE platform = ? AND message_key = ? "
                    "RETURNING id, posts", (msg.platform, msg.message_key)).fetchone()
                return Admission("duplicate", first, user_id, max(trial_limit - trial_used, 0), member_until,
                                 post=post)
            delivery_id = got[0]
            if msg.kind == UNSUBSCRIBE:
                c.execute("UPDATE users SET unsubscribed_at = ? WHERE id = ?", (now, user_id))
            elif msg.kind == SUBSCRIBE:
                c.execute("UPDATE users SET unsubscribed_at = NULL WHERE id = ?", (user_id,))

            member = member_until is not None and member_until > now
            refusal = ""
            if command:
                outcome, status, charged = "command", "recorded", "none"
            elif not charge or msg.kind != TEXT:
                outcome, status, charged = "recorded", "recorded", "none"
            elif not member and trial_used >= trial_limit:
                outcome, status, charged, refusal = "exhausted", "refused", "none", TRIAL_OVER
            elif guard is not None and (refusal := _refusal(c, guard, user_id, member, now)):
                outcome, status, charged = "busy" if refusal in BUSY else "limited", "refused", "none"
            elif member:
                outcome, status, charged = "member", "queued", "member"
            else:
                reserved = c.execute(
                    "UPDATE users SET trial_used = trial_used + 1, trial_exhausted_at = CASE WHEN trial_used + 1 "
                    ">= trial_limit THEN ? ELSE trial_exhausted_at END WHERE id = ? AND trial_used < trial_limit",
                    (now, user_id)).rowcount
                if reserved:
                    trial_used += 1
                    c.execute("INSERT INTO ledger (user_id, at, kind, answers, delivery_id, actor) "
                              "VALUES (?, ?, 'trial_use', -1, ?, 'system')", (user_id, now, delivery_id))
                    outcome, status, charged = "trial", "queued", "trial"
                else:
                    outcome, status, charged, refusal = "exhausted", "refused", "none", TRIAL_OVER
            remind = (member and remind_s > 0 and not new_user and member_until - now <= remind_s
                      and c.execute("SELECT 1 FROM deliveries WHERE user_id = ? AND remind_until = ?",
                                    (user_id, member_until)).fetchone() is None)
            c.execute("UPDATE deliveries SET status = ?, charge = ?, due_at = ?, refusal = ?, remind_until = ? "
                      "WHERE id = ?", (status, charged, now + recheck_s if status == "queued" else None,
                                       refusal or None, member_until if remind else None, delivery_id))
        return Admission(outcome, delivery_id, user_id, max(trial_limit - trial_used, 0), member_until,
                         new_user, reason=refusal, remind_until=member_until if remind else None)

    def history(self, user_id: int, chat: str, *, turns: int, max_chars: int) -> list[dict]:
        """The user's last `turns` question/answer pairs in this chat, oldest first, within max_chars.

        Only questions that came in after the user's last `reset` command in this chat count: a reset
        starts a new conversation, and the old turns stay in the table for the record.
        """
        if turns <= 0 or max_chars <= 0:
            return []
        rows = self.conn.execute(
            "SELECT role, content FROM messages WHERE user_id = ? AND chat = ? AND delivery_id > "
            "(SELECT COALESCE(MAX(id), 0) FROM deliveries WHERE user_id = ? AND chat = ? AND command = 'reset') "
            "ORDER BY id DESC LIMIT ?",
            (user_id, chat, user_id, chat, turns * 2)).fetchall()
        picked: list[dict] = []
        total = 0
        for role, content in rows:
            total += len(content)
            if total > max_chars:
                break
            picked.append({"role": role, "content": content})
        picked.reverse()
        while picked and picked[0]["role"] != "user":
            picked.pop(0)
        return picked
