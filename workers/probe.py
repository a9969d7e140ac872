"""Is the LLM endpoint there? The worker asks it when it starts, and `/readyz` reads the answer.

A worker probes `GET {OPENAI_BASE_URL}/models` (through the openai SDK, 5 s, no retry) at its start,
unless another worker did within `RETRY_S`, and again whenever the record is missing (Redis was
wiped) or says the endpoint failed, at most every `RETRY_S` across all workers. The result goes to
Redis with its time: `{"ok": true, "detail": "HTTP 200", "at": 1718000000.0}`. A key the endpoint
refuses (401/403) or a server error counts as not ready; an endpoint that answers but has no
`/models` route (some proxies) counts as reachable. In development without a key the demo responder
answers and nothing is probed.
"""

from __future__ import annotations

import json
import logging
import os
import time

import redis

from config import Settings

log = logging.getLogger("chatgate.worker")

KEY = "chatgate:llm:probe"
LOCK_KEY = "chatgate:llm:probe-lock"
RETRY_S = 30
"""A probe younger than this is not repeated; a failed one is repeated this often."""
TIMEOUT_S = 5.0


def probe(settings: Settings) -> dict:
    """Ask the endpoint for its models once; `{"ok", "detail", "at"}`."""
    import openai

    client = openai.OpenAI(api_key=settings.openai_api_key, base_url=settings.openai_base_url or None,
                           timeout=TIMEOUT_S, max_retries=0)
    try:
        client.models.list()
        ok, detail = True, "HTTP 200"
    except openai.APIStatusError as exc:
        status = exc.status_code
        if status in (401, 403):
            ok, detail = False, f"the endpoint refused the key (HTTP {status})"
        elif status >= 500 or status == 429:
            ok, detail = False, f"the endpoint is failing (HTTP {status})"
        else:
            ok, detail = True, f"reachable (GET /models: HTTP {status})"
    except openai.APIError as exc:  # no connection, a timeout
        ok, detail = False, f"unreachable ({type(exc).__name__})"
    finally:
        client.close()
    return {"ok": ok, "detail": detail, "at": time.time()}


def read(connection: redis.Redis) -> dict | None:
    """The last probe's result, or None if none is recorded."""
    raw = connection.get(KEY)
    return json.loads(raw) if raw else None


def probe_if_due(settings: Settings, connection: redis.Redis, *, starting: bool = False) -> dict | None:
    """Probe and record it, if due (see the module docstring); returns the new result or None."""
    if settings.demo_llm:
        return None
    last = read(connection)
    if last is not None and (time.time() - last["at"] < RETRY_S or (last["ok"] and not starting)):
        return None
    if not connection.set(LOCK_KEY, os.getpid(), nx=True, ex=RETRY_S):
        return None
    result = probe(settings)
    connection.set(KEY, json.dumps(result))
    (log.info if result["ok"] else log.warning)("LLM endpoint probe: %s", result["detail"],
                                                extra={"outcome": "ok" if result["ok"] else "failed"})
    return result
