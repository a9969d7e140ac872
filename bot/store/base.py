"""The connection, transactions, migrations and backups, and the ledger writes every part shares."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from sqlite_utils import Database

from bot.errors import MembershipTooLong
from bot.limits import MAX_EXPIRY, check_days
from bot.store.schema import migrations

BUSY_TIMEOUT_S = 30.0
"""How long a connection waits for another process's write lock before giving up."""
COOPERATIVE_BUSY_S = 0.02
"""SQLite's own wait in a cooperative store: a reader's rare wait on a checkpoint, no more."""

DAY_S = 86400
"""Seconds in a membership day."""
EXPIRY_TEXT = time.strftime("%Y-%m-%d", time.gmtime(MAX_EXPIRY))
"""`MAX_EXPIRY` as a date, for messages."""


def create_private(path: Path) -> None:
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


def check_writable(path: str | os.PathLike, timeout_s: float = 1.0) -> None:
    """Raise `sqlite3.Error` unless the database at `path` takes a write within `timeout_s`: the
    write lock (`BEGIN IMMEDIATE`, waited for in short sleeps, which gevent turns into yields), one
    write that is then rolled back, so nothing changes. A missing file is an error, not created.
    For readiness checks: a fresh connection, so a held lock or a read-only file shows up."""
    conn = sqlite3.connect(f"file:{quote(str(Path(path).resolve()))}?mode=rw", uri=True, timeout=0,
                           isolation_level=None)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.02)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute(f"PRAGMA user_version = {int(version)}")
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()


class StoreBase:
    """The connection and its transactions; the parts of `Store` build on it."""

    def __init__(self, path: str | os.PathLike, *, migrate: bool = True, cooperative: bool = False):
        """`cooperative`: wait for another process's write lock in Python sleeps rather than in
        SQLite's own busy handler, which blocks the whole thread: under gevent, every request the
        web process holds would stall with it (past WeChat's 5 s, if a lock is held that long)."""
        self.path = Path(path)
        self.cooperative = cooperative
        if str(path) != ":memory:":
            create_private(self.path)
        conn = sqlite3.connect(str(self.path), timeout=COOPERATIVE_BUSY_S if cooperative else BUSY_TIMEOUT_S,
                               isolation_level=None, check_same_thread=False)
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
        self._begin()
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def _begin(self) -> None:
        if not self.cooperative:
            self.conn.execute("BEGIN IMMEDIATE")
            return
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        pause = 0.002
        while True:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(pause)  # patched by gevent: other requests go on meanwhile
            pause = min(pause * 2, 0.05)

    def backup(self, target: str | os.PathLike) -> dict:
        """Copy the database to `target` (mode 600) with SQLite's online backup API.

        The copy is one consistent snapshot even while web and worker processes write, and a single
        self-contained file (rollback-journal mode, no -wal beside it). Returns what the copy holds,
        read back from it: `{"check": "ok", "users": …, "ledger": …}`.
        """
        target = Path(target)
        create_private(target)
        copy = sqlite3.connect(str(target))
        try:
            self.conn.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")
            check = copy.execute("PRAGMA quick_check").fetchone()[0]
            users, ledger = copy.execute(
                "SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM ledger)").fetchone()
        finally:
            copy.close()
        os.chmod(target, 0o600)
        return {"check": check, "users": users, "ledger": ledger}


# -- ledger writes shared by admission and the operator's commands --------------------------------


def extend_membership(c, user_id: int, days: int, *, now: float, kind: str, actor: str, note: str = "",
                      delivery_id: int | None = None) -> float | None:
    """Add `days` to a membership in one conditional write, with its ledger row.

    An active membership is extended from its expiry; a lapsed or new one starts now. Returns the new
    expiry, or None when there is no such user. Raises `MembershipTooLong` (nothing written; the
    caller's transaction rolls back) when the new expiry would pass `MAX_EXPIRY`, and `ValueError` for
    days outside 1–`MAX_DAYS`. Call inside a write transaction.
    """
    check_days(days)
    row = c.execute(
        "UPDATE users SET member_until = MAX(COALESCE(member_until, 0), ?) + ? * ? WHERE id = ? "
        "AND MAX(COALESCE(member_until, 0), ?) + ? * ? <= ? RETURNING member_until",
        (now, days, DAY_S, user_id, now, days, DAY_S, MAX_EXPIRY)).fetchone()
    if row is None:
        if c.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
            return None
        raise MembershipTooLong(f"{days} more days would take the membership past {EXPIRY_TEXT} UTC, "
                                "the latest chatgate keeps; nothing was changed")
    c.execute("INSERT INTO ledger (user_id, at, kind, days, member_until, delivery_id, actor, note) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (user_id, now, kind, days, row[0], delivery_id, actor, note))
    return row[0]


def refund_trial(c, user_id: int, delivery_id: int | None, note: str, now: float) -> bool:
    """Give back one reserved trial answer, with its ledger row; False if none was in use."""
    done = c.execute("UPDATE users SET trial_used = trial_used - 1, trial_exhausted_at = NULL "
                     "WHERE id = ? AND trial_used > 0",
                     (user_id,)).rowcount
    if done:
        c.execute("INSERT INTO ledger (user_id, at, kind, answers, delivery_id, actor, note) "
                  "VALUES (?, ?, 'trial_refund', 1, ?, 'system', ?)", (user_id, now, delivery_id, note))
    return bool(done)
