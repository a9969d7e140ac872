#!/usr/bin/env python3
"""The load generator of the answering benchmarks: WeChat's servers posting pre-signed, pre-encrypted
messages to the webhook at a steady rate, one connection per post (the web process closes after each
response), and noting when each was acknowledged.

    python scripts/bench_asker.py REQUESTS.tsv URL --rate 300 --out acks.json

REQUESTS.tsv has one `key<TAB>path?query<TAB>body` line per message. Message i is posted at
start + i / rate whether or not earlier ones were answered (an open-loop load: a slow server does not
slow the offer down). The output JSON has `start` and `end` (monotonic clock), `cpu_s` (this process's
CPU while posting) and `posts`: `[key, t_sent, t_ack, status, reply]` each (t_ack null and status 0
when the post failed; reply: the body when it is a passive reply rather than `success` or empty — an
answer ready before the ack goes out in it). asyncio on one core costs a fraction of a millisecond a
post; wrk could pace the same posts (a Lua `delay()`), but its Lua `response()` cannot tell which
message an answer belongs to.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from urllib.parse import urlsplit


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def post(host: str, port: int, request: bytes, timeout: float) -> tuple[int, str]:
    """(status, body) of one post on a connection of its own."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status, body = int(head.split(b" ", 2)[1]), b""
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                body = await asyncio.wait_for(reader.readexactly(int(value)), timeout)
                break
        return status, body.decode(errors="replace")
    finally:
        writer.close()


async def run(lines: list[tuple[str, str, str]], url: str, rate: float, timeout: float) -> dict:
    target = urlsplit(url)
    host, port = target.hostname, target.port or 80
    requests = [(key, (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: text/xml\r\n"
                       f"Connection: close\r\nContent-Length: {len(body.encode())}\r\n\r\n{body}").encode())
                for key, path, body in lines]
    posts: list[list] = []

    async def one(key: str, request: bytes) -> None:
        sent = time.monotonic()
        try:
            status, body = await post(host, port, request, timeout)
            posts.append([key, sent, time.monotonic(), status, None if body in ("success", "") else body])
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            posts.append([key, sent, None, 0, None])

    cpu0, start = _cpu(), time.monotonic()
    tasks = []
    for i, (key, request) in enumerate(requests):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(key, request)))
    end = time.monotonic()
    await asyncio.gather(*tasks)
    return {"start": start, "end": end, "cpu_s": _cpu() - cpu0, "posts": posts}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("requests", help="the messages, `key<TAB>path<TAB>body` a line")
    ap.add_argument("url", help="the web process, e.g. http://127.0.0.1:8000")
    ap.add_argument("--rate", type=float, required=True, help="posts a second")
    ap.add_argument("--timeout", type=float, default=10, help="seconds before a post counts as failed")
    ap.add_argument("--out", required=True, help="where to write the JSON result")
    args = ap.parse_args()
    with open(args.requests) as f:
        lines = [tuple(line.rstrip("\n").split("\t", 2)) for line in f if line.strip()]
    result = asyncio.run(run(lines, args.url, args.rate, args.timeout))
    with open(args.out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
