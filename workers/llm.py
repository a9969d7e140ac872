"""The LLM behind the bot: any OpenAI-compatible endpoint through the `openai` SDK.

`LLM.complete(messages)` streams the answer within a wall-clock deadline for the whole answer
(CHATGATE_LLM_TIMEOUT; the SDK's own timeout is per network read), enforced by a `gevent.Timeout`
and between chunks. Failures come out as `TransientFailure` (retry later) or `PermanentFailure` (a
bad key or a rejected request: retrying will not help). The SDK's own retries are off: RQ does the
retrying, with back-off between tries.

A 429 is honoured inside the same try: its `retry-after-ms` or `Retry-After` (else 1, 2, 4… s) is
waited out and the call made again, as long as that fits before the deadline (past it, the try fails
as transient and RQ's retry delays apply), and every worker holds its calls meanwhile (`Backoff` in
`workers/limits.py`). A 429 that says the quota is used up is not waited for.

A reasoning model's thinking (a `reasoning_content` field, or `<think>…</think>` inline in the content)
is kept out of the answer as it streams (`workers/thinking.py`): it is never shown, stored, sent back
as history nor paged. It counts against the deadline like the answer: a model that is still thinking
when the deadline passes fails the try as transient, and one that only thinks has no answer (also
transient). Its length is logged and its tokens counted when the endpoint reports none.

One `LLM` serves every answer of a worker process at once: one openai client whose HTTP connection
pool holds a connection per answer in flight (CHATGATE_WORKER_CONCURRENCY). Each answer's timings
(`timing`, kept per greenlet: time to the first token and to the whole answer) and the tokens the
endpoint reports go to the metrics. Usage is asked for with `stream_options.include_usage`; an
endpoint that refuses that option (HTTP 400 naming it) is asked again without it, and this process
stops asking.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import gevent
import openai

from bot import texts
from bot.errors import PermanentFailure, TransientFailure
from config import Settings, metrics
from workers.limits import Backoff
from workers.marks import Mark
from workers.thinking import ThinkingSplitter

log = logging.getLogger("chatgate.worker")

OnDelta = Callable[[str, str], None]
"""Told the answer so far and the thinking so far, each time the stream adds to either."""

KEEP_ALIVE = 32
"""Idle connections to the LLM endpoint a worker process keeps open."""
MAX_UNSAID_WAIT_S = 8.0
"""The longest wait after a 429 that names no time (1, 2, 4, 8 s…)."""


@dataclass
class Timing:
    """How long the last answer took, in seconds (None: no token came), and the tokens the endpoint
    reported for it (None: it reported none; the worker then estimates them, `bot/usage.py`)."""

    first_token_s: float | None = None
    """To the first token of any kind, thinking or answer."""
    first_answer_s: float | None = None
    """To the first character of the answer (after any thinking)."""
    total_s: float = 0.0
    reported: tuple[int, int] | None = None
    """(prompt, completion) tokens, as the endpoint's usage chunk said."""
    thinking: str = ""
    """The model's thinking (never shown, stored or sent back): its tokens are billed as completion
    tokens, so an estimate of the usage counts them."""

    def ms(self) -> dict:
        """The timings in milliseconds, as log fields."""
        def ms(s: float | None) -> int | None:
            return None if s is None else round(s * 1000)
        return {"first_token_ms": ms(self.first_token_s), "first_answer_ms": ms(self.first_answer_s),
                "llm_ms": ms(self.total_s)}


class RateLimited(TransientFailure):
    """HTTP 429; `retry_after` is the wait it asked for in seconds (None: it did not say)."""

    def __init__(self, message: str, retry_after: float | None):
        super().__init__(message)
        self.retry_after = retry_after


def retry_after(headers) -> float | None:
    """The wait a response asks for: `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date."""
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        raw = headers.get("retry-after")
        if not raw:
            return None
        try:
            return max(0.0, float(raw))
        except ValueError:
            return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def httpx_module():
    """The HTTP library under this openai SDK version: httpx (openai 1.x) or httpx2."""
    return sys.modules[openai.DefaultHttpxClient.__mro__[1].__module__.partition(".")[0]]


def http_client(connections: int):
    """The openai SDK's own HTTP client class with a pool of up to `connections` connections, of which
    `KEEP_ALIVE` are kept idle for the next calls (the pool looks at every idle connection on each
    request: hundreds kept idle would cost more than they save)."""
    limits = httpx_module().Limits(max_connections=connections, max_keepalive_connections=min(connections, KEEP_ALIVE))
    return openai.DefaultHttpxClient(limits=limits)


