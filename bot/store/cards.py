"""Cards: a Feishu answer streamed into a card (`handlers/feishu/cards.py`), one per delivery.

The row is written when the card entity exists (before it is sent), again when the message carrying
it exists, and when its final text is in. A try that finds the row continues the card; a push that
finds it open puts its page into the card."""

from __future__ import annotations

import time

OPEN, CLOSED, DROPPED = "open", "closed", "dropped"


class Cards:
    """Part of `Store`: the card of each streamed Feishu answer."""

    def card(self, delivery_id: int) -> dict | None:
        """The delivery's card, or None."""
        cursor = self.conn.execute("SELECT * FROM cards WHERE delivery_id = ?", (delivery_id,))
        row = cursor.fetchone()
        return None if row is None else dict(zip([d[0] for d in cursor.description], row, strict=True))

    def add_card(self, delivery_id: int, card_id: str, now: float | None = None) -> dict:
        """Remember a new card entity for the delivery, unless it already has one: the card the
        delivery has from now on."""
        now = time.time() if now is None else now
        with self.write() as c:
            c.execute("INSERT OR IGNORE INTO cards (delivery_id, card_id, created_at, updated_at) VALUES (?, ?, ?, ?)",
                      (delivery_id, card_id, now, now))
        return self.card(delivery_id)

    def card_sent(self, delivery_id: int, message_id: str) -> None:
        """The message carrying the card exists."""
        with self.write() as c:
            c.execute("UPDATE cards SET message_id = ?, updated_at = ? WHERE delivery_id = ?",
                      (message_id, time.time(), delivery_id))

    def end_card(self, delivery_id: int, state: str) -> bool:
        """`open → closed` (its final text is in) or `open → dropped` (its pages go out as text
        replies). False if the card was not open."""
        with self.write() as c:
            return c.execute("UPDATE cards SET state = ?, updated_at = ? WHERE delivery_id = ? AND state = 'open'",
                             (state, time.time(), delivery_id)).rowcount == 1
