#!/usr/bin/env python3
"""Benchmark of the WeChat webhook alone: signature check, decryption, admission in SQLite and
enqueue, under sustained concurrent load, next to a bare Flask endpoint served the same way.

    .venv/bin/python scripts/bench_webhook.py [--duration 20] [--connections 20] [--threads 2]

What it does:
  * starts an embedded Redis and, in a temporary directory, a production configuration
    (CHATGATE_ENV=production, SQLite there, a free trial large enough that every message is admitted
    and enqueued: the full path), then gunicorn exactly as the Procfile's `web` line does;
  * pre-signs and pre-encrypts distinct text messages (unique MsgIds, ~1000 users), which wrk (a
    separate process) cycles through from a generated Lua script; a short warm-up first;
  * checks afterwards in SQLite and Redis that every message that reached the server was admitted
    and enqueued exactly once;
  * repeats the same wrk command with the same requests against `scripts/bench_baseline.py` (bare
    Flask answering `success`) under the same gunicorn settings: the floor nothing can beat.

No worker runs, so the jobs stay in Redis, and WECHAT_REPLY_WAIT is 0: acknowledge at once, no held
passive reply (`--reply-wait` changes it, but then each question waits out the whole hold). Needs
`wrk` (Debian: apt-get install -y wrk). Variables from a `.env` in the repository are ignored: every
chatgate variable the benchmark does not set is passed empty, which means its default
(WEB_CONCURRENCY is taken from this process's environment).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import math
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlencode

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bot.embedded_redis import EmbeddedRedis  # noqa: E402
from config.settings import VARIABLES  # noqa: E402

GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
WEB_APP = "handlers.app:create_app()"          # the Procfile's web line
BASELINE_APP = "scripts.bench_baseline:app"
QUEUE_KEY = "rq:queue:chatgate"

# The official account the benchmark plays (any valid values; production refuses placeholders).
TOKEN = "benchT0ken4chatgate"
APP_ID = "wxbench0123456789"
APP_SECRET = "bench-app-secret-0123456789"
AES_KEY = "Bq3kVZ0mWcR7tY1uI9oP5aS2dF8gH4jK6lZ3xC0vB7n"  # 43 characters
assert len(AES_KEY) == 43


# -- WeChat's side: sign and encrypt like the platform (safe mode) ---------------------------------

def _sha1_sorted(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


class Signer:
    def __init__(self, token: str = TOKEN, aes_key: str = AES_KEY, app_id: str = APP_ID):
        self.token, self.app_id = token, app_id.encode()
        self.key = base64.b64decode(aes_key + "=")

    def encrypt(self, xml: str) -> str:
        body = xml.encode()
        plain = os.urandom(16) + struct.pack(">I", len(body)) + body + self.app_id
        n = 32 - len(plain) % 32  # PKCS#7 with a 32-byte block, as WeChat does
        plain += bytes([n]) * n
        enc = Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16])).encryptor()
        return base64.b64encode(enc.update(plain) + enc.finalize()).decode()

    def request(self, xml: str, timestamp: str, nonce: str) -> tuple[str, str]:
        """(path with query, body) of one safe-mode POST."""
        encrypted = self.encrypt(xml)
        query = urlencode({
            "signature": _sha1_sorted(self.token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce,
            "openid": "x", "encrypt_type": "aes",
            "msg_signature": _sha1_sorted(self.token, timestamp, nonce, encrypted)})
        body = f"<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
        return f"/wechat?{query}", body


def openid(user: int) -> str:
    return "o" + hashlib.sha1(f"bench-user-{user}".encode()).hexdigest()[:27]  # 28 chars, like WeChat's


def write_requests(path: Path, first_msg_id: int, count: int, users: int, signer: Signer) -> None:
    """`count` distinct text messages, one `path<TAB>body` line each."""
    now = int(time.time())
    with open(path, "w") as f:
        for i in range(count):
            msg_id = first_msg_id + i
            user = (i * 7919) % users  # spread over the users, every user seen again and again
            xml = (f"<xml><ToUserName><![CDATA[gh_bench]]></ToUserName>"
                   f"<FromUserName><![CDATA[{openid(user)}]]></FromUserName><CreateTime>{now}</CreateTime>"
                   f"<MsgType><![CDATA[text]]></MsgType>"
                   f"<Content><![CDATA[第{i}个问题：How do I keep a sourdough starter alive on holiday?]]></Content>"
                   f"<MsgId>{msg_id}</MsgId></xml>")
            p, body = signer.request(xml, str(now), str(100000000 + msg_id % 900000000))
            f.write(f"{p}\t{body}\n")


# -- wrk --------------------------------------------------------------------------------------------

LUA = r"""
-- Generated by scripts/bench_webhook.py: cycles through pre-signed, pre-encrypted requests.
-- Thread k of N takes lines k, k+N, k+2N, ... so threads never send the same message.
local data_file = "@DATA@"
local nthreads = @NTHREADS@
local close = @CLOSE@
local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

