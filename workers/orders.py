"""afdian orders in the worker: the job that looks an order up and settles it, and the reconciler's
part (pending orders whose look-up is due: their job was lost, or afdian did not answer).

The job is safe to run twice or side by side: settling is one conditional transaction in the store
(`bot/store/orders.py`), so an order is granted once however many jobs, webhooks and claims race.
When an order is granted, the user's notice page is pushed by a delivery job queued here (or, if
that is lost, by the reconciler); where the account cannot push, the user's next reply carries it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from bot import payments
from bot.errors import OrderLookupFailed
from handlers.afdian.api import AfdianAPI
from workers.answer import Context, context
from workers.queue import enqueue_answer, enqueue_order_check, first_job_id

log = logging.getLogger("chatgate.worker")

def check_order_job(facts: dict) -> str:
    """Look one order up at afdian and settle it; returns the outcome (granted, unclaimed, refused,
    settled) or `lookup failed` (the order stays pending; the reconciler asks again later)."""
    ctx = context()
    number = facts["out_trade_no"]
    if not ctx.settings.afdian_enabled:
        log.error("afdian order %s cannot be looked up: AFDIAN_USER_ID and AFDIAN_TOKEN are not set", number,
                  extra={"out_trade_no": number, "outcome": "not configured"})
        return "not configured"
    try:
        result = payments.check(ctx.store, number, AfdianAPI(ctx.settings).query_order, ctx.settings,
                                claimed=facts.get("claimed"))
    except OrderLookupFailed as exc:
        log.warning("afdian order %s could not be looked up (%s); it stays pending and is asked again", number,
                    exc, extra={"out_trade_no": number, "outcome": "lookup failed"})
        return "lookup failed"
    if result["notice_delivery"] is not None:
        queue_push(ctx, result["notice_delivery"])
    return result["outcome"]


def queue_push(ctx: Context, delivery_id: int, now: float | None = None) -> None:
    """Queue the delivery job that pushes a notice page (its due time, set with the page, lets the
    reconciler push it if this job is lost)."""
    now = time.time() if now is None else now
    d = ctx.store.delivery(delivery_id)
    job_id = f"{first_job_id(d['platform'], d['message_key'])[:100]}-n{int(now * 1000) % 10**12}"
    try:
        enqueue_answer(ctx.queue, ctx.settings, {"delivery_id": d["id"], "platform": d["platform"],
                                                 "user": d["user_external_id"], "message_key": d["message_key"]},
                       job_id=job_id)
    except Exception as exc:
        log.warning("delivery %s: the notice's push could not be queued (%s); the reconciler pushes it", delivery_id,
                    type(exc).__name__, extra={"delivery_id": delivery_id, "outcome": "not queued"})
        return
    ctx.store.set_due(delivery_id, now + ctx.settings.recheck_s, job_id=job_id)


def recheck_orders(ctx: Context, now: float | None = None) -> Counter:
    """The reconciler's part: queue the look-up of every pending order that is due, and put its next
    look-up off (doubling, at most an hour) in case this one fails too."""
    now = time.time() if now is None else now
    counts: Counter = Counter()
    if not ctx.settings.afdian_enabled:
        return counts
    for order in ctx.store.due_orders(now):
        enqueue_order_check(ctx.queue, order["out_trade_no"], now=now)
        ctx.store.set_order_due(order["out_trade_no"], now + payments.backoff(ctx.settings, order["checks"]))
        counts["orders looked up again"] += 1
    return counts
