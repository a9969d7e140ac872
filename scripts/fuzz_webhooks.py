#!/usr/bin/env python3
"""Fuzz the running webhooks: post N hostile, correctly signed (and encrypted) bodies per platform and
mode, count the answers by status; exit 1 on any 5xx.

    .venv/bin/python scripts/fuzz_webhooks.py [--bodies 100000] [--concurrency 8] [--seed 1] [--json]
    .venv/bin/python scripts/fuzz_webhooks.py --url http://127.0.0.1:8000 [--bodies N]

Targets: `wechat-safe` (AES, the signature covers the body), `wechat-plain` (the signature covers the
query only, so every body is one an attacker holding a signed URL could post), `feishu-encrypted`
(encrypted and signed), `feishu-plain` (the verification token only) and `afdian` (unsigned). The
bodies come from tests/hostile.py: valid messages and events, mutated (elements repeated or dropped,
numbers out of range, unicode edge cases, CDATA terminators, DOCTYPEs and entities, stray text, JSON of
the wrong shape, deep nesting, huge arrays).

Without `--url` it starts an embedded Redis and two production web processes exactly as the Procfile's
`web` line does (gunicorn, gevent), in a temporary directory: one in safe mode with an Encrypt Key and
afdian, one in plaintext mode without. No worker runs: the jobs that admitted bodies queue are dropped
as they come, and WECHAT_REPLY_WAIT is 0 (acknowledge at once). Afterwards it reads each server's log
for tracebacks and ERROR lines. With `--url` it posts to a web process you started, with the secrets in
this process's environment (WECHAT_TOKEN, WECHAT_AES_KEY, WECHAT_APP_ID, FEISHU_VERIFICATION_TOKEN,
FEISHU_ENCRYPT_KEY, AFDIAN_USER_ID: the same variables the web reads), one target per platform as they
configure it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_webhook import Gunicorn, free_port, server_env  # noqa: E402

from bot.embedded_redis import EmbeddedRedis  # noqa: E402
from tests import feishu_sim, hostile, wechat_sim  # noqa: E402

QUEUE_KEY = "rq:queue:chatgate"
TARGETS = ("wechat-safe", "wechat-plain", "feishu-encrypted", "feishu-plain", "afdian")
SECRETS = {  # what the started servers use (production refuses placeholders; these are not placeholders)
    "WECHAT_TOKEN": "fuzzT0ken4chatgate", "WECHAT_APP_ID": "wxfuzz0123456789a",
    "WECHAT_APP_SECRET": "fuzz-app-secret-012345",
    "WECHAT_AES_KEY": "Fz3kVZ0mWcR7tY1uI9oP5aS2dF8gH4jK6lZ3xC0vB7n",
    "FEISHU_APP_ID": "cli_fuzz0123456789", "FEISHU_APP_SECRET": "fuzz-feishu-secret-0123456789",
    "FEISHU_VERIFICATION_TOKEN": "vtok-fuzz-0123456789", "FEISHU_ENCRYPT_KEY": "encrypt-key-fuzz-0123456789abcdef",
    "AFDIAN_USER_ID": "fuzzafdianuser0123", "AFDIAN_TOKEN": "fuzz-afdian-token-0123456789",
}
BOT_OPEN_ID = feishu_sim.BOT_OPEN_ID


class Target:
    """One platform in one mode: makes the next signed request from a hostile body."""

    def __init__(self, name: str, url: str, secrets: dict):
        self.name, self.url, self.s = name, url.rstrip("/"), secrets

    def request(self, rnd: random.Random) -> tuple[str, bytes, dict, bool]:
        """(url, body, headers, whether a 403 is legitimate)."""
        s, nonce = self.s, str(rnd.randrange(10**9, 10**10))
        if self.name.startswith("wechat"):
            xml = hostile.wechat_xml(rnd)
            if self.name == "wechat-safe":
                signed = wechat_sim.sign_encrypted(xml, s["WECHAT_TOKEN"], s["WECHAT_AES_KEY"], s["WECHAT_APP_ID"],
                                                   nonce=nonce)
            else:
                signed = wechat_sim.sign_plain(xml, s["WECHAT_TOKEN"], nonce=nonce)
            return f"{self.url}{signed.path}", signed.body, {"Content-Type": "text/xml"}, False
        if self.name == "afdian":
            return f"{self.url}/pay/afdian", hostile.to_json(hostile.afdian_order(rnd)), {
                "Content-Type": "application/json"}, False
        event, may_403 = hostile.feishu_event(rnd)
        _retoken(event, s["FEISHU_VERIFICATION_TOKEN"])
        body, headers = hostile.to_json(event), {"Content-Type": "application/json"}
        if self.name == "feishu-encrypted":
            key = s["FEISHU_ENCRYPT_KEY"]
            body = json.dumps({"encrypt": feishu_sim.encrypt(body.decode(), key)}).encode()
            ts, nonce = str(int(time.time())), uuid.uuid4().hex[:16]
            headers.update({"X-Lark-Request-Timestamp": ts, "X-Lark-Request-Nonce": nonce,
                            "X-Lark-Signature": hashlib.sha256((ts + nonce + key).encode() + body).hexdigest()})
        return f"{self.url}/feishu", body, headers, may_403


def _retoken(event, token: str) -> None:
    """tests/hostile.py signs events with the tests' token; put this server's in its place."""
    if isinstance(event, dict):
        if isinstance(event.get("header"), dict) and event["header"].get("token") == feishu_sim.VERIFICATION_TOKEN:
            event["header"]["token"] = token
        if event.get("token") == feishu_sim.VERIFICATION_TOKEN:
            event["token"] = token


def run_target(target: Target, bodies: int, concurrency: int, seed: int, drain=None, progress: bool = True) -> dict:
    """Post `bodies` requests with `concurrency` threads; the status counts (and `unexpected_403`)."""
    counts: Counter = Counter()
    lock = threading.Lock()
    local = threading.local()
    done = [0]
    started = time.monotonic()

    def one(i: int) -> None:
        rnd = random.Random(f"{seed}-{target.name}-{i}")
        url, body, headers, may_403 = target.request(rnd)
        session = getattr(local, "session", None) or setattr(local, "session", requests.Session()) or local.session
        try:
            status = str(session.post(url, data=body, headers=headers, timeout=30).status_code)
        except requests.RequestException as exc:
            status = f"error:{type(exc).__name__}"
        with lock:
            counts[status] += 1
            if status == "403" and not may_403:
                counts["unexpected_403"] += 1
            done[0] += 1
            if drain and done[0] % 2000 == 0:
                drain()
            if progress and done[0] % 10000 == 0:
                rate = done[0] / (time.monotonic() - started)
                print(f"  {target.name}: {done[0]}/{bodies} ({rate:.0f}/s) {dict(counts)}", file=sys.stderr)

    pool = ThreadPoolExecutor(concurrency)
    try:
        list(pool.map(one, range(bodies)))
    finally:  # Ctrl-C: drop what is queued, so that the servers are stopped at once
        pool.shutdown(wait=False, cancel_futures=True)
    return {"bodies": bodies, "seconds": round(time.monotonic() - started, 1),
            "statuses": dict(sorted(counts.items()))}


def _drainer(redis_client):
    """Drop the queued jobs (no worker runs here) so that Redis does not grow with every admitted body."""
    def drain() -> None:
        ids = redis_client.lrange(QUEUE_KEY, 0, -1)
        pipe = redis_client.pipeline()
        pipe.delete(QUEUE_KEY)
        for job_id in ids:
            pipe.delete(b"rq:job:" + job_id)
        pipe.execute()
    return drain


def _server(stack: ExitStack, tmp: Path, redis_url: str, name: str, extra: dict) -> tuple[str, Path]:
    port = free_port()
    env = server_env(tmp, redis_url, port, "WARNING")
    env.update({k: v for k, v in SECRETS.items() if k.startswith("WECHAT_") and k != "WECHAT_AES_KEY"})
    env.update({"WECHAT_AES_KEY": "", "CHATGATE_DB": str(tmp / f"{name}.db"),
                "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY") or "2", **extra})
    log = tmp / f"{name}.log"
    stack.enter_context(Gunicorn("handlers.app:create_app()", env, port, log))
    return f"http://127.0.0.1:{port}", log


def _log_problems(log: Path) -> list[str]:
    lines = log.read_text(errors="replace").splitlines()
    return [line[:300] for line in lines if "Traceback" in line or " ERROR " in line or '"level": "ERROR"' in line
            or "[ERROR]" in line]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bodies", type=int, default=2000, help="bodies per target (default 2000)")
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight per target (default 8)")
    ap.add_argument("--seed", type=int, default=1, help="the same seed posts the same bodies (default 1)")
    ap.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)}")
    ap.add_argument("--url", help="post to this running web process instead of starting two (secrets from the "
                                  "environment, see above)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    args = ap.parse_args()
    wanted = [t for t in args.targets.split(",") if t]
    unknown = set(wanted) - set(TARGETS)
    if unknown:
        ap.error(f"unknown targets: {', '.join(sorted(unknown))}")

    result: dict = {"bodies_per_target": args.bodies, "concurrency": args.concurrency, "seed": args.seed,
                    "targets": {}, "log_problems": []}
    with ExitStack() as stack:
        if args.url:
            secrets = {**SECRETS, **{k: os.environ.get(k, "") for k in SECRETS}}
            modes = {"wechat-safe" if secrets["WECHAT_AES_KEY"] else "wechat-plain",
                     "feishu-encrypted" if secrets["FEISHU_ENCRYPT_KEY"] else "feishu-plain", "afdian"}
            plan = [(t, args.url, secrets, None) for t in wanted if t in modes]
            logs: list[Path] = []
        else:
            tmp = Path(tempfile.mkdtemp(prefix="chatgate-fuzz-")) if args.keep else Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="chatgate-fuzz-")))
            redis_server = stack.enter_context(EmbeddedRedis())
            import redis

            client = redis.Redis.from_url(redis_server.url)
            for app_id in (SECRETS["FEISHU_APP_ID"],):  # group events need the bot's open_id: as the app caches it
                client.set(f"chatgate:feishu:{app_id}:bot_open_id", BOT_OPEN_ID)
            feishu = {k: v for k, v in SECRETS.items() if k.startswith("FEISHU_") and k != "FEISHU_ENCRYPT_KEY"}
            safe_url, safe_log = _server(stack, tmp, redis_server.url, "safe", {
                **feishu, "FEISHU_ENCRYPT_KEY": SECRETS["FEISHU_ENCRYPT_KEY"],
                "WECHAT_AES_KEY": SECRETS["WECHAT_AES_KEY"],
                "AFDIAN_USER_ID": SECRETS["AFDIAN_USER_ID"], "AFDIAN_TOKEN": SECRETS["AFDIAN_TOKEN"],
                "AFDIAN_API_BASE": "http://127.0.0.1:9"})
            plain_url, plain_log = _server(stack, tmp, redis_server.url, "plain", feishu)
            urls = {"wechat-safe": safe_url, "feishu-encrypted": safe_url, "afdian": safe_url,
                    "wechat-plain": plain_url, "feishu-plain": plain_url}
            plan = [(t, urls[t], SECRETS, _drainer(client)) for t in wanted]
            logs = [safe_log, plain_log]
            if args.keep:
                print(f"keeping {tmp}", file=sys.stderr)
        for name, url, secrets, drain in plan:
            print(f"{name}: {args.bodies} bodies → {url}", file=sys.stderr)
            result["targets"][name] = run_target(Target(name, url, secrets), args.bodies, args.concurrency,
                                                 args.seed, drain)
        for log in logs:
            result["log_problems"] += _log_problems(log)

    fivexx = {name: sum(n for s, n in r["statuses"].items() if s.startswith("5") or s.startswith("error"))
              for name, r in result["targets"].items()}
    result["failed"] = bool(sum(fivexx.values()) or result["log_problems"])
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'target':<18}{'bodies':>8}{'seconds':>9}  statuses")
        for name, r in result["targets"].items():
            statuses = "  ".join(f"{s}: {n}" for s, n in r["statuses"].items())
            print(f"{name:<18}{r['bodies']:>8}{r['seconds']:>9}  {statuses}")
        print(f"5xx or failed requests: {sum(fivexx.values())}; tracebacks/ERROR lines in the web logs: "
              f"{len(result['log_problems'])}")
        for line in result["log_problems"][:20]:
            print("  " + line)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