function init(args)
  reqs = {}
  local headers = { ["Content-Type"] = "text/xml" }
  if close then headers["Connection"] = "close" end
  local i = 0
  for line in io.lines(data_file) do
    if i % nthreads == tid then
      local tab = line:find("\t", 1, true)
      reqs[#reqs + 1] = wrk.format("POST", line:sub(1, tab - 1), headers, line:sub(tab + 1))
    end
    i = i + 1
  end
  n = #reqs
  sent = 0
end

function request()
  sent = sent + 1
  return reqs[(sent - 1) % n + 1]
end

function done(summary, latency, requests)
  local sent_total, distinct, dup = 0, 0, 0
  for _, t in ipairs(threads) do
    local s, m = t:get("sent"), t:get("n")
    sent_total = sent_total + s
    distinct = distinct + math.min(s, m)
    dup = dup + math.max(s - m, 0)
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d bytes=%d connect_errors=%d read_errors=%d write_errors=%d " ..
    "status_errors=%d timeout_errors=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f " ..
    "sent=%d distinct_sent=%d duplicates_sent=%d\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    sent_total, distinct, dup))
end
"""


def write_lua(path: Path, data: Path, threads: int, close: bool = False) -> None:
    path.write_text(LUA.replace("@DATA@", str(data)).replace("@NTHREADS@", str(threads))
                    .replace("@CLOSE@", "true" if close else "false"))


def wrk_command(url: str, lua: Path, duration: float, connections: int, threads: int) -> list[str]:
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s",
            "-s", str(lua), url]


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _machine_cpu() -> tuple[float, float, float]:
    """(all, idle + iowait, steal) jiffies of the machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return float(sum(v[:8])), float(v[3] + v[4]), float(v[7] if len(v) > 7 else 0)


def run_wrk(cmd: list[str], procs: list, watch: dict[str, list[int]] | None = None) -> tuple[dict, str]:
    """Run wrk; parse its done() line. `watch`: name -> pids whose CPU use is reported as % of a core
    (wrk's own is measured too), with the machine's idle and steal time: a check on the machine."""
    watch = watch or {}
    c0 = {k: sum(_proc_cpu(p) for p in pids) for k, pids in watch.items()}
    r0, m0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), _machine_cpu(), time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs.append(proc)
    out, _ = proc.communicate()
    procs.remove(proc)
    r1, m1, t1 = resource.getrusage(resource.RUSAGE_CHILDREN), _machine_cpu(), time.monotonic()
    cpu = {k: (sum(_proc_cpu(p) for p in pids) - c0[k]) / (t1 - t0) for k, pids in watch.items()}
    cpu["wrk"] = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / (t1 - t0)
    all_, idle, steal = (m1[i] - m0[i] for i in range(3))
    cores = os.cpu_count() or 1
    busy = (all_ - idle - steal) / all_ * cores
    other = busy - sum(cpu.values())  # gunicorn's master, the kernel's own threads, anything else running
    cpu_text = (", ".join(f"{k} {v * 100:.0f}%" for k, v in cpu.items())
                + f", everything else {other * 100:.0f}%; idle {idle / all_ * cores * 100:.0f}%, "
                  f"steal {steal / all_ * cores * 100:.0f}% (% of one core)")
    if other > 0.25:
        cpu_text += "\n  WARNING: other processes took a large share of the CPU during this run; its figures are low"
    m = re.search(r"^BENCH (.*)$", out, re.M)
    if proc.returncode != 0 or m is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out}")
    stats = {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    stats["ok"] = stats["requests"] - stats["status_errors"]
    stats["errors"] = sum(stats[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors",
                                             "timeout_errors"))
    wrk_text = "\n".join(line for line in out.splitlines() if not line.startswith("BENCH "))
    stats["cpu"] = cpu_text
    stats["worker_cpu_ms"] = (cpu["gunicorn workers"] * 1000 / stats["rps"]
                              if "gunicorn workers" in cpu and stats["rps"] else float("nan"))
    return stats, wrk_text + "\nCPU during the run: " + cpu_text


# -- the server ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(tmp: Path, redis_url: str, port: int, log_level: str, reply_wait: float = 0) -> dict:
    names = {v.name for v in VARIABLES}
    env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("GUNICORN")}
    env.update({name: "" for name in names})  # empty = default, whatever a .env in the repo says
    env.update({
        "CHATGATE_ENV": "production",
        "CHATGATE_DB": str(tmp / "chatgate.db"),
        "REDIS_URL": redis_url,
        "OPENAI_API_KEY": "sk-bench-0123456789abcdef0123456789abcdef",
        "WECHAT_TOKEN": TOKEN,
        "WECHAT_APP_ID": APP_ID,
        "WECHAT_APP_SECRET": APP_SECRET,
        "WECHAT_AES_KEY": AES_KEY,
        "CHATGATE_FREE_TRIAL": str(10**6),  # the largest trial allowed (config.settings.MAX_FREE_TRIAL)
        "PORT": str(port),
        "CHATGATE_HOST": "127.0.0.1",
        "CHATGATE_LOG_LEVEL": log_level,
        # 0: acknowledge at once (the webhook alone). With a wait, a question is held for its answer,
        # and as no worker answers here, every post would last the whole wait and more.
        "WECHAT_REPLY_WAIT": f"{reply_wait:g}",
        # 0 = the config's default (cores + 1); gunicorn itself also parses this variable
        "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY") or "0",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    return env


class Gunicorn:
    """gunicorn as the Procfile starts it, in its own process group, stopped on exit."""

    def __init__(self, app: str, env: dict, port: int, log: Path):
        self.app, self.env, self.port, self.log = app, env, port, log
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Gunicorn:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(GUNICORN), "--config", "python:config.gunicorn_conf", self.app],
                                         cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer /healthz:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def workers(self) -> int:
        """The number of worker processes, once it has stopped growing (workers fork one by one)."""
        def count() -> int:
            out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True,
                                 text=True)
            return len(out.stdout.split())
        last, stable_since = count(), time.monotonic()
        deadline = time.monotonic() + 15
        while time.monotonic() - stable_since < 1.0 and time.monotonic() < deadline:
            time.sleep(0.1)
            now = count()
            if now != last:
                last, stable_since = now, time.monotonic()
        return last

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        # workers left behind by a killed master share its process group
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None


