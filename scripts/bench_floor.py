#!/usr/bin/env python3
"""The floor of the answering benchmarks: what the SDK calls and the fakes cost with nothing of
chatgate around them — no webhook, queue, store or worker. One gevent process asks the fake LLM with
the real `openai` client (streaming, usage asked for, as workers/llm.py does) and pushes the answer
with the real wechatpy client, each answer in a greenlet of its own, offered at a steady rate.

    python scripts/bench_floor.py --llm URL --wechat URL --app-id … --app-secret … --api-key … \\
        --rate 300 --count 6000 --out floor.json

Question i is `q-<i>` from user `floor-<i>`, offered at start + i / rate. The output JSON has `start`,
`end` (offering done) and `done` (last answer pushed), on the monotonic clock; `cpu_s` (this
process's CPU from the first offer to the last push); `pss_idle_kb` and `pss_peak_kb` (this process's
PSS before the first offer and at its highest, sampled every 0.1 s); and `answers`:
`[question, t_offered, t_pushed, error]` each.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import openai  # noqa: E402
from bench_usage import pss_kb  # noqa: E402
from wechatpy.client import WeChatClient  # noqa: E402


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Client(WeChatClient):
    """wechatpy's client with its token URL on the fake (wechatpy hard-codes api.weixin.qq.com)."""

    def fetch_access_token(self):
        return self._fetch_access_token(url=self.API_BASE_URL + "token", params={
            "grant_type": "client_credential", "appid": self.appid, "secret": self.secret})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("--llm", "--wechat", "--app-id", "--app-secret", "--api-key", "--out"):
        ap.add_argument(name, required=True)
    ap.add_argument("--rate", type=float, required=True, help="answers offered a second")
    ap.add_argument("--count", type=int, required=True, help="answers in all")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # urllib3's "connection pool is full" when many pushes go at once
    llm = openai.OpenAI(api_key=args.api_key, base_url=args.llm, max_retries=0,
                        timeout=openai.Timeout(60, connect=10))
    wechat = Client(args.app_id, args.app_secret, timeout=10, auto_retry=False)
    wechat.API_BASE_URL = args.wechat.rstrip("/") + "/cgi-bin/"
    wechat.fetch_access_token()
    answers: list[list] = []

    def answer(i: int | None, offered: float) -> None:
        question = "warm-up" if i is None else f"q-{i:06d}"
        try:
            stream = llm.chat.completions.create(model="bench-model", stream=True,
                                                 stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": question}])
            parts = []
            with stream:
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        parts.append(chunk.choices[0].delta.content)
            wechat.message.send_text(f"floor-{question}", "".join(parts).strip())
            answers.append([question, offered, time.monotonic(), None])
        except Exception as exc:  # counted, not raised: the floor reports what failed
            answers.append([question, offered, time.monotonic(), f"{type(exc).__name__}: {exc}"])

    answer(None, time.monotonic())  # the first call of each client loads and builds what it needs
    answers.clear()
    peak = [pss_kb()]

    def sample() -> None:
        while True:
            peak[0] = max(peak[0], pss_kb())
            gevent.sleep(0.1)

    idle = peak[0]
    sampler = gevent.spawn(sample)
    cpu0, start = _cpu(), time.monotonic()
    greenlets = []
    for i in range(args.count):
        delay = start + i / args.rate - time.monotonic()
        if delay > 0:
            gevent.sleep(delay)
        greenlets.append(gevent.spawn(answer, i, start + i / args.rate))
    end = time.monotonic()
    gevent.joinall(greenlets)
    done, cpu = time.monotonic(), _cpu() - cpu0
    sampler.kill()
    with open(args.out, "w") as f:
        json.dump({"start": start, "end": end, "done": done, "cpu_s": cpu, "pss_idle_kb": idle,
                   "pss_peak_kb": peak[0], "answers": answers}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
