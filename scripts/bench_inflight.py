#!/usr/bin/env python3
"""Answers in flight at once with a slow model: N questions from N users within a couple of seconds,
each answer streamed over 10 s, next to the floor (what the fake model alone allows to one gevent
process with no queue or store) measured in the same run.

    .venv/bin/python scripts/bench_inflight.py [-n 500] [--model-seconds 10] [--env NAME=VALUE ...]

What runs: as in bench_delivery.py — the Procfile's gunicorn web and `chatgate worker` (production
settings, WeChat safe mode, WECHAT_REPLY_WAIT=0 and WECHAT_REPLY_MODE=push) on a Redis of their own,
the lean fakes (scripts/bench_fakes.py), here with a model that streams each answer in `--chunks`
events spread over `--model-seconds`, and the load generator (scripts/bench_asker.py) posting the N
questions `q-<i>`, one user each, evenly over `--window` seconds.

Printed: the most LLM calls open at once (counted by the fake); the queueing delay, from a question's
ack to the start of its LLM call (p50, max); ack → push (p50, max) and how many were answered within
`--target` seconds of their ack; the worker's memory as PSS (/proc/PID/smaps_rollup, summed over its
processes) idle before the load and at its highest, and per answer in flight = (peak − idle) / most
calls open at once; CPU per answer of the worker (its process tree, reaped children included) and of
the fakes; and whether every acknowledged question was answered exactly once (pushed, or in the
webhook's own reply when it was ready before the ack). The floor: one gevent
process streaming the same N answers from the same fake with the real openai client and pushing them
with wechatpy, offered the same way (scripts/bench_floor.py), with its own PSS and CPU.

`--env NAME=VALUE` passes a setting to web and worker. Progress goes to stderr; the table (or with
--json, one JSON object) to stdout. Exit status 1 when an acknowledged question was not answered
exactly once.
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
    Sampler,
    bot_env,
    drain,
    first_by_question,
    fmt,
    log,
    median,
    outcome,
    parse_env,
    passive_replies,
    problems,
    run_asker,
    run_floor,
    table,
    write_requests,
)
from bench_main import parser, run  # noqa: E402


def timings(calls: list[list], sends: list[list], since: dict[str, float], target: float) -> dict:
    """Queueing delay (→ LLM call start) and answer time (→ push) of the questions in `since`
    (question → the time both count from), in seconds."""
    started = first_by_question(calls, 2)
    pushed = first_by_question([s for s in sends if QUESTION.search(s[2])], 2)
    queued = [started[k][0] - t for k, t in since.items() if k in started]
    answered = [pushed[k][0] - t for k, t in since.items() if k in pushed]
    return {
        "queue_p50_s": median(queued), "queue_max_s": max(queued, default=math.nan),
        "answer_p50_s": median(answered), "answer_max_s": max(answered, default=math.nan),
        "answered": len(answered), "answered_within_target": sum(1 for a in answered if a <= target),
    }


def measure_bot(args, procs: Processes, fakes: Fakes, tmp: Path) -> dict:
    """The Procfile's processes answering the N questions, until every answer arrived (or the drain limit)."""
    users = write_requests(tmp / "requests.tsv", args.n, 8_000_000_000_000 + int(time.time()) % 10**6 * 10**6)
    bot = Bot(tmp, bot_env(tmp, fakes, parse_env(args.env)))
    peak = {"pss_kb": 0}
    try:
        url = bot.start()
        bot.settle()
        idle = sorted(bot.worker_pss_kb() for _ in range(5))[2]
        workers = bot.worker_processes()
        log(f"web and worker up ({workers} worker processes, {idle / 1024:.1f} MB PSS); "
            f"{args.n} questions over {args.window:g} s")
        fakes.reset()

        def sample() -> None:
            peak["pss_kb"] = max(peak["pss_kb"], bot.worker_pss_kb())

        sampler = Sampler(sample, 0.25)
        sampler.start()
        w0, f0 = bot.worker_cpu_s(), fakes.cpu_s()
        asker = run_asker(procs, tmp / "requests.tsv", url, args.n / args.window, tmp / "acks.json")
        asker.wait()
        procs.stop(asker)
        acks = json.loads((tmp / "acks.json").read_text())
        acked = {p[0]: p for p in acks["posts"] if p[3] == 200}
        passive = [r for r in passive_replies(acks["posts"]) if QUESTION.search(r[2])]
        log(f"{len(acked)} of {args.n} acknowledged; waiting for the answers")
        everything = drain(fakes, len(acked) - len(passive), acks["end"], args.drain)
        sampler.stop()
        w1, f1 = bot.worker_cpu_s(), fakes.cpu_s()
        report = fakes.report()
        (tmp / "fakes.json").write_text(json.dumps(report))  # what the fakes saw, for --keep
        bot.stop_worker_counted()
    except BaseException:
        log("the bot's log ends with:\n" + bot.log()[-3000:])
        raise
    finally:
        bot.stop()
    answers = report["sends"] + passive
    n = sum(1 for s in answers if QUESTION.search(s[2])) or math.nan
    return {
        "offered": args.n, "acked": len(acked), "failed_posts": args.n - len(acked),
        "answered_in_ack": len(passive), "peak_llm_calls": report["peak"],
        **timings(report["calls"], answers, {k: a[2] for k, a in acked.items()}, args.target),
        "pss_idle_mb": idle / 1024, "pss_peak_mb": peak["pss_kb"] / 1024,
        "pss_per_inflight_mb": (peak["pss_kb"] - idle) / 1024 / report["peak"] if report["peak"] else math.nan,
        "worker_cpu_ms_per_answer": (w1 - w0) * 1000 / n,
        "fakes_cpu_ms_per_answer": (f1 - f0) * 1000 / n,
        "llm_calls": len(report["calls"]),
        "worker_processes": workers,
        **outcome(acked, answers, users),
        "all_arrived": everything,
        "fakes_saw": {"connections": report["connections"], "requests": report["requests"]},
    }


