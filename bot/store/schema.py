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