class LLM:
    """Chat completions from an OpenAI-compatible endpoint, for many answers at once."""

    def __init__(self, settings: Settings, redis=None):
        self.model = settings.model
        self.deadline = settings.llm_timeout
        self.client = openai.OpenAI(
            api_key=settings.openai_api_key, base_url=settings.openai_base_url or None,
            timeout=openai.Timeout(settings.llm_timeout, connect=min(10.0, settings.llm_timeout)),
            max_retries=0, http_client=http_client(max(settings.worker_concurrency, 10)))
        self.backoff = Backoff(redis) if redis is not None else None
        self.ask_usage = True
        self.unopened = Mark(redis, f"chatgate:llm:{self.model}:unopened-think", 30 * 86400)
        """The model has streamed a `</think>` with no opening tag: hold its answers back until one.
        Learnt from the first such answer, and remembered in Redis for every worker process."""
        self._local = threading.local()  # per greenlet in a gevent-patched worker
        self._http_errors = httpx_module().HTTPError

    @property
    def timing(self) -> Timing:
        """The timings of the last answer of the calling greenlet (or thread)."""
        return getattr(self._local, "timing", None) or Timing()

    def close(self) -> None:
        self.client.close()

    def complete(self, messages: list[dict], on_delta: OnDelta | None = None) -> str:
        """The answer to `messages`. `on_delta(answer_so_far, thinking_so_far)` is called as the
        stream grows (the answer never holds the model's thinking)."""
        started = time.monotonic()
        timing = self._local.timing = Timing()
        timer = gevent.Timeout(self.deadline)
        timer.start()
        try:
            answer = self._complete(messages, started, timing, on_delta)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            metrics.LLM_REQUESTS.labels("transient").inc()
            raise TransientFailure(f"LLM answer took longer than {self.deadline:g}s") from None
        except TransientFailure:
            metrics.LLM_REQUESTS.labels("transient").inc()
            raise
        except PermanentFailure:
            metrics.LLM_REQUESTS.labels("permanent").inc()
            raise
        finally:
            timer.close()
            timing.total_s = time.monotonic() - started
        metrics.LLM_REQUESTS.labels("ok").inc()
        metrics.LLM_ANSWER.observe(timing.total_s)
        return answer

    def _complete(self, messages: list[dict], started: float, timing: Timing, on_delta: OnDelta | None) -> str:
        """Call until answered; a 429 is waited out while that fits before the deadline."""
        deadline = started + self.deadline
        unsaid = 0
        while True:
            if self.backoff is not None:
                self.backoff.wait(deadline)
            try:
                return self._stream(messages, started, timing, on_delta)
            except RateLimited as exc:
                if exc.retry_after is None:
                    unsaid += 1
                    wait = min(2.0 ** (unsaid - 1), MAX_UNSAID_WAIT_S)
                else:
                    wait = exc.retry_after
                if time.monotonic() + wait >= deadline:
                    raise TransientFailure(f"{exc}; waiting {wait:g}s would pass the answer's deadline") from None
                metrics.LLM_REQUESTS.labels("rate_limited").inc()
                log.info("the LLM endpoint is rate limiting (HTTP 429): every worker waits %.1fs", wait,
                         extra={"outcome": "rate limited", "wait_ms": round(wait * 1000)})
                if self.backoff is not None:
                    self.backoff.hold(wait)
                else:
                    gevent.sleep(wait)

    def _stream(self, messages: list[dict], started: float, timing: Timing, on_delta: OnDelta | None) -> str:
        """One streamed call. The SDK makes the request (auth, base URL, timeouts, status errors); the
        server-sent events are read here, to the end of the body: the SDK's own `Stream` stops reading
        at `[DONE]` and closes the response, which throws the connection away (a new TCP and TLS
        handshake per answer), and builds a pydantic model per chunk where two fields are wanted."""
        split = ThinkingSplitter(unopened=self.unopened.is_set())
        usage = None
        try:
            try:
                call = self._create(messages)
                response = call.__enter__()
            except openai.BadRequestError as exc:
                if not (self.ask_usage and "stream_options" in str(exc)):
                    raise
                self.ask_usage = False  # an endpoint without usage in streams: ask as before
                call = self._create(messages)
                response = call.__enter__()
            try:
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        continue  # the body ends right after: read on, so the connection is kept
                    event = json.loads(data)
                    if event.get("error"):
                        raise TransientFailure(f"LLM error in the stream: {str(event['error'])[:200]}")
                    choices = event.get("choices") or ()
                    delta = (choices[0].get("delta") or {}) if choices else {}
                    content, reasoning = delta.get("content"), delta.get("reasoning_content") or delta.get("reasoning")
                    if content or reasoning:
                        if timing.first_token_s is None:
                            timing.first_token_s = time.monotonic() - started
                            metrics.LLM_FIRST_TOKEN.observe(timing.first_token_s)
                        grew = split.reasoning(reasoning) if isinstance(reasoning, str) else False
                        if isinstance(content, str):
                            grew = split.content(content) or grew
                        if grew:
                            self._report(split, started, timing, on_delta)
                    if event.get("usage"):
                        usage = event["usage"]
                    if time.monotonic() - started > self.deadline:
                        raise TransientFailure(f"LLM answer took longer than {self.deadline:g}s")
            finally:
                call.__exit__(None, None, None)
        except openai.RateLimitError as exc:
            if "insufficient_quota" in str(exc):  # waiting will not help; the operator must top up
                raise TransientFailure("LLM unavailable: RateLimitError (the quota is used up)") from None
            raise RateLimited("LLM rate limited: HTTP 429", retry_after(exc.response.headers)) from None
        except (openai.APIConnectionError, openai.InternalServerError, openai.ConflictError) as exc:
            raise TransientFailure(f"LLM unavailable: {type(exc).__name__}") from None
        except openai.APIStatusError as exc:
            if exc.status_code in (408, 409, 425, 429) or exc.status_code >= 500:
                raise TransientFailure(f"LLM unavailable: HTTP {exc.status_code}") from None
            raise PermanentFailure(f"LLM refused the request: HTTP {exc.status_code}") from None
        except openai.APIError as exc:  # malformed responses and the like
            raise TransientFailure(f"LLM error: {type(exc).__name__}") from None
        except self._http_errors as exc:  # the connection broke or timed out mid-stream
            raise TransientFailure(f"LLM unavailable: {type(exc).__name__} while streaming") from None
        except (ValueError, AttributeError, IndexError, TypeError) as exc:  # not the JSON events of a chat stream
            raise TransientFailure(f"LLM error: a malformed stream ({type(exc).__name__})") from None
        if usage:
            metrics.LLM_TOKENS.labels("prompt").inc(usage.get("prompt_tokens") or 0)
            metrics.LLM_TOKENS.labels("completion").inc(usage.get("completion_tokens") or 0)
            timing.reported = (usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
        shown = split.answer
        answer, timing.thinking = split.finish()
        if split.unopened and not self.unopened.is_set():
            self.unopened.set()  # from now on its answers are held back until the `</think>`
            log.info("the model %s streams its thinking without an opening <think>: its answers are held back "
                     "until the thinking ends", self.model, extra={"outcome": "unopened thinking"})
        if answer != shown:
            self._report(split, started, timing, on_delta)
        answer = answer.strip()
        if not answer:
            raise TransientFailure("LLM returned an empty answer" if not timing.thinking
                                   else "LLM returned only thinking, no answer")
        return answer

    @staticmethod
    def _report(split: ThinkingSplitter, started: float, timing: Timing, on_delta: OnDelta | None) -> None:
        """Tell `on_delta` how the answer and the thinking stand; note the first answer character."""
        if not split.answered:
            timing.first_answer_s = None  # none yet, or what looked like one was thinking (`retracted`)
        elif timing.first_answer_s is None:
            timing.first_answer_s = time.monotonic() - started
        if on_delta is not None:
            on_delta(split.answer, split.thinking)

    def _create(self, messages: list[dict]):
        extra = {"stream_options": {"include_usage": True}} if self.ask_usage else {}
        return self.client.chat.completions.with_streaming_response.create(
            model=self.model, messages=messages, stream=True, **extra)


class DemoLLM:
    """Development without OPENAI_API_KEY: an offline responder that says plainly it is a demo."""

    model = "demo"
    timing = Timing()

    def close(self) -> None:
        pass

    def complete(self, messages: list[dict], on_delta: OnDelta | None = None) -> str:
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        turns = sum(1 for m in messages if m["role"] == "user")
        answer = (f"{texts.DEMO_PREFIX}You asked: “{question}”. "
                  f"This conversation has {turns} question(s) so far.")
        if on_delta is not None:
            on_delta(answer, "")
        return answer


def llm_for(settings: Settings, redis=None):
    """The real LLM (sharing its 429 back-off with every worker through `redis`, if given), or the demo
    responder in development without a key (never in production)."""
    if settings.demo_llm:
        return DemoLLM()
    return LLM(settings, redis)
