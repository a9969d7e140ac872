#!/usr/bin/env python3
"""Reliability under faults: N questions at a steady rate, each posted with WeChat's rhythm (up to three
posts, 5 s apart, replies after 5 s dropped), while faults happen on a schedule; then one line:

    sent N, answered once …, answered twice or more …, refunded-and-told …, lost …, charged twice …

    .venv/bin/python scripts/bench_reliability.py [--questions 10000] [--rate 5] [--seed 1]

What runs: the Procfile's gunicorn web and `chatgate worker` (production settings, safe mode), a
Redis of their own with no persistence (a killed Redis loses everything, the worst case), the fake
WeChat API and a fake OpenAI-compatible LLM of the test suite (tests/fakes.py) on 127.0.0.1. About a
third of the users ask again while an earlier question of theirs is still on its way.

The faults, at fixed points of the load (fractions of its length), and throughout it:
  throughout  the LLM fails 20 % of calls (half HTTP 500, half a stall past CHATGATE_LLM_TIMEOUT)
  10 %, 35 %  a worker process SIGKILLed with its answers in flight (as the OOM killer does; its pool
              starts another)
  20 %        Redis SIGKILLed, restarted empty 3 s later
  45 %        the push API answers HTTP 503 for `--outage` seconds (default 120)
  60 %        Redis wiped (FLUSHALL)
  70 %        a SQLite write lock held for 6 s (past WeChat's 5 s)
  80 %        the whole worker SIGKILLed (the pool and its processes), started again 2 s later
  88 %        the push API refuses every push for good (40164) for 10 s: those answers wait
After the load the bot drains; then every user with something still waiting comes back and sends
继续 (as people do), and the tally is taken from what each asker read (passive replies and pushes)
and from the SQLite ledger. A question is "answered once" when its answer reached its asker exactly
once and nothing was refunded; "refunded-and-told" when no answer reached it, its trial answer was
refunded once and the apology or expiry note reached it once; "lost" when neither.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from config.settings import VARIABLES  # noqa: E402
from tests import wechat_sim  # noqa: E402
from tests.fakes import FakeLLM, FakeWeChat  # noqa: E402
from tests.live import Asker, LiveBot, tally  # noqa: E402

LLM_KEY = "sk-bench-reliability-0123456789"


def bot_env(tmp: Path, wechat: FakeWeChat, llm: FakeLLM) -> dict:
    names = {v.name for v in VARIABLES}
    env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("GUNICORN")}
    env.update({name: "" for name in names})  # empty = default, whatever a .env in the repo says
    env.update({
        "CHATGATE_ENV": "production", "CHATGATE_DB": str(tmp / "chatgate.db"),
        "OPENAI_API_KEY": LLM_KEY, "OPENAI_BASE_URL": llm.url, "CHATGATE_MODEL": "bench-model",
        "CHATGATE_FREE_TRIAL": "1000", "CHATGATE_LLM_TIMEOUT": "5", "CHATGATE_RETRY_DELAYS": "2,5",
        "CHATGATE_RECONCILE_INTERVAL": "5",
        "WECHAT_TOKEN": wechat_sim.TOKEN, "WECHAT_APP_ID": wechat_sim.APP_ID,
        "WECHAT_APP_SECRET": wechat_sim.APP_SECRET, "WECHAT_AES_KEY": wechat_sim.AES_KEY,
        "WECHAT_API_BASE": wechat.url, "WECHAT_HTTP_TIMEOUT": "5", "WECHAT_REPLY_WAIT": "4.5",
        "CHATGATE_WORKERS": "2", "CHATGATE_LOG_LEVEL": "WARNING", "PYTHONDONTWRITEBYTECODE": "1",
        # 0 = the config's default (cores + 1); gunicorn itself also parses this variable
        "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY") or "0",
    })
    return env


def hold_sqlite_lock(db_path: str, seconds: float) -> None:
    db = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    time.sleep(seconds)
    db.execute("COMMIT")
    db.close()


def faults(bot: LiveBot, wechat: FakeWeChat, outage: float, log) -> list[tuple[float, str, Callable]]:
    def kill_a_worker():
        try:
            log(f"killed worker process {bot.kill_a_worker_process(timeout=10)}")
        except TimeoutError:
            log("no worker process to kill")

    def redis_down():
        bot.kill_redis()
        time.sleep(3)
        bot.restart_redis()

    def worker_down():
        bot.kill_worker()
        time.sleep(2)
        bot.start_worker()

    return [
        (0.10, "a worker process SIGKILLed", kill_a_worker),
        (0.20, "Redis SIGKILLed, restarted empty", redis_down),
        (0.35, "a worker process SIGKILLed", kill_a_worker),
        (0.45, f"push API down ({outage:g} s)", lambda: wechat.down_for(outage)),
        (0.60, "Redis wiped", bot.wipe_redis),
        (0.70, "SQLite write lock for 6 s", lambda: hold_sqlite_lock(bot.env["CHATGATE_DB"], 6)),
        (0.80, "worker SIGKILLed whole", worker_down),
        (0.88, "pushes refused for good for 10 s", lambda: (wechat.fail_send(40164, times=None), time.sleep(10),
                                                            wechat.reset_failures())),
    ]


def unsettled(db_path: str) -> int:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT (SELECT COUNT(*) FROM deliveries WHERE status IN ('queued', 'answering')) + "
                          "(SELECT COUNT(*) FROM pages WHERE state = 'pushing')").fetchone()[0]
    finally:
        db.close()


def waiting_users(db_path: str) -> list[str]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute("SELECT DISTINCT u.external_id FROM pages p JOIN users u ON u.id = "
                                         "p.user_id WHERE p.state = 'ready'")]
    finally:
        db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=300, help="How many questions (default 300).")
    parser.add_argument("--rate", type=float, default=5, help="Questions offered per second (default 5).")
    parser.add_argument("--outage", type=float, default=120, help="Seconds the push API is down (default 120).")
    parser.add_argument("--drain", type=float, default=1800, help="Most seconds to wait for the bot to settle.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-faults", action="store_true", help="The same load with no fault (the floor).")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the bot's processes on the way out
    rng = random.Random(args.seed)
    started = time.monotonic()

    def log(text: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {text}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="chatgate-reliability-") as tmp, \
            FakeWeChat(app_id=wechat_sim.APP_ID, app_secret=wechat_sim.APP_SECRET) as wechat, \
            FakeLLM(api_key=LLM_KEY) as llm:
        bot = LiveBot(Path(tmp), bot_env(Path(tmp), wechat, llm))
        try:
            url = bot.start()
            if not args.no_faults:
                llm.flaky(0.2, stall=7, seed=args.seed)
            users = [Asker(url, f"oRel{i:05d}") for i in range(max(1, args.questions // 3))]
            questions: dict[str, str] = {}
            threads: list[threading.Thread] = []
            length = args.questions / args.rate
            schedule = [] if args.no_faults else faults(bot, wechat, args.outage, log)
            log(f"offering {args.questions} questions at {args.rate:g}/s ({length:.0f} s) from {len(users)} users")
            for i in range(args.questions):
                due = started + i / args.rate
                while schedule and (i / args.questions) >= schedule[0][0]:
                    _, what, act = schedule.pop(0)
                    log(what)
                    threading.Thread(target=act, daemon=True).start()
                time.sleep(max(0.0, due - time.monotonic()))
                asker = rng.choice(users)
                question = f"rel-{i:06d}"
                questions[question] = asker.openid
                threads.append(asker.say_in_background(question, 9_000_000_000_000_000 + i))
            for t in threads:
                t.join()
            log("load done; draining")
            deadline = time.monotonic() + args.drain
            last_report = 0.0
            while (left := unsettled(bot.env["CHATGATE_DB"])) and time.monotonic() < deadline:
                if time.monotonic() - last_report > 30:
                    log(f"{left} deliveries or pages still on their way")
                    last_report = time.monotonic()
                time.sleep(2)
            returning = waiting_users(bot.env["CHATGATE_DB"])
            log(f"{len(returning)} user(s) with something waiting come back and send 继续")
            by_openid = {a.openid: a for a in users}
            for round_no in range(5):
                back = [by_openid[o] for o in waiting_users(bot.env["CHATGATE_DB"]) if o in by_openid]
                if not back:
                    break
                ts = [a.say_in_background("继续", 9_100_000_000_000_000 + round_no * 100_000 + n)
                      for n, a in enumerate(back)]
                for t in ts:
                    t.join()
            read = {a.openid: list(a.replies) for a in users}
            for to, content in wechat.sent:
                read.setdefault(to, []).append(content)
            result = tally(bot.env["CHATGATE_DB"], questions, read)
            posts = sum(a.posts for a in users)
            errors = sum(sum(a.errors.values()) for a in users)
        finally:
            bot.stop()
    print(result.line())
    log(f"{posts} posts, {errors} post errors, {len(llm.calls)} LLM calls, {len(wechat.sent)} pushes; "
        f"{time.monotonic() - started:.0f} s in all")
    for line in result.wrong[:20]:
        log(f"inconsistent: {line}")
    return 0 if result.exact else 1


if __name__ == "__main__":
    sys.exit(main())
