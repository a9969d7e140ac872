"""The SQLite store: the only package that holds the database and speaks SQL.

WAL mode, `synchronous=NORMAL`, a 30-second busy timeout; web processes, workers and the CLI share
the file. Schema changes are numbered migrations (`schema.py`, sqlite-utils' `Migrations`), applied on
start-up under a file lock so that processes starting together do not race. `Store` is one object
made of parts, one module each: `base` (connection, transactions, backup), `conversations`
(admission, history), `deliveries` (a question's lifecycle after admission, see `bot/delivery.py`),
`pages` (what the user reads, claimed once), `cards` (Feishu answers streamed into cards),
`entitlements` (memberships, trial, codes), `orders` (a payment platform's orders, granted once) and
`reports`.

Tables:
  users            one row per platform user: trial size and use, membership expiry
  deliveries       one row per platform delivery (unique on platform + message key): the dedupe
                   record and the life of a question (queued → answering → answered → delivered, or
                   failed / expired; see `bot/delivery.py`); in-chat commands are recorded ones,
                   named in `command`
  pages            what the user reads: an answer's pages and notices (immediate replies,
                   apologies), each sent once, by passive reply or push
  messages         the conversation turns that become LLM history (a `reset` command hides older ones)
  ledger           append-only: every change to a user's entitlement, with who, why and when
  codes            redemption codes, as sha256 hashes only: batch, days, price, used by whom and when
  redeem_failures  wrong codes (and order numbers) per user, for the rate limit
  orders           a payment platform's orders (afdian): pending, granted, unclaimed or refused, each
                   granted at most once; users.bind_code names the user an order is for
  cards            a Feishu answer streamed into a card: the card entity and its message, so that a
                   retried try or a later push continues the same card
  daily_usage      tokens per local day and model, added to with each answer: today's LLM cost for
                   the spend guardrails (`bot/guard.py`) in one short read
"""

from __future__ import annotations

from bot.store.base import BUSY_TIMEOUT_S, DAY_S, StoreBase, check_writable
from bot.store.cards import Cards
from bot.store.conversations import Conversations
from bot.store.deliveries import Deliveries
from bot.store.entitlements import Entitlements
from bot.store.orders import Orders
from bot.store.pages import Pages
from bot.store.reports import Reports
from bot.store.schema import migrations

__all__ = ["BUSY_TIMEOUT_S", "DAY_S", "Store", "check_writable", "migrations"]


class Store(Conversations, Deliveries, Pages, Cards, Entitlements, Orders, Reports, StoreBase):
    """All reads and writes of chatgate's durable state.

    Open one per process after any fork (`Store(path)`); the web app opens one per thread. Writes
    are short `BEGIN IMMEDIATE` transactions; money-like changes are conditional updates whose row
    count is checked, never a read followed by a write.
    """