def measure_floor(args, procs: Processes, fakes: Fakes, tmp: Path) -> dict:
    """The same N answers from the floor process, against the same fakes."""
    log(f"the floor: {args.n} streaming calls over {args.window:g} s from one gevent process")
    fakes.reset()
    f0 = fakes.cpu_s()
    floor = run_floor(procs, fakes, args.n / args.window, args.n, tmp / "floor.json")
    f1 = fakes.cpu_s()
    report = fakes.report()
    sends = [s for s in report["sends"] if QUESTION.search(s[2])]
    errors = [a[3] for a in floor["answers"] if a[3]]
    if errors:
        log(f"floor: {len(errors)} answers failed, e.g. {errors[0]}")
    n = len(sends) or math.nan
    return {
        "offered": args.n, "errors": len(errors), "peak_llm_calls": report["peak"],
        **timings(report["calls"], sends, {a[0]: a[1] for a in floor["answers"]}, args.target),
        "pss_idle_mb": floor["pss_idle_kb"] / 1024, "pss_peak_mb": floor["pss_peak_kb"] / 1024,
        "pss_per_inflight_mb": ((floor["pss_peak_kb"] - floor["pss_idle_kb"]) / 1024 / report["peak"]
                                if report["peak"] else math.nan),
        "floor_cpu_ms_per_answer": floor["cpu_s"] * 1000 / n,
        "fakes_cpu_ms_per_answer": (f1 - f0) * 1000 / n,
        "answered_once": outcome({a[0]: a for a in floor["answers"]}, sends, {})["answered_once"],
    }


def summary(args, bot: dict, floor: dict | None, load_before: str) -> str:
    """The plain-text report."""
    f = floor or {}
    dash = "—" if floor else ""

    def row(name, key, digits=1, floor_key=None):
        fl = f.get(floor_key or key, dash) if floor else ""
        return (name, fmt(bot[key], digits), fmt(fl, digits))

    rows = [
        ("questions (one user each)", fmt(bot["offered"]), fmt(f.get("offered", ""))),
        ("acknowledged", f"{bot['acked']} of {bot['offered']}", dash),
        row("most LLM calls at once", "peak_llm_calls"),
        row("queueing delay ack → LLM call, p50 (s; floor: from the offer)", "queue_p50_s", 2),
        row("queueing delay, max (s)", "queue_max_s", 2),
        row("ack → push p50 (s)", "answer_p50_s", 2),
        row("ack → push max (s)", "answer_max_s", 2),
        (f"answered within {args.target:g} s of the ack", f"{bot['answered_within_target']} of {bot['acked']}",
         f"{f['answered_within_target']} of {f['offered']}" if floor else ""),
        row("worker PSS idle (MB; floor: its process)", "pss_idle_mb"),
        row("worker PSS at peak (MB)", "pss_peak_mb"),
        row("PSS per answer in flight (MB)", "pss_per_inflight_mb", 2),
        row("worker CPU per answer (ms; floor: its process)", "worker_cpu_ms_per_answer", 1,
            "floor_cpu_ms_per_answer"),
        row("fakes' CPU per answer (ms)", "fakes_cpu_ms_per_answer", 2),
        ("answered exactly once", f"{bot['answered_once']} of {bot['acked']}",
         f"{f['answered_once']} of {f['offered']}" if floor else ""),
    ]
    lines = [
        f"bench_inflight: {args.n} questions from {args.n} users over {args.window:g} s, each answer streamed in "
        f"{args.chunks} events over {args.model_seconds:g} s, push mode",
        f"machine: {os.cpu_count()} cores, load average before {load_before}",
        f"worker: `chatgate worker`, {bot['worker_processes']} processes at idle"
        + (f"; settings {' '.join(args.env)}" if args.env else ""),
        "",
        table(rows, ("", "chatgate", "floor (one gevent process)")),
        "",
    ]
    if bot["answered_in_ack"]:
        lines.append(f"answers ready before the webhook acked, sent in its own reply: {bot['answered_in_ack']}")
    lines.append(f"the fakes saw, from chatgate: {bot['fakes_saw']['connections']} connections, requests "
                 + ", ".join(f"{k} {v}" for k, v in sorted(bot["fakes_saw"]["requests"].items())))
    lines.append(problems(bot, args.drain))
    return "\n".join(lines)


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("-n", type=int, default=500, help="questions, each from a user of its own (default 500)")
    ap.add_argument("--window", type=float, default=2, help="seconds over which they are posted (default 2)")
    ap.add_argument("--model-seconds", type=float, default=10, help="how long each answer streams (default 10)")
    ap.add_argument("--chunks", type=int, default=20, help="events in each streamed answer (default 20)")
    ap.add_argument("--target", type=float, default=15, help="seconds from ack to push counted as on time (15)")
    ap.add_argument("--drain", type=float, default=600,
                    help="most seconds to wait for the answers after the load (default 600)")
    args = ap.parse_args()
    if args.n < 1 or args.window <= 0 or args.model_seconds < 0 or args.chunks < 3:
        ap.error("need -n >= 1, --window > 0, --model-seconds >= 0 and --chunks >= 3")
    fields = {"n": args.n, "window": args.window, "model_seconds": args.model_seconds, "chunks": args.chunks}
    return run(ap, args, "inflight", lambda procs: Fakes(procs, args.model_seconds, args.chunks), measure_bot,
               measure_floor, fields, summary)


if __name__ == "__main__":
    sys.exit(main())
