"""Pages: what the user reads, each claimed once by whoever delivers it (a passive reply or a push),
with a conditional write. See the page lifecycle in `bot/delivery.py`."""

from __future__ import annotations

import time

_PAGE = "id, delivery_id, seq, kind, text"


def _rows(cursor) -> list[dict]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def settle(c, delivery_ids, now: float) -> None:
    """After pages went out: an answered delivery with no answer page left is delivered; a finished
    one with nothing left to send is no longer due. Call inside a write transaction."""
    for delivery_id in set(delivery_ids):
        c.execute("UPDATE deliveries SET status = 'delivered', finished_at = ?, due_at = NULL "
                  "WHERE id = ? AND status = 'answered' AND NOT EXISTS (SELECT 1 FROM pages WHERE delivery_id = ? "
                  "AND kind = 'answer' AND state IN ('ready', 'pushing'))", (now, delivery_id, delivery_id))
        c.execute("UPDATE deliveries SET due_at = NULL WHERE id = ? AND status NOT IN ('queued', 'answering', "
                  "'answered') AND NOT EXISTS (SELECT 1 FROM pages WHERE delivery_id = ? AND state IN "
                  "('ready', 'pushing'))", (delivery_id, delivery_id))


class Pages:
    """Part of `Store`: claiming pages for a passive reply or a push, and giving them back."""

    def pages(self, delivery_id: int) -> list[dict]:
        """Every page of a delivery, in order."""
        return list(self.db.query("SELECT * FROM pages WHERE delivery_id = ? ORDER BY seq", [delivery_id]))

    def ready_pages(self, user_id: int, limit: int = 10) -> list[dict]:
        """The user's pages waiting to go out, oldest first."""
        return _rows(self.conn.execute(f"SELECT {_PAGE} FROM pages WHERE user_id = ? AND state = 'ready' "
                                       "ORDER BY id LIMIT ?", (user_id, limit)))

    # -- passive replies -----------------------------------------------------------------------

    def claim_for_reply(self, page_ids: list[int], *, reply_to: int, post: int, now: float | None = None
                        ) -> list[dict]:
        """Claim pages for the passive reply to post `post` of delivery `reply_to`, in one transaction;
        returns those claimed (a page someone else took first is left out), in order."""
        now = time.time() if now is None else now
        with self.write() as c:
            claimed = []
            for page_id in page_ids:
                claimed += _rows(c.execute(
                    f"UPDATE pages SET state = 'sent', via = 'reply', reply_to = ?, reply_post = ?, claimed_at = ? "
                    f"WHERE id = ? AND state = 'ready' RETURNING {_PAGE}", (reply_to, post, now, page_id)))
            settle(c, [p["delivery_id"] for p in claimed], now)
        return sorted(claimed, key=lambda p: p["id"])

    def serve_again(self, reply_to: int, post: int) -> list[dict]:
        """The pages an earlier post of this message carried, now carried by post `post`: WeChat posts
        a message again only when our reply did not reach it in time, so that reply never arrived."""
        with self.write() as c:
            rows = _rows(c.execute(f"SELECT {_PAGE} FROM pages WHERE reply_to = ? AND reply_post < ? "
                                   "AND state = 'sent' ORDER BY id", (reply_to, post)))
            c.execute("UPDATE pages SET reply_post = ? WHERE reply_to = ? AND reply_post < ? AND state = 'sent'",
                      (post, reply_to, post))
        return rows

    def unclaim_reply(self, reply_to: int, post: int, now: float | None = None) -> int:
        """Give back the pages claimed for a reply that will not be sent (it would arrive too late):
        they are ready again, and their deliveries open again. Returns how many."""
        now = time.time() if now is None else now
        with self.write() as c:
            rows = c.execute("UPDATE pages SET state = 'ready', via = NULL, reply_to = NULL, reply_post = NULL, "
                             "claimed_at = NULL WHERE reply_to = ? AND reply_post = ? AND state = 'sent' "
                             "RETURNING delivery_id", (reply_to, post)).fetchall()
            for (delivery_id,) in set(rows):
                c.execute("UPDATE deliveries SET status = CASE WHEN status = 'delivered' THEN 'answered' "
                          "ELSE status END, finished_at = CASE WHEN status = 'delivered' THEN NULL "
                          "ELSE finished_at END, due_at = ? WHERE id = ?", (now, delivery_id))
        return len(rows)

    # -- pushes --------------------------------------------------------------------------------

    def claim_push(self, delivery_id: int, now: float | None = None) -> tuple[dict | None, int]:
        """Claim the delivery's next ready page for a push (`ready → pushing`): (the page or None, how
        many ready pages are left behind it)."""
        now = time.time() if now is None else now
        with self.write() as c:
            rows = _rows(c.execute(
                f"UPDATE pages SET state = 'pushing', claimed_at = ? WHERE id = (SELECT id FROM pages "
                f"WHERE delivery_id = ? AND state = 'ready' ORDER BY seq LIMIT 1) RETURNING {_PAGE}",
                (now, delivery_id)))
            left = c.execute("SELECT COUNT(*) FROM pages WHERE delivery_id = ? AND state = 'ready'",
                             (delivery_id,)).fetchone()[0]
        return (rows[0] if rows else None), left

    def pushed(self, page_id: int, now: float | None = None) -> None:
        """The platform took the pushed page: `pushing → sent`."""
        now = time.time() if now is None else now
        with self.write() as c:
            row = c.execute("UPDATE pages SET state = 'sent', via = 'push', claimed_at = ? WHERE id = ? "
                            "AND state = 'pushing' RETURNING delivery_id", (now, page_id)).fetchone()
            if row:
                settle(c, [row[0]], now)

    def unpush(self, page_id: int) -> None:
        """The push failed: the page is ready again (`pushing → ready`)."""
        with self.write() as c:
            c.execute("UPDATE pages SET state = 'ready', claimed_at = NULL WHERE id = ? AND state = 'pushing'",
                      (page_id,))

    def cancel_page(self, page_id: int, now: float | None = None) -> None:
        """A page that can never go out (the platform refuses it for good)."""
        now = time.time() if now is None else now
        with self.write() as c:
            row = c.execute("UPDATE pages SET state = 'cancelled' WHERE id = ? AND state IN ('ready', 'pushing') "
                            "RETURNING delivery_id", (page_id,)).fetchone()
            if row:
                settle(c, [row[0]], now)

    def pushed_count(self, delivery_id: int) -> int:
        """How many of the delivery's pages went out by push."""
        return self.conn.execute("SELECT COUNT(*) FROM pages WHERE delivery_id = ? AND via = 'push'",
                                 (delivery_id,)).fetchone()[0]

    # -- the reconciler ------------------------------------------------------------------------

    def release_stale_pushes(self, older_than: float, now: float | None = None) -> int:
        """Pages left `pushing` since before `older_than` (their sender died): ready again, and their
        deliveries due now. Returns how many."""
        now = time.time() if now is None else now
        with self.write() as c:
            rows = c.execute("UPDATE pages SET state = 'ready', claimed_at = NULL WHERE state = 'pushing' "
                             "AND claimed_at < ? RETURNING delivery_id", (older_than,)).fetchall()
            for (delivery_id,) in set(rows):
                c.execute("UPDATE deliveries SET due_at = ? WHERE id = ?", (now, delivery_id))
        return len(rows)

    def drop_old_notices(self, older_than: float, now: float | None = None) -> int:
        """Notices nobody fetched since before `older_than` are cancelled. Returns how many."""
        now = time.time() if now is None else now
        with self.write() as c:
            rows = c.execute("UPDATE pages SET state = 'cancelled' WHERE state = 'ready' AND kind = 'notice' "
                             "AND created_at < ? RETURNING delivery_id", (older_than,)).fetchall()
            settle(c, [r[0] for r in rows], now)
        return len(rows)
