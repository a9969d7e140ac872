"""The LLM behind the bot: any OpenAI-compatible endpoint through the `openai` SDK.

`LLM.complete(messages)` streams the answer and enforces a wall-clock deadline for the whole
answer (the SDK's timeout is per network read). Failures come out as `TransientFailure` (retry
later) or `PermanentFailure` (a bad key or a rejected request: retrying will not help). The SDK's
own retries are off: RQ does the retrying, with back-off between tries.
"""

from __future__ import annotations

import time

import openai

from bot import texts
from bot.errors import PermanentFailure, TransientFailure
from config import Settings


class LLM:
    """Chat completions from an OpenAI-compatible endpoint."""

    def __init__(self, settings: Settings):
        self.model = settings.model
        self.deadline = settings.llm_timeout
        self.client = openai.OpenAI(
            api_key=settings.openai_api_key, base_url=settings.openai_base_url or None,
            timeout=openai.Timeout(settings.llm_timeout, connect=min(10.0, settings.llm_timeout)),
            max_retries=0)

    def complete(self, messages: list[dict]) -> str:
        started = time.monotonic()
        parts: list[str] = []
        try:
            stream = self.client.chat.completions.create(model=self.model, messages=messages, stream=True)
            with stream:
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        parts.append(chunk.choices[0].delta.content)
                    if time.monotonic() - started > self.deadline:
                        raise TransientFailure(f"LLM answer took longer than {self.deadline:g}s")
        except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError,
                openai.ConflictError) as exc:
            raise TransientFailure(f"LLM unavailable: {type(exc).__name__}") from None
        except openai.APIStatusError as exc:
            if exc.status_code in (408, 409, 425, 429) or exc.status_code >= 500:
                raise TransientFailure(f"LLM unavailable: HTTP {exc.status_code}") from None
            raise PermanentFailure(f"LLM refused the request: HTTP {exc.status_code}") from None
        except openai.APIError as exc:  # malformed stream and the like
            raise TransientFailure(f"LLM error: {type(exc).__name__}") from None
        answer = "".join(parts).strip()
        if not answer:
            raise TransientFailure("LLM returned an empty answer")
        return answer


class DemoLLM:
    """Development without OPENAI_API_KEY: an offline responder that says plainly it is a demo."""

    model = "demo"

    def complete(self, messages: list[dict]) -> str:
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        turns = sum(1 for m in messages if m["role"] == "user")
        return (f"{texts.DEMO_PREFIX}You asked: “{question}”. "
                f"This conversation has {turns} question(s) so far.")


def llm_for(settings: Settings):
    """The real LLM, or the demo responder in development without a key (never in production)."""
    if settings.demo_llm:
        return DemoLLM()
    return LLM(settings)
