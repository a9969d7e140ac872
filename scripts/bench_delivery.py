#!/usr/bin/env python3
"""Answers delivered end to end with an instant model: questions from many users offered at a steady
rate, each acknowledged by the webhook at once and answered by a push, next to the floor (the SDK
calls and the fakes alone) measured in the same run.

    .venv/bin/python scripts/bench_delivery.py [--rate 100] [--duration 20] [--env NAME=VALUE ...]

What runs: the Procfile's gunicorn web and `chatgate worker` (production settings in a temporary
directory, WeChat safe mode, WECHAT_REPLY_WAIT=0 and WECHAT_REPLY_MODE=push: the webhook acks at once
and the worker pushes the answer through the customer-service API) on a Redis of their own; lean fakes
of WeChat's API and of an OpenAI-compatible LLM that streams `echo: <question>` at once
(scripts/bench_fakes.py); and a load generator (scripts/bench_asker.py) posting pre-signed,
pre-encrypted messages `q-<i>`, one user each (so no user's earlier question holds a later one
back), at `--rate` a second for `--duration` seconds. Each is a process of its own, so each one's CPU
is its own.

Printed: offered/s; delivered during the load and overall (/s); the backlog when the load ends; how
long after the load the last answer arrived; ack → push latency (ack time from the load generator,
arrival time at the fake WeChat, matched by the question the answer echoes); CPU per answer of the
worker (its whole process tree, reaped children included, checked against wait4 at its exit), per
message of the web, and of Redis, the fakes and the load generator; and whether every acknowledged
question was answered exactly once, to its asker (pushed; or, when the answer was ready before the
ack, in the webhook's own reply, read from the ack: chatgate does that even with WECHAT_REPLY_WAIT=0,
and it counts at 0 ms). The floor: one gevent process that, at the same rate, streams each
answer from the same fake LLM with the real openai client and pushes it with the real wechatpy
client (scripts/bench_floor.py).

`--env NAME=VALUE` passes a setting to web and worker (e.g. CHATGATE_WORKERS=8). Progress goes to
stderr; the table (or with --json, one JSON object) to stdout. Exit status 1 when an acknowledged
question was not answered exactly once.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_answering import (  # noqa: E402
    QUESTION,
    Bot,
    Fakes,
    Processes,
    bot_env,
    drain,
    first_by_question,
    fmt,
    log,
    outcome,
    parse_env,
    passive_replies,
    percentile,
    problems,
    run_asker,
    run_floor,
    table,
    write_requests,
)
from bench_main import parser, run  # noqa: E402
from bench_usage import cpu_line  # noqa: E402


def delivery(sends: list[list], since: dict[str, float], start: float, last_offer: float, rate: float) -> dict:
    """Rates, backlog and latency of the answers (`sends`: `[t, touser, content]`) of the questions in
    `since` (question → the time its latency counts from), for a load offered from `start` to
    `last_offer` at `rate`."""
    sends = [s for s in sends if QUESTION.search(s[2])]
    pushed = first_by_question(sends, 2)
    load_end = last_offer + 1 / rate  # the load's last interval ends here
    latencies = [(pushed[k][0] - t) * 1000 for k, t in since.items() if k in pushed]
    during = sum(1 for s in sends if s[0] <= load_end)
    last = max((s[0] for s in sends), default=math.nan)
    return {
        "offered_per_s": len(since) / (load_end - start),
        "delivered_during_load_per_s": during / (load_end - start),
        "delivered_overall_per_s": len(sends) / (last - start) if sends else 0.0,
        "backlog_at_load_end": sum(1 for t in since.values() if t <= load_end) - during,
        "last_answer_after_load_s": last - last_offer,
        "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies, default=math.nan),
    }


def measure_bot(args, procs: Processes, fakes: Fakes, tmp: Path) -> dict:
    """The Procfile's processes under the load, until every answer arrived (or the drain limit)."""
    count = max(1, round(args.rate * args.duration))
    users = write_requests(tmp / "requests.tsv", count, 7_000_000_000_000 + int(time.time()) % 10**6 * 10**6)
    bot = Bot(tmp, bot_env(tmp, fakes, parse_env(args.env)))
    try:
        url = bot.start()
        bot.settle()
        workers = bot.worker_processes()
        log(f"web and worker up ({workers} worker processes); offering {count} questions at {args.rate:g}/s")
        fakes.reset()
        u0 = bot.usage(fakes)
        asker = run_asker(procs, tmp / "requests.tsv", url, args.rate, tmp / "acks.json")
        asker.wait()
        procs.stop(asker)
        u1 = bot.usage(fakes)
        acks = json.loads((tmp / "acks.json").read_text())
        acked = {p[0]: p for p in acks["posts"] if p[3] == 200}
        passive = [r for r in passive_replies(acks["posts"]) if QUESTION.search(r[2])]
        log(f"load done: {len(acked)} of {count} acknowledged ({len(passive)} answered in the ack itself); "
            f"waiting for the answers")
        everything = drain(fakes, len(acked) - len(passive), acks["end"], args.drain)
        u2 = bot.usage(fakes)
        report = fakes.report()
        (tmp / "fakes.json").write_text(json.dumps(report))  # what the fakes saw, for --keep
        seen, waited = bot.stop_worker_counted()
    except BaseException:
        log("the bot's log ends with:\n" + bot.log()[-3000:])
        raise
    finally:
        bot.stop()
    answers = report["sends"] + passive
    n = sum(1 for s in answers if QUESTION.search(s[2])) or math.nan
    stats = delivery(answers, {k: a[2] for k, a in acked.items()}, acks["start"], acks["end"], args.rate)
    return {
        "offered": count, "acked": len(acked), "failed_posts": count - len(acked), "pushes": len(report["sends"]),
        "answered_in_ack": len(passive),
        **{k: v for k, v in stats.items() if not k.endswith("_ms")},
        "ack_to_push_p50_ms": stats["p50_ms"], "ack_to_push_p99_ms": stats["p99_ms"],
        "ack_to_push_max_ms": stats["max_ms"],
        "worker_cpu_ms_per_answer": (u2.parts["worker"] - u0.parts["worker"]) * 1000 / n,
        "web_cpu_ms_per_message": (u1.parts["web"] - u0.parts["web"]) * 1000 / count,
        "redis_cpu_ms_per_answer": (u2.parts["redis"] - u0.parts["redis"]) * 1000 / n,
        "fakes_cpu_ms_per_answer": (u2.parts["fakes"] - u0.parts["fakes"]) * 1000 / n,
        "asker_cpu_ms_per_post": acks["cpu_s"] * 1000 / count,
        "cpu_during_load": u0.until(u1), "cpu_after_load": u1.until(u2),
        "worker_processes": workers,
        "worker_cpu_check": {"proc_tree_s": seen, "wait4_s": waited},
        **outcome(acked, answers, users),
        "all_arrived": everything,
        "fakes_saw": {"connections": report["connections"], "requests": report["requests"]},
    }


