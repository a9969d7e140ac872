"""What every property-based webhook test checks after each hostile body (tests/test_fuzz_*.py).

`FUZZ` is the hypothesis profile: `CHATGATE_FUZZ_EXAMPLES` examples per test (default 60, which keeps
the fuzz tests to a few seconds each; raise it for a long run, e.g. `CHATGATE_FUZZ_EXAMPLES=5000`).
A test knob, not a chatgate setting. No example database: a run leaves no files behind.
"""

from __future__ import annotations

import logging
import os

from hypothesis import HealthCheck, settings
from redis import Redis

from bot.store.reports import TABLES

EXAMPLES = int(os.environ.get("CHATGATE_FUZZ_EXAMPLES") or 60)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])
QUEUE_KEY = "rq:queue:chatgate"


class Watch:
    """The store's row counts, the queue's length and the log, before and after one request."""

    def __init__(self, store, redis_url: str, caplog):
        self.store, self.redis, self.caplog = store, Redis.from_url(redis_url), caplog
        caplog.set_level(logging.INFO)

    def snapshot(self) -> dict:
        counts = {table: self.store.count(table) for table in TABLES}
        counts["queued"] = self.redis.llen(QUEUE_KEY)
        return counts

    def check(self, res, before: dict, allowed: set, what: str) -> list:
        """No 5xx (only `allowed` statuses), no ERROR or traceback logged, and nothing stored or
        queued for a 400. Returns the log records of the request."""
        records = self.caplog.records[:]
        self.caplog.clear()
        bad = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in records
               if r.levelno >= logging.ERROR or r.exc_info]
        assert not bad, f"{what}: logged {bad}"
        body = res.get_data(as_text=True)[:300]
        assert res.status_code in allowed, f"{what}: HTTP {res.status_code} {body!r}"
        if res.status_code == 400:
            assert self.snapshot() == before, f"{what}: a 400 changed the store or the queue"
        return records
