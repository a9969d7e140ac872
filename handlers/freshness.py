"""The replay window: a signed timestamp is believed only while it is close to this server's clock.

A signature says who made a request, not when: whoever holds one signed request (a proxy's access
log, a capture) could send it again much later. Both webhooks refuse signed timestamps further than
`CHATGATE_REPLAY_WINDOW` seconds from now, in either direction, since a clock can be off both ways
and a timestamp from the future is no more trustworthy than an old one.
"""

from __future__ import annotations

import re
import time

_WHOLE_SECONDS = re.compile(r"[0-9]{1,12}")
"""Unix seconds as the platforms send them; no sign, spaces, underscores or other digits."""


def is_fresh(timestamp: str, window: int, now: float | None = None) -> bool:
    """True when `timestamp` is whole Unix seconds within `window` seconds of `now` (default: the
    clock)."""
    if not isinstance(timestamp, str) or not _WHOLE_SECONDS.fullmatch(timestamp):
        return False
    now = time.time() if now is None else now
    return abs(int(timestamp) - now) <= window
