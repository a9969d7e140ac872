"""Memberships sold on afdian (爱发电): what a paid order grants, whom it is for, and the claims users
make by order number. No HTTP here: the order look-up is handed in (`lookup`, see
handlers/afdian/api.py), and the store does every write (`bot/store/orders.py`).

Nothing in afdian's webhook is believed: it only names an order, which is then looked up with afdian's
signed `query-order` API, and judged (`judge`) on what afdian says:

- paid (`status == 2`), else refused;
- its plan (or one of its SKUs) is in `AFDIAN_PLANS`, else refused; a plan bought for several months
  gives its days that many times (a SKU: times its count);
- the amount paid (`total_amount`) is more than 0 and, for a plan with a price, at least the price
  times the months, else refused (afdian's own discounts count against it: price what you accept).

A paid order is for the user whose bind code it carries (the `custom_order_id` of the buy link, or
the buyer's remark), else for whoever sent its number in chat, else it stays unclaimed. A bind code
is 8 symbols of Crockford's base32 (40 random bits), made once per user and kept.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bot import codes, members, texts
from bot.errors import MembershipTooLong, OrderLookupFailed
from bot.limits import MAX_DAYS
from config import Settings
from config.afdian import amount_cents, money

log = logging.getLogger("chatgate.payments")

PAID = 2
"""afdian's order status for a paid order."""
BIND_LENGTH = 8
"""Symbols in a bind code (40 bits): no one finds another user's by trying."""
PRIVATE_FIELDS = ("address_person", "address_phone", "address_address", "user_private_id")
"""Order fields not kept in the store: a buyer's address and private id are none of our business."""
MAX_MONTHS = 120
"""More months (or items) than this in one order is refused as nonsense."""

_ORDER_NUMBER = re.compile(r"[0-9]{18,40}")
_BIND_IN_TEXT = re.compile(r"(?<![0-9A-Z])([0-9A-Z]{4})[\s_\-‐‑‒–—―−]?([0-9A-Z]{4})(?![0-9A-Z])")
COMPARED = ("total_amount", "plan_id", "status", "month", "custom_order_id", "remark")
"""The order fields compared between the webhook's body and afdian's record (a difference is logged)."""


# -- bind codes and order numbers ---------------------------------------------------------------


def new_bind_code() -> str:
    """A fresh bind code: 8 symbols of Crockford's base32 from `secrets`."""
    return "".join(secrets.choice(codes.ALPHABET) for _ in range(BIND_LENGTH))


def shown(code: str) -> str:
    """A bind code as users see it: `K7Q2-M9XD`."""
    return f"{code[:4]}-{code[4:]}"


def bind_codes_in(text: str) -> list[str]:
    """The bind codes a custom_order_id or a remark may hold, in order: eight symbols, a dash or a space
    allowed in the middle, in any case or width, O/I/L read as 0/1/1."""
    folded = unicodedata.normalize("NFKC", text or "").upper()
    found = []
    for a, b in _BIND_IN_TEXT.findall(folded):
        code = codes.normalise(a + b)
        if all(ch in codes.ALPHABET for ch in code) and code not in found:
            found.append(code)
    return found


def order_number(text: str) -> str | None:
    """The afdian order number `text` is (18-40 digits, spaces ignored), or None."""
    number = re.sub(r"\s+", "", unicodedata.normalize("NFKC", text or ""))
    return number if _ORDER_NUMBER.fullmatch(number) else None


def buy_link(link: str, code: str) -> str:
    """The purchase link with the bind code as the order's `custom_order_id`."""
    parts = urlsplit(link)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "custom_order_id"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("custom_order_id", code)])))


