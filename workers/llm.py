"""The LLM behind the bot: any OpenAI-compatible endpoint through the `openai` SDK.

`LLM.complete(messages)` streams the answer and enforces a wall-clock deadline for the whole
answer (the SDK's timeout is per network read). Failures come out as `TransientFailure` (retry
later) or `PermanentFailure` (a bad key or a rejected request: retrying will not help). The SDK's
own retries are off: RQ does the retrying, with back-off between tries.

Each answer's timings (`timing`: time to the first token and to the whole answer) and the tokens the
endpoint reports go to the metrics. Usage is asked for with `stream_options.include_usage`; an
endpoint that refuses that option (HTTP 400 naming it) is asked again without it, and this process
stops asking.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import openai

from bot import texts
from bot.errors import PermanentFailure, TransientFailure
from config import Settings, metrics


@dataclass
class Timing:
    """How long the last answer took, in seconds (None: no token came), and the tokens the endpoint
    reported for it (None: it reported none; the worker then estimates them, `bot/usage.py`)."""

    first_token_s: float | None = None
    total_s: float = 0.0
    reported: tuple[int, int] | None = None
    """(prompt, completion) tokens, as the endpoint's usage chunk said."""

    def ms(self) -> dict:
        """The timings in milliseconds, as log fields."""
        first = None if self.first_token_s is None else round(self.first_token_s * 1000)
        return {"first_token_ms": first, "llm_ms": round(self.total_s * 1000)}


class LLM:
    """Chat completions from an OpenAI-compatible endpoint."""

    def __init__(self, settings: Settings):
        self.model = settings.model
        self.deadline = settings.llm_timeout
        self.client = openai.OpenAI(
            api_key=settings.openai_api_key, base_url=settings.openai_base_url or None,
            timeout=openai.Timeout(settings.llm_timeout, connect=min(10.0, settings.llm_timeout)),
            max_retries=0)
        self.ask_usage = True
        self.timing = Timing()

    def complete(self, messages: list[dict]) -> str:
        started = time.monotonic()
        self.timing = Timing()
        try:
            answer = self._stream(messages, started)
        except TransientFailure:
            metrics.LLM_REQUESTS.labels("transient").inc()
            raise
        except PermanentFailure:
            metrics.LLM_REQUESTS.labels("permanent").inc()
            raise
        finally:
            self.timing.total_s = time.monotonic() - started
        metrics.LLM_REQUESTS.labels("ok").inc()
        metrics.LLM_ANSWER.observe(self.timing.total_s)
        return answer

    def _stream(self, messages: list[dict], started: float) -> str:
        parts: list[str] = []
        usage = None
        try:
            try:
                stream = self._create(messages)
            except openai.BadRequestError as exc:
                if not (self.ask_usage and "stream_options" in str(exc)):
                    raise
                self.ask_usage = False  # an endpoint without usage in streams: ask as before
                stream = self._create(messages)
            with stream:
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        if not parts:
                            self.timing.first_token_s = time.monotonic() - started
                            metrics.LLM_FIRST_TOKEN.observe(self.timing.first_token_s)
                        parts.append(chunk.choices[0].delta.content)
                    if getattr(chunk, "usage", None):
                        usage = chunk.usage
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
        if usage is not None:
            metrics.LLM_TOKENS.labels("prompt").inc(usage.prompt_tokens or 0)
            metrics.LLM_TOKENS.labels("completion").inc(usage.completion_tokens or 0)
            self.timing.reported = (usage.prompt_tokens or 0, usage.completion_tokens or 0)
        answer = "".join(parts).strip()
        if not answer:
            raise TransientFailure("LLM returned an empty answer")
        return answer

    def _create(self, messages: list[dict]):
        extra = {"stream_options": {"include_usage": True}} if self.ask_usage else {}
        return self.client.chat.completions.create(model=self.model, messages=messages, stream=True, **extra)


class DemoLLM:
    """Development without OPENAI_API_KEY: an offline responder that says plainly it is a demo."""

    model = "demo"
    timing = Timing()

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
