"""The schema, as numbered migrations (sqlite-utils' `Migrations`), applied in order and once.

A migration never changes once released; a change to the schema is a new migration. Each runs in
one transaction with the record of it having been applied (statements one by one: `executescript`
would commit half-way).
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("chatgate")


@migrations(name="0001_initial")
def _m0001(db: Database) -> None:
    db.executescript("""
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        platform TEXT NOT NULL,
        external_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_seen_at REAL NOT NULL,
        trial_limit INTEGER NOT NULL,
        trial_used INTEGER NOT NULL DEFAULT 0 CHECK (trial_used >= 0),
        member_until REAL,
        unsubscribed_at REAL,
        UNIQUE (platform, external_id)
    );
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        platform TEXT NOT NULL,
        message_key TEXT NOT NULL,
        user_id INTEGER NOT NULL REFERENCES users(id),
        kind TEXT NOT NULL,
        chat TEXT NOT NULL DEFAULT '',
        question TEXT NOT NULL DEFAULT '',
        received_at REAL NOT NULL,
        status TEXT NOT NULL,
        charge TEXT NOT NULL,
        answer TEXT,
        parts_sent INTEGER NOT NULL DEFAULT 0,
        finished_at REAL,
        error TEXT,
        UNIQUE (platform, message_key)
    );
    CREATE INDEX deliveries_user ON deliveries (user_id, id);
    CREATE INDEX deliveries_received ON deliveries (received_at);
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        chat TEXT NOT NULL DEFAULT '',
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content TEXT NOT NULL,
        delivery_id INTEGER REFERENCES deliveries(id),
        at REAL NOT NULL
    );
    CREATE INDEX messages_conversation ON messages (user_id, chat, id);
    CREATE TABLE ledger (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        answers INTEGER NOT NULL DEFAULT 0,
        member_until REAL,
        delivery_id INTEGER REFERENCES deliveries(id),
        actor TEXT NOT NULL,
        note TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX ledger_user ON ledger (user_id, id);
    CREATE TRIGGER ledger_append_only_update BEFORE UPDATE ON ledger
        BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
    CREATE TRIGGER ledger_append_only_delete BEFORE DELETE ON ledger
        BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
    """)


@migrations(name="0002_memberships_codes_commands")
def _m0002(db: Database) -> None:
    for statement in (
        # In-chat commands are recorded deliveries; `reset` ones mark where a conversation restarts.
        "ALTER TABLE deliveries ADD COLUMN command TEXT",
        "CREATE INDEX deliveries_resets ON deliveries (user_id, chat, id) WHERE command = 'reset'",
        # Membership days a ledger row added (grants, redemptions), beside the expiry it led to.
        "ALTER TABLE ledger ADD COLUMN days INTEGER",
        "CREATE INDEX users_created ON users (created_at)",
        """CREATE TABLE codes (
            id INTEGER PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,
            batch TEXT NOT NULL,
            days INTEGER NOT NULL CHECK (days > 0),
            created_at REAL NOT NULL,
            created_by TEXT NOT NULL,
            note TEXT NOT NULL DEFAULT '',
            used_by INTEGER REFERENCES users(id),
            used_at REAL,
            disabled_at REAL
        )""",
        "CREATE INDEX codes_batch ON codes (batch, id)",
        "CREATE INDEX codes_used ON codes (used_at) WHERE used_at IS NOT NULL",
        # Wrong redemption codes, per user: the rate limit counts them (kept for the operator too).
        """CREATE TABLE redeem_failures (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id),
            at REAL NOT NULL
        )""",
        "CREATE INDEX redeem_failures_user ON redeem_failures (user_id, at)",
    ):
        db.execute(statement)


@migrations(name="0003_delivery_lifecycle")
def _m0003(db: Database) -> None:
    """Deliveries carry their tries, lease and due time; what the user reads lives in `pages`."""
    import time

    from bot.paging import split_text

    for statement in (
        "ALTER TABLE deliveries ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE deliveries ADD COLUMN lease_until REAL",
        "ALTER TABLE deliveries ADD COLUMN due_at REAL",
        "ALTER TABLE deliveries ADD COLUMN expires_at REAL",
        "ALTER TABLE deliveries ADD COLUMN posts INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE deliveries ADD COLUMN job_id TEXT",
        "CREATE INDEX deliveries_due ON deliveries (due_at) WHERE due_at IS NOT NULL",
        "CREATE INDEX deliveries_in_flight ON deliveries (user_id) WHERE status IN ('queued', 'answering')",
        """CREATE TABLE pages (
            id INTEGER PRIMARY KEY,
            delivery_id INTEGER NOT NULL REFERENCES deliveries(id),
            user_id INTEGER NOT NULL REFERENCES users(id),
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('answer', 'notice')),
            text TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'pushing', 'sent', 'cancelled')),
            created_at REAL NOT NULL,
            claimed_at REAL,
            via TEXT CHECK (via IN ('push', 'reply')),
            reply_to INTEGER REFERENCES deliveries(id),
            reply_post INTEGER
        )""",
        "CREATE INDEX pages_delivery ON pages (delivery_id, seq)",
        "CREATE INDEX pages_ready ON pages (user_id, id) WHERE state = 'ready'",
        "CREATE INDEX pages_pushing ON pages (claimed_at) WHERE state = 'pushing'",
        "CREATE INDEX pages_reply ON pages (reply_to) WHERE reply_to IS NOT NULL",
    ):
        db.execute(statement)
    # Questions in flight under the earlier version: the reconciler looks at them at once. Answers
    # that waited in Redis become pages (what was already sent is not known per page: all of it waits).
    now = time.time()
    db.execute("UPDATE deliveries SET due_at = ? WHERE status IN ('queued', 'answered')", [now])
    waiting = db.execute("SELECT d.id, d.user_id, d.platform, d.answer, d.received_at FROM deliveries d "
                         "WHERE d.status = 'answered' AND d.answer IS NOT NULL").fetchall()
    for delivery_id, user_id, platform, answer, received_at in waiting:
        pages = split_text(answer, 1840 if platform == "wechat" else 30_000)
        db.execute("UPDATE deliveries SET expires_at = ? WHERE id = ?", [received_at + 2 * 86400, delivery_id])
        for seq, text in enumerate(pages):
            db.execute("INSERT INTO pages (delivery_id, user_id, seq, kind, text, created_at) "
                       "VALUES (?, ?, ?, 'answer', ?, ?)", [delivery_id, user_id, seq, text, now])


@migrations(name="0004_one_answer_in_flight_per_user")
def _m0004(db: Database) -> None:
    """A question waits while an earlier one of its user is still being answered: `behind` names the
    earlier one it found (NULL when it does not wait), so that the earlier one's end wakes it."""
    db.execute("ALTER TABLE deliveries ADD COLUMN behind INTEGER")


