"""Wake-ups through Redis: the worker tells a webhook holding a question that something is ready,
and a webhook tells the worker that it holds one. Hints only: the store says what is true, and a
waiter whose Redis is gone polls the store instead."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

log = logging.getLogger("chatgate.wakeups")

WAKE_TTL_S = 60
"""A wake-up left for a holder that has not started waiting yet lasts this long."""
POLL_S = 0.25
"""How often a waiter whose Redis is unavailable looks at the store."""


class Wakeups:
    """`notify(d)` wakes whoever waits on delivery d; `hold(d)` says a webhook is holding it."""

    def __init__(self, connection: redis.Redis, prefix: str = "chatgate:"):
        self.redis = connection
        self.prefix = prefix

    def _key(self, kind: str, delivery_id: int) -> str:
        return f"{self.prefix}{kind}:{delivery_id}"

    def notify(self, delivery_id: int) -> bool | None:
        """Something of this delivery is ready (an answer, an apology). Returns whether a webhook holds
        it right now (None: not known), in the same round trip."""
        try:
            with self.redis.pipeline(transaction=False) as p:
                p.lpush(self._key("wake", delivery_id), 1)
                p.expire(self._key("wake", delivery_id), WAKE_TTL_S)
                p.exists(self._key("held", delivery_id))
                return bool(p.execute()[-1])
        except redis.RedisError as exc:
            log.warning("could not wake holders of delivery %s (%s); they will find it in the store",
                        delivery_id, exc)
            return None

    def wait_until(self, ready: Callable[[], bool], delivery_id: int, deadline: float) -> bool:
        """Block until `ready()` (read from the store) is true or the monotonic `deadline` passes.

        Waits on Redis between looks, not in a sleep loop; falls back to polling when Redis fails.
        """
        while True:
            if ready():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0.01:
                return False
            try:
                woke = self.redis.blpop([self._key("wake", delivery_id)], timeout=remaining)
            except redis.RedisError:
                time.sleep(min(POLL_S, remaining))
                continue
            if woke is not None:
                self.notify(delivery_id)  # pass the wake-up on to any other holder of this delivery
                if not ready():
                    time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))

    def hold(self, delivery_id: int, seconds: float) -> None:
        """A webhook holds this delivery for `seconds`: the worker leaves it the first page."""
        try:
            self.redis.set(self._key("held", delivery_id), 1, px=max(int(seconds * 1000), 1))
        except redis.RedisError:
            pass

    def release(self, delivery_id: int) -> None:
        try:
            self.redis.delete(self._key("held", delivery_id))
        except redis.RedisError:
            pass

    def held(self, delivery_id: int) -> bool:
        try:
            return bool(self.redis.exists(self._key("held", delivery_id)))
        except redis.RedisError:
            return False
