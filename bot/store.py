"""The SQLite store: the only module that holds the database and speaks SQL.

WAL mode, `synchronous=NORMAL`, a 30-second busy timeout; web processes, workers and the CLI share
the file. Schema changes are numbered migrations (sqlite-utils' `Migrations`), applied on start-up
under a file lock so that processes starting together do not race.

Tables:
  users        one row per platform user: trial size and use, membership expiry
  deliveries   one row per platform delivery (unique on platform + message key): the dedupe record
               and the life of a question (queued → answered → delivered, or failed / refused)
  messages     the conversation turns that become LLM history
  ledger       append-only: every change to a user's entitlement, with who, why and when
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from bot.models import SUBSCRIBE, TEXT, UNSUBSCRIBE, Admission, IncomingMessage

BUSY_TIMEOUT_S = 30.0
"""How long a connection waits for another process's write lock before giving up."""

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


def _create_private(path: Path) -> None:
    """Create the database file owner-only (mode 600) before SQLite opens it."""
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


@contextmanager
def _file_lock(path: Path):
    fd = os.open(str(path) + ".lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class Store:
    """All reads and writes of chatgate's durable state.

    Open one per process after any fork (`Store(path)`); it is not shared across threads unless
    `check_same_thread=False` is passed, which the web app does with one store per thread.
    """

    def __init__(self, path: str | os.PathLike, *, migrate: bool = True):
        self.path = Path(path)
        if str(path) != ":memory:":
            _create_private(self.path)
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        self.db = Database(conn)
        self.conn = conn
        if migrate:
            self.migrate()

    def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names applied."""
        with _file_lock(self.path):
            pending = [m.name for m in migrations.pending(self.db)]
            if pending:
                migrations.apply(self.db)
        return pending

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def write(self):
        """One short write transaction that takes the write lock up front (BEGIN IMMEDIATE)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    # -- admission ---------------------------------------------------------------------------

    def admit(self, msg: IncomingMessage, *, free_trial: int, charge: bool, now: float | None = None
              ) -> Admission:
        """Record one delivery and decide its fate, in one transaction.

        Find or create the user; record the delivery (a re-delivery stops here with `duplicate`);
        then, for a chargeable question, pass a member, or reserve one trial answer with a
        conditional update, or refuse with `exhausted`. Non-questions are `recorded`.
        """
        now = time.time() if now is None else now
        with self.write() as c:
            new_user = bool(c.execute(
                "INSERT INTO users (platform, external_id, created_at, last_seen_at, trial_limit) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (platform, external_id) DO NOTHING",
                (msg.platform, msg.user, now, now, free_trial)).rowcount)
            user_id, trial_limit, trial_used, member_until = c.execute(
                "UPDATE users SET last_seen_at = ? WHERE platform = ? AND external_id = ? "
                "RETURNING id, trial_limit, trial_used, member_until",
                (now, msg.platform, msg.user)).fetchone()
            if new_user:
                c.execute("INSERT INTO ledger (user_id, at, kind, answers, actor, note) "
                          "VALUES (?, ?, 'trial_start', ?, 'system', 'free trial for a new user')",
                          (user_id, now, trial_limit))
            cur = c.execute(
                "INSERT INTO deliveries (platform, message_key, user_id, kind, chat, question, "
                "received_at, status, charge) VALUES (?, ?, ?, ?, ?, ?, ?, 'new', 'none') "
                "ON CONFLICT (platform, message_key) DO NOTHING RETURNING id",
                (msg.platform, msg.message_key, user_id, msg.kind, msg.chat, msg.text, now))
            got = cur.fetchone()
            if got is None:
                return Admission("duplicate", None, user_id, max(trial_limit - trial_used, 0), member_until)
            delivery_id = got[0]
            if msg.kind == UNSUBSCRIBE:
                c.execute("UPDATE users SET unsubscribed_at = ? WHERE id = ?", (now, user_id))
            elif msg.kind == SUBSCRIBE:
                c.execute("UPDATE users SET unsubscribed_at = NULL WHERE id = ?", (user_id,))

            if not charge or msg.kind != TEXT:
                outcome, status, charged = "recorded", "recorded", "none"
            elif member_until is not None and member_until > now:
                outcome, status, charged = "member", "queued", "member"
            else:
                reserved = c.execute(
                    "UPDATE users SET trial_used = trial_used + 1 WHERE id = ? AND trial_used < trial_limit",
                    (user_id,)).rowcount
                if reserved:
                    trial_used += 1
                    c.execute("INSERT INTO ledger (user_id, at, kind, answers, delivery_id, actor) "
                              "VALUES (?, ?, 'trial_use', -1, ?, 'system')", (user_id, now, delivery_id))
                    outcome, status, charged = "trial", "queued", "trial"
                else:
                    outcome, status, charged = "exhausted", "refused", "none"
            c.execute("UPDATE deliveries SET status = ?, charge = ? WHERE id = ?",
                      (status, charged, delivery_id))
        return Admission(outcome, delivery_id, user_id, max(trial_limit - trial_used, 0), member_until,
                         new_user)

    def revert_admission(self, delivery_id: int, reason: str) -> None:
        """Undo an admission whose job could not be queued, so the platform's retry is admitted anew.

        The trial answer (if one was reserved) is refunded with a ledger row, and the delivery is
        marked `reverted` under a changed key: the platform's re-delivery must not be taken for a
        duplicate. (The row stays: the ledger points at it.)
        """
        with self.write() as c:
            row = c.execute("SELECT user_id, charge FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if row is None:
                return
            user_id, charge = row
            if charge == "trial":
                self._refund(c, user_id, delivery_id, reason)
            c.execute("UPDATE deliveries SET status = 'reverted', charge = 'none', finished_at = ?, error = ?, "
                      "message_key = message_key || '#reverted-' || id WHERE id = ?",
                      (time.time(), reason[:500], delivery_id))

    @staticmethod
    def _refund(c, user_id: int, delivery_id: int | None, note: str) -> bool:
        done = c.execute("UPDATE users SET trial_used = trial_used - 1 WHERE id = ? AND trial_used > 0",
                         (user_id,)).rowcount
        if done:
            c.execute("INSERT INTO ledger (user_id, at, kind, answers, delivery_id, actor, note) "
                      "VALUES (?, ?, 'trial_refund', 1, ?, 'system', ?)",
                      (user_id, time.time(), delivery_id, note))
        return bool(done)

    # -- the worker's side -------------------------------------------------------------------

    def delivery(self, delivery_id: int) -> dict | None:
        """One delivery row with its user's platform id, or None."""
        rows = list(self.db.query(
            "SELECT d.*, u.external_id AS user_external_id FROM deliveries d "
            "JOIN users u ON u.id = d.user_id WHERE d.id = ?", [delivery_id]))
        return rows[0] if rows else None

    def history(self, user_id: int, chat: str, *, turns: int, max_chars: int) -> list[dict]:
        """The user's last `turns` question/answer pairs in this chat, oldest first, within max_chars."""
        if turns <= 0 or max_chars <= 0:
            return []
        rows = self.conn.execute(
            "SELECT role, content FROM messages WHERE user_id = ? AND chat = ? ORDER BY id DESC LIMIT ?",
            (user_id, chat, turns * 2)).fetchall()
        picked: list[dict] = []
        total = 0
        for role, content in rows:
            total += len(content)
            if total > max_chars:
                break
            picked.append({"role": role, "content": content})
        picked.reverse()
        while picked and picked[0]["role"] != "user":
            picked.pop(0)
        return picked

    def record_answer(self, delivery_id: int, answer: str) -> bool:
        """Store the answer and the turn it completes; False if the delivery was not waiting for one."""
        now = time.time()
        with self.write() as c:
            row = c.execute("SELECT user_id, chat, question FROM deliveries WHERE id = ? AND status = 'queued'",
                            (delivery_id,)).fetchone()
            if row is None:
                return False
            user_id, chat, question = row
            c.execute("UPDATE deliveries SET status = 'answered', answer = ? WHERE id = ?", (answer, delivery_id))
            c.executemany(
                "INSERT INTO messages (user_id, chat, role, content, delivery_id, at) VALUES (?, ?, ?, ?, ?, ?)",
                [(user_id, chat, "user", question, delivery_id, now),
                 (user_id, chat, "assistant", answer, delivery_id, now)])
        return True

    def mark_parts_sent(self, delivery_id: int, parts_sent: int) -> None:
        """Remember how many parts of a long answer went out, so a retry resumes after them."""
        self.conn.execute("UPDATE deliveries SET parts_sent = MAX(parts_sent, ?) WHERE id = ?",
                          (parts_sent, delivery_id))

    def mark_delivered(self, delivery_id: int) -> bool:
        """The whole answer reached the platform."""
        return bool(self.conn.execute(
            "UPDATE deliveries SET status = 'delivered', finished_at = ? WHERE id = ? AND status = 'answered'",
            (time.time(), delivery_id)).rowcount)

    def fail_delivery(self, delivery_id: int, error: str) -> str | None:
        """Give up on a question: mark it failed and refund a reserved trial answer.

        Returns the charge that was undone ('trial', 'member'), or None when the delivery had already
        finished (delivered or failed): safe to call twice.
        """
        with self.write() as c:
            row = c.execute("SELECT user_id, charge FROM deliveries WHERE id = ? AND status IN ('queued', 'answered')",
                            (delivery_id,)).fetchone()
            if row is None:
                return None
            user_id, charge = row
            c.execute("UPDATE deliveries SET status = 'failed', finished_at = ?, error = ? WHERE id = ?",
                      (time.time(), error[:500], delivery_id))
            if charge == "trial":
                self._refund(c, user_id, delivery_id, "answer failed")
        return charge

    # -- reading -----------------------------------------------------------------------------

    def user(self, user_id: int) -> dict | None:
        rows = list(self.db.query("SELECT * FROM users WHERE id = ?", [user_id]))
        return rows[0] if rows else None

    def find_user(self, platform: str, external_id: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM users WHERE platform = ? AND external_id = ?",
                                  [platform, external_id]))
        return rows[0] if rows else None

    def ledger(self, user_id: int) -> list[dict]:
        return list(self.db.query("SELECT * FROM ledger WHERE user_id = ? ORDER BY id", [user_id]))

    def deliveries(self, user_id: int | None = None) -> list[dict]:
        if user_id is None:
            return list(self.db.query("SELECT * FROM deliveries ORDER BY id"))
        return list(self.db.query("SELECT * FROM deliveries WHERE user_id = ? ORDER BY id", [user_id]))

    def count(self, table: str) -> int:
        if table not in ("users", "deliveries", "messages", "ledger"):
            raise ValueError(table)
        return self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