# -- the checks ---------------------------------------------------------------------------------------

def db_counts(db: Path) -> dict:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        q = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        return {
            "deliveries": q("SELECT COUNT(*) FROM deliveries"),
            "queued": q("SELECT COUNT(*) FROM deliveries WHERE status = 'queued'"),
            "not_queued": q("SELECT COUNT(*) FROM deliveries WHERE status != 'queued'"),
            "trial_uses": q("SELECT COUNT(*) FROM ledger WHERE kind = 'trial_use'"),
            "users": q("SELECT COUNT(*) FROM users"),
        }
    finally:
        conn.close()


def settled_counts(db: Path, redis_client) -> tuple[dict, int]:
    """Counts once requests still in flight when wrk stopped have finished."""
    last = None
    for _ in range(50):
        time.sleep(0.2)
        now = (db_counts(db), redis_client.llen(QUEUE_KEY))
        if now == last:
            return now
        last = now
    return last


# -- main -----------------------------------------------------------------------------------------------

def fmt_ms(us: float) -> str:
    return f"{us / 1000:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=20, help="seconds of each measured run (default 20)")
    ap.add_argument("--connections", type=int, default=20, help="concurrent connections (default 20)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--warmup", type=float, default=3, help="seconds of warm-up before each run (default 3)")
    ap.add_argument("--users", type=int, default=1000, help="distinct openids (default 1000)")
    ap.add_argument("--log-level", default="WARNING",
                    help="CHATGATE_LOG_LEVEL of the webhook (default WARNING; INFO logs a line per message)")
    ap.add_argument("--reply-wait", type=float, default=0,
                    help="WECHAT_REPLY_WAIT of the webhook (default 0: acknowledge at once; no worker runs, so "
                         "a wait holds every post for the whole wait)")
    ap.add_argument("--close", action="store_true",
                    help="send `Connection: close`: one connection per request, as a reverse proxy such as "
                         "nginx does by default (default: keep-alive, where the server allows it)")
    ap.add_argument("--no-baseline", action="store_true", help="measure the webhook only")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database, Lua)")
    args = ap.parse_args()
    if args.threads < 1 or args.connections < args.threads or args.duration <= 0:
        ap.error("need duration > 0 and connections >= threads >= 1")

    if shutil.which("wrk") is None:
        print("wrk is not installed; install it with:\n  apt-get install -y wrk", file=sys.stderr)
        return 2
    if not GUNICORN.exists():
        print(f"{GUNICORN} not found: run from a checkout with its .venv", file=sys.stderr)
        return 2

    # SIGTERM (and SIGHUP) unwind like Ctrl-C, so the finally blocks stop every process.
    def _stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)

    tmp = Path(tempfile.mkdtemp(prefix="chatgate-bench-", dir="/tmp"))
    wrk_procs: list[subprocess.Popen] = []
    signer = Signer()
    results = []
    try:
        with ExitStack() as stack:
            redis_server = stack.enter_context(EmbeddedRedis())
            rc = stack.enter_context(redis_server.client())
            port = free_port()
            env = server_env(tmp, redis_server.url, port, args.log_level, args.reply_wait)
            url = f"http://127.0.0.1:{port}"

            print(f"nproc={os.cpu_count()}  wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s  "
                  f"warm-up {args.warmup:g}s  {'Connection: close' if args.close else 'keep-alive'}  "
                  f"log level {args.log_level}  temp dir {tmp}", flush=True)

            # Warm-up set: generous for a short run; it wraps around harmlessly if the server is faster.
            warm_data, warm_lua = tmp / "warmup.tsv", tmp / "warmup.lua"
            warm_count = max(2000, int(4000 * args.warmup))
            write_requests(warm_data, 1_000_000_000_000, warm_count, args.users, signer)
            write_lua(warm_lua, warm_data, args.threads, args.close)

            # --- the webhook ---
            web = stack.enter_context(Gunicorn(WEB_APP, env, port, tmp / "gunicorn-webhook.log"))
            print(f"webhook: gunicorn up with {web.workers()} workers", flush=True)
            warm, _ = run_wrk(wrk_command(url + "/wechat", warm_lua, args.warmup, args.connections, args.threads),
                              wrk_procs)
            print(f"webhook warm-up: {warm['rps']:.0f} msgs/s, {warm['errors']:.0f} errors, "
                  f"{warm['duplicates_sent']:.0f} repeated messages", flush=True)

            count = max(5000, math.ceil(max(warm["rps"], 1000) * args.duration * 1.5))
            t0 = time.monotonic()
            data, lua = tmp / "requests.tsv", tmp / "requests.lua"
            write_requests(data, 2_000_000_000_000, count, args.users, signer)
            write_lua(lua, data, args.threads, args.close)
            print(f"pre-signed and encrypted {count} distinct messages in {time.monotonic() - t0:.1f}s", flush=True)

            before, qlen_before = settled_counts(tmp / "chatgate.db", rc)
            cmd = wrk_command(url + "/wechat", lua, args.duration, args.connections, args.threads)
            stats, wrk_text = run_wrk(cmd, wrk_procs, {"gunicorn workers": web.worker_pids(),
                                                       "redis": [redis_server.proc.pid]})
            after, qlen_after = settled_counts(tmp / "chatgate.db", rc)
            results.append(("chatgate webhook", stats))
            print("\n$ " + " ".join(cmd) + "\n" + wrk_text, flush=True)

            # --- sanity: every message that reached the server admitted and enqueued exactly once ---
            admitted = after["deliveries"] - before["deliveries"]
            enqueued = qlen_after - qlen_before
            ok_new = max(stats["ok"] - stats["duplicates_sent"], 0)  # 200s for first deliveries (a repeat is acked too)
            in_flight = admitted - int(ok_new)
            checks = [
                ("every response 200, no socket errors", stats["errors"] == 0),
                ("no message acknowledged without admission: deliveries admitted >= 200s for new messages",
                 admitted >= ok_new),
                (f"the rest were in flight when wrk stopped: admitted - 200s <= {args.connections} connections",
                 in_flight <= args.connections),
                ("no admission beyond the distinct messages sent", admitted <= stats["distinct_sent"]),
                ("RQ queue grew by exactly the deliveries admitted", enqueued == admitted),
                ("queue length == deliveries queued (whole run)", qlen_after == after["queued"]),
                ("every delivery queued, one trial answer each", after["not_queued"] == 0
                 and after["trial_uses"] == after["deliveries"]),
            ]
            print(f"\nsanity: 200 responses {stats['ok']:.0f} (repeats of a message among them: "
                  f"{stats['duplicates_sent']:.0f}); requests sent {stats['sent']:.0f}, distinct "
                  f"{stats['distinct_sent']:.0f}; deliveries admitted {admitted} (in flight at stop: {in_flight}); "
                  f"RQ queue +{enqueued} "
                  f"(LLEN {QUEUE_KEY} = {qlen_after}); users {after['users']}")
            for name, ok in checks:
                print(f"  [{'ok' if ok else 'FAIL'}] {name}")
            stack.pop_all().close()  # stops gunicorn and Redis now, before the baseline
            sane = all(ok for _, ok in checks)

        # --- the floor: bare Flask, same gunicorn settings, same wrk command, same requests ---
        if not args.no_baseline:
            with ExitStack() as stack:
                redis_server = stack.enter_context(EmbeddedRedis())  # the config module needs a valid REDIS_URL
                env = server_env(tmp, redis_server.url, port, args.log_level, args.reply_wait)
                base = stack.enter_context(Gunicorn(BASELINE_APP, env, port, tmp / "gunicorn-baseline.log"))
                print(f"\nbaseline: gunicorn up with {base.workers()} workers", flush=True)
                run_wrk(wrk_command(url + "/wechat", warm_lua, args.warmup, args.connections, args.threads),
                        wrk_procs)
                stats, wrk_text = run_wrk(cmd, wrk_procs, {"gunicorn workers": base.worker_pids()})
                results.append(("bare Flask (floor)", stats))
                print("$ " + " ".join(cmd) + "\n" + wrk_text, flush=True)

        print(f"\n{args.connections} connections ({'Connection: close' if args.close else 'keep-alive'}), "
              f"{args.threads} wrk threads, {args.duration:g}s, nproc {os.cpu_count()}, "
              f"log level {args.log_level}\n")
        print("| endpoint | msgs/s | p50 ms | p90 ms | p99 ms | max ms | errors | worker CPU ms/msg |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, s in results:
            print(f"| {name} | {s['rps']:.0f} | {fmt_ms(s['p50_us'])} | {fmt_ms(s['p90_us'])} | "
                  f"{fmt_ms(s['p99_us'])} | {fmt_ms(s['max_us'])} | {s['errors']:.0f} | {s['worker_cpu_ms']:.2f} |")
        print("(worker CPU ms/msg: CPU time of the gunicorn workers per request; it depends less than the rate on "
              "what else the machine is doing)")
        s = results[0][1]
        met = s["rps"] >= 1000 and s["p99_us"] < 30_000 and s["errors"] == 0
        print(f"\ntarget (>= 1000 msgs/s, p99 < 30 ms, no errors): {'met' if met else 'MISSED'}")
        return 0 if sane else 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping", file=sys.stderr)
        return 130
    finally:
        for p in wrk_procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
