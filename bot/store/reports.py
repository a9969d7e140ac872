"""Reading for the operator: users, their ledger, the daily figures of `chatgate stats` and the
usage behind what answers cost (costs are worked out from these by `bot/stats.py`, with the prices)."""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right

from bot.guard import REASONS

TABLES = ("users", "deliveries", "pages", "messages", "ledger", "codes", "redeem_failures", "orders", "daily_usage")


def _span(at: float, until: float, next_at: float | None, starts: list, ends_before: list, ends_at: list) -> None:
    """The moments t a ledger row makes its user a member: at < t < until, and t <= next_at (after
    that, the next row is the user's latest)."""
    if next_at is not None and next_at < until:
        if next_at > at:
            starts.append(at)
            ends_at.append(next_at)
    elif until > at:
        starts.append(at)
        ends_before.append(until)

class Reports:
    """Part of `Store`: the read side."""

    def user(self, user_id: int) -> dict | None:
        """One user by internal id, or None."""
        rows = list(self.db.query("SELECT * FROM users WHERE id = ?", [user_id]))
        return rows[0] if rows else None

    def find_user(self, platform: str, external_id: str) -> dict | None:
        """One user by platform and the platform's id for them, or None."""
        rows = list(self.db.query("SELECT * FROM users WHERE platform = ? AND external_id = ?",
                                  [platform, external_id]))
        return rows[0] if rows else None

    def users(self, *, members_only: bool = False, limit: int = 0, platform: str = "", search: str = "",
              sort: str = "new", now: float | None = None) -> list[dict]:
        """Users, newest first or (`sort="active"`) most recently active first; filtered by platform,
        by a piece of their platform id, and to active members if asked. `limit` 0 means all."""
        now = time.time() if now is None else now
        order = "last_seen_at DESC" if sort == "active" else "id DESC"
        return list(self.db.query(
            "SELECT * FROM users WHERE (:members = 0 OR member_until > :now) AND (:platform = '' OR platform = "
            ":platform) AND (:search = '' OR instr(external_id, :search) > 0) ORDER BY " + order + " LIMIT :limit",
            {"members": members_only, "now": now, "limit": limit or -1, "platform": platform, "search": search}))

    def ledger(self, user_id: int) -> list[dict]:
        """The user's ledger rows, oldest first: every change to what they may ask."""
        return list(self.db.query("SELECT * FROM ledger WHERE user_id = ? ORDER BY id", [user_id]))

    def count(self, table: str) -> int:
        """Rows in one of chatgate's tables."""
        if table not in TABLES:
            raise ValueError(table)
        return self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def daily_stats(self, days: list[tuple[str, float, float]]) -> list[dict]:
        """Figures for each (label, start, end) window, in a few reads.

        new_users        users created in the window
        active_users     users who wrote (text or media) in the window
        trial_exhausted  users whose last free answer was reserved in the window (as things stand:
                         a refund or more trial undoes it)
        conversions      users whose first membership (grant, code or order; not the welcome days)
                         after their trial started began in the window
        answered         questions that came in in the window and were delivered
        refused          questions refused for a used-up trial (trial exhaustions)
        refused_budget, refused_hard_cap, refused_flood, refused_member_daily
                         questions refused by a guardrail (`bot/guard.py`), never charged
        failed           questions given up on (refunded)
        redeemed         codes redeemed
        code_cents       the prices of the codes redeemed (cents)
        order_cents      the amounts of orders paid (cents), granted or unclaimed
        members          users whose membership was active at the window's end, from the ledger
        usage            per model: answers, prompt and completion tokens, and those estimated,
                         of the answers produced in the window
        """
        if not days:
            return []
        values = ", ".join("(?, ?, ?)" for _ in days)
        params = [x for window in days for x in window]
        rows = list(self.db.query(f"""
            WITH days(day, start, stop) AS (VALUES {values}),
            firsts AS MATERIALIZED (
              SELECT l.user_id, MIN(l.at) AS at FROM ledger l JOIN users u ON u.id = l.user_id
              WHERE l.days IS NOT NULL AND l.at > u.created_at GROUP BY l.user_id)
            SELECT day,
              (SELECT COUNT(*) FROM users WHERE created_at >= start AND created_at < stop) AS new_users,
              (SELECT COUNT(DISTINCT user_id) FROM deliveries WHERE received_at >= start AND received_at < stop
                 AND kind IN ('text', 'media')) AS active_users,
              (SELECT COUNT(*) FROM users WHERE trial_exhausted_at >= start AND trial_exhausted_at < stop)
                 AS trial_exhausted,
              (SELECT COUNT(*) FROM firsts WHERE at >= start AND at < stop) AS conversions,
              (SELECT COUNT(*) FROM deliveries WHERE received_at >= start AND received_at < stop
                 AND status = 'delivered') AS answered,
              (SELECT COUNT(*) FROM deliveries WHERE received_at >= start AND received_at < stop
                 AND status = 'failed') AS failed,
              (SELECT COUNT(*) FROM codes WHERE used_at >= start AND used_at < stop) AS redeemed,
              (SELECT COALESCE(SUM(price_cents), 0) FROM codes WHERE used_at >= start AND used_at < stop)
                 AS code_cents
            FROM days ORDER BY start""", params))
        by_day = {r["day"]: r for r in rows}
        members = self._members_at([stop for _, _, stop in sorted(days, key=lambda w: w[1])])
        for r, n in zip(rows, members, strict=True):
            r["members"] = n
        for r in rows:
            r.update({f"refused{'' if reason == 'trial_over' else '_' + reason}": 0 for reason in REASONS})
            r["order_cents"] = 0
            r["usage"] = []
        for day, reason, n in self.conn.execute(f"""
                WITH days(day, start, stop) AS (VALUES {values})
                SELECT day, COALESCE(refusal, 'trial_over'), COUNT(*) FROM days JOIN deliveries
                  ON received_at >= start AND received_at < stop AND status = 'refused'
                GROUP BY day, refusal""", params):
            if reason in REASONS:
                by_day[day]["refused" if reason == "trial_over" else f"refused_{reason}"] += n
        for day, model, answers, prompt, completion, estimated in self.conn.execute(f"""
                WITH days(day, start, stop) AS (VALUES {values})
                SELECT day, COALESCE(model, ''), COUNT(*), SUM(prompt_tokens), SUM(completion_tokens),
                  SUM(CASE WHEN usage_estimated THEN prompt_tokens + completion_tokens ELSE 0 END)
                FROM days JOIN deliveries ON answered_at >= start AND answered_at < stop
                GROUP BY day, model""", params):
            by_day[day]["usage"].append({"model": model, "answers": answers, "prompt_tokens": prompt or 0,
                                         "completion_tokens": completion or 0, "estimated_tokens": estimated or 0})
        for day, cents in self.conn.execute(f"""
                WITH days(day, start, stop) AS (VALUES {values})
                SELECT day, COALESCE(SUM(amount_cents), 0) FROM days JOIN orders
                  ON paid_at >= start AND paid_at < stop AND status IN ('granted', 'unclaimed')
                GROUP BY day""", params):
            by_day[day]["order_cents"] = cents
        return rows

    def _members_at(self, moments: list[float]) -> list[int]:
        """How many memberships were active at each moment, from the ledger: a user is a member at t
        when the latest ledger row with a `member_until` written before t runs past t.

        One ordered read of those rows (an index holds them), then each row is the span in which it
        is the user's latest and running: (its time, the earlier of its expiry and the next row's
        time]. Counting the spans around each moment is a pair of binary searches."""
        last = max(moments, default=0)
        starts, ends_before, ends_at = [], [], []  # a span ends at e: gone when t >= e, or when t > e
        previous = None
        for user_id, at, until in self.conn.execute(
                "SELECT user_id, at, member_until FROM ledger INDEXED BY ledger_member_until "
                "WHERE member_until IS NOT NULL AND at < ? ORDER BY user_id, id", (last,)):
            if previous is not None and previous[0] == user_id:
                _span(previous[1], previous[2], at, starts, ends_before, ends_at)
            elif previous is not None:
                _span(previous[1], previous[2], None, starts, ends_before, ends_at)
            previous = (user_id, at, until)
        if previous is not None:
            _span(previous[1], previous[2], None, starts, ends_before, ends_at)
        for values in (starts, ends_before, ends_at):
            values.sort()
        return [bisect_left(starts, t) - bisect_right(ends_before, t) - bisect_left(ends_at, t) for t in moments]

    def usage_by_user(self, start: float, stop: float, limit: int = 0) -> list[dict]:
        """Per user and model, the answers produced in [start, stop): answers, prompt and completion
        tokens (and how many were estimated), with the user's platform, id and membership expiry."""
        return list(self.db.query(
            "SELECT d.user_id, COALESCE(d.model, '') AS model, COUNT(*) AS answers, "
            "SUM(d.prompt_tokens) AS prompt_tokens, SUM(d.completion_tokens) AS completion_tokens, "
            "SUM(CASE WHEN d.usage_estimated THEN d.prompt_tokens + d.completion_tokens ELSE 0 END) "
            "AS estimated_tokens, u.platform, u.external_id, u.member_until "
            "FROM deliveries d JOIN users u ON u.id = d.user_id "
            "WHERE d.answered_at >= ? AND d.answered_at < ? GROUP BY d.user_id, d.model", [start, stop]))

    def user_usage(self, user_id: int) -> list[dict]:
        """The user's answers, tokens (and estimated tokens) per model, over all time."""
        return list(self.db.query(
            "SELECT COALESCE(model, '') AS model, COUNT(*) AS answers, SUM(prompt_tokens) AS prompt_tokens, "
            "SUM(completion_tokens) AS completion_tokens, SUM(CASE WHEN usage_estimated THEN prompt_tokens + "
            "completion_tokens ELSE 0 END) AS estimated_tokens FROM deliveries "
            "WHERE user_id = ? AND answered_at IS NOT NULL GROUP BY model", [user_id]))
