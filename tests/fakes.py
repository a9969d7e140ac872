"""Local fake HTTP servers for the end-to-end tests: WeChat's, Feishu's and afdian's APIs and an
OpenAI-compatible LLM.

Everything listens on 127.0.0.1 with an ephemeral port; the real SDK clients (wechatpy, openai) are
pointed at `.url`. Each server records every request and can be scripted to fail or stall.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from handlers.simulator.cardkit import FakeCards

__all__ = ["RecordedRequest", "Response", "RecordingServer", "FakeWeChat", "FakeLLM", "FakeFeishu", "FakeAfdian"]


@dataclass
class RecordedRequest:
    """One request as the server saw it. `headers` keys are lower-case; `body` is parsed JSON or raw bytes."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    raw: bytes = b""
    at: float = field(default_factory=time.monotonic)
    """When it came (`time.monotonic()`)."""


@dataclass
class Response:
    """What a route returns. `body`: dict/list (sent as JSON), bytes/str, or an iterable of bytes (streamed)."""

    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive like the real APIs; streamed bodies use chunked encoding
    disable_nagle_algorithm = True  # as servers do: a kept-alive connection's small writes go out at once
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr logging
        pass

    def _dispatch(self):
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, ValueError):
            body = raw
        req = RecordedRequest(self.command, url.path, dict(parse_qsl(url.query, keep_blank_values=True)),
                              {k.lower(): v for k, v in self.headers.items()}, body, raw)
        owner = self.server.owner
        owner._record(req)
        owner._enter(req)
        try:
            try:
                resp = owner.route(req)
            except Exception as exc:  # a bug in a fake must show up as a 500, not a hung client
                resp = Response(500, {"error": {"message": f"fake server error: {exc!r}", "type": "server_error"}})
            self._send(resp)
        finally:
            owner._leave(req)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def _send(self, resp: Response):
        body = resp.body
        if isinstance(body, dict | list):
            body = json.dumps(body, ensure_ascii=False).encode("utf-8")
            resp.headers.setdefault("Content-Type", "application/json; charset=utf-8")
        elif isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(resp.status)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        if isinstance(body, bytes | bytearray):
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in body:
            if piece:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # hundreds of clients connecting at once (socketserver's default is 5)
    block_on_close = False  # never join handler threads on close: a stalled handler must not block stop()
    owner: RecordingServer

    def handle_error(self, request, client_address):
        pass  # clients hanging up mid-answer (timeouts) are expected in tests

    def process_request(self, request, client_address):
        with self.owner._cond:
            self.owner.connections += 1
        super().process_request(request, client_address)


