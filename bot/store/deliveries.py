"""The lifecycle of a delivery after admission (see `bot/delivery.py`): tries, answers, giving up,
expiry, and what the reconciler finds due. Every move is a conditional write checked by row count."""

from __future__ import annotations

import time

from bot.delivery import ANSWER, LEASE_MARGIN_S, NOTICE
from bot.store.base import refund_trial
from bot.usage import DayUsage, Usage

_SELECT = ("SELECT d.*, u.external_id AS user_external_id FROM deliveries d "
           "JOIN users u ON u.id = d.user_id ")
_EARLIER = "e.user_id = deliveries.user_id AND e.id < deliveries.id AND e.status IN ('queued', 'answering')"
"""`e` is an earlier question of the same user, not answered yet (inside a statement on `deliveries`)."""


def insert_pages(c, delivery_id: int, user_id: int, texts: list[str], kind: str, now: float) -> None:
    """Add pages after the delivery's last one. Call inside a write transaction."""
    (start,) = c.execute("SELECT COALESCE(MAX(seq) + 1, 0) FROM pages WHERE delivery_id = ?", (delivery_id,)).fetchone()
    c.executemany("INSERT INTO pages (delivery_id, user_id, seq, kind, text, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                  [(delivery_id, user_id, start + i, kind, text, now) for i, text in enumerate(texts)])


def cancel_pages(c, delivery_id: int, kind: str) -> int:
    """Cancel a delivery's pages of `kind` that have not gone out. Call inside a write transaction."""
    return c.execute("UPDATE pages SET state = 'cancelled' WHERE delivery_id = ? AND kind = ? "
                     "AND state IN ('ready', 'pushing')", (delivery_id, kind)).rowcount


class Deliveries:
    """Part of `Store`: what the worker, the expiry and the reconciler do to a delivery."""

    def delivery(self, delivery_id: int) -> dict | None:
        """One delivery row with its user's platform id, or None."""
        rows = list(self.db.query(_SELECT + "WHERE d.id = ?", [delivery_id]))
        return rows[0] if rows else None

    def deliveries(self, user_id: int | None = None) -> list[dict]:
        """Every delivery (of one user), oldest first."""
        if user_id is None:
            return list(self.db.query("SELECT * FROM deliveries ORDER BY id"))
        return list(self.db.query("SELECT * FROM deliveries WHERE user_id = ? ORDER BY id", [user_id]))

    # -- a try -------------------------------------------------------------------------------

    def start_answer(self, delivery_id: int, *, job_timeout: float, now: float | None = None) -> int | None:
        """Take the question for one try: `queued → answering`, or take over a try whose lease ran out.

        Returns the try's number, or None when the question is not waiting for a try (another job
        holds a live lease, it is answered or finished) or may not start yet: an earlier question
        of the same user is still in flight (one answer at a time per user, so that they arrive in
        the order asked; see `wait_behind`).
        """
        now = time.time() if now is None else now
        lease = now + job_timeout + LEASE_MARGIN_S
        with self.write() as c:
            row = c.execute(
                "UPDATE deliveries SET status = 'answering', attempts = attempts + 1, lease_until = ?, due_at = ?, "
                "behind = NULL WHERE id = ? AND (status = 'queued' OR (status = 'answering' AND lease_until < ?)) "
                f"AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE {_EARLIER}) RETURNING attempts",
                (lease, lease, delivery_id, now)).fetchone()
        return row[0] if row else None

    def wait_behind(self, delivery_id: int, *, recheck_s: float, now: float | None = None) -> int | None:
        """A queued question whose try may not start because an earlier question of its user is in
        flight: mark it waiting behind that one (whose end wakes it, `next_waiting`), looked at again
        by the reconciler after `recheck_s`. Returns the earlier question's id; 0 when the question is
        queued and nothing earlier is in flight any more (take the try now); None when it is not queued.
        """
        now = time.time() if now is None else now
        with self.write() as c:
            row = c.execute(
                f"UPDATE deliveries SET behind = (SELECT MAX(e.id) FROM deliveries e WHERE {_EARLIER}), due_at = ? "
                "WHERE id = ? AND status = 'queued' RETURNING behind",
                (now + recheck_s, delivery_id)).fetchone()
        if row is None:
            return None
        return row[0] or 0

    def next_waiting(self, user_id: int) -> dict | None:
        """The user's oldest question in flight if it waits behind an earlier one (which has just
        ended): the one to wake now. None if there is none, or the oldest is not waiting."""
        rows = list(self.db.query(_SELECT + "WHERE d.user_id = ? AND d.status IN ('queued', 'answering') "
                                  "ORDER BY d.id LIMIT 1", [user_id]))
        if rows and rows[0]["status"] == "queued" and rows[0]["behind"] is not None:
            return rows[0]
        return None

    def give_back(self, delivery_id: int, attempt: int, *, now: float | None = None) -> bool:
        """A try cut short by its worker stopping, not by a failure: `answering → queued`, the try not
        counted (attempts back to what they were), due at once. False if the try no longer holds it."""
        now = time.time() if now is None else now
        with self.write() as c:
            return bool(c.execute(
                "UPDATE deliveries SET status = 'queued', attempts = attempts - 1, lease_until = NULL, due_at = ? "
                "WHERE id = ? AND status = 'answering' AND attempts = ?", (now, delivery_id, attempt)).rowcount)

    def release_answer(self, delivery_id: int, attempt: int, *, error: str, retry_at: float) -> bool:
        """A try failed and more are allowed: `answering → queued`, looked at again by `retry_at`."""
        with self.write() as c:
            return bool(c.execute(
                "UPDATE deliveries SET status = 'queued', lease_until = NULL, due_at = ?, error = ? "
                "WHERE id = ? AND status = 'answering' AND attempts = ?",
                (retry_at, error[:500], delivery_id, attempt)).rowcount)

    def record_answer(self, delivery_id: int, attempt: int, answer: str, pages: list[str], *, keep_s: float,
                      recheck_s: float, usage: Usage | None = None, day: str = "", now: float | None = None
                      ) -> DayUsage | None:
        """Store the answer, its pages, the conversation turn and the answer's `usage` (added to the
        running total of `day`, the local date), in one transaction: `answering → answered`, to expire
        `keep_s` from now if nobody takes it, looked at again by the reconciler after `recheck_s`.

        Returns the day's usage after this answer (`DayUsage`, always true; read in the same
        transaction, so exactly one answer sees the day's cost pass a limit); None if this try no
        longer holds the question (it lost its lease)."""
        now = time.time() if now is None else now
        with self.write() as c:
            row = c.execute(
                "UPDATE deliveries SET status = 'answered', answer = ?, lease_until = NULL, error = NULL, "
                "expires_at = ?, due_at = ? WHERE id = ? AND status = 'answering' AND attempts = ? "
                "RETURNING user_id, chat, question",
                (answer, now + keep_s, now + recheck_s, delivery_id, attempt)).fetchone()
            if row is None:
                return None
            user_id, chat, question = row
            c.executemany(
                "INSERT INTO messages (user_id, chat, role, content, delivery_id, at) VALUES (?, ?, ?, ?, ?, ?)",
                [(user_id, chat, "user", question, delivery_id, now),
                 (user_id, chat, "assistant", answer, delivery_id, now)])
            insert_pages(c, delivery_id, user_id, pages, ANSWER, now)
            if usage is None:
                return DayUsage(day)
            c.execute("UPDATE deliveries SET model = ?, prompt_tokens = ?, completion_tokens = ?, usage_estimated = ?, "
                      "answered_at = ? WHERE id = ?", (usage.model, usage.prompt_tokens, usage.completion_tokens,
                                                      int(usage.estimated), now, delivery_id))
            c.execute("INSERT INTO daily_usage (day, model, answers, prompt_tokens, completion_tokens) "
                      "VALUES (?, ?, 1, ?, ?) ON CONFLICT (day, model) DO UPDATE SET answers = answers + 1, "
                      "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
                      "completion_tokens = completion_tokens + excluded.completion_tokens",
                      (day, usage.model, usage.prompt_tokens, usage.completion_tokens))
            return DayUsage(day, tuple(c.execute("SELECT model, prompt_tokens, completion_tokens FROM daily_usage "
                                                 "WHERE day = ?", (day,)).fetchall()), usage)

    def give_up(self, delivery_id: int, *, reason: str, apology: dict[str, str], attempt: int | None = None,
                now: float | None = None) -> str | None:
        """The question will not be answered: mark it failed, refund a reserved trial answer (with its
        ledger row) and leave the apology as a notice page, in one transaction.

        `apology` maps the charge ('trial', 'member', 'none') to its text. From `answering`, only the
        try `attempt` (if given) may give up. An answer some of whose pages already went out is not
        failed: it is marked delivered (in part) and the rest cancelled. Returns the charge undone, or
        None when nothing was done (already finished, or another try holds it).
        """
        now = time.time() if now is None else now
        with self.write() as c:
            row = c.execute("SELECT user_id, charge, status, attempts FROM deliveries WHERE id = ?",
                            (delivery_id,)).fetchone()
            if row is None:
                return None
            user_id, charge, status, attempts = row
            if status not in ("queued", "answering", "answered") or (
                    status == "answering" and attempt is not None and attempts != attempt):
                return None
            if status == "answered" and c.execute(
                    "SELECT 1 FROM pages WHERE delivery_id = ? AND kind = 'answer' AND state = 'sent'",
                    (delivery_id,)).fetchone():
                cancel_pages(c, delivery_id, ANSWER)
                c.execute("UPDATE deliveries SET status = 'delivered', finished_at = ?, due_at = NULL, error = ? "
                          "WHERE id = ?", (now, f"partly delivered: {reason}"[:500], delivery_id))
                return None
            cancel_pages(c, delivery_id, ANSWER)
            c.execute("UPDATE deliveries SET status = 'failed', finished_at = ?, error = ?, lease_until = NULL, "
                      "due_at = ?, remind_until = NULL WHERE id = ?", (now, reason[:500], now, delivery_id))
            if charge == "trial":
                refund_trial(c, user_id, delivery_id, "answer failed", now)
            insert_pages(c, delivery_id, user_id, [apology[charge]], NOTICE, now)
        return charge

    def expire(self, delivery_id: int, *, note: dict[str, str], now: float | None = None) -> str | None:
        """An answer nobody took before `expires_at`: with no page sent, `answered → expired`, refunded,
        with a note page for when the user comes back; with some sent, delivered in part.

        Returns 'expired', 'partly delivered', or None (not due, or a page is being pushed right now).
        """
        now = time.time() if now is None else now
        with self.write() as c:
            row = c.execute("SELECT user_id, charge FROM deliveries WHERE id = ? AND status = 'answered' "
                            "AND expires_at <= ?", (delivery_id, now)).fetchone()
            if row is None or c.execute("SELECT 1 FROM pages WHERE delivery_id = ? AND state = 'pushing'",
                                        (delivery_id,)).fetchone():
                return None
            user_id, charge = row
            cancel_pages(c, delivery_id, ANSWER)
            sent = c.execute("SELECT COUNT(*) FROM pages WHERE delivery_id = ? AND kind = 'answer' "
                             "AND state = 'sent'", (delivery_id,)).fetchone()[0]
            if sent:
                c.execute("UPDATE deliveries SET status = 'delivered', finished_at = ?, due_at = NULL, "
                          "error = 'partly delivered: the rest expired unfetched' WHERE id = ?", (now, delivery_id))
                return "partly delivered"
            c.execute("UPDATE deliveries SET status = 'expired', finished_at = ?, due_at = NULL, "
                      "error = 'answer expired unfetched', remind_until = NULL WHERE id = ?", (now, delivery_id))
            if charge == "trial":
                refund_trial(c, user_id, delivery_id, "answer expired unfetched", now)
            insert_pages(c, delivery_id, user_id, [note[charge]], NOTICE, now)
        return "expired"

    def reopen(self, delivery_id: int, *, recheck_s: float, now: float | None = None) -> bool:
        """Make a failed question answerable again (the operator retries its job), free of charge.

        Its trial answer was refunded when it failed, so it is not charged again; it gets a full set
        of tries and is answered anew. False if the delivery had not failed.
        """
        now = time.time() if now is None else now
        with self.write() as c:
            return bool(c.execute(
                "UPDATE deliveries SET status = 'queued', charge = 'none', attempts = 0, answer = NULL, "
                "finished_at = NULL, error = NULL, due_at = ? WHERE id = ? AND status = 'failed'",
                (now + recheck_s, delivery_id)).rowcount)

    # -- notices -----------------------------------------------------------------------------

    def add_notice(self, delivery_id: int, text: str, *, push_in: float | None = None, now: float | None = None
                   ) -> int:
        """Leave a notice page (an immediate reply) on a delivery; returns the page id. With
        `push_in`, the reconciler sees after that many seconds that it is pushed if nothing else did."""
        now = time.time() if now is None else now
        with self.write() as c:
            (user_id,) = c.execute("SELECT user_id FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            insert_pages(c, delivery_id, user_id, [text], NOTICE, now)
            if push_in is not None:
                c.execute("UPDATE deliveries SET due_at = ? WHERE id = ?", (now + push_in, delivery_id))
            return c.execute("SELECT MAX(id) FROM pages WHERE delivery_id = ?", (delivery_id,)).fetchone()[0]

    # -- what is due ---------------------------------------------------------------------------

    def due(self, now: float | None = None, limit: int = 500) -> list[dict]:
        """Deliveries whose `due_at` has passed, oldest first, with how many pages wait to go out
        (`pages_ready`) and whether an earlier question of the user is still in flight (`waits`)."""
        now = time.time() if now is None else now
        return list(self.db.query(
            "SELECT d.*, u.external_id AS user_external_id, (SELECT COUNT(*) FROM pages p "
            "WHERE p.delivery_id = d.id AND p.state = 'ready') AS pages_ready, EXISTS (SELECT 1 FROM deliveries e "
            "WHERE e.user_id = d.user_id AND e.id < d.id AND e.status IN ('queued', 'answering')) AS waits "
            "FROM deliveries d JOIN users u ON u.id = d.user_id "
            "WHERE d.due_at IS NOT NULL AND d.due_at <= ? ORDER BY d.due_at LIMIT ?", [now, limit]))

    def set_due(self, delivery_id: int, due_at: float | None, *, job_id: str | None = None) -> None:
        """When the reconciler should look at the delivery next (None: never again), and the id of
        the job now working on it."""
        with self.write() as c:
            if job_id is None:
                c.execute("UPDATE deliveries SET due_at = ? WHERE id = ?", (due_at, delivery_id))
            else:
                c.execute("UPDATE deliveries SET due_at = ?, job_id = ? WHERE id = ?", (due_at, job_id, delivery_id))

    def in_flight(self, user_id: int) -> list[int]:
        """The user's questions not answered yet and deliveries with pages waiting, oldest first."""
        rows = self.conn.execute(
            "SELECT id FROM deliveries WHERE user_id = ? AND status IN ('queued', 'answering') "
            "UNION SELECT delivery_id FROM pages WHERE user_id = ? AND state = 'ready' ORDER BY 1",
            (user_id, user_id)).fetchall()
        return [r[0] for r in rows]
