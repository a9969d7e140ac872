"""Reading for the operator: users, their ledger, and the daily figures of `chatgate stats`."""

from __future__ import annotations

import time

TABLES = ("users", "deliveries", "pages", "messages", "ledger", "codes", "redeem_failures", "orders")


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
        """Figures for each (label, start, end) window, in one read.

        new_users      users created in the window
        active_users   users who wrote (text or media) in the window
        answered       questions that came in in the window and were delivered
        refused        questions refused for a used-up trial (trial exhaustions)
        failed         questions given up on (refunded)
        redeemed       codes redeemed
        members        users whose membership was active at the window's end, from the ledger
        """
        if not days:
            return []
        values = ", ".join("(?, ?, ?)" for _ in days)
        params = [x for window in days for x in window]
        return list(self.db.query(f"""
            WITH days(day, start, stop) AS (VALUES {values})
            SELECT day,
              (SELECT COUNT(*) FROM users WHERE created_at >= start AND created_at < stop) AS new_users,
              (SELECT COUNT(DISTINCT user_id) FROM deliveries WHERE received_at >= start AND received_at < stop
                 AND kind IN ('text', 'media')) AS active_users,
              (SELECT COUNT(*) FROM deliveries WHERE received_at >= start AND received_at < stop
                 AND status = 'delivered') AS answered,
              (SELECT COUNT(*) FROM deliveries WHERE received_at >= start AND received_at < stop
                 AND status = 'refused') AS refused,
              (SELECT COUNT(*) FROM deliveries WHERE received_at >= start AND received_at < stop
                 AND status = 'failed') AS failed,
              (SELECT COUNT(*) FROM codes WHERE used_at >= start AND used_at < stop) AS redeemed,
              (SELECT COUNT(*) FROM (
                  SELECT member_until, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY id DESC) AS latest
                  FROM ledger WHERE member_until IS NOT NULL AND at < stop)
               WHERE latest = 1 AND member_until > stop) AS members
            FROM days ORDER BY start""", params))
