"""Orders of a payment platform (afdian): noted when its webhook names them, looked up, and granted at
most once; each user's bind code, which a buyer's order carries to say whom it is for.

An order's `status`; each move is a conditional write inside one `BEGIN IMMEDIATE` transaction, and a
grant is the order's move, its ledger row and the membership in that same transaction::

    (webhook, or a user sending the number) ──▶ pending ──look-up: paid, bound──▶ granted
                                                 │  ▲    ──paid, bound to nobody──▶ unclaimed ──claim / bind──▶ granted
                                                 │  └─ a later webhook or claim (it may be paid by now)
                                                 └──look-up: unknown, unpaid, another plan, too little──▶ refused

`granted` and `unclaimed` are settled: a repeated webhook or look-up changes nothing. `amount_cents`
and `paid_at` of settled orders are the revenue.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from bot.delivery import NOTICE
from bot.errors import MembershipTooLong, UnknownUser
from bot.store.base import extend_membership
from bot.store.deliveries import insert_pages

SETTLED = ("granted", "unclaimed")
"""Paid and dealt with: nothing a webhook or a look-up says changes them."""
OPEN = ("pending", "refused")
"""May still be looked up (again) and settled."""
Tell = Callable[[str, dict], str | None]
"""What the user is told about their order: (outcome, facts) → a notice text, or None for nothing."""


def _row(cursor) -> dict | None:
    row = cursor.fetchone()
    return None if row is None else dict(zip([d[0] for d in cursor.description], row, strict=True))


def _notice(c, user_id: int, text: str, *, now: float, push_in: float) -> int | None:
    """Leave `text` as a notice page for the user on their latest finished delivery, preferring one of
    their buy or redeem commands (on Feishu it is a reply to that message); the reconciler sees after
    `push_in` seconds that it is pushed. Returns the delivery, or None when the user has none."""
    row = c.execute("SELECT id FROM deliveries WHERE user_id = ? AND status NOT IN ('queued', 'answering', "
                    "'answered') ORDER BY COALESCE(command IN ('buy', 'redeem'), 0) DESC, id DESC LIMIT 1",
                    (user_id,)).fetchone()
    if row is None:
        return None
    insert_pages(c, row[0], user_id, [text], NOTICE, now)
    c.execute("UPDATE deliveries SET due_at = ? WHERE id = ?", (now + push_in, row[0]))
    return row[0]


class Orders:
    """Part of `Store`: bind codes, and the orders of a payment platform."""

    # -- bind codes --------------------------------------------------------------------------

    def bind_code(self, user_id: int, new_code: Callable[[], str]) -> str:
        """The user's bind code: made with `new_code` and stored the first time, the same ever after.
        `UnknownUser` for no such user."""
        for _ in range(10):
            row = self.conn.execute("SELECT bind_code FROM users WHERE id = ?", (user_id,)).fetchone()
            if row is None:
                raise UnknownUser(f"no user {user_id}")
            if row[0]:
                return row[0]
            try:
                with self.write() as c:
                    c.execute("UPDATE users SET bind_code = ? WHERE id = ? AND bind_code IS NULL",
                              (new_code(), user_id))
            except sqlite3.IntegrityError:  # another user has that code: draw again
                continue
        raise RuntimeError("no free bind code found")

    def user_by_bind_code(self, code: str) -> dict | None:
        """The user whose bind code this is, or None."""
        return _row(self.conn.execute("SELECT * FROM users WHERE bind_code = ?", (code,)))

    # -- reading -----------------------------------------------------------------------------

    def order(self, out_trade_no: str) -> dict | None:
        """One order, with the reference of the user it was granted to (`user_ref`), or None."""
        return _row(self.conn.execute(
            "SELECT o.*, u.platform || ':' || u.external_id AS user_ref FROM orders o "
            "LEFT JOIN users u ON u.id = o.user_id WHERE o.out_trade_no = ?", (out_trade_no,)))

    def orders(self, *, status: str | None = None, limit: int = 0) -> list[dict]:
        """Orders, newest first (of one status if given); `limit` 0 means all."""
        return list(self.db.query(
            "SELECT o.*, u.platform || ':' || u.external_id AS user_ref FROM orders o LEFT JOIN users u "
            "ON u.id = o.user_id WHERE (:status IS NULL OR o.status = :status) ORDER BY o.created_at DESC, "
            "o.out_trade_no LIMIT :limit", {"status": status, "limit": limit or -1}))

    def due_orders(self, now: float | None = None, limit: int = 100) -> list[dict]:
        """Pending orders whose look-up is due (its job was lost, or afdian did not answer), oldest first."""
        now = time.time() if now is None else now
        return list(self.db.query("SELECT * FROM orders WHERE status = 'pending' AND due_at <= ? "
                                  "ORDER BY due_at LIMIT ?", [now, limit]))

    # -- what comes in -------------------------------------------------------------------------

    def note_order(self, out_trade_no: str, *, recheck_s: float, claimant: int | None = None,
                   now: float | None = None) -> tuple[str, bool]:
        """An order was named (by the webhook, or the operator binding it to `claimant`): record it
        `pending`, or make a refused one pending again (it may be paid by now). Returns (its status,
        whether to look it up now): yes for a new or refused one, and for a pending one whose look-up
        is overdue; a pending one whose look-up is under way (a repeated webhook) is left to it, and a
        settled one (`granted`, `unclaimed`) is not touched. A look-up asked for is due for the
        reconciler `recheck_s` from now, should its job be lost."""
        now = time.time() if now is None else now
        with self.write() as c:
            c.execute("INSERT INTO orders (out_trade_no, created_at, updated_at) VALUES (?, ?, ?) "
                      "ON CONFLICT (out_trade_no) DO NOTHING", (out_trade_no, now, now))
            if claimant is not None:
                c.execute("UPDATE orders SET claimed_by = ? WHERE out_trade_no = ? "
                          "AND status IN ('pending', 'refused')", (claimant, out_trade_no))
            fresh = c.execute("UPDATE orders SET status = 'pending', due_at = ?, updated_at = ? WHERE out_trade_no = ? "
                              "AND (status = 'refused' OR (status = 'pending' AND (due_at IS NULL OR due_at <= ?)))",
                              (now + recheck_s, now, out_trade_no, now)).rowcount
            status = c.execute("SELECT status FROM orders WHERE out_trade_no = ?", (out_trade_no,)).fetchone()[0]
            return status, bool(fresh)

    def claim_order(self, user_id: int, out_trade_no: str, *, max_failures: int, window_s: float,
                    recheck_s: float, now: float | None = None) -> tuple[str, dict]:
        """A user sent an order number, in one transaction. Returns (outcome, the order's row):

          limited   too many wrong codes or order numbers within `window_s`: nothing was tried
          granted   paid and bound to nobody: now theirs, with its ledger row
          yours     already granted to this user
          taken     granted to someone else (a failure, answered like an unknown number)
          checking  not known to be paid yet: noted as claimed by the user (the first claimant) and
                    due to be looked up; a failure too, as a look-up can tell nothing yet

        `MembershipTooLong` when its days would take the membership past `MAX_EXPIRY` (nothing changes).
        """
        now = time.time() if now is None else now
        with self.write() as c:
            failures = c.execute("SELECT COUNT(*) FROM redeem_failures WHERE user_id = ? AND at > ?",
                                 (user_id, now - window_s)).fetchone()[0]
            order = _row(c.execute("SELECT * FROM orders WHERE out_trade_no = ?", (out_trade_no,)))
            if order is not None and order["status"] == "granted" and order["user_id"] == user_id:
                return "yours", order
            if failures >= max_failures:
                return "limited", order or {}
            if order is not None and order["status"] == "unclaimed":
                granted = self._grant(c, order, user_id, bound_by="claimed in chat", now=now)
                return "granted", granted
            c.execute("INSERT INTO redeem_failures (user_id, at) VALUES (?, ?)", (user_id, now))
            if order is not None and order["status"] == "granted":
                return "taken", order
            c.execute("INSERT INTO orders (out_trade_no, created_at, updated_at) VALUES (?, ?, ?) "
                      "ON CONFLICT (out_trade_no) DO NOTHING", (out_trade_no, now, now))
            c.execute("UPDATE orders SET status = 'pending', claimed_by = COALESCE(claimed_by, ?), due_at = ?, "
                      "updated_at = ? WHERE out_trade_no = ? AND status IN ('pending', 'refused')",
                      (user_id, now + recheck_s, now, out_trade_no))
            return "checking", _row(c.execute("SELECT * FROM orders WHERE out_trade_no = ?", (out_trade_no,)))

    # -- what a look-up found --------------------------------------------------------------------

    def order_lookup_failed(self, out_trade_no: str, error: str, *, retry_at: float, now: float | None = None) -> None:
        """afdian could not be asked: the order stays pending, looked up again at `retry_at`."""
        now = time.time() if now is None else now
        with self.write() as c:
            c.execute("UPDATE orders SET checks = checks + 1, reason = ?, due_at = ?, updated_at = ? "
                      "WHERE out_trade_no = ? AND status = 'pending'", (error[:300], retry_at, now, out_trade_no))

    def set_order_due(self, out_trade_no: str, due_at: float | None) -> None:
        """When the reconciler should look the pending order up next (None: not by itself)."""
        with self.write() as c:
            c.execute("UPDATE orders SET due_at = ? WHERE out_trade_no = ? AND status = 'pending'",
                      (due_at, out_trade_no))

    def settle_order(self, out_trade_no: str, *, paid: bool, reason: str, facts: dict, codes: list[str],
                     tell: Tell, recheck_s: float, now: float | None = None) -> dict:
        """What afdian said about an order, in one transaction. `facts`: amount_cents, plan_id, days,
        buyer and raw (the order's JSON) as found; `codes`: bind codes the order carries, strongest first.

        A settled order is left as it is (outcome `settled`). Not `paid` (unknown, unpaid, another plan,
        too little): `refused` with `reason`. Paid: granted to the user whose bind code it carries, else
        to the user who claimed it by number, else kept `unclaimed`; a grant adds its days with a ledger
        row (actor `afdian`, the order and amount in the note). Whoever is concerned is told (`tell`) by
        a notice page. Returns the order's row with `outcome` and `notice_delivery` (the delivery whose
        notice page waits to be pushed, or None).
        """
        now = time.time() if now is None else now
        with self.write() as c:
            c.execute("INSERT INTO orders (out_trade_no, created_at, updated_at) VALUES (?, ?, ?) "
                      "ON CONFLICT (out_trade_no) DO NOTHING", (out_trade_no, now, now))
            order = _row(c.execute("SELECT * FROM orders WHERE out_trade_no = ?", (out_trade_no,)))
            if order["status"] in SETTLED:
                return {**order, "outcome": "settled", "notice_delivery": None}
            c.execute("UPDATE orders SET amount_cents = ?, plan_id = ?, days = ?, buyer = ?, raw = ?, reason = ?, "
                      "checks = checks + 1, due_at = NULL, updated_at = ? WHERE out_trade_no = ?",
                      (facts.get("amount_cents"), facts.get("plan_id"), facts.get("days"), facts.get("buyer"),
                       facts.get("raw"), reason, now, out_trade_no))
            order = _row(c.execute("SELECT * FROM orders WHERE out_trade_no = ?", (out_trade_no,)))
            notice = None
            if not paid:
                c.execute("UPDATE orders SET status = 'refused' WHERE out_trade_no = ?", (out_trade_no,))
                if order["claimed_by"] is not None and (text := tell("refused", order)):
                    notice = _notice(c, order["claimed_by"], text, now=now, push_in=recheck_s)
                return {**order, "status": "refused", "outcome": "refused", "notice_delivery": notice}
            c.execute("UPDATE orders SET paid_at = COALESCE(paid_at, ?) WHERE out_trade_no = ?", (now, out_trade_no))
            order["paid_at"] = order["paid_at"] or now
            user_id, bound_by = self._bound_user(c, codes, order)
            if user_id is not None:
                try:
                    order = self._grant(c, order, user_id, bound_by=bound_by, now=now)
                except MembershipTooLong:
                    reason = "its days would take the membership past the latest expiry chatgate keeps"
                    c.execute("UPDATE orders SET reason = ? WHERE out_trade_no = ?", (reason, out_trade_no))
                    order, user_id = {**order, "reason": reason}, None
            if user_id is None:
                c.execute("UPDATE orders SET status = 'unclaimed', user_id = NULL, bound_by = NULL "
                          "WHERE out_trade_no = ?", (out_trade_no,))
                return {**order, "status": "unclaimed", "user_id": None, "outcome": "unclaimed",
                        "notice_delivery": None}
            if text := tell("granted", order):
                notice = _notice(c, user_id, text, now=now, push_in=recheck_s)
            return {**order, "outcome": "granted", "notice_delivery": notice}

    def bind_order(self, out_trade_no: str, user_id: int, *, actor: str, tell: Tell, recheck_s: float,
                   now: float | None = None) -> dict:
        """The operator gives an unclaimed order to a user: granted, with its ledger row, and the user
        told. Returns the order's row with `outcome` (`granted`, or its status when it was not
        unclaimed: nothing changed) and `notice_delivery`. `MembershipTooLong`: nothing changed."""
        now = time.time() if now is None else now
        with self.write() as c:
            order = _row(c.execute("SELECT * FROM orders WHERE out_trade_no = ?", (out_trade_no,)))
            if order is None or order["status"] != "unclaimed":
                return {**(order or {}), "outcome": order["status"] if order else "unknown", "notice_delivery": None}
            order = self._grant(c, order, user_id, bound_by=f"bound by {actor}", now=now)
            text = tell("granted", order)
            notice = _notice(c, user_id, text, now=now, push_in=recheck_s) if text else None
            return {**order, "outcome": "granted", "notice_delivery": notice}

    # -- inside a transaction ------------------------------------------------------------------------

    @staticmethod
    def _bound_user(c, codes: list[str], order: dict) -> tuple[int | None, str]:
        """Whom a paid order is for: the first of its bind codes that names a user, else whoever
        claimed it by number, else nobody."""
        for code in codes:
            row = c.execute("SELECT id FROM users WHERE bind_code = ?", (code,)).fetchone()
            if row is not None:
                c.execute("UPDATE orders SET bind_code = ? WHERE out_trade_no = ?", (code, order["out_trade_no"]))
                return row[0], f"bind code {code}"
        if order["claimed_by"] is not None:
            return order["claimed_by"], "claimed in chat"
        return None, ""

    @staticmethod
    def _grant(c, order: dict, user_id: int, *, bound_by: str, now: float) -> dict:
        """Move a paid order to `granted` for `user_id` (only from pending, refused or unclaimed: a
        conditional write) and add its days, with the ledger row. Returns the row with `until`."""
        done = c.execute("UPDATE orders SET status = 'granted', user_id = ?, bound_by = ?, updated_at = ?, "
                         "due_at = NULL WHERE out_trade_no = ? AND status IN ('pending', 'refused', 'unclaimed')",
                         (user_id, bound_by, now, order["out_trade_no"])).rowcount
        if not done:
            raise RuntimeError(f"order {order['out_trade_no']} was settled meanwhile")
        amount = order["amount_cents"]
        note = (f"afdian order {order['out_trade_no']}, paid {amount // 100}.{amount % 100:02d}"
                f"{', plan ' + order['plan_id'] if order['plan_id'] else ''} ({bound_by})")
        until = extend_membership(c, user_id, order["days"], now=now, kind="purchase", actor="afdian", note=note)
        if until is None:
            raise UnknownUser(f"no user {user_id}")
        return {**order, "status": "granted", "user_id": user_id, "bound_by": bound_by, "until": until}
