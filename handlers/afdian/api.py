"""afdian's open API, as far as chatgate needs it: `query-order`, signed as afdian documents.

A request is JSON `{"user_id", "params", "ts", "sign"}` where `params` is itself a JSON string and
`sign = md5(token + "params" + params + "ts" + ts + "user_id" + user_id)`; the answer is
`{"ec": 200, "em": …, "data": {"list": [order…]}}`, any other `ec` an error. Every call has a timeout;
every failure is `OrderLookupFailed`, and the token never reaches a log line.
"""

from __future__ import annotations

import hashlib
import json
import time

import requests

from bot.errors import OrderLookupFailed
from config import Settings

QUERY_ORDER = "/api/open/query-order"
TIMEOUT_S = 10.0
"""Connect and read timeout of one look-up; a job does it, never the webhook."""


def sign(token: str, user_id: str, params: str, ts: int) -> str:
    """afdian's request signature: md5 over token, then `params`, `ts` and `user_id` by name and value."""
    return hashlib.md5(f"{token}params{params}ts{ts}user_id{user_id}".encode()).hexdigest()


class AfdianAPI:
    """The signed client of afdian's open API (one `requests` session, timeouts on every call)."""

    def __init__(self, settings: Settings, session: requests.Session | None = None):
        self.base = settings.afdian_api_base.rstrip("/")
        self.user_id = settings.afdian_user_id
        self._token = settings.afdian_token
        self.session = session or requests.Session()

    def query_order(self, out_trade_no: str) -> dict | None:
        """afdian's record of one order, or None when afdian has no order with that number.
        `OrderLookupFailed` when afdian cannot be reached or answers with an error."""
        params = json.dumps({"out_trade_no": out_trade_no}, separators=(",", ":"))
        ts = int(time.time())
        body = {"user_id": self.user_id, "params": params, "ts": ts,
                "sign": sign(self._token, self.user_id, params, ts)}
        try:
            resp = self.session.post(self.base + QUERY_ORDER, json=body, timeout=TIMEOUT_S)
        except requests.RequestException as exc:
            raise OrderLookupFailed(f"afdian unreachable: {type(exc).__name__}") from None
        try:
            answer = resp.json()
        except ValueError:
            raise OrderLookupFailed(f"afdian answered HTTP {resp.status_code} without JSON") from None
        if not isinstance(answer, dict) or answer.get("ec") != 200:
            ec, em = (answer.get("ec"), answer.get("em")) if isinstance(answer, dict) else (None, None)
            raise OrderLookupFailed(f"afdian error {ec}: {em} (HTTP {resp.status_code})")
        found = ((answer.get("data") or {}).get("list")) or []
        return next((o for o in found if isinstance(o, dict) and o.get("out_trade_no") == out_trade_no), None)
