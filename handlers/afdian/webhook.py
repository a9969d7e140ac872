"""`POST /pay/afdian`: afdian's order webhook. Unsigned, so never believed: it only names an order.

The body must be afdian's shape (`{"ec":200,"data":{"type":"order","order":{"out_trade_no":…}}}`,
else 400). The order is noted `pending` in the store, and a job looks it up with afdian's signed API
and grants it (`workers/orders.py`); the webhook answers `{"ec":200}` at once. Why a job rather than
the look-up here: afdian's API may be slow or down, and a job retries (the reconciler looks pending
orders up again, with back-off, until afdian answers), while the store keeps the order meanwhile, so
neither a slow afdian nor a lost job nor Redis down loses a payment. A repeat, of an order being
looked up or settled (granted or unclaimed), is acknowledged and changes nothing.
"""

from __future__ import annotations

import json
import logging
import re

from flask import Blueprint, abort, current_app, jsonify, request

from bot import payments
from handlers.fields import INT64_MAX, Invalid, field, integer, mapping, text
from workers.queue import enqueue_order_check

log = logging.getLogger("chatgate.afdian")

blueprint = Blueprint("afdian", __name__)

_TRADE_NO = re.compile(r"[0-9A-Za-z_-]+")


MAX_CLAIMED_CHARS = 256
"""The longest order field (a remark, a plan id…) taken from the body into the order check's job."""


def out_trade_no(body) -> tuple[str | None, dict]:
    """(the order number, the body's own account of the order), or (None, {}) for another event type.
    `Invalid` (a ValueError) for a body that is not afdian's webhook: the number must be 1..64 of
    [0-9A-Za-z_-]; the compared fields (`bot.payments.COMPARED`), when present, strings of up to 256
    characters or whole numbers within int64."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise Invalid("expected afdian's webhook JSON: {\"ec\":200,\"data\":{\"type\":\"order\",…}}")
    data = body["data"]
    if data.get("type") != "order":
        return None, {}
    order = mapping(field(data, "order"), "data.order")
    number = text(field(order, "out_trade_no"), "data.order.out_trade_no", pattern=_TRADE_NO, max_len=64)
    claimed = {}
    for name in payments.COMPARED:
        value, where = order.get(name), f"data.order.{name}"
        if isinstance(value, str):
            claimed[name] = text(value, where, max_len=MAX_CLAIMED_CHARS, free=True)
        elif isinstance(value, int) and not isinstance(value, bool):
            claimed[name] = integer(value, where, lo=-INT64_MAX - 1)
    return number, claimed


def _json_body():
    """The request body as JSON, or None when it is not JSON (nesting too deep included)."""
    try:
        return json.loads(request.get_data(cache=False))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


@blueprint.post("/pay/afdian")
def receive():
    """One order notification: note the order and queue its look-up; answer `{"ec":200}`."""
    runtime = current_app.extensions["chatgate"]
    runtime.platform("afdian", runtime.settings.afdian_enabled, "AFDIAN_USER_ID and AFDIAN_TOKEN", lambda: True)
    try:
        number, claimed = out_trade_no(_json_body())
    except Invalid as exc:
        log.warning("afdian webhook refused (%s)", exc, extra={"outcome": "refused"})
        abort(400, str(exc))
    if number is None:
        log.info("afdian webhook of another type acknowledged", extra={"outcome": "ignored"})
        return jsonify(ec=200, em="")
    fields = {"out_trade_no": number}
    status, look_up = runtime.store.note_order(number, recheck_s=runtime.settings.recheck_s)
    if not look_up:
        log.info("afdian order %s: webhook again, %s; nothing more to do", number,
                 "being looked up" if status == "pending" else f"already {status}",
                 extra={**fields, "outcome": "duplicate"})
        return jsonify(ec=200, em="")
    try:
        enqueue_order_check(runtime.queue, number, claimed=claimed)
    except Exception as exc:  # Redis down: the reconciler looks the order up later
        log.error("afdian order %s: the queue is unavailable (%s); the reconciler will look it up", number,
                  type(exc).__name__, extra={**fields, "outcome": "not queued"})
    log.info("afdian order %s noted; looking it up", number, extra={**fields, "outcome": "pending"})
    return jsonify(ec=200, em="")