class RecordingServer:
    """A threaded HTTP server on 127.0.0.1:<ephemeral> that records requests. Subclasses implement `route()`."""

    def __init__(self):
        self._cond = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._wake = threading.Event()  # set to cut short any in-progress scripted delay
        self.connections = 0
        """TCP connections accepted so far (a client that keeps its connections alive opens few)."""
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --
    def start(self):
        """Bind and serve in a daemon thread; returns self."""
        if self._httpd is None:
            self._httpd = _Server(("127.0.0.1", 0), _Handler)
            self._httpd.owner = self
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=f"{type(self).__name__}-server", daemon=True)
            self._thread.start()
        return self

    def stop(self):
        """Stop serving and close the socket; stalled handlers are woken and abandoned."""
        self._interrupt_delays()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- records --
    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received, in order."""
        with self._cond:
            return list(self._requests)

    def reset(self):
        """Forget recorded requests and scripted behaviour (failures, delays)."""
        self._interrupt_delays()
        with self._cond:
            self._requests.clear()
            self._reset_state()
            self._cond.notify_all()

    def _reset_state(self):
        """Subclass hook, called under the lock by reset()."""

    def _record(self, req: RecordedRequest):
        with self._cond:
            self._requests.append(req)
            self._cond.notify_all()

    def _enter(self, req: RecordedRequest):
        """Subclass hook: a request is being answered (called before `route`)."""

    def _leave(self, req: RecordedRequest):
        """Subclass hook: its response has been sent to the end (or the client went away)."""

    def _wait(self, predicate: Callable[[], bool], timeout: float, what: str):
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise TimeoutError(f"{type(self).__name__}: timed out after {timeout}s waiting for {what}")

    def _sleep(self, seconds: float):
        """Sleep, but return early when the server is stopped or reset."""
        if seconds > 0:
            self._wake.wait(seconds)

    def _interrupt_delays(self):
        wake, self._wake = self._wake, threading.Event()
        wake.set()

    def route(self, req: RecordedRequest) -> Response:
        return Response(404, {"error": "not found"})


class FakeWeChat(RecordingServer):
    """Mimics api.weixin.qq.com for wechatpy's WeChatClient: access tokens, customer-service text
    messages and the typing state.

    Point the client at it with `API_BASE_URL = fake.url + "/cgi-bin/"` (and the token URL likewise).
    Issued tokens stay valid (WeChat's grace period) unless `strict_tokens=True`, where a new token
    invalidates all older ones. Tokens survive `reset()`; use `forget_tokens()` to drop them.

    Typing (`/cgi-bin/message/custom/typing`) keeps WeChat's rules: a user's message must have come
    within 30 s (the fake cannot see the webhook: a test says when with `user_wrote(openid)`), else
    45015; a Typing while one shows (asked within 15 s, no message sent since) gets 45081. Every call
    is recorded in `.typing`, accepted or not.
    """

    def __init__(self, app_id: str = "wx123", app_secret: str = "s3cret", strict_tokens: bool = False):
        super().__init__()
        self.app_id, self.app_secret, self.strict_tokens = app_id, app_secret, strict_tokens
        self._seq = 0
        self._valid: list[str] = []  # issued and still valid, oldest first
        self.token_fetches = 0
        self._sent: list[tuple[str, str]] = []
        self._fail: tuple[int, str] | None = None
        self._fail_times: int | None = 0
        self._send_delay = 0.0
        self._down_until = 0.0
        self.refused_sends = 0
        self._typing: list[TypingCall] = []
        self._wrote: dict[str, float] = {}  # openid → when the user last wrote (monotonic)
        self._typing_since: dict[str, float] = {}  # openid → when its showing typing state began
        self._typing_fail: tuple[int, int | None] | None = None  # (status, errcode) of a scripted failure
        self._typing_fail_times: int | None = 0
        self._typing_delay = 0.0

    def _reset_state(self):
        self.token_fetches = self.refused_sends = 0
        self._sent.clear()
        self._fail, self._fail_times, self._send_delay, self._down_until = None, 0, 0.0, 0.0
        self._typing.clear()
        self._wrote.clear()
        self._typing_since.clear()
        self._typing_fail, self._typing_fail_times, self._typing_delay = None, 0, 0.0

    # -- scripting --
    def fail_send(self, errcode: int, times: int | None = 1, errmsg: str = "scripted failure"):
        """Make the next `times` sends (with a valid token) return `errcode`; times=None means always."""
        with self._cond:
            self._fail, self._fail_times = (errcode, errmsg), times

    def reset_failures(self):
        """Stop failing sends and typing calls (what was recorded stays)."""
        with self._cond:
            self._fail, self._fail_times, self._down_until = None, 0, 0.0
            self._typing_fail, self._typing_fail_times = None, 0

    def down_for(self, seconds: float):
        """Answer every send with HTTP 503 for the next `seconds` (an outage of the API)."""
        with self._cond:
            self._down_until = time.monotonic() + seconds

    def delay_send(self, seconds: float):
        """Sleep `seconds` before answering each send."""
        self._send_delay = seconds

    def user_wrote(self, openid: str):
        """The user sent the account a message now: typing may be shown to them for 30 s."""
        with self._cond:
            self._wrote[openid] = time.monotonic()

    def fail_typing(self, errcode: int | None = None, *, status: int = 200, times: int | None = 1):
        """Make the next `times` typing calls (None: all) answer `errcode`, or HTTP `status` when it is not 200."""
        with self._cond:
            self._typing_fail, self._typing_fail_times = (status, errcode), times

    def delay_typing(self, seconds: float):
        """Sleep `seconds` before answering each typing call (a stalled API)."""
        self._typing_delay = seconds

    def invalidate(self, token: str):
        """Make one issued token invalid (sends with it get errcode 40001)."""
        with self._cond:
            if token in self._valid:
                self._valid.remove(token)

    def forget_tokens(self):
        """Invalidate every issued token."""
        with self._cond:
            self._valid.clear()

    # -- inspection --
    @property
    def sent(self) -> list[tuple[str, str]]:
        """(touser, content) of each successful send, in order."""
        with self._cond:
            return list(self._sent)

    @property
    def valid_tokens(self) -> list[str]:
        with self._cond:
            return list(self._valid)

    @property
    def typing(self) -> list[TypingCall]:
        """Every typing call that reached the fake, in order, accepted or not."""
        with self._cond:
            return list(self._typing)

    def wait_for_typing(self, n: int, timeout: float = 10) -> list[TypingCall]:
        """Block until at least `n` typing calls are recorded; returns `.typing`."""
        self._wait(lambda: len(self._typing) >= n, timeout, f"{n} typing call(s) (have {len(self._typing)})")
        return self.typing

    def wait_for_sent(self, n: int, timeout: float = 10) -> list[tuple[str, str]]:
        """Block until at least `n` successful sends are recorded; returns `.sent`."""
        self._wait(lambda: len(self._sent) >= n, timeout, f"{n} sent message(s) (have {len(self._sent)})")
        return self.sent

    # -- routes --
    def route(self, req: RecordedRequest) -> Response:
        if req.path == "/cgi-bin/token" and req.method == "GET":
            q = req.query
            if q.get("grant_type") != "client_credential":
                return Response(200, {"errcode": 40002, "errmsg": "invalid grant_type"})
            return Response(200, self._issue(q.get("appid"), q.get("secret"), rotate=True))
        if req.path == "/cgi-bin/stable_token" and req.method == "POST":
            b = req.body if isinstance(req.body, dict) else {}
            if b.get("grant_type") != "client_credential":
                return Response(200, {"errcode": 40002, "errmsg": "invalid grant_type"})
            return Response(200, self._issue(b.get("appid"), b.get("secret"), rotate=bool(b.get("force_refresh"))))
        if req.path == "/cgi-bin/message/custom/send" and req.method == "POST":
            if time.monotonic() < self._down_until:
                with self._cond:
                    self.refused_sends += 1
                return Response(503, "<html>503 Service Unavailable</html>")
            return Response(200, self._send_custom(req))
        if req.path == "/cgi-bin/message/custom/typing" and req.method == "POST":
            return self._typing_state(req)
        return Response(404, {"errcode": -1, "errmsg": f"fake: no route {req.method} {req.path}"})

    def _issue(self, appid, secret, rotate: bool) -> dict:
        with self._cond:
            self.token_fetches += 1
            if appid != self.app_id:
                return {"errcode": 40013, "errmsg": "invalid appid"}
            if secret != self.app_secret:
                return {"errcode": 40125, "errmsg": "invalid appsecret"}
            if rotate or not self._valid:
                self._seq += 1
                token = f"TOKEN-{self._seq}"
                self._valid = [token] if self.strict_tokens else [*self._valid, token]
            return {"access_token": self._valid[-1], "expires_in": 7200}

    def _send_custom(self, req: RecordedRequest) -> dict:
        self._sleep(self._send_delay)
        token = req.query.get("access_token")
        with self._cond:
            if not token:
                return {"errcode": 41001, "errmsg": "access_token missing"}
            if token not in self._valid:
                return {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"}
            if self._fail is not None and (self._fail_times is None or self._fail_times > 0):
                if self._fail_times is not None:
                    self._fail_times -= 1
                errcode, errmsg = self._fail
                self.refused_sends += 1
                return {"errcode": errcode, "errmsg": errmsg}
            b = req.body if isinstance(req.body, dict) else {}
            if b.get("msgtype") != "text" or not isinstance(b.get("text"), dict) or not b.get("touser"):
                return {"errcode": 44002, "errmsg": "empty post data / unsupported message in fake"}
            self._sent.append((b["touser"], b["text"].get("content", "")))
            self._typing_since.pop(b["touser"], None)  # a message ends the typing state
            self._cond.notify_all()
            return {"errcode": 0, "errmsg": "ok"}

    def _typing_state(self, req: RecordedRequest) -> Response:
        b = req.body if isinstance(req.body, dict) else {}
        with self._cond:
            call = TypingCall(b.get("touser", ""), b.get("command", ""), req.at)
            self._typing.append(call)
            self._cond.notify_all()
        self._sleep(self._typing_delay)
        with self._cond:
            if self._typing_fail is not None and (self._typing_fail_times is None or self._typing_fail_times > 0):
                if self._typing_fail_times is not None:
                    self._typing_fail_times -= 1
                status, errcode = self._typing_fail
                call.errcode = errcode if status == 200 else None
                if status != 200:
                    return Response(status, "<html>scripted failure</html>")
                return Response(200, {"errcode": errcode, "errmsg": "scripted failure"})
            call.errcode = self._typing_errcode(req.query.get("access_token"), call, call.at)
            if call.errcode:
                return Response(200, {"errcode": call.errcode, "errmsg": "refused by the fake"})
            if call.command == "Typing":
                self._typing_since[call.touser] = call.at
            else:
                self._typing_since.pop(call.touser, None)
            return Response(200, {"errcode": 0, "errmsg": "ok"})

    def _typing_errcode(self, token: str | None, call: TypingCall, now: float) -> int:
        if not token:
            return 41001
        if token not in self._valid:
            return 40001
        if not call.touser or call.command not in ("Typing", "CancelTyping"):
            return 44002
        if now - self._wrote.get(call.touser, -1e9) >= 30:
            return 45015  # no message of the user within 30 s
        if call.command == "Typing" and now - self._typing_since.get(call.touser, -1e9) < 15:
            return 45081  # one is showing
        return 0


@dataclass
class TypingCall:
    """One call of the typing API as the fake saw it."""

    touser: str
    command: str
    at: float
    """When it came (`time.monotonic()`)."""
    errcode: int | None = None
    """What the fake answered: 0 (shown) or an errcode; None: an HTTP error, or no answer yet."""


def _default_answer(messages: list[dict]) -> str:
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    content = last_user.get("content", "")
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "echo: " + str(content)


_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_denied",
                404: "not_found_error", 429: "rate_limit_exceeded"}


def _error(status: int, message: str, code: str | None = None) -> Response:
    return Response(status, {"error": {"message": message, "type": _ERROR_TYPES.get(status, "server_error"),
                                       "param": None, "code": code}})


class FakeLLM(RecordingServer):
    """An OpenAI-compatible chat-completions server. `.url` already ends in /v1 (use it as base_url).

    `.calls` holds the JSON body of every POST /v1/chat/completions, in order, including those
    rejected for a wrong key (401) or failed on purpose; `.requests` has their headers. `.in_flight`
    counts the chat calls being answered right now (until the last byte of a stream is sent) and
    `.peak` the most there were at once.

    A reasoning model: set `.reasoning` to `field` (the thinking streams first as
    `delta.reasoning_content`, DeepSeek's shape), `inline` (`<think>…</think>` then the answer, as
    content, cut so that both tags straddle chunk boundaries) or `unopened` (the same without the
    opening tag); `.thinking_fn(messages)` gives the thinking (`set_thinking(text)` fixes it), streamed
    in `.thinking_chunks` pieces, `.chunk_delay` apart like the answer's. Its tokens count as completion
    tokens in the usage, as providers bill them.
    """

    def __init__(self, api_key: str = "test-key", model: str = "fake-model"):
        super().__init__()
        self.api_key, self.model = api_key, model
        self.answer_fn: Callable[[list[dict]], str] = _default_answer
        self.chunk_delay = 0.0  # seconds between streamed chunks
        self.pieces = 3  # how many chunks a streamed answer comes in
        self._calls: list[dict] = []
        self._fail_status, self._fail_times = 500, 0
        self._delay = 0.0
        self._fail_headers: dict[str, str] = {}
        self._flaky: tuple[float, float, random.Random] | None = None
        self.usage = "asked"
        """When streams carry usage: `asked` (when the request's `stream_options.include_usage` asks),
        `never` (an endpoint that sends none), `refuse` (one that answers 400 to `stream_options`)."""
        self.in_flight = self.peak = 0
        self.reasoning: str | None = None
        """None (no thinking), `field`, `inline` or `unopened`: see the class docstring."""
        self.thinking_fn: Callable[[list[dict]], str] = self.default_thinking
        self.thinking_chunks = 4

    @staticmethod
    def default_thinking(messages: list[dict]) -> str:
        """The thinking of a reasoning model: a few sentences about the last question."""
        question = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
        return f"THINKING: the user asks {question!r}. Let me think step by step. I should echo it."

    @property
    def url(self) -> str:
        return super().url + "/v1"

    def _reset_state(self):
        self._calls.clear()
        self.answer_fn, self.chunk_delay, self.pieces = _default_answer, 0.0, 3
        self._fail_status, self._fail_times, self._delay, self._fail_headers = 500, 0, 0.0, {}
        self._flaky = None
        self.usage = "asked"
        self.peak = self.in_flight
        self.reasoning, self.thinking_fn, self.thinking_chunks = None, self.default_thinking, 4

    def _enter(self, req: RecordedRequest):
        if req.path == "/v1/chat/completions":
            with self._cond:
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)

    def _leave(self, req: RecordedRequest):
        if req.path == "/v1/chat/completions":
            with self._cond:
                self.in_flight -= 1
                self._cond.notify_all()

    def flaky(self, rate: float, stall: float, seed: int = 0):
        """Make a random `rate` of calls fail: half with HTTP 500, half by stalling `stall` seconds
        (past the client's deadline) before answering."""
        self._flaky = (rate, stall, random.Random(seed))

    # -- scripting --
    def set_answer(self, text: str):
        """Answer every call with `text`."""
        self.answer_fn = lambda messages: text

    def set_thinking(self, text: str, shape: str | None = None):
        """Think `text` before every answer (in `shape`, if given: see `.reasoning`)."""
        self.thinking_fn = lambda messages: text
        if shape is not None:
            self.reasoning = shape

    def fail(self, status: int = 500, times: int | None = 1, headers: dict[str, str] | None = None):
        """Make the next `times` calls return an OpenAI-style error with `status` (and `headers`, e.g.
        `{"Retry-After": "2"}`); times=None means always."""
        with self._cond:
            self._fail_status, self._fail_times, self._fail_headers = status, times, dict(headers or {})

    def delay(self, seconds: float):
        """Sleep `seconds` before answering each call (cut short by stop()/reset())."""
        self._delay = seconds

    # -- inspection --
    @property
    def calls(self) -> list[dict]:
        with self._cond:
            return list(self._calls)

    def wait_for_calls(self, n: int, timeout: float = 10) -> list[dict]:
        """Block until at least `n` calls are recorded; returns `.calls`."""
        self._wait(lambda: len(self._calls) >= n, timeout, f"{n} LLM call(s) (have {len(self._calls)})")
        return self.calls

    # -- routes --
    def route(self, req: RecordedRequest) -> Response:
        is_chat = req.path == "/v1/chat/completions" and req.method == "POST"
        body = req.body if isinstance(req.body, dict) else {}
        if is_chat:
            with self._cond:
                self._calls.append(body)
                self._cond.notify_all()
        if req.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        if req.path == "/v1/models" and req.method == "GET":
            return Response(200, {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0,
                                                               "owned_by": "fake"}]})
        if not is_chat:
            return _error(404, f"Unknown request URL: {req.method} {req.path}")
        with self._cond:
            failing = self._fail_times is None or self._fail_times > 0
            if failing and self._fail_times is not None:
                self._fail_times -= 1
            roll = self._flaky[2].random() if self._flaky else 1.0
        if self._flaky and roll < self._flaky[0]:
            if roll < self._flaky[0] / 2:
                return _error(500, "flaky: server error")
            self._sleep(self._flaky[1])
        self._sleep(self._delay)
        if failing:
            error = _error(self._fail_status, f"scripted failure ({self._fail_status})")
            error.headers.update(self._fail_headers)
            return error
        if not isinstance(body.get("messages"), list):
            return _error(400, "'messages' is a required property")
        if self.usage == "refuse" and "stream_options" in body:
            return _error(400, "Unrecognized request argument supplied: stream_options")
        answer = self.answer_fn(body["messages"])
        shape = self.reasoning
        thinking = self.thinking_fn(body["messages"]) if shape else ""
        cid, created, model = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()), body.get("model", self.model)
        usage = {"prompt_tokens": sum(len(str(m.get("content", ""))) for m in body["messages"]),
                 "completion_tokens": len(answer) + len(thinking)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if body.get("stream"):
            include_usage = self.usage == "asked" and bool((body.get("stream_options") or {}).get("include_usage"))
            deltas = self._deltas(answer, shape, thinking)
            return Response(200, self._sse(deltas, cid, created, model, usage if include_usage else None),
                            {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"})
        return Response(200, {
            "id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": usage,
        })

    @staticmethod
    def _pieces(text: str, n: int) -> list[str]:
        size = max(1, -(-len(text) // n))
        return [text[i:i + size] for i in range(0, len(text), size)]

    def _deltas(self, answer: str, shape: str | None, thinking: str) -> list[dict]:
        """The stream's deltas: the answer in about `pieces` pieces, after the thinking in `shape`."""
        pieces = self._pieces(answer, self.pieces) or [""]
        if shape is None:
            return [{"content": p} for p in pieces]
        if shape == "field":
            return ([{"content": None, "reasoning_content": p} for p in self._pieces(thinking, self.thinking_chunks)]
                    + [{"content": p, "reasoning_content": None} for p in pieces])
        if shape not in ("inline", "unopened"):
            raise ValueError(f"unknown reasoning shape {shape!r}")
        contents = (["<th", "ink>"] if shape == "inline" else []) + self._pieces(thinking, self.thinking_chunks)
        contents += ["</th", "ink>\n\n" + pieces[0]] + pieces[1:]  # both tags cut in two
        return [{"content": p} for p in contents]

    def _sse(self, deltas: list[dict], cid: str, created: int, model: str, usage: dict | None) -> Iterable[bytes]:
        def event(choices: list, **extra) -> bytes:
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": choices, **extra}
            return b"data: " + json.dumps(chunk, ensure_ascii=False).encode("utf-8") + b"\n\n"

        for i, delta in enumerate(deltas):
            delta = {"role": "assistant", **delta} if i == 0 else delta
            yield event([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])
            self._sleep(self.chunk_delay)
        yield event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])
        if usage is not None:
            yield event([], usage=usage)
        yield b"data: [DONE]\n\n"


class FakeFeishu(RecordingServer):
    """Mimics open.feishu.cn for lark-oapi: tenant tokens, the bot's info, message replies and CardKit.

    `.replies` holds `(message_id, text, uuid)` for each successful text reply, in order;
    `.card_replies` `(message_id, card_id, uuid, reply_id)` for each reply carrying a card (a repeated
    uuid gets the first reply's id back, as Feishu dedupes by uuid, and is recorded again); `.cards`
    is the CardKit fake (`handlers/simulator/cardkit.py`, shared with the browser simulator).
    """

    def __init__(self, app_id: str = "cli_test", app_secret: str = "secret", bot_open_id: str = "ou_bot"):
        super().__init__()
        self.app_id, self.app_secret, self.bot_open_id = app_id, app_secret, bot_open_id
        self.token_fetches = 0
        self.bot_info_calls = 0
        self._replies: list[tuple[str, str, str]] = []
        self._card_replies: list[tuple[str, str, str, str]] = []
        self._fail: tuple[int, int] | None = None
        self._fail_times: int | None = 0
        self.cards = FakeCards(self._cond)

    def _reset_state(self):
        self.token_fetches = self.bot_info_calls = 0
        self._replies.clear()
        self._card_replies.clear()
        self.cards.reset()
        self._fail, self._fail_times = None, 0

    def fail_reply(self, code: int, times: int | None = 1, status: int = 400):
        """Make the next `times` replies fail with Feishu error `code` (times=None: always)."""
        with self._cond:
            self._fail, self._fail_times = (code, status), times

    @property
    def replies(self) -> list[tuple[str, str, str]]:
        with self._cond:
            return list(self._replies)

    @property
    def card_replies(self) -> list[tuple[str, str, str, str]]:
        with self._cond:
            return list(self._card_replies)

    def route(self, req: RecordedRequest) -> Response:
        b = req.body if isinstance(req.body, dict) else {}
        if req.path == "/open-apis/auth/v3/tenant_access_token/internal" and req.method == "POST":
            with self._cond:
                self.token_fetches += 1
            if (b.get("app_id"), b.get("app_secret")) != (self.app_id, self.app_secret):
                return Response(200, {"code": 10014, "msg": "app secret invalid"})
            return Response(200, {"code": 0, "msg": "ok", "tenant_access_token": "t-fake-tenant-token",
                                   "expire": 7200})
        if req.headers.get("authorization") != "Bearer t-fake-tenant-token":
            return Response(400, {"code": 99991663, "msg": "Invalid access token for authorization."})
        if req.path == "/open-apis/bot/v3/info" and req.method == "GET":
            with self._cond:
                self.bot_info_calls += 1
            return Response(200, {"code": 0, "msg": "ok", "bot": {"activate_status": 2, "app_name": "chatgate",
                                                                   "open_id": self.bot_open_id}})
        carded = self.cards.route(req.method, req.path, b)
        if carded is not None:
            return Response(*carded)
        parts = req.path.split("/")
        if req.method == "POST" and req.path.startswith("/open-apis/im/v1/messages/") and parts[-1] == "reply":
            with self._cond:
                if self._fail is not None and (self._fail_times is None or self._fail_times > 0):
                    if self._fail_times is not None:
                        self._fail_times -= 1
                    code, status = self._fail
                    return Response(status, {"code": code, "msg": "scripted failure"})
                content = json.loads(b.get("content") or "{}")
                if b.get("msg_type") == "interactive":
                    return self._card_reply(parts[-2], content, b.get("uuid", ""))
                self._replies.append((parts[-2], content.get("text", ""), b.get("uuid", "")))
                self._cond.notify_all()
            return Response(200, {"code": 0, "msg": "success", "data": {"message_id": f"om_r{uuid.uuid4().hex[:8]}"}})
        return Response(404, {"code": 404, "msg": f"fake: no route {req.method} {req.path}"})

    def _card_reply(self, message_id: str, content: dict, idem: str) -> Response:
        """A reply carrying a card entity (call under the lock)."""
        card_id = (content.get("data") or {}).get("card_id") if content.get("type") == "card" else None
        if card_id not in self.cards.cards:
            return Response(400, {"code": 230099, "msg": "card content is not a card entity that exists"})
        earlier = [r for r in self._card_replies if r[2] == idem and idem]
        reply_id = earlier[0][3] if earlier else f"om_c{uuid.uuid4().hex[:8]}"
        self._card_replies.append((message_id, card_id, idem, reply_id))
        self._cond.notify_all()
        return Response(200, {"code": 0, "msg": "success", "data": {"message_id": reply_id}})


class FakeAfdian(RecordingServer):
    """Mimics afdian's open API for `POST /api/open/query-order`, written from afdian's documentation and
    not from chatgate's client: it checks every request's signature, md5(token + "params" + params +
    "ts" + ts + "user_id" + user_id), and refuses a bad one (or a stale `ts`) with afdian's error shape
    (`ec` 400005). It answers from the orders a test puts in it (`add_order`).

    `.queries` holds the order number of each correctly signed query, in order; `.refused` counts the
    others. `fail(times)` answers the next queries with HTTP 502, `delay(s)` slows every answer.
    """

    def __init__(self, user_id: str = "afd0123456789abcdef", token: str = "afdian-api-token-for-tests"):
        super().__init__()
        self.user_id, self.token = user_id, token
        self._orders: dict[str, dict] = {}
        self._queries: list[str] = []
        self.refused = 0
        self._fail_times = 0
        self._delay = 0.0
        self._seq = 0

    def _reset_state(self):
        self._orders.clear()
        self._queries.clear()
        self.refused, self._fail_times, self._delay = 0, 0, 0.0

    # -- scripting --
    def add_order(self, out_trade_no: str | None = None, **fields) -> dict:
        """Put an order at afdian (paid, plan `plan_month`, 19.90, one month, unless `fields` say otherwise)."""
        with self._cond:
            self._seq += 1
            number = out_trade_no or f"2026112{self._seq:03d}1200{uuid.uuid4().int % 10**13:013d}"
            order = {"out_trade_no": number, "custom_order_id": "", "user_id": "afd_buyer_" + uuid.uuid4().hex[:12],
                     "user_private_id": "private-" + uuid.uuid4().hex, "plan_id": "plan_month", "month": 1,
                     "total_amount": "19.90", "show_amount": "19.90", "status": 2, "remark": "", "redeem_id": "",
                     "product_type": 0, "discount": "0.00", "sku_detail": [], "address_person": "",
                     "address_phone": "", "address_address": "", **fields}
            self._orders[number] = order
            return dict(order)

    def fail(self, times: int = 1):
        """Answer the next `times` queries with HTTP 502 (afdian down)."""
        with self._cond:
            self._fail_times = times

    def delay(self, seconds: float):
        """Sleep `seconds` before answering each query."""
        self._delay = seconds

    @staticmethod
    def webhook(order: dict, **changes) -> dict:
        """The body afdian's webhook posts for `order` (with `changes`, as a forger would make them)."""
        return {"ec": 200, "em": "ok", "data": {"type": "order", "order": {**order, **changes}}}

    # -- inspection --
    @property
    def queries(self) -> list[str]:
        with self._cond:
            return list(self._queries)

    # -- routes --
    def route(self, req: RecordedRequest) -> Response:
        if req.path != "/api/open/query-order" or req.method != "POST":
            return Response(404, {"ec": 404, "em": "not found"})
        self._sleep(self._delay)
        with self._cond:
            if self._fail_times > 0:
                self._fail_times -= 1
                return Response(502, "<html>502 Bad Gateway</html>")
        b = req.body if isinstance(req.body, dict) else {}
        params, ts, user_id = str(b.get("params", "")), b.get("ts"), str(b.get("user_id", ""))
        expected = hashlib.md5(f"{self.token}params{params}ts{ts}user_id{user_id}".encode()).hexdigest()
        fresh = isinstance(ts, int) and abs(time.time() - ts) < 3600
        if user_id != self.user_id or b.get("sign") != expected or not fresh:
            with self._cond:
                self.refused += 1
            return Response(200, {"ec": 400005, "em": "sign validation failed",
                                  "data": {"explain": "sign error, check user_id, token and ts"}})
        try:
            number = json.loads(params).get("out_trade_no", "")
        except (ValueError, AttributeError):
            return Response(200, {"ec": 400002, "em": "params invalid"})
        with self._cond:
            self._queries.append(number)
            self._cond.notify_all()
            found = [dict(self._orders[number])] if number in self._orders else []
        return Response(200, {"ec": 200, "em": "ok", "data": {"list": found, "total_count": len(found),
                                                              "total_page": 1}})