@migrations(name="0005_usage_cost_revenue")
def _m0005(db: Database) -> None:
    """Tokens and model of each answer, refusal reasons, reminders, code prices, the day's running
    usage (for the budget), and when a user's trial ran out."""
    for statement in (
        # What answered and what it used (estimated: the endpoint reported no usage); when.
        "ALTER TABLE deliveries ADD COLUMN model TEXT",
        "ALTER TABLE deliveries ADD COLUMN prompt_tokens INTEGER",
        "ALTER TABLE deliveries ADD COLUMN completion_tokens INTEGER",
        "ALTER TABLE deliveries ADD COLUMN usage_estimated INTEGER",
        "ALTER TABLE deliveries ADD COLUMN answered_at REAL",
        "CREATE INDEX deliveries_answered ON deliveries (answered_at, user_id) WHERE answered_at IS NOT NULL",
        # Why a question was refused (bot/guard.py: trial_over, budget, hard_cap, flood, member_daily).
        "ALTER TABLE deliveries ADD COLUMN refusal TEXT",
        "UPDATE deliveries SET refusal = 'trial_over' WHERE status = 'refused'",
        "CREATE INDEX deliveries_user_received ON deliveries (user_id, received_at)",
        # The expiry a reminder on this delivery warned about: once per user and expiry.
        "ALTER TABLE deliveries ADD COLUMN remind_until REAL",
        "CREATE UNIQUE INDEX deliveries_reminders ON deliveries (user_id, remind_until) WHERE remind_until IS NOT NULL",
        # The price of a code of a priced batch, in cents of CHATGATE_CURRENCY: revenue when redeemed.
        "ALTER TABLE codes ADD COLUMN price_cents INTEGER CHECK (price_cents >= 0)",
        # When the user's last free answer was reserved (cleared by a refund or more trial).
        "ALTER TABLE users ADD COLUMN trial_exhausted_at REAL",
        "UPDATE users SET trial_exhausted_at = (SELECT MAX(at) FROM ledger WHERE ledger.user_id = users.id "
        "AND kind = 'trial_use') WHERE trial_limit > 0 AND trial_used >= trial_limit",
        "CREATE INDEX users_trial_exhausted ON users (trial_exhausted_at) WHERE trial_exhausted_at IS NOT NULL",
        # Ledger rows that changed a membership: days added (conversions), expiries (members by day).
        "CREATE INDEX ledger_membership ON ledger (user_id, at) WHERE days IS NOT NULL",
        "CREATE INDEX ledger_member_until ON ledger (user_id, id, at, member_until) WHERE member_until IS NOT NULL",
        # Today's usage per model, added to with each answer: the budget reads it at admission.
        """CREATE TABLE daily_usage (
            day TEXT NOT NULL,
            model TEXT NOT NULL,
            answers INTEGER NOT NULL DEFAULT 0,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (day, model)
        )""",
    ):
        db.execute(statement)


