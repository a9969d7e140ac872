"""Limits that protect the LLM endpoint, shared by every worker process through Redis.

`Slots` caps the LLM calls in flight across all workers (CHATGATE_LLM_CONCURRENCY; 0: no cap). A slot
is a member of a sorted set scored by its lease's end: a Lua script drops the leases that ran out
and adds one if fewer than the cap remain, so a worker that dies holding slots gives them back when
their leases end (the LLM's deadline and a margin). Waiting is cheap: in each process only the first
waiter asks Redis (about ten times a second, sooner when a slot of this process is freed); the others
wait their turn behind it, in order.

`Backoff` is the endpoint's "not before": a 429 with `Retry-After` (or `retry-after-ms`) makes every
worker hold its calls until then, not only the one that got it. Each process reads the shared time at
most every `Backoff.REFRESH_S`.

Redis errors are not failures here: without Redis the limits let calls through (and say so in the
log); the jobs themselves cannot be had without Redis anyway.
"""

from __future__ import annotations

import logging
import random
import time
import uuid

import gevent
import redis
from gevent.event import Event
from gevent.lock import Semaphore

from bot.errors import GiveBack, TransientFailure

log = logging.getLogger("chatgate.worker")

SLOTS_KEY = "chatgate:llm:slots"
BACKOFF_KEY = "chatgate:llm:not-before"

_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 60)
return 1
"""

_LATER = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return redis.call('GET', KEYS[1])
"""


class Slots:
    """At most `cap` LLM calls at once across every process on this Redis (`cap` 0: no limit)."""

    POLL_S = 0.1
    """How often the first waiter of a process asks Redis for a slot (with some jitter)."""

    def __init__(self, connection: redis.Redis, cap: int, lease_s: float, key: str = SLOTS_KEY):
        self.redis = connection
        self.cap = cap
        self.lease_s = lease_s
        self.key = key
        self._take = connection.register_script(_TAKE)
        self._turn = Semaphore(1)  # the waiters of this process, in order; the first asks Redis
        self._freed = Event()

    def acquire(self, stopping: Event | None = None) -> str | None:
        """Wait for a slot and return its token (None: no cap, or Redis unavailable). Raises
        `GiveBack` when `stopping` is set while it waits: the worker is stopping."""
        if self.cap <= 0:
            return None
        token = uuid.uuid4().hex
        with self._turn:
            while True:
                if stopping is not None and stopping.is_set():
                    raise GiveBack("the worker is stopping")
                try:
                    if self._take(keys=[self.key], args=[self.cap, self.lease_s, token]):
                        return token
                except redis.RedisError as exc:
                    log.warning("no LLM slot could be had from Redis (%s); calling without one", exc)
                    return None
                self._freed.clear()
                self._freed.wait(self.POLL_S * random.uniform(0.5, 1.5))

    def release(self, token: str | None) -> None:
        """Give a slot back (`token` from `acquire`; None does nothing)."""
        if token is None:
            return
        try:
            self.redis.zrem(self.key, token)
        except redis.RedisError:
            pass  # its lease runs out
        self._freed.set()


class Backoff:
    """A shared "not before" time for the LLM endpoint, set by a 429."""

    REFRESH_S = 0.2
    """A process reads the shared time at most this often."""

    def __init__(self, connection: redis.Redis, key: str = BACKOFF_KEY):
        self.redis = connection
        self.key = key
        self._later = connection.register_script(_LATER)
        self._until = 0.0
        self._read_at = 0.0

    def until(self) -> float:
        """The wall-clock time before which no call should go out (0: none)."""
        now = time.time()
        if now - self._read_at >= self.REFRESH_S:
            self._read_at = now
            try:
                raw = self.redis.get(self.key)
            except redis.RedisError:
                raw = None
            self._until = max(float(raw) if raw else 0.0, self._until if self._until > now else 0.0)
        return self._until

    def hold(self, seconds: float) -> None:
        """Hold every worker's calls for `seconds` from now (a later hold already set wins)."""
        until = time.time() + seconds
        self._until = max(self._until, until)
        try:
            raw = self._later(keys=[self.key], args=[repr(until), max(1, int(seconds * 1000) + 1000)])
            self._until = max(self._until, float(raw or 0))
        except redis.RedisError:
            pass  # this process still holds

    def wait(self, deadline: float) -> None:
        """Sleep until calls may go out; raise `TransientFailure` if that is past `deadline` (monotonic)."""
        while True:
            left = self.until() - time.time()
            if left <= 0:
                return
            if time.monotonic() + left >= deadline:
                raise TransientFailure(f"the LLM endpoint asked to wait {left:.1f}s (HTTP 429), past this "
                                       "answer's deadline")
            gevent.sleep(min(left, 1.0))