def measure_floor(args, procs: Processes, fakes: Fakes, tmp: Path) -> dict:
    """The same answers from the floor process, against the same fakes."""
    count = max(1, round(args.rate * args.duration))
    log(f"the floor: {count} answers at {args.rate:g}/s from one gevent process")
    fakes.reset()
    f0 = fakes.cpu_s()
    floor = run_floor(procs, fakes, args.rate, count, tmp / "floor.json")
    f1 = fakes.cpu_s()
    sends = fakes.report()["sends"]
    n = sum(1 for s in sends if QUESTION.search(s[2])) or math.nan
    errors = [a[3] for a in floor["answers"] if a[3]]
    if errors:
        log(f"floor: {len(errors)} answers failed, e.g. {errors[0]}")
    stats = delivery(sends, {a[0]: a[1] for a in floor["answers"]}, floor["start"], floor["end"], args.rate)
    return {
        "offered": count, "pushes": len(sends), "errors": len(errors),
        **{k: v for k, v in stats.items() if not k.endswith("_ms")},
        "offer_to_push_p50_ms": stats["p50_ms"], "offer_to_push_p99_ms": stats["p99_ms"],
        "offer_to_push_max_ms": stats["max_ms"],
        "floor_cpu_ms_per_answer": floor["cpu_s"] * 1000 / n,
        "fakes_cpu_ms_per_answer": (f1 - f0) * 1000 / n,
        "answered_once": outcome({a[0]: a for a in floor["answers"]}, sends, {})["answered_once"],
    }


