"""Pushing a delivery's ready pages through its platform's sender, each page claimed in SQLite first,
so that a push, a passive reply and `继续` never send one page twice."""

from __future__ import annotations

import logging
import time

from bot.delivery import ANSWERED, NOTICE
from bot.errors import PermanentFailure, TransientFailure
from bot.store import Store
from config import metrics
from workers.wakeups import Wakeups

log = logging.getLogger("chatgate.worker")

HANDOFF_S = 1.0
"""How long a ready answer is left to a webhook holding the question before it is pushed."""

DELIVERED, WAITING, RETRY = "delivered", "waiting", "retry"


def push_pages(store: Store, sender, wakeups: Wakeups, delivery_id: int, *, retry_s: float,
               held: bool | None = None) -> str:
    """Push what the delivery has ready, within the sender's budget. Returns `delivered` (nothing
    left), `waiting` (pages wait for a passive reply or `继续`) or `retry` (a push failed for a
    reason that may pass: the reconciler tries again `retry_s` later). `held`: whether a webhook
    holds the question, if the caller just learnt it (None: look).

    Raises `PermanentFailure` when an answer page can never go out (Feishu refused it for good):
    the caller gives the question up.
    """
    d = store.delivery(delivery_id)
    if not sender.may_push():
        return _wait_for_fetch(store, d)
    deadline = time.monotonic() + HANDOFF_S
    if held is None:
        held = wakeups.held(delivery_id)
    while held and time.monotonic() < deadline:
        time.sleep(0.05)  # a held webhook takes a ready answer within milliseconds
        held = wakeups.held(delivery_id)
    pushed = store.pushed_count(delivery_id)
    budget = sender.push_budget
    while budget is None or pushed < budget:
        page, left = store.claim_push(delivery_id)
        if page is None:
            break
        text = page["text"]
        if left and budget is not None and pushed + 1 == budget:
            text = sender.with_more_hint(text)
        try:
            sender.push_page(store, d, page, text)
        except PermanentFailure as exc:
            store.unpush(page["id"])
            if sender.waits_after(exc):
                log.warning("delivery %s: push refused (%s); its pages wait for the user's next message",
                            delivery_id, exc, extra=log_fields(d, "push refused"))
                return _wait_for_fetch(store, d)
            if page["kind"] == NOTICE:
                store.cancel_page(page["id"])
                log.warning("delivery %s: notice refused for good (%s); dropped", delivery_id, exc,
                            extra=log_fields(d, "notice dropped"))
                continue
            raise
        except TransientFailure as exc:
            store.unpush(page["id"])
            store.set_due(delivery_id, time.time() + retry_s)
            log.warning("delivery %s: push failed (%s); trying again in %ss", delivery_id, exc, retry_s,
                        extra=log_fields(d, "push failed"))
            return RETRY
        store.pushed(page["id"])
        metrics.pushed(sender.platform, page)
        pushed += 1
    if not any(p["state"] == "ready" for p in store.pages(delivery_id)):
        return DELIVERED
    return _wait_for_fetch(store, d)


def _wait_for_fetch(store: Store, d: dict) -> str:
    """Pages that will go out with a passive reply: an answer waits until it expires, a notice of a
    finished delivery until it is dropped as old."""
    store.set_due(d["id"], d["expires_at"] if d["status"] == ANSWERED else None)
    return WAITING


def log_fields(d: dict, outcome: str, **more) -> dict:
    """The structured fields of a log line about delivery `d` (a store row), for `extra=` (see
    `config/logs.py`): platform, message key, delivery and user ids, the outcome, and `more`."""
    return {"platform": d["platform"], "message_key": d["message_key"], "delivery_id": d["id"],
            "user_id": d["user_id"], "outcome": outcome, **more}
