"""Facts learnt from a platform or the model and shared by every process for a while: an account that
cannot push (WeChat 48001), an app CardKit refuses cards to, a model that strips its opening `<think>`.

A `Mark` is a Redis key with a time to live, read through a short per-process cache so that asking
costs nothing per message. Redis being down (or absent) reads as not marked: at worst the platform or
the model teaches it again.
"""

from __future__ import annotations

import time

REREAD_S = 5.0
"""How long a process believes what it read before reading Redis again."""


class Mark:
    """One remembered fact, set for `ttl_s` seconds in Redis (`redis` may be None: this process only)."""

    def __init__(self, redis, key: str, ttl_s: int, reread_s: float = REREAD_S):
        self.redis, self.key, self.ttl_s, self.reread_s = redis, key, ttl_s, reread_s
        self._cached = (False, 0.0)  # (marked, until when this process believes it)

    def is_set(self) -> bool:
        marked, until = self._cached
        if self.redis is None or time.monotonic() < until:
            return marked
        try:
            marked = bool(self.redis.exists(self.key))
        except Exception:  # Redis unavailable: not marked, and asked again next time
            return False
        self._cached = (marked, time.monotonic() + self.reread_s)
        return marked

    def set(self) -> None:
        self._cached = (True, time.monotonic() + self.reread_s)
        try:
            if self.redis is not None:
                self.redis.set(self.key, 1, ex=self.ttl_s)
        except Exception:  # forgotten by the others: they learn it again
            pass