@migrations(name="0006_orders")
def _m0006(db: Database) -> None:
    """Orders of a payment platform (afdian), each granted at most once, and each user's bind code."""
    for statement in (
        # status: pending (to be looked up), granted (days added to user_id), unclaimed (paid, bound to
        # nobody yet), refused (unknown, unpaid, another plan, too little paid: `reason` says).
        # amount_cents and paid_at are the revenue: orders granted or unclaimed, by the day paid_at falls in.
        """CREATE TABLE orders (
            out_trade_no TEXT PRIMARY KEY,
            provider TEXT NOT NULL DEFAULT 'afdian',
            status TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'granted', 'unclaimed', 'refused')),
            amount_cents INTEGER,
            paid_at REAL,
            plan_id TEXT,
            days INTEGER,
            buyer TEXT,
            bind_code TEXT,
            bound_by TEXT,
            user_id INTEGER REFERENCES users(id),
            claimed_by INTEGER REFERENCES users(id),
            reason TEXT NOT NULL DEFAULT '',
            raw TEXT,
            checks INTEGER NOT NULL DEFAULT 0,
            due_at REAL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX orders_status ON orders (status, created_at)",
        "CREATE INDEX orders_paid ON orders (paid_at) WHERE paid_at IS NOT NULL",
        "CREATE INDEX orders_due ON orders (due_at) WHERE due_at IS NOT NULL",
        "CREATE INDEX orders_user ON orders (user_id) WHERE user_id IS NOT NULL",
        # The code a buyer's order carries (custom_order_id or the remark) to name the user it is for.
        "ALTER TABLE users ADD COLUMN bind_code TEXT",
        "CREATE UNIQUE INDEX users_bind_code ON users (bind_code) WHERE bind_code IS NOT NULL",
    ):
        db.execute(statement)


@migrations(name="0007_cards")
def _m0007(db: Database) -> None:
    """A Feishu answer streamed into a card: the card entity and the message that carries it, kept so
    that a retried try or a later push continues the same card instead of posting a second one."""
    db.execute(
        # state: open (streaming, or waiting for its final text), closed (the final text is in and
        # streaming is off), dropped (the card could not be used: its pages go out as text replies).
        """CREATE TABLE cards (
            delivery_id INTEGER PRIMARY KEY REFERENCES deliveries(id),
            card_id TEXT NOT NULL,
            message_id TEXT,
            state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed', 'dropped')),
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""")
