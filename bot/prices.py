"""Money: LLM prices per million tokens, the cost of tokens, and amounts in cents.

Amounts are `Decimal` (exact) or whole cents (hundredths of `CHATGATE_CURRENCY`, as the store keeps
code prices and order amounts): never floats. A cost is worked out from stored tokens when asked
(`cost`), so a price change applies to every answer already given. `prices` is the parsed
`CHATGATE_PRICES`: (model, input, output) per million tokens; the model `*` prices any other.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

Prices = tuple[tuple[str, Decimal, Decimal], ...]
MILLION = Decimal(1_000_000)
CENT = Decimal("0.01")
MAX_PRICE = Decimal("1000000")
"""The highest price one code may carry."""


def price_of(prices: Prices, model: str) -> tuple[Decimal, Decimal] | None:
    """(input, output) per million tokens of `model`, the `*` price, or None when it is unpriced."""
    fallback = None
    for name, p_in, p_out in prices:
        if name == model:
            return p_in, p_out
        if name == "*":
            fallback = (p_in, p_out)
    return fallback


def cost(prices: Prices, model: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """What the tokens cost (exact); 0 for an unpriced model."""
    price = price_of(prices, model or "")
    if price is None:
        return Decimal(0)
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / MILLION


def total_cost(prices: Prices, rows: Iterable) -> Decimal:
    """The cost of rows of (model, prompt tokens, completion tokens)."""
    return sum((cost(prices, model, p or 0, c or 0) for model, p, c in rows), Decimal(0))


def unpriced(prices: Prices, models: Iterable[str]) -> list[str]:
    """The models among `models` that have no price (they count as costing nothing)."""
    return sorted({m or "" for m in models if price_of(prices, m or "") is None})


def to_cents(text: str) -> int:
    """`19.9` → 1990. `ValueError` for a negative, malformed or too large amount, or one finer than a cent."""
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"not an amount: {text!r}") from None
    if not amount.is_finite() or amount < 0 or amount > MAX_PRICE:
        raise ValueError(f"an amount from 0 to {MAX_PRICE} is expected, not {text!r}")
    if amount != amount.quantize(CENT):
        raise ValueError(f"{text!r} is finer than a cent")
    return int(amount * 100)


def from_cents(cents: int | None) -> Decimal:
    """1990 → Decimal('19.90')."""
    return (Decimal(cents or 0) / 100).quantize(CENT)


def shown(amount: Decimal, places: int = 2) -> str:
    """An amount rounded half up to `places` decimals, as text (`12.35`)."""
    return str(amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))