# -- judging an order ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What afdian's answer about an order comes to: paid and grantable or not (`reason`), with the
    facts the store keeps."""

    paid: bool
    reason: str
    facts: dict
    codes: list[str]


def plans(settings: Settings) -> dict[str, tuple[int, int | None]]:
    """`AFDIAN_PLANS` as plan or SKU id → (days, price in cents or None)."""
    return {key: (days, price) for key, days, price in settings.afdian_plans}


def judge(order: dict | None, known: dict[str, tuple[int, int | None]]) -> Verdict:
    """Judge afdian's record of an order (None: afdian does not know it) against the plans."""
    if order is None:
        return Verdict(False, "afdian does not know this order", {}, [])
    raw = json.dumps({k: v for k, v in order.items() if k not in PRIVATE_FIELDS}, ensure_ascii=False)
    amount = amount_cents(str(order.get("total_amount", "")))
    plan_id = str(order.get("plan_id") or "")
    facts = {"amount_cents": amount, "plan_id": plan_id, "buyer": str(order.get("user_id") or ""), "raw": raw}
    found = bind_codes_in(str(order.get("custom_order_id") or "")) + bind_codes_in(str(order.get("remark") or ""))
    found = list(dict.fromkeys(found))
    if str(order.get("status")) != str(PAID):
        return Verdict(False, f"not paid (afdian status {order.get('status')!r})", facts, found)
    if amount is None or amount <= 0:
        return Verdict(False, f"paid amount {order.get('total_amount')!r} is not more than 0", facts, found)
    days, price, what = _worth(order, known)
    if days is None:
        return Verdict(False, what, facts, found)
    facts["days"] = days
    if price is not None and amount < price:
        return Verdict(False, f"paid {money(amount)}, less than the {money(price)} {what} costs", facts, found)
    if days > MAX_DAYS:
        return Verdict(False, f"{days} days is more than one grant gives ({MAX_DAYS})", facts, found)
    return Verdict(True, "", facts, found)


def _worth(order: dict, known: dict) -> tuple[int | None, int | None, str]:
    """(days, least price or None, what was bought) of an order; days None: nothing in the plans."""
    skus = [s for s in order.get("sku_detail") or [] if isinstance(s, dict) and str(s.get("sku_id", "")) in known]
    if skus:
        counts = [_count(s.get("count")) for s in skus]
        if None in counts:
            return None, None, "a SKU count out of range"
        worth = [(known[str(s["sku_id"])], n) for s, n in zip(skus, counts, strict=True)]
        prices = [price * n for (_, price), n in worth if price is not None]
        return (sum(days * n for (days, _), n in worth), sum(prices) if prices else None,
                "SKU " + ", ".join(str(s["sku_id"]) for s in skus))
    plan_id = str(order.get("plan_id") or "")
    if plan_id not in known:
        return None, None, f"plan {plan_id or '(none: an amount of their choosing)'} is not in AFDIAN_PLANS"
    days, price = known[plan_id]
    if order.get("product_type") == 1:  # goods: their items
        units = sum(_count(s.get("count")) or 0 for s in order.get("sku_detail") or [] if isinstance(s, dict)) or 1
    else:  # a membership plan, bought for `month` months
        units = _count(order.get("month") if order.get("month") is not None else 1)
    if units is None or units > MAX_MONTHS:
        return None, None, f"months {order.get('month')!r} out of range"
    return days * units, None if price is None else price * units, f"plan {plan_id} × {units}"


def _count(value) -> int | None:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if 1 <= n <= MAX_MONTHS else None


def differences(order: dict | None, claimed: dict | None) -> list[str]:
    """Where the webhook's body says other than afdian's own record (a forged or tampered webhook)."""
    if not claimed:
        return []
    if order is None:
        return ["the order itself"]
    return [f"{k} {claimed[k]!r} (afdian: {order.get(k)!r})" for k in COMPARED
            if k in claimed and str(claimed[k]) != str(order.get(k, ""))]


# -- settling ------------------------------------------------------------------------------------


def teller(settings: Settings) -> Callable[[str, dict], str | None]:
    """What a user is told when their order is granted, or refused after they claimed it."""
    def tell(outcome: str, order: dict) -> str | None:
        if outcome == "refused":
            return texts.ORDER_NOT_GRANTED.format(order=order["out_trade_no"])
        return texts.ORDER_GRANTED.format(order=order["out_trade_no"], amount=money(order["amount_cents"]),
                                          days=order["days"], until=members.local_time(order["until"], settings.tz))
    return tell


def backoff(settings: Settings, checks: int) -> float:
    """Seconds until a failed look-up is tried again: doubling from the reconciler's recheck, at most an hour."""
    return min(settings.recheck_s * 2 ** min(checks, 12), 3600.0)


