#!/usr/bin/env python3
"""Feishu streaming cards: how soon an answer starts to show, and how often its card is updated.

    .venv/bin/python scripts/bench_cards.py [-n 40] [--model-seconds 6] [--chunks 60] [--rate 10]

What runs: the Procfile's gunicorn web and `chatgate worker` (production settings) on a Redis of
their own, with Feishu pointed at the test suite's fake Feishu API (tests/fakes.py; its CardKit part,
handlers/simulator/cardkit.py, checks sequences, element ids and the 10 operations a second per card) and
its fake LLM, which streams each answer in `--chunks` pieces over `--model-seconds`. N users each send
one direct message (signed and encrypted events), `--rate` a second.

Printed, with cards (CHATGATE_FEISHU_STREAM on):
  first token → first visible update   from the model's first piece (sent the moment it is asked) to
                                       the card's first answer update reaching CardKit: p50, p90, max
  updates per card per second          answer updates while the model writes / the time they span:
                                       mean over cards, and the most in any one second of any card
  CardKit operations per answer        create, updates, the final text, streaming off
  worker CPU per answer                the worker's process tree, over the whole run
and the same N with cards off (CHATGATE_FEISHU_STREAM=off): first token → the text reply, which
comes only when the whole answer is written. The floor, measured in the same run: one CardKit
update from this process through lark-oapi to the same fake (p50 of 50), the least an update costs.
Exit status 1 when an answer did not end in its card (or its reply) exactly as the model wrote it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import requests  # noqa: E402
from bench_answering import log, percentile  # noqa: E402
from bench_usage import tree_cpu_s  # noqa: E402

from tests import feishu_sim as fs  # noqa: E402
from tests import wechat_sim  # noqa: E402
from tests.fakes import FakeFeishu, FakeLLM, FakeWeChat  # noqa: E402
from tests.live import LiveBot  # noqa: E402

LLM_KEY = "sk-bench-0123456789"


def answer_of(i: int, words: int) -> str:
    return " ".join(f"w{i}-{k}" for k in range(words))


def environment(tmp: Path, feishu: FakeFeishu, llm: FakeLLM, wechat: FakeWeChat, stream: bool) -> dict:
    return {**os.environ, "CHATGATE_ENV": "production", "CHATGATE_DB": str(tmp / "chatgate.db"),
            "OPENAI_API_KEY": LLM_KEY, "OPENAI_BASE_URL": llm.url, "CHATGATE_MODEL": "bench-model",
            "CHATGATE_LLM_TIMEOUT": "60", "WECHAT_TOKEN": wechat_sim.TOKEN, "WECHAT_APP_ID": wechat_sim.APP_ID,
            "WECHAT_APP_SECRET": wechat_sim.APP_SECRET, "WECHAT_AES_KEY": wechat_sim.AES_KEY,
            "WECHAT_API_BASE": wechat.url, "FEISHU_APP_ID": fs.APP_ID, "FEISHU_APP_SECRET": fs.APP_SECRET,
            "FEISHU_VERIFICATION_TOKEN": fs.VERIFICATION_TOKEN, "FEISHU_ENCRYPT_KEY": fs.ENCRYPT_KEY,
            "FEISHU_API_BASE": feishu.url, "CHATGATE_FEISHU_STREAM": "on" if stream else "off",
            "WEB_CONCURRENCY": "2", "CHATGATE_WORKERS": "1", "CHATGATE_LOG_LEVEL": "WARNING"}


def ask_all(url: str, n: int, rate: float, run: str) -> dict[str, str]:
    """Post one question per user, `rate` a second; message id → question number."""
    asked: dict[str, str] = {}
    session = requests.Session()
    start = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        event = fs.message_event(text=f"q-{i}", sender=f"ou_bench_{run}_{i}")
        body, headers = fs.signed(event)
        res = session.post(url + "/feishu", data=body, headers=headers, timeout=10)
        if res.status_code != 200:
            raise RuntimeError(f"/feishu answered {res.status_code}")
        asked[event["event"]["message"]["message_id"]] = str(i)
    return asked


def chat_started(llm: FakeLLM) -> dict[str, float]:
    """Question number → when its LLM call came (the fake sends the first piece at once)."""
    started = {}
    for r in llm.requests:
        if r.path == "/v1/chat/completions" and isinstance(r.body, dict):
            question = r.body["messages"][-1]["content"]
            started.setdefault(question.removeprefix("q-"), r.at)
    return started


def run_bot(tmp: Path, feishu: FakeFeishu, llm: FakeLLM, wechat: FakeWeChat, args, stream: bool) -> dict:
    feishu.reset()
    llm.reset()
    llm.answer_fn = lambda messages: answer_of(int(messages[-1]["content"][2:]), args.chunks * 2)
    llm.pieces, llm.chunk_delay = args.chunks, args.model_seconds / args.chunks
    work = tmp / ("cards" if stream else "text")
    work.mkdir()
    bot = LiveBot(work, environment(work, feishu, llm, wechat, stream))
    try:
        url = bot.start()
        cpu_before = tree_cpu_s(bot.worker.pid)
        log(f"{'cards' if stream else 'text'}: asking {args.n} questions at {args.rate}/s")
        asked = ask_all(url, args.n, args.rate, "c" if stream else "t")
        deadline = time.monotonic() + args.model_seconds + args.n / args.rate + 60
        while time.monotonic() < deadline:
            done = (sum(1 for c in feishu.cards.cards.values() if not c.streaming) if stream
                    else len(feishu.replies))
            if done >= args.n:
                break
            time.sleep(0.2)
        time.sleep(0.5)
        cpu = tree_cpu_s(bot.worker.pid) - cpu_before
    finally:
        bot.stop()
    started = chat_started(llm)
    result = {"answers": args.n, "worker_cpu_ms_per_answer": round(cpu * 1000 / args.n, 2)}
    if not stream:
        waits, right = [], 0
        for r in feishu.requests:
            parts = r.path.split("/")
            if r.path.endswith("/reply") and parts[-2] in asked:
                q = asked[parts[-2]]
                waits.append(r.at - started[q])
                text = json.loads(r.body.get("content") or "{}").get("text", "")
                right += text == answer_of(int(q), args.chunks * 2)
        result.update(first_visible_s=[round(percentile(waits, p), 3) for p in (50, 90, 100)], correct=right)
        return result
    by_card = {card_id: asked[mid] for mid, card_id, _, _ in feishu.card_replies if mid in asked}
    firsts, rates, ops, right, peak = [], [], [], 0, 0
    for card in feishu.cards.cards.values():
        q = by_card.get(card.card_id)
        if q is None:
            continue
        updates = [at for at, op, element, _, _ in card.ops if op == "content" and element == "answer"]
        streamed = updates[:-1]  # the last is the final text, put at the push
        if streamed:
            firsts.append(streamed[0] - started[q])
        if len(streamed) > 1:
            rates.append((len(streamed) - 1) / (streamed[-1] - streamed[0]))
        ops.append(len(card.ops))
        peak = max(peak, card.peak_ops_per_s())
        right += card.text == answer_of(int(q), args.chunks * 2) and not card.streaming
    result.update(first_visible_s=[round(percentile(firsts, p), 3) for p in (50, 90, 100)],
                  updates_per_card_per_s=round(sum(rates) / len(rates), 2) if rates else None,
                  peak_ops_per_card_per_s=peak, cardkit_ops_per_answer=round(sum(ops) / max(1, len(ops)), 1),
                  refusals=len(feishu.cards.refusals), text_replies=len(feishu.replies), correct=right)
    return result


def floor(feishu: FakeFeishu) -> float:
    """p50 of one CardKit update from this process through lark-oapi to the same fake, in seconds."""
    import lark_oapi as lark

    from handlers.feishu.cards import ANSWER_ID, CardKit, Sequencer, card_json

    feishu.reset()
    client = (lark.Client.builder().app_id(fs.APP_ID).app_secret(fs.APP_SECRET).domain(feishu.url)
              .log_level(lark.LogLevel.WARNING).build())
    kit = CardKit(client)
    card_id = kit.create(card_json(False))
    seq, times, text = Sequencer(time.time()), [], ""
    for k in range(50):
        text += f" w{k}"
        t = time.monotonic()
        kit.put(card_id, ANSWER_ID, text, seq.next())
        times.append(time.monotonic() - t)
        time.sleep(0.11)  # within CardKit's 10 operations a second
    return percentile(times, 50)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=40, help="questions, one user each (default 40)")
    ap.add_argument("--model-seconds", type=float, default=6.0, help="how long each answer streams (default 6)")
    ap.add_argument("--chunks", type=int, default=60, help="pieces each answer streams in (default 60)")
    ap.add_argument("--rate", type=float, default=10.0, help="questions a second (default 10)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the lines")
    args = ap.parse_args()
    with FakeFeishu(app_id=fs.APP_ID, app_secret=fs.APP_SECRET, bot_open_id=fs.BOT_OPEN_ID) as feishu, \
            FakeLLM(api_key=LLM_KEY) as llm, \
            FakeWeChat(app_id=wechat_sim.APP_ID, app_secret=wechat_sim.APP_SECRET) as wc, \
            tempfile.TemporaryDirectory(prefix="chatgate-cards-") as tmp:
        cards = run_bot(Path(tmp), feishu, llm, wc, args, stream=True)
        text = run_bot(Path(tmp), feishu, llm, wc, args, stream=False)
        bare = floor(feishu)
    result = {"n": args.n, "model_seconds": args.model_seconds, "chunks": args.chunks, "rate": args.rate,
              "cores": os.cpu_count(), "load_average_before": open("/proc/loadavg").read().split()[:3],
              "cards": cards, "text": text, "floor_update_s": round(bare, 4)}
    if args.json:
        print(json.dumps(result))
    else:
        c, t = cards, text
        print(f"{args.n} answers, each streamed in {args.chunks} pieces over {args.model_seconds:g} s, "
              f"{args.rate:g} questions/s, {os.cpu_count()} cores")
        print(f"cards: first token → first visible update p50 {c['first_visible_s'][0]} s, "
              f"p90 {c['first_visible_s'][1]} s, max {c['first_visible_s'][2]} s")
        print(f"cards: {c['updates_per_card_per_s']} updates per card per second while writing; most in any "
              f"second {c['peak_ops_per_card_per_s']} (CardKit allows 10); {c['cardkit_ops_per_answer']} "
              f"CardKit operations per answer; {c['refusals']} refused")
        print(f"cards: worker CPU {c['worker_cpu_ms_per_answer']} ms per answer; "
              f"{c['correct']}/{args.n} cards ended with the whole answer")
        print(f"text (CHATGATE_FEISHU_STREAM=off): first token → the reply p50 {t['first_visible_s'][0]} s, "
              f"max {t['first_visible_s'][2]} s; worker CPU {t['worker_cpu_ms_per_answer']} ms per answer; "
              f"{t['correct']}/{args.n} right")
        print(f"floor: one CardKit update through lark-oapi to the same fake, p50 {bare * 1000:.1f} ms")
    return 0 if cards["correct"] == args.n and text["correct"] == args.n else 1


if __name__ == "__main__":
    sys.exit(main())
