"""The worker process on gevent: `patch()` runs first thing in `chatgate worker` (see `bot/cli/__init__.py`).

It monkey-patches the standard library (sockets, ssl, time, threading, select…) so that every answer
in flight waits on the network in a greenlet, and fixes one cost of that: gevent's `select.poll`
yields to the hub even when asked not to wait (`poll(0)`). redis-py asks that of every connection it
takes from its pool (is there data left over?), and httpcore of every idle connection of its pool on
each request, while holding the pool's lock; under gevent the holder of that lock yields at each
look, so every LLM request of the process queued behind it. Their modules get a `poll` that asks the
kernel directly when it is not to wait (a zero timeout never blocks) and gevent's otherwise.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace

_LIBRARIES = ("redis._parsers.hiredis", "redis._parsers.socket", "httpcore._utils", "httpcore2._utils")
"""Modules whose readiness checks use `select.poll(…).poll(0)`."""


def patch() -> None:
    """Monkey-patch this process for gevent, then give the libraries above a non-yielding `poll(0)`."""
    from gevent import monkey

    if monkey.is_module_patched("socket"):
        return
    monkey.patch_all()
    import select as green_select

    real_poll = monkey.get_original("select", "poll")

    class Poll:
        """`select.poll` that asks the kernel itself for a zero timeout, gevent's poll otherwise."""

        def __init__(self):
            self._real = real_poll()
            self._fds: list[tuple] = []

        def register(self, fd, *mask) -> None:
            self._real.register(fd, *mask)
            self._fds.append((fd, *mask))

        def poll(self, timeout=None):
            if timeout == 0:
                return self._real.poll(0)
            green = green_select.poll()
            for registration in self._fds:
                green.register(*registration)
            return green.poll(timeout)

    select = SimpleNamespace(**{name: getattr(green_select, name) for name in dir(green_select)
                                if not name.startswith("__")})
    select.poll = Poll
    for name in _LIBRARIES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "select", None) is green_select:
            module.select = select
