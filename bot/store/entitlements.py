"""What a user may ask: memberships, trial size and redemption codes. Every change has a ledger row."""

from __future__ import annotations

import time
from collections.abc import Iterator

from bot.errors import BatchExists, CodeInvalid, RedeemLimited
from bot.limits import MAX_CODES, MAX_DAYS, MAX_EXPIRY, check_days, check_trial_add
from bot.store.base import DAY_S, extend_membership


class Entitlements:
    """Part of `Store`: grants, revocations, trial top-ups, and redemption codes."""

    # -- memberships and the trial -----------------------------------------------------------

    def grant(self, user_id: int, days: int, *, actor: str, note: str = "", now: float | None = None
              ) -> float | None:
        """Add `days` of membership (from the current expiry if still active, else from now).

        Returns the new expiry, or None for an unknown user. `ValueError` for days outside
        1–`MAX_DAYS`; `MembershipTooLong` if the expiry would pass `MAX_EXPIRY` (nothing changes).
        """
        check_days(days)
        now = time.time() if now is None else now
        with self.write() as c:
            return extend_membership(c, user_id, days, now=now, kind="member_grant", actor=actor, note=note)

    def revoke(self, user_id: int, *, actor: str, note: str = "", now: float | None = None) -> bool:
        """End an active membership now (expiry set to now, with a ledger row); False if none was active."""
        now = time.time() if now is None else now
        with self.write() as c:
            done = c.execute("UPDATE users SET member_until = ? WHERE id = ? AND member_until > ?",
                             (now, user_id, now)).rowcount
            if done:
                c.execute("INSERT INTO ledger (user_id, at, kind, member_until, actor, note) "
                          "VALUES (?, ?, 'member_revoke', ?, ?, ?)", (user_id, now, now, actor, note))
        return bool(done)

    def add_trial(self, user_id: int, answers: int, *, actor: str, note: str = "", now: float | None = None
                  ) -> int | None:
        """Raise the user's free-trial size by `answers` (1–`MAX_TRIAL_ADD`); returns the new size
        (None: no such user)."""
        check_trial_add(answers)
        now = time.time() if now is None else now
        with self.write() as c:
            row = c.execute("UPDATE users SET trial_limit = trial_limit + ?, trial_exhausted_at = NULL WHERE id = ? "
                            "RETURNING trial_limit", (answers, user_id)).fetchone()
            if row is None:
                return None
            c.execute("INSERT INTO ledger (user_id, at, kind, answers, actor, note) "
                      "VALUES (?, ?, 'trial_grant', ?, ?, ?)", (user_id, now, answers, actor, note))
        return row[0]

    def count_grantees(self, *, members_only: bool, active_since: float = 0, days: int = 0,
                       now: float | None = None) -> int:
        """How many users `grant_all(days)` would reach: everyone still subscribed (seen since
        `active_since`), or only active members; not those whose membership `days` more would take
        past `MAX_EXPIRY`."""
        now = time.time() if now is None else now
        return self.conn.execute(
            "SELECT COUNT(*) FROM users WHERE unsubscribed_at IS NULL AND (? = 0 OR member_until > ?) "
            "AND last_seen_at >= ? AND MAX(COALESCE(member_until, 0), ?) + ? * ? <= ?",
            (members_only, now, active_since, now, days, DAY_S, MAX_EXPIRY)).fetchone()[0]

    def grant_all(self, days: int, *, actor: str, note: str = "", members_only: bool = False,
                  active_since: float = 0, batch_size: int = 500, now: float | None = None) -> Iterator[int]:
        """Grant `days` to every subscribed user (or every active member), one transaction per batch.

        Yields how many users each batch reached. Users who arrive while it runs are left out (they
        were not in the count the operator confirmed); stopping half-way leaves whole batches done.
        So is a user whose membership would pass `MAX_EXPIRY` (one written before days were bounded):
        it stays as it is. `ValueError` for days outside 1–`MAX_DAYS`.
        """
        check_days(days)
        now = time.time() if now is None else now
        last = 0
        up_to = self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM users").fetchone()[0]
        while True:
            with self.write() as c:
                rows = c.execute(
                    "UPDATE users SET member_until = MAX(COALESCE(member_until, 0), ?) + ? * ? "
                    "WHERE id IN (SELECT id FROM users WHERE id > ? AND id <= ? AND unsubscribed_at IS NULL "
                    "AND (? = 0 OR member_until > ?) AND last_seen_at >= ? "
                    "AND MAX(COALESCE(member_until, 0), ?) + ? * ? <= ? ORDER BY id LIMIT ?) "
                    "RETURNING id, member_until",
                    (now, days, DAY_S, last, up_to, members_only, now, active_since, now, days, DAY_S,
                     MAX_EXPIRY, batch_size)).fetchall()
                c.executemany(
                    "INSERT INTO ledger (user_id, at, kind, days, member_until, actor, note) "
                    "VALUES (?, ?, 'member_grant', ?, ?, ?, ?)",
                    [(user_id, now, days, until, actor, note) for user_id, until in rows])
            if not rows:
                return
            last = max(user_id for user_id, _ in rows)
            yield len(rows)

    # -- redemption codes --------------------------------------------------------------------

    def create_codes(self, hashes: list[str], *, batch: str, days: int, actor: str, note: str = "",
                     price_cents: int | None = None, now: float | None = None) -> int:
        """Store a new batch of codes (their hashes only) in one transaction; returns how many.

        `price_cents`: what each code sells for (revenue on the day it is redeemed); None: unpriced.
        `ValueError` for days outside 1–`MAX_DAYS`, more than `MAX_CODES` codes or a negative price.
        """
        if price_cents is not None and (isinstance(price_cents, bool) or not isinstance(price_cents, int)
                                        or price_cents < 0):
            raise ValueError("a code's price is a whole, non-negative number of cents")
        check_days(days)
        if len(hashes) > MAX_CODES:
            raise ValueError(f"at most {MAX_CODES} codes in one batch")
        now = time.time() if now is None else now
        with self.write() as c:
            if c.execute("SELECT 1 FROM codes WHERE batch = ? LIMIT 1", (batch,)).fetchone():
                raise BatchExists(f"batch {batch!r} already exists; choose another name")
            c.executemany("INSERT INTO codes (hash, batch, days, created_at, created_by, note, price_cents) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?)", [(h, batch, days, now, actor, note, price_cents)
                                                           for h in hashes])
        return len(hashes)

    def redeem(self, user_id: int, code_hash: str, *, max_failures: int, window_s: float,
               now: float | None = None) -> tuple[int, float]:
        """Use the code with this hash for the user, in one transaction: mark it used (only if unused
        and not disabled: a conditional update, so two users racing for one code cannot both win), add
        its days to the membership and write the ledger row. Returns (days, new expiry).

        Raises `RedeemLimited` (nothing tried) after `max_failures` wrong codes within `window_s`, and
        `CodeInvalid` for a code that is unknown, used or disabled, alike; that failure is recorded.
        `MembershipTooLong` when the code's days would take the membership past `MAX_EXPIRY`: the
        code stays unused. (A code stored with more than `MAX_DAYS`, before days were bounded, is
        refused as invalid: it could never be added.)
        """
        now = time.time() if now is None else now
        with self.write() as c:
            failures = c.execute("SELECT COUNT(*) FROM redeem_failures WHERE user_id = ? AND at > ?",
                                 (user_id, now - window_s)).fetchone()[0]
            if failures >= max_failures:
                outcome = "limited"
            else:
                row = c.execute(
                    "UPDATE codes SET used_by = ?, used_at = ? "
                    "WHERE hash = ? AND used_by IS NULL AND disabled_at IS NULL AND days BETWEEN 1 AND ? "
                    "RETURNING id, batch, days", (user_id, now, code_hash, MAX_DAYS)).fetchone()
                if row is None:
                    c.execute("INSERT INTO redeem_failures (user_id, at) VALUES (?, ?)", (user_id, now))
                    outcome = "invalid"
                else:
                    code_id, batch, days = row
                    until = extend_membership(c, user_id, days, now=now, kind="redeem", actor=f"code:{batch}",
                                              note=f"code #{code_id}")
                    outcome = "redeemed"
        if outcome == "limited":
            raise RedeemLimited("too many wrong codes; try again later")
        if outcome == "invalid":
            raise CodeInvalid("the code is unknown, used or disabled")
        return days, until

    def code(self, code_hash: str) -> dict | None:
        """One code's row (with the user who used it), or None."""
        rows = list(self.db.query(
            "SELECT c.*, u.platform || ':' || u.external_id AS used_by_ref FROM codes c "
            "LEFT JOIN users u ON u.id = c.used_by WHERE c.hash = ?", [code_hash]))
        return rows[0] if rows else None

    def code_batches(self) -> list[dict]:
        """Each batch of codes: its days and price (cents), when it was made and by whom, and how many are
        used, disabled, left."""
        return list(self.db.query(
            "SELECT batch, days, MIN(price_cents) AS price_cents, MIN(created_at) AS created_at, "
            "MIN(created_by) AS created_by, MIN(note) AS note, COUNT(*) AS codes, COUNT(used_by) AS used, "
            "SUM(disabled_at IS NOT NULL AND used_by IS NULL) AS disabled, "
            "SUM(disabled_at IS NULL AND used_by IS NULL) AS available "
            "FROM codes GROUP BY batch, days ORDER BY MIN(id)"))

    def disable_codes(self, *, hashes: list[str] | None = None, batch: str | None = None,
                      now: float | None = None) -> int:
        """Disable unused codes (by hash, or a whole batch); returns how many were disabled."""
        now = time.time() if now is None else now
        with self.write() as c:
            if batch is not None:
                return c.execute("UPDATE codes SET disabled_at = ? WHERE batch = ? AND used_by IS NULL "
                                 "AND disabled_at IS NULL", (now, batch)).rowcount
            return sum(c.execute("UPDATE codes SET disabled_at = ? WHERE hash = ? AND used_by IS NULL "
                                 "AND disabled_at IS NULL", (now, h)).rowcount for h in hashes or [])
