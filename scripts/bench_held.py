#!/usr/bin/env python3
"""How many WeChat posts held for their answer the Procfile's web process sustains while ordinary
messages stay fast.

    .venv/bin/python scripts/bench_held.py [--levels 0,250,500,1000] [--duration 15]

For each level N, one wrk keeps N connections posting questions that wait for their answer: no
worker runs, so each post is held for the whole 4.5 s reply window (a blocking wait on Redis) and
then kept open past WeChat's 5 s cut-off, as a slow model would make it. Meanwhile a second wrk sends
ordinary messages (images, answered at once with the text-only reply, through signature check,
decryption and admission) on 20 connections. The table shows the ordinary messages' rate and
latency next to the number of posts the server was holding, counted in Redis halfway through (the
held posts start together, so a count taken in the second between a hold's end and WeChat's cut-off
reads low: the connections column is the concurrency).
Needs `wrk` (Debian: apt-get install -y wrk).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_webhook import (  # noqa: E402
    WEB_APP,
    Gunicorn,
    Signer,
    free_port,
    openid,
    run_wrk,
    server_env,
    write_lua,
    wrk_command,
)

from bot.embedded_redis import EmbeddedRedis  # noqa: E402

TARGET_P99_MS = 100


def write_messages(path: Path, kind: str, first_msg_id: int, count: int, signer: Signer) -> None:
    now = int(time.time())
    with open(path, "w") as f:
        for i in range(count):
            msg_id = first_msg_id + i
            user = openid(i % 5000 + (0 if kind == "image" else 100000))
            body = ("<MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[http://img.invalid/p.jpg]]></PicUrl>"
                    "<MediaId><![CDATA[m1]]></MediaId>" if kind == "image" else
                    f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[slow question {i}]]></Content>")
            xml = (f"<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA[{user}]]>"
                   f"</FromUserName><CreateTime>{now}</CreateTime>{body}<MsgId>{msg_id}</MsgId></xml>")
            p, data = signer.request(xml, str(now), str(100000000 + msg_id % 900000000))
            f.write(f"{p}\t{data}\n")


def count_held(redis_client) -> int:
    return sum(1 for _ in redis_client.scan_iter(match="chatgate:held:*", count=1000))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", default="0,250,500,1000", help="held connections to try")
    ap.add_argument("--duration", type=float, default=15, help="seconds of ordinary load per level")
    ap.add_argument("--connections", type=int, default=20, help="connections sending ordinary messages")
    ap.add_argument("--show-log", action="store_true", help="print the end of gunicorn's log")
    args = ap.parse_args()
    if subprocess.run(["which", "wrk"], capture_output=True).returncode:
        print("wrk is needed: apt-get install -y wrk", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # wrk and gunicorn inherit it
    levels = [int(x) for x in args.levels.split(",")]
    signer = Signer()
    rows = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chatgate-held-")))
        redis = stack.enter_context(EmbeddedRedis())
        port = free_port()
        env = server_env(tmp, redis.url, port, "WARNING", reply_wait=4.5)
        server = stack.enter_context(Gunicorn(WEB_APP, env, port, tmp / "gunicorn.log"))
        stack.callback(lambda: print((tmp / "gunicorn.log").read_text()[-1500:]) if args.show_log else None)
        workers = server.workers()
        url = f"http://127.0.0.1:{port}/wechat"
        client = redis.client()
        procs: list = []
        for n, level in enumerate(levels):
            ordinary = tmp / f"ordinary{n}.txt"
            write_messages(ordinary, "image", 10**15 + n * 10**7, int(args.duration * 4000) + 1000, signer)
            write_lua(tmp / f"ordinary{n}.lua", ordinary, 2)
            held_proc = None
            if level:
                held = tmp / f"held{n}.txt"
                write_messages(held, "text", 2 * 10**15 + n * 10**7, level * int(args.duration / 5 + 4), signer)
                write_lua(tmp / f"held{n}.lua", held, 1)
                cmd = wrk_command(url, tmp / f"held{n}.lua", args.duration + 8, level, 1)
                held_proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                procs.append(held_proc)
                threading.Thread(target=held_proc.communicate, daemon=True).start()
                time.sleep(6)  # every held connection is now waiting on its question
            sample: list[int] = []
            timer = threading.Timer(args.duration / 2, lambda s=sample: s.append(count_held(client)))
            timer.start()
            stats, _ = run_wrk(wrk_command(url, tmp / f"ordinary{n}.lua", args.duration, args.connections, 2),
                               procs, {"gunicorn workers": server.worker_pids()})
            timer.join()
            if held_proc is not None:
                held_proc.wait()
                procs.remove(held_proc)
            rows.append((level, sample[0] if sample else 0, stats))
            print(f"level {level}: holding {rows[-1][1]}, ordinary {stats['rps']:.0f}/s, "
                  f"p99 {stats['p99_us'] / 1000:.1f} ms, errors {stats['errors']:.0f}", flush=True)
    print(f"\n{workers} gevent workers, ordinary load on {args.connections} connections, "
          f"{args.duration:g}s per level\n")
    print("| held connections | posts held (Redis, mid-run) | ordinary msgs/s | p50 ms | p99 ms | errors |")
    print("|---:|---:|---:|---:|---:|---:|")
    best = 0
    for level, held_now, s in rows:
        print(f"| {level} | {held_now} | {s['rps']:.0f} | {s['p50_us'] / 1000:.1f} | {s['p99_us'] / 1000:.1f} | "
              f"{s['errors']:.0f} |")
        if s["p99_us"] / 1000 < TARGET_P99_MS and not s["errors"]:
            best = max(best, held_now)
    print(f"\nmost posts held at once with ordinary p99 under {TARGET_P99_MS} ms: {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
