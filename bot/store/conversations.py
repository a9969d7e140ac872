"""Deliveries and conversations: admission, the worker's side of a question, and history."""

from __future__ import annotations

import time

from bot.models import SUBSCRIBE, TEXT, UNSUBSCRIBE, Admission, IncomingMessage
from bot.store.base import extend_membership, refund_trial


class Conversations:
    """Part of `Store`: the life of a delivery, from admission to delivered (or failed)."""

    # -- admission ---------------------------------------------------------------------------

    def admit(self, msg: IncomingMessage, *, free_trial: int, charge: bool, command: str | None = None,
              welcome_days: int = 0, now: float | None = None) -> Admission:
        """Record one delivery and decide its fate, in one transaction.

        Find or create the user (a new one gets the free trial and `welcome_days` of membership, each
        with a ledger row); record the delivery (a re-delivery stops here with `duplicate`). An in-chat
        `command` is recorded under its name, without its text (a code must not be stored in clear),
        and is never charged. For a chargeable question, pass a member, or reserve one trial answer
        with a conditional update, or refuse with `exhausted`. Non-questions are `recorded`.
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
            if got is None:
                (first,) = c.execute("SELECT id FROM deliveries WHERE platform = ? AND message_key = ?",
                                     (msg.platform, msg.message_key)).fetchone()
                return Admission("duplicate", first, user_id, max(trial_limit - trial_used, 0), member_until)
            delivery_id = got[0]
            if msg.kind == UNSUBSCRIBE:
                c.execute("UPDATE users SET unsubscribed_at = ? WHERE id = ?", (now, user_id))
            elif msg.kind == SUBSCRIBE:
                c.execute("UPDATE users SET unsubscribed_at = NULL WHERE id = ?", (user_id,))

            if command:
                outcome, status, charged = "command", "recorded", "none"
            elif not charge or msg.kind != TEXT:
                outcome, status, charged = "recorded", "recorded", "none"
            elif member_until is not None and member_until > now:
                outcome, status, charged = "member", "queued", "member"
            else:
                reserved = c.execute(
                    "UPDATE users SET trial_used = trial_used + 1 WHERE id = ? AND trial_used < trial_limit",
                    (user_id,)).rowcount
                if reserved:
                    trial_used += 1
                    c.execute("INSERT INTO ledger (user_id, at, kind, answers, delivery_id, actor) "
                              "VALUES (?, ?, 'trial_use', -1, ?, 'system')", (user_id, now, delivery_id))
                    outcome, status, charged = "trial", "queued", "trial"
                else:
                    outcome, status, charged = "exhausted", "refused", "none"
            c.execute("UPDATE deliveries SET status = ?, charge = ? WHERE id = ?",
                      (status, charged, delivery_id))
        return Admission(outcome, delivery_id, user_id, max(trial_limit - trial_used, 0), member_until,
                         new_user)

    def revert_admission(self, delivery_id: int, reason: str) -> None:
        """Undo an admission whose job could not be queued, so the platform's retry is admitted anew.

        The trial answer (if one was reserved) is refunded with a ledger row, and the delivery is
        marked `reverted` under a changed key: the platform's re-delivery must not be taken for a
        duplicate. (The row stays: the ledger points at it.)
        """
        with self.write() as c:
            row = c.execute("SELECT user_id, charge FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if row is None:
                return
            user_id, charge = row
            if charge == "trial":
                refund_trial(c, user_id, delivery_id, reason, time.time())
            c.execute("UPDATE deliveries SET status = 'reverted', charge = 'none', finished_at = ?, error = ?, "
                      "message_key = message_key || '#reverted-' || id WHERE id = ?",
                      (time.time(), reason[:500], delivery_id))

    # -- the worker's side -------------------------------------------------------------------

    def delivery(self, delivery_id: int) -> dict | None:
        """One delivery row with its user's platform id, or None."""
        rows = list(self.db.query(
            "SELECT d.*, u.external_id AS user_external_id FROM deliveries d "
            "JOIN users u ON u.id = d.user_id WHERE d.id = ?", [delivery_id]))
        return rows[0] if rows else None

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

    def record_answer(self, delivery_id: int, answer: str) -> bool:
        """Store the answer and the turn it completes; False if the delivery was not waiting for one."""
        now = time.time()
        with self.write() as c:
            row = c.execute("SELECT user_id, chat, question FROM deliveries WHERE id = ? AND status = 'queued'",
                            (delivery_id,)).fetchone()
            if row is None:
                return False
            user_id, chat, question = row
            c.execute("UPDATE deliveries SET status = 'answered', answer = ? WHERE id = ?", (answer, delivery_id))
            c.executemany(
                "INSERT INTO messages (user_id, chat, role, content, delivery_id, at) VALUES (?, ?, ?, ?, ?, ?)",
                [(user_id, chat, "user", question, delivery_id, now),
                 (user_id, chat, "assistant", answer, delivery_id, now)])
        return True

    def add_parts_sent(self, delivery_id: int, count: int = 1) -> None:
        """Count parts of an answer that reached the user, so a retry resumes after them."""
        self.conn.execute("UPDATE deliveries SET parts_sent = parts_sent + ? WHERE id = ?", (count, delivery_id))

    def mark_delivered(self, delivery_id: int) -> bool:
        """The whole answer reached the platform."""
        return bool(self.conn.execute(
            "UPDATE deliveries SET status = 'delivered', finished_at = ? WHERE id = ? AND status = 'answered'",
            (time.time(), delivery_id)).rowcount)

    def fail_delivery(self, delivery_id: int, error: str) -> str | None:
        """Give up on a question: mark it failed and refund a reserved trial answer.

        Returns the charge that was undone ('trial', 'member'), or None when the delivery had already
        finished (delivered or failed): safe to call twice.
        """
        with self.write() as c:
            row = c.execute("SELECT user_id, charge FROM deliveries WHERE id = ? AND status IN ('queued', 'answered')",
                            (delivery_id,)).fetchone()
            if row is None:
                return None
            user_id, charge = row
            c.execute("UPDATE deliveries SET status = 'failed', finished_at = ?, error = ? WHERE id = ?",
                      (time.time(), error[:500], delivery_id))
            if charge == "trial":
                refund_trial(c, user_id, delivery_id, "answer failed", time.time())
        return charge

    def reopen_delivery(self, delivery_id: int) -> bool:
        """Make a failed question answerable again (the operator retries its job), free of charge.

        Its trial answer was refunded when it failed, so it is not charged again. A stored answer is
        kept and re-sent from the first part not yet sent. False if the delivery had not failed.
        """
        return bool(self.conn.execute(
            "UPDATE deliveries SET status = CASE WHEN answer IS NULL THEN 'queued' ELSE 'answered' END, "
            "charge = 'none', finished_at = NULL, error = NULL WHERE id = ? AND status = 'failed'",
            (delivery_id,)).rowcount)

    def deliveries(self, user_id: int | None = None) -> list[dict]:
        """Every delivery (of one user), oldest first."""
        if user_id is None:
            return list(self.db.query("SELECT * FROM deliveries ORDER BY id"))
        return list(self.db.query("SELECT * FROM deliveries WHERE user_id = ? ORDER BY id", [user_id]))
