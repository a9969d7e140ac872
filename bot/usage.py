"""Tokens an answer used: as the endpoint reported them, or estimated when it reported none.

The estimate is deliberately simple and documented (README, Figures): CJK characters (Chinese,
Japanese kana, Korean, full-width forms) count one token each, every other character a quarter of a
token (rounded up per text), and each message sent adds `PER_MESSAGE` tokens for the chat format.
It is counted over the messages actually sent (system prompt, history, question) and the answer,
with the model's thinking (never shown nor stored, but billed as completion tokens).
Real tokenizers differ by model; the estimate is marked as such wherever it is shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PER_MESSAGE = 4
"""Tokens the chat format adds per message (role and separators), as OpenAI documents for its models."""
CHARS_PER_TOKEN = 4
"""Characters per token outside CJK scripts (English averages about four)."""
_CJK = re.compile("[\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
                  "\uf900-\ufaff\uff00-\uffef\U00020000-\U0003134f]")


@dataclass(frozen=True)
class Usage:
    """The tokens of one answer and the model that gave it; `estimated` when the endpoint sent none."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False


@dataclass(frozen=True)
class DayUsage:
    """A day's usage right after an answer was stored: rows of (model, prompt tokens, completion
    tokens), and the answer's own `usage`. Always true (an answer was stored)."""

    day: str
    rows: tuple[tuple[str, int, int], ...] = ()
    usage: Usage | None = None

    def before(self) -> tuple[tuple[str, int, int], ...]:
        """The day's rows as they were before this answer."""
        u = self.usage
        if u is None:
            return self.rows
        return tuple((m, p - u.prompt_tokens, c - u.completion_tokens) if m == u.model else (m, p, c)
                     for m, p, c in self.rows)


def estimate_tokens(text: str) -> int:
    """About how many tokens `text` is: one per CJK character, one per four other characters."""
    cjk = len(_CJK.findall(text))
    return cjk + -(-(len(text) - cjk) // CHARS_PER_TOKEN)


def estimate(model: str, messages: list[dict], answer: str, thinking: str = "") -> Usage:
    """The estimated usage of asking `messages` and getting `answer` after the model's `thinking`
    (billed as completion tokens too; see the module docstring)."""
    prompt = sum(estimate_tokens(str(m.get("content") or "")) + PER_MESSAGE for m in messages)
    return Usage(model, prompt, estimate_tokens(answer) + estimate_tokens(thinking), estimated=True)


def measured(model: str, reported: tuple[int, int] | None, messages: list[dict], answer: str,
             thinking: str = "") -> Usage:
    """The endpoint's `(prompt, completion)` tokens if it reported them, else the estimate."""
    if reported is None:
        return estimate(model, messages, answer, thinking)
    return Usage(model, int(reported[0]), int(reported[1]))
