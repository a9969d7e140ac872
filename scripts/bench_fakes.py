#!/usr/bin/env python3
"""Lean fakes for the answering benchmarks (`bench_delivery.py`, `bench_inflight.py`): WeChat's API
and an OpenAI-compatible LLM, on one asyncio loop in a process of their own, so that their CPU can be
measured apart from the bot's and they keep up with hundreds of answers a second on two cores.

    python scripts/bench_fakes.py --app-id wx… --app-secret … --api-key sk-… [--model-seconds 10]

prints one JSON line, `{"wechat": URL, "llm": URL}` (the LLM's ends in /v1), then serves until
SIGTERM. Only the endpoints the bot and the floors use, each checking what the real one checks:

  GET  /cgi-bin/token, POST /cgi-bin/stable_token     access tokens (issued tokens stay valid)
  POST /cgi-bin/message/custom/send                   a text push (token checked), recorded
  GET  /v1/models                                     the worker's start-up probe
  POST /v1/chat/completions                           `echo: <question>` (key checked), streamed
                                                      with usage when asked, recorded

The model answers `echo: <question>` — and, when it takes `--model-seconds`, `--chunks` events spread
evenly over that time, the extra ones carrying ` .` — so every push names the question it answers.
Records (monotonic clock, shared by every process of the machine):
  GET  /_bench/count    {"sent": pushes, "calls": LLM calls, "active": streams open, "peak": most open}
  GET  /_bench/report   the above, with every push `[t, touser, content]`, every LLM call
                        `[t_start, t_end, question]` (t_end null while it streams), the connections
                        accepted and the requests by method and path
  POST /_bench/reset    forget the records and the peak
The tests' fakes (`tests/fakes.py`) are threaded and scriptable; these are neither.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from urllib.parse import parse_qsl, urlsplit


class Records:
    """What the fakes saw."""

    def __init__(self):
        self.sends: list[list] = []  # [t, touser, content]
        self.calls: list[list] = []  # [t_start, t_end, question]
        self.active = 0
        self.peak = 0
        self.tokens: set[str] = set()
        self.token_seq = 0
        self.requests: dict[str, int] = {}  # "METHOD /path" -> how many
        self.connections = 0

    def reset(self) -> None:
        """Forget the records; the peak starts again from the streams open now."""
        self.sends, self.calls, self.active, self.peak = [], [], self.active, self.active
        self.requests, self.connections = {}, 0

    def count(self) -> dict:
        """The counters."""
        return {"sent": len(self.sends), "calls": len(self.calls), "active": self.active, "peak": self.peak}

    def report(self) -> dict:
        """The counters and every record."""
        return {**self.count(), "connections": self.connections, "requests": self.requests, "sends": self.sends,
                "calls": self.calls}


def _response(status: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found"}.get(status, b"Error")
    return (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
            % (status, reason, content_type, len(body)) + body)


def _json(status: int, obj) -> bytes:
    return _response(status, json.dumps(obj, ensure_ascii=False).encode())


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, route, records: Records) -> None:
    """HTTP/1.1 with keep-alive: requests with a Content-Length body (all the clients here send one)."""
    first = True
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, target, _ = lines[0].split(b" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length", 0))
            body = await reader.readexactly(length) if length else b""
            close = headers.get(b"connection", b"").lower() == b"close"
            if first:
                records.connections += 0 if target.startswith(b"/_bench/") else 1
                first = False
            path = urlsplit(target.decode()).path
            if not path.startswith("/_bench/"):  # the benchmark's own questions are not counted
                name = f"{method.decode()} {path}"
                records.requests[name] = records.requests.get(name, 0) + 1
            await route(method.decode(), target.decode(), headers, body, writer)
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    except asyncio.CancelledError:  # shutting down; returning (not re-raising) keeps asyncio's streams quiet
        pass
    finally:
        writer.close()


class FakeWeChat:
    """Access tokens and customer-service text pushes."""

    def __init__(self, records: Records, app_id: str, app_secret: str):
        self.records, self.app_id, self.app_secret = records, app_id, app_secret

    def _issue(self, appid, secret) -> dict:
        if appid != self.app_id:
            return {"errcode": 40013, "errmsg": "invalid appid"}
        if secret != self.app_secret:
            return {"errcode": 40125, "errmsg": "invalid appsecret"}
        r = self.records
        if not r.tokens:
            r.token_seq += 1
            r.tokens.add(f"BENCH-TOKEN-{r.token_seq}")
        return {"access_token": max(r.tokens), "expires_in": 7200}

    async def route(self, method, target, headers, body, writer) -> None:
        """Answer one request on WeChat's port (the benchmark's own /_bench/ requests too)."""
        url = urlsplit(target)
        query = dict(parse_qsl(url.query))
        r = self.records
        if url.path == "/cgi-bin/message/custom/send" and method == "POST":
            if query.get("access_token") not in r.tokens:
                writer.write(_json(200, {"errcode": 40001, "errmsg": "invalid credential"}))
                return
            msg = json.loads(body)
            if msg.get("msgtype") != "text" or not msg.get("touser"):
                writer.write(_json(200, {"errcode": 44002, "errmsg": "empty post data"}))
                return
            r.sends.append([time.monotonic(), msg["touser"], msg["text"]["content"]])
            writer.write(_json(200, {"errcode": 0, "errmsg": "ok"}))
        elif url.path == "/cgi-bin/token" and method == "GET":
            writer.write(_json(200, self._issue(query.get("appid"), query.get("secret"))))
        elif url.path == "/cgi-bin/stable_token" and method == "POST":
            b = json.loads(body or b"{}")
            writer.write(_json(200, self._issue(b.get("appid"), b.get("secret"))))
        elif url.path == "/_bench/count":
            writer.write(_json(200, r.count()))
        elif url.path == "/_bench/report":
            writer.write(_json(200, r.report()))
        elif url.path == "/_bench/reset" and method == "POST":
            r.reset()
            writer.write(_json(200, r.count()))
        else:
            writer.write(_json(404, {"errcode": -1, "errmsg": f"no route {method} {url.path}"}))


class FakeLLM:
    """Streamed (or not) chat completions that echo the question."""

    def __init__(self, records: Records, api_key: str, model_seconds: float, chunks: int):
        self.records, self.auth = records, f"Bearer {api_key}".encode()
        self.model_seconds, self.chunks = model_seconds, max(chunks, 3)

    def _pieces(self, answer: str) -> list[str]:
        if self.model_seconds <= 0:
            size = max(1, -(-len(answer) // 3))  # about three pieces, as tests/fakes.py streams
            return [answer[i:i + size] for i in range(0, len(answer), size)]
        return [answer[:6], answer[6:]] + [" ."] * (self.chunks - 2)

    async def route(self, method, target, headers, body, writer) -> None:
        """Answer one request on the LLM's port."""
        path = urlsplit(target).path
        if headers.get(b"authorization") != self.auth:
            writer.write(_json(401, {"error": {"message": "Incorrect API key provided.",
                                               "type": "invalid_request_error", "code": "invalid_api_key"}}))
        elif path == "/v1/models" and method == "GET":
            writer.write(_json(200, {"object": "list", "data": [{"id": "bench-model", "object": "model",
                                                                  "created": 0, "owned_by": "bench"}]}))
        elif path == "/v1/chat/completions" and method == "POST":
            await self._complete(json.loads(body), writer)
        else:
            writer.write(_json(404, {"error": {"message": f"Unknown request URL: {method} {path}"}}))

    async def _complete(self, req: dict, writer: asyncio.StreamWriter) -> None:
        question = next((m.get("content", "") for m in reversed(req.get("messages") or []) if m.get("role") == "user"),
                        "")
        r = self.records
        call = [time.monotonic(), None, question]
        r.calls.append(call)
        r.active += 1
        r.peak = max(r.peak, r.active)
        try:
            answer = "echo: " + str(question)
            model, created = req.get("model", "bench-model"), int(time.time())
            cid = f"chatcmpl-bench{len(r.calls)}"
            usage = {"prompt_tokens": len(str(question)), "completion_tokens": len(answer),
                     "total_tokens": len(str(question)) + len(answer)}
            if not req.get("stream"):
                if self.model_seconds > 0:
                    await asyncio.sleep(self.model_seconds)
                writer.write(_json(200, {
                    "id": cid, "object": "chat.completion", "created": created, "model": model, "usage": usage,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                 "finish_reason": "stop"}]}))
                return
            base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}

            def event(**fields) -> bytes:
                data = b"data: " + json.dumps({**base, **fields}, ensure_ascii=False).encode() + b"\n\n"
                return b"%x\r\n%s\r\n" % (len(data), data)

            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                         b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
            pieces = self._pieces(answer)
            gap = self.model_seconds / len(pieces) if self.model_seconds > 0 else 0
            for i, piece in enumerate(pieces):
                delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
                writer.write(event(choices=[{"index": 0, "delta": delta, "finish_reason": None}]))
                if gap:
                    await writer.drain()
                    await asyncio.sleep(gap)
            writer.write(event(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
            if (req.get("stream_options") or {}).get("include_usage"):
                writer.write(event(choices=[], usage=usage))
            done = b"data: [DONE]\n\n"
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        finally:
            call[1] = time.monotonic()
            r.active -= 1


async def main_async(args) -> None:
    records = Records()
    wechat = FakeWeChat(records, args.app_id, args.app_secret)
    llm = FakeLLM(records, args.api_key, args.model_seconds, args.chunks)
    servers = [await asyncio.start_server(lambda rd, wr, route=route: _serve(rd, wr, route, records), "127.0.0.1",
                                          0, backlog=4096)
               for route in (wechat.route, llm.route)]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print(json.dumps({"wechat": f"http://127.0.0.1:{ports[0]}", "llm": f"http://127.0.0.1:{ports[1]}/v1"}),
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--app-id", required=True)
    ap.add_argument("--app-secret", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--model-seconds", type=float, default=0, help="how long each streamed answer takes (0: instant)")
    ap.add_argument("--chunks", type=int, default=20, help="events of a slow answer (default 20)")
    asyncio.run(main_async(ap.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
