"""`/healthz` (the process answers) and `/readyz` (it can do its work), for probes and load balancers.

`/readyz` checks, each within about a second:

    database  SQLite takes a write: the write lock, one write rolled back (a lock another connection
              holds for over a second, a read-only or missing file: not ready)
    redis     Redis answers a PING
    workers   at least one RQ worker is alive on CHATGATE_QUEUE
    llm       the LLM endpoint answered the worker's probe at its start (`workers/probe.py`); in
              development without a key, the demo responder, which is always there

Both answer JSON, never an error page: 200 `{"ok": true, "checks": {…}}`, or 503 with `"failing"`
naming the parts that are not ready. A part that cannot be checked because another is down (the
workers and the LLM's record when Redis is) shows `"ok": null` and is not named.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from flask import Blueprint, current_app

from bot.store import check_writable
from workers import probe
from workers.queue import live_workers

log = logging.getLogger("chatgate.web")

blueprint = Blueprint("health", __name__)

CHECK_TIMEOUT_S = 1.0
"""How long a check waits for SQLite's write lock or for Redis (the app's quick Redis client)."""


@blueprint.get("/healthz")
def healthz():
    """The process is alive and serving; no dependency is checked."""
    return {"ok": True}


@blueprint.get("/readyz")
def readyz():
    """Every part the bot needs, checked now; 503 naming those that fail."""
    runtime = current_app.extensions["chatgate"]
    checks = {"database": _timed(_database, runtime), "redis": _timed(_redis, runtime)}
    redis_ok = checks["redis"]["ok"]
    checks["workers"] = _timed(_workers, runtime) if redis_ok else _unknown("Redis is unavailable")
    checks["llm"] = _llm(runtime, redis_ok)
    failing = [name for name, check in checks.items() if check["ok"] is False]
    ready = all(check["ok"] for check in checks.values())
    if not ready:
        log.warning("not ready: %s", ", ".join(f"{name} ({checks[name]['detail']})" for name in failing)
                    or "parts not checked", extra={"outcome": "not ready", "failing": ",".join(failing)})
    return {"ok": ready, "failing": failing, "checks": checks}, 200 if ready else 503


def _timed(check, runtime) -> dict:
    started = time.monotonic()
    try:
        ok, detail = check(runtime)
    except Exception as exc:  # whatever is down, the answer is JSON
        ok, detail = False, f"check failed ({type(exc).__name__})"
    return {"ok": ok, "detail": detail, "ms": round((time.monotonic() - started) * 1000, 1)}


def _unknown(why: str) -> dict:
    return {"ok": None, "detail": f"not checked: {why}"}


def _database(runtime) -> tuple[bool, str]:
    try:
        check_writable(runtime.settings.db_path, timeout_s=CHECK_TIMEOUT_S)
    except sqlite3.Error as exc:
        text = str(exc)
        if "locked" in text:
            return False, f"write-locked by another connection for over {CHECK_TIMEOUT_S:g}s"
        if "readonly" in text:
            return False, "read-only: SQLite cannot write the file"
        return False, f"unusable: {text}"
    return True, "writable"


def _redis(runtime) -> tuple[bool, str]:
    try:
        runtime.quick_redis.ping()
    except Exception as exc:
        return False, f"no answer ({type(exc).__name__})"
    return True, "answers"


def _workers(runtime) -> tuple[bool, str]:
    count = live_workers(runtime.quick_queue)
    if not count:
        return False, f"no RQ worker is alive on queue {runtime.settings.queue_name!r}"
    return True, f"{count} alive"


def _llm(runtime, redis_ok: bool) -> dict:
    if runtime.settings.demo_llm:
        return {"ok": True, "detail": "the demo responder (development without OPENAI_API_KEY)"}
    if not redis_ok:
        return _unknown("Redis is unavailable")
    try:
        last = probe.read(runtime.quick_redis)
    except Exception as exc:
        return {"ok": None, "detail": f"not checked: Redis failed ({type(exc).__name__})"}
    if last is None:
        return {"ok": False, "detail": "not probed yet: a worker probes the endpoint when it starts"}
    return {"ok": bool(last["ok"]), "detail": last["detail"], "probed_s_ago": round(time.time() - last["at"])}