def check(store, out_trade_no: str, lookup: Callable[[str], dict | None], settings: Settings, *,
          claimed: dict | None = None, now: float | None = None) -> dict:
    """Look the order up at afdian and settle it in the store; returns the store's result (the order
    with `outcome`: granted, unclaimed, refused or settled, and `notice_delivery`).

    `claimed`: the webhook body's own account of the order, compared with afdian's (a difference is
    logged as a forgery). `OrderLookupFailed` when afdian could not say: the order stays pending and is
    due to be looked up again (see `backoff`).
    """
    now = time.time() if now is None else now
    try:
        order = lookup(out_trade_no)
    except OrderLookupFailed as exc:
        row = store.order(out_trade_no)
        store.order_lookup_failed(out_trade_no, str(exc), retry_at=now + backoff(settings, row["checks"] if row else 0))
        raise
    fields = {"out_trade_no": out_trade_no}
    if mismatch := differences(order, claimed):
        log.warning("afdian order %s: the webhook's body differs from afdian's record: %s", out_trade_no,
                    "; ".join(mismatch), extra={**fields, "outcome": "forged webhook"})
    verdict = judge(order, plans(settings))
    result = store.settle_order(out_trade_no, paid=verdict.paid, reason=verdict.reason, facts=verdict.facts,
                                codes=verdict.codes, tell=teller(settings), recheck_s=settings.recheck_s, now=now)
    outcome = result["outcome"]
    fields.update(outcome=outcome, user_id=result.get("user_id"), amount_cents=result.get("amount_cents"))
    if outcome == "refused":
        log.warning("afdian order %s refused: %s; nothing granted", out_trade_no, verdict.reason, extra=fields)
    elif outcome == "granted":
        log.info("afdian order %s: %s paid, %s days granted to u%s (%s)", out_trade_no,
                 money(result["amount_cents"]), result["days"], result["user_id"], result["bound_by"], extra=fields)
    elif outcome == "unclaimed":
        log.warning("afdian order %s: %s paid, bound to no user (no bind code, nobody claimed it)%s; kept "
                    "unclaimed", out_trade_no, money(result["amount_cents"]),
                    f": {result['reason']}" if result.get("reason") else "", extra=fields)
    else:
        log.info("afdian order %s was settled before (%s); nothing to do", out_trade_no, result["status"],
                 extra=fields)
    return result


def claim(store, user_id: int, number: str, settings: Settings) -> tuple[str, bool]:
    """A user sent an afdian order number (`兑换 <order number>`): (the reply, whether the order must be
    looked up now). Wrong numbers count toward the same hourly limit as wrong codes."""
    try:
        outcome, order = store.claim_order(user_id, number, max_failures=codes.MAX_FAILURES,
                                           window_s=codes.FAILURE_WINDOW_S, recheck_s=settings.recheck_s)
    except MembershipTooLong:
        return texts.MEMBERSHIP_TOO_LONG, False
    if outcome == "limited":
        return texts.REDEEM_LIMITED, False
    if outcome == "granted":
        log.info("afdian order %s claimed in chat by u%s: %s days", number, user_id, order["days"],
                 extra={"out_trade_no": number, "user_id": user_id, "outcome": "granted"})
        return teller(settings)("granted", order), False
    if outcome == "yours":
        until = members.local_time(store.user(user_id)["member_until"], settings.tz)
        return texts.ORDER_YOURS.format(order=number, until=until), False
    if outcome == "taken":
        log.warning("afdian order %s, granted to u%s, was claimed by u%s", number, order["user_id"], user_id,
                    extra={"out_trade_no": number, "user_id": user_id, "outcome": "claim refused"})
        return texts.ORDER_INVALID, False
    return texts.ORDER_CHECKING.format(order=number), True


def buy_reply(store, user_id: int, settings: Settings) -> str:
    """The reply to the buy command: the purchase link carrying the user's bind code."""
    if not settings.afdian_link:
        return texts.BUY_UNAVAILABLE
    code = store.bind_code(user_id, new_bind_code)
    return (settings.buy_text.replace("{link}", buy_link(settings.afdian_link, code)).replace("{code}", shown(code))
            .replace("{redeem}", settings.command_redeem[0]))