def summary(args, bot: dict, floor: dict | None, load_before: str) -> str:
    """The plain-text report."""
    f = floor or {}

    def row(name, b, fl="", digits=1):
        return (name, fmt(b, digits), fmt(fl, digits) if fl != "" else "")

    rows = [
        row("offered /s", bot["offered_per_s"], f.get("offered_per_s", "")),
        row("acknowledged", f"{bot['acked']} of {bot['offered']}", "—" if floor else ""),
        row("delivered during the load /s", bot["delivered_during_load_per_s"],
            f.get("delivered_during_load_per_s", "")),
        row("delivered overall /s", bot["delivered_overall_per_s"], f.get("delivered_overall_per_s", "")),
        row("backlog at the end of the load", bot["backlog_at_load_end"], f.get("backlog_at_load_end", "")),
        row("last answer after the last offer (s)", bot["last_answer_after_load_s"],
            f.get("last_answer_after_load_s", ""), 2),
        row("ack → push p50 (ms; floor: offer → push)", bot["ack_to_push_p50_ms"], f.get("offer_to_push_p50_ms", "")),
        row("ack → push p99 (ms)", bot["ack_to_push_p99_ms"], f.get("offer_to_push_p99_ms", "")),
        row("worker CPU per answer (ms; floor: its process)", bot["worker_cpu_ms_per_answer"],
            f.get("floor_cpu_ms_per_answer", ""), 2),
        row("web CPU per message (ms)", bot["web_cpu_ms_per_message"], "—" if floor else "", 2),
        row("Redis CPU per answer (ms)", bot["redis_cpu_ms_per_answer"], "—" if floor else "", 2),
        row("fakes' CPU per answer (ms)", bot["fakes_cpu_ms_per_answer"], f.get("fakes_cpu_ms_per_answer", ""), 2),
        row("load generator CPU per post (ms)", bot["asker_cpu_ms_per_post"], "—" if floor else "", 2),
        row("answered exactly once", f"{bot['answered_once']} of {bot['acked']}",
            f"{f['answered_once']} of {f['offered']}" if floor else ""),
    ]
    check = bot["worker_cpu_check"]
    lines = [
        f"bench_delivery: {args.rate:g}/s offered for {args.duration:g} s, one user per question, push mode, "
        f"instant model",
        f"machine: {os.cpu_count()} cores, load average before {load_before}",
        cpu_line("during the load", bot["cpu_during_load"]),
        *([cpu_line("after the load", bot["cpu_after_load"])] if bot["cpu_after_load"]["seconds"] >= 1 else []),
        f"worker: `chatgate worker`, {bot['worker_processes']} processes at idle"
        + (f"; settings {' '.join(args.env)}" if args.env else ""),
        "",
        table(rows, ("", "chatgate", "floor (SDKs + fakes alone)")),
        "",
        f"worker CPU check: {check['proc_tree_s']:.2f} s from /proc (tree, reaped children included) vs "
        f"{check['wait4_s']:.2f} s from wait4 at exit (start-up and shut-down included in both, shut-down "
        f"only in the second)",
    ]
    if bot["answered_in_ack"]:
        lines.append(f"answers ready before the webhook acked, sent in its own reply: {bot['answered_in_ack']} "
                     f"(their ack → answer counts as 0 ms)")
    lines.append(f"the fakes saw, from chatgate: {bot['fakes_saw']['connections']} connections, requests "
                 + ", ".join(f"{k} {v}" for k, v in sorted(bot["fakes_saw"]["requests"].items())))
    lines.append(problems(bot, args.drain))
    return "\n".join(lines)


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--rate", type=float, default=100, help="questions offered a second (default 100)")
    ap.add_argument("--duration", type=float, default=20, help="seconds of load (default 20)")
    ap.add_argument("--drain", type=float, default=900,
                    help="most seconds to wait for the answers after the load (default 900)")
    args = ap.parse_args()
    if args.rate <= 0 or args.duration <= 0:
        ap.error("--rate and --duration must be positive")
    return run(ap, args, "delivery", Fakes, measure_bot, measure_floor,
               {"rate": args.rate, "duration": args.duration}, summary)


if __name__ == "__main__":
    sys.exit(main())
