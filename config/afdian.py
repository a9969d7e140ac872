"""The settings of selling memberships on afdian (爱发电): the plans and the buy command's reply.

`AFDIAN_PLANS` says which afdian plan (or SKU) gives how many membership days, at what price:
`plan_id=days` or `plan_id=days@price`, comma-separated, e.g.
`a45353328af911eb973052540025c377=30@19.90,b082342c4aba11ebb5cb52540025c377=365`. Prices are kept in
cents (integers), so that nothing is lost to floating point.
"""

from __future__ import annotations

import re

MAX_PLAN_DAYS = 36_500
"""`bot.limits.MAX_DAYS`: the most days one plan may give (config does not import bot)."""

BUY_TEXT = ("开通会员请点击：{link}\n"
            "付款时请保留订单的绑定码 {code}（如需填写留言，请写上它），付款后会员自动开通。"
            "若几分钟内没有开通，请发送“{redeem} 订单号”。\n"
            "Become a member: {link}\n"
            "Your bind code {code} travels with the order (if afdian asks for a note, write it there); the "
            "membership starts by itself once paid. If it has not within a few minutes, send "
            "“{redeem} <order number>”.")
"""The default reply to the buy command."""


def parse_plans(raw: str) -> tuple[tuple[str, int, int | None], ...]:
    """afdian plans or SKUs and the membership days each gives: `plan_id=days` or `plan_id=days@price`,
    comma-separated. Returns (id, days, price in cents or None) per entry."""
    plans: dict[str, tuple[str, int, int | None]] = {}
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        key, sep, value = (part.strip() for part in entry.partition("="))
        days_text, _, price_text = (part.strip() for part in value.partition("@"))
        if not sep or not key or not re.fullmatch(r"[0-9]{1,6}", days_text) or not 1 <= int(days_text) <= MAX_PLAN_DAYS:
            raise ValueError(f"{entry!r}: expected plan_id=days (1-{MAX_PLAN_DAYS}) or plan_id=days@price")
        if key in plans:
            raise ValueError(f"plan {key!r} is listed twice")
        plans[key] = (key, int(days_text), parse_cents(price_text) if price_text else None)
    return tuple(plans.values())


def parse_cents(raw: str) -> int:
    """A price such as `19.90` in cents; positive, at most two decimals."""
    cents = amount_cents(raw)
    if cents is None:
        raise ValueError(f"{raw!r} is not a price such as 19.90")
    if cents <= 0:
        raise ValueError(f"{raw!r}: a price must be more than 0")
    return cents


def amount_cents(text: str) -> int | None:
    """An amount as afdian and `AFDIAN_PLANS` write it (`19.90`, `5`, `0.5`) in cents; None when it is
    not one (a sign, letters, more than two decimals, more than ten digits)."""
    m = re.fullmatch(r"([0-9]{1,10})(?:\.([0-9]{1,2}))?", text.strip())
    if m is None:
        return None
    return int(m.group(1)) * 100 + int((m.group(2) or "0").ljust(2, "0"))


def money(cents: int) -> str:
    """Cents as a price: 1990 → `19.90`."""
    return f"{cents // 100}.{cents % 100:02d}"


def plans_text(plans) -> str:
    """Plans as `AFDIAN_PLANS` writes them."""
    return ",".join(f"{key}={days}" + (f"@{money(price)}" if price else "") for key, days, price in plans)
