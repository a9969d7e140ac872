"""What the answering benchmarks (`bench_delivery.py`, `bench_inflight.py`) share: the bot's processes
started as an operator starts them, the lean fakes, the load generator and the floor as processes of
their own, and what every run checks and prints. CPU and memory come from /proc (bench_usage.py);
`Bot.stop_worker_counted` checks the worker's CPU against the rusage `wait4` gives when it exits (what
`time chatgate worker` would print).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_usage import Usage, cpu_s, session_pids, tree_cpu_s, tree_pss_kb  # noqa: E402
from bench_webhook import AES_KEY, APP_ID, APP_SECRET, TOKEN, Signer, openid  # noqa: E402

from config.settings import VARIABLES  # noqa: E402
from tests.live import LiveBot  # noqa: E402
from tests.wechat_sim import read_reply  # noqa: E402

PYTHON = sys.executable
SCRIPTS = ROOT / "scripts"
LLM_KEY = "sk-bench-answering-0123456789abcdef"
QUESTION = re.compile(r"q-\d{6}")


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(p / 100 * len(ordered)))) - 1]


def median(values: list[float]) -> float:
    """The median; NaN for no values."""
    return statistics.median(values) if values else float("nan")


# -- processes -------------------------------------------------------------------------------------------

class Processes:
    """Helper processes (fakes, load generator, floor), each in a session of its own, all stopped by
    `stop_all()` — SIGTERM, then SIGKILL to the whole session."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], **kwargs) -> subprocess.Popen:
        """Start `args` from the repository, in a session of its own."""
        proc = subprocess.Popen(args, cwd=ROOT, start_new_session=True, stdin=subprocess.DEVNULL, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        """Stop one of them and its session."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        """Stop every one still running."""
        for proc in list(self.procs):
            self.stop(proc)


class Fakes:
    """`scripts/bench_fakes.py` in a process of its own."""

    def __init__(self, procs: Processes, model_seconds: float = 0, chunks: int = 20):
        self.proc = procs.start([PYTHON, str(SCRIPTS / "bench_fakes.py"), "--app-id", APP_ID, "--app-secret",
                                 APP_SECRET, "--api-key", LLM_KEY, "--model-seconds", f"{model_seconds:g}",
                                 "--chunks", str(chunks)], stdout=subprocess.PIPE, text=True)
        urls = json.loads(self.proc.stdout.readline())
        self.wechat, self.llm = urls["wechat"], urls["llm"]
        self._lock = threading.Lock()
        self._conn = http.client.HTTPConnection(urlsplit(self.wechat).netloc, timeout=30)  # kept alive: cheap polls

    def _call(self, path: str, method: str = "GET") -> dict:
        with self._lock:
            for attempt in (1, 2):
                try:
                    self._conn.request(method, path, body=b"" if method == "POST" else None)
                    return json.loads(self._conn.getresponse().read())
                except (OSError, http.client.HTTPException):
                    self._conn.close()
                    if attempt == 2:
                        raise

    def count(self) -> dict:
        """Pushes, LLM calls, streams open and the most open at once."""
        return self._call("/_bench/count")

    def report(self) -> dict:
        """Everything the fakes recorded since the last reset."""
        return self._call("/_bench/report")

    def reset(self) -> dict:
        """Forget the records and the peak."""
        return self._call("/_bench/reset", "POST")

    def cpu_s(self) -> float:
        """CPU seconds the fakes have used."""
        return cpu_s(self.proc.pid)


def bot_env(workdir: Path, fakes: Fakes, extra: dict[str, str]) -> dict[str, str]:
    """Production settings in `workdir`, WeChat in safe mode with pushes, the fakes as the APIs;
    every other chatgate variable empty (its default, whatever a .env in the repo says); then `extra`."""
    names = {v.name for v in VARIABLES}
    env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("GUNICORN")}
    env.update({name: "" for name in names})
    env.update({
        "CHATGATE_ENV": "production", "CHATGATE_DB": str(workdir / "chatgate.db"),
        "OPENAI_API_KEY": LLM_KEY, "OPENAI_BASE_URL": fakes.llm, "CHATGATE_MODEL": "bench-model",
        "CHATGATE_FREE_TRIAL": "1000", "CHATGATE_LOG_LEVEL": "WARNING",
        "WECHAT_TOKEN": TOKEN, "WECHAT_APP_ID": APP_ID, "WECHAT_APP_SECRET": APP_SECRET, "WECHAT_AES_KEY": AES_KEY,
        "WECHAT_API_BASE": fakes.wechat, "WECHAT_REPLY_MODE": "push", "WECHAT_REPLY_WAIT": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        # 0 = the config's default (cores + 1); gunicorn itself also parses this variable
        "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY") or "0",
    })
    env.update(extra)
    return env


def parse_env(pairs: list[str]) -> dict[str, str]:
    """`--env NAME=VALUE` options as a dict."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--env wants NAME=VALUE, not {pair!r}")
        out[name] = value
    return out


class Bot(LiveBot):
    """The Procfile's web and worker (tests/live.py), with their CPU and memory read from /proc."""

    def worker_cpu_s(self) -> float:
        """CPU seconds of the worker's process tree."""
        return tree_cpu_s(self.worker.pid)

    def web_cpu_s(self) -> float:
        """CPU seconds of gunicorn's process tree."""
        return tree_cpu_s(self.web.pid)

    def redis_cpu_s(self) -> float:
        """CPU seconds of the Redis server."""
        return cpu_s(self.redis.proc.pid)

    def worker_pss_kb(self) -> int:
        """PSS of the worker's process tree, in kB."""
        return tree_pss_kb(self.worker.pid)

    def worker_processes(self) -> int:
        """How many processes the worker runs."""
        return len(session_pids(self.worker.pid))

    def usage(self, fakes: Fakes) -> Usage:
        """CPU so far of the worker, the web, Redis and the fakes."""
        return Usage({"worker": self.worker_cpu_s(), "web": self.web_cpu_s(), "redis": self.redis_cpu_s(),
                      "fakes": fakes.cpu_s()})

    def settle(self, timeout: float = 30, quiet: float = 0.1) -> None:
        """Wait until the worker's processes have started: two seconds in a row under `quiet` cores."""
        deadline = time.monotonic() + timeout
        last, calm = self.worker_cpu_s(), 0
        while time.monotonic() < deadline and calm < 2:
            time.sleep(1)
            now = self.worker_cpu_s()
            calm = calm + 1 if now - last < quiet else 0
            last = now

    def stop_worker_counted(self, timeout: float = 30) -> tuple[float, float]:
        """Stop the worker; returns (CPU seconds of its session from /proc just before, CPU seconds
        `wait4` reports for it and every descendant it reaped, shutdown included)."""
        seen = self.worker_cpu_s()
        os.killpg(self.worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.worker.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.killpg(self.worker.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(self.worker.pid, 0)
                break
            time.sleep(0.1)
        self.worker.returncode = os.waitstatus_to_exitcode(status)
        return seen, usage.ru_utime + usage.ru_stime


# -- WeChat's side, the load generator, the floor ----------------------------------------------------

def write_requests(path: Path, count: int, first_msg_id: int) -> dict[str, str]:
    """`count` text messages `q-<i>` from as many users, signed and encrypted (safe mode), for
    `bench_asker.py`; returns question → openid."""
    signer, now, users = Signer(), int(time.time()), {}
    with open(path, "w") as f:
        for i in range(count):
            key, user, msg_id = f"q-{i:06d}", openid(first_msg_id + i), first_msg_id + i
            users[key] = user
            xml = (f"<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA[{user}]]>"
                   f"</FromUserName><CreateTime>{now}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
                   f"<Content><![CDATA[{key}]]></Content><MsgId>{msg_id}</MsgId></xml>")
            p, body = signer.request(xml, str(now), str(100000000 + msg_id % 900000000))
            f.write(f"{key}\t{p}\t{body}\n")
    return users


def run_asker(procs: Processes, requests: Path, url: str, rate: float, out: Path) -> subprocess.Popen:
    """Start the load generator; its result lands in `out` when it exits."""
    return procs.start([PYTHON, str(SCRIPTS / "bench_asker.py"), str(requests), url, "--rate", f"{rate:g}",
                        "--out", str(out)])


def run_floor(procs: Processes, fakes: Fakes, rate: float, count: int, out: Path) -> dict:
    """Run the floor to its end; returns its JSON."""
    proc = procs.start([PYTHON, str(SCRIPTS / "bench_floor.py"), "--llm", fakes.llm, "--wechat", fakes.wechat,
                        "--app-id", APP_ID, "--app-secret", APP_SECRET, "--api-key", LLM_KEY,
                        "--rate", f"{rate:g}", "--count", str(count), "--out", str(out)])
    proc.wait()
    procs.stop(proc)
    if proc.returncode:
        raise RuntimeError(f"the floor failed ({proc.returncode})")
    return json.loads(out.read_text())


def passive_replies(posts: list[list]) -> list[list]:
    """The answers that went out in the webhook's own reply (ready before the ack, even with
    WECHAT_REPLY_WAIT=0), as `[t_ack, touser, content]` like the fake WeChat's pushes."""
    out = []
    for _key, _sent, acked, _status, body in posts:
        if body:
            reply = read_reply(body, token=TOKEN, aes_key=AES_KEY)
            out.append([acked, reply["ToUserName"], reply["Content"] or ""])
    return out


def first_by_question(rows: list[list], index: int) -> dict[str, list]:
    """The first row naming each question (`q-<i>`) in column `index`."""
    found: dict[str, list] = {}
    for row in rows:
        m = QUESTION.search(str(row[index]))
        if m and m.group() not in found:
            found[m.group()] = row
    return found


def count_by_question(rows: list[list], index: int) -> dict[str, int]:
    """How many times each question (`q-<i>`) is named in column `index`."""
    counts: dict[str, int] = {}
    for row in rows:
        for q in QUESTION.findall(str(row[index])):
            counts[q] = counts.get(q, 0) + 1
    return counts


def drain(fakes: Fakes, expected: int, load_end: float, limit: float) -> bool:
    """Wait until `expected` pushes arrived, or `limit` seconds after the load; True if all did."""
    last_log = time.monotonic()
    while True:
        sent = fakes.count()["sent"]
        if sent >= expected:
            return True
        if time.monotonic() - load_end > limit:
            log(f"drain limit ({limit:g} s) reached: {sent} of {expected} pushed")
            return False
        if time.monotonic() - last_log >= 15:
            log(f"  {sent} of {expected} pushed, {time.monotonic() - load_end:.0f} s after the load")
            last_log = time.monotonic()
        time.sleep(0.5)


class Sampler(threading.Thread):
    """Calls `fn()` every `interval` seconds in the background until `stop()`."""

    def __init__(self, fn, interval: float):
        super().__init__(daemon=True)
        self.fn, self.interval, self._stop_event = fn, interval, threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.fn()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def interrupt_on_signals() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every `finally` stops what it started."""
    def _stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)


def log(text: str) -> None:
    """Progress, to stderr."""
    print(text, file=sys.stderr, flush=True)


def table(rows: list[tuple], header: tuple) -> str:
    """A plain-text table, columns padded."""
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def problems(bot: dict, drain_limit: float) -> str:
    """The correctness line of a run: every acknowledged question answered exactly once (pushed, or in
    the webhook's own reply), to its asker."""
    found = []
    if bot["answered_twice_or_more"]:
        found.append(f"{bot['answered_twice_or_more']} answered twice or more")
    if bot["not_answered"]:
        found.append(f"{bot['not_answered']} acknowledged but not answered"
                     + ("" if bot["all_arrived"] else f" within the drain limit ({drain_limit:g} s)")
                     + f", e.g. {', '.join(bot['not_answered_examples'][:3])}")
    if bot["answered_unacked"]:
        found.append(f"{bot['answered_unacked']} answered though their post failed")
    if bot["answered_wrong_user"]:
        found.append(f"{bot['answered_wrong_user']} answered to the wrong user")
    if bot["failed_posts"]:
        found.append(f"{bot['failed_posts']} posts not acknowledged")
    return ("check: every acknowledged question answered exactly once, to its asker: "
            + ("ok" if not found else "FAILED (" + "; ".join(found) + ")"))


def correct(bot: dict) -> bool:
    """Every question acknowledged and answered exactly once, to its asker, and nothing else sent."""
    return (bot["answered_once"] == bot["acked"] == bot["offered"] and not bot["answered_unacked"]
            and not bot["answered_wrong_user"])


def outcome(acked: dict[str, list], answers: list[list], users: dict[str, str]) -> dict:
    """How the acknowledged questions (`acked`: question → post) were answered, from `answers`
    (`[t, touser, content]`: the pushes and the passive replies)."""
    times = count_by_question(answers, 2)
    first = first_by_question(answers, 2)
    return {
        "answered_once": sum(1 for k in acked if times.get(k) == 1),
        "answered_twice_or_more": sum(1 for k in acked if times.get(k, 0) > 1),
        "not_answered": sum(1 for k in acked if k not in times),
        "not_answered_examples": sorted(k for k in acked if k not in times)[:10],
        "answered_unacked": sum(1 for k in times if k not in acked),
        "answered_wrong_user": sum(1 for k, row in first.items() if users.get(k) != row[1]),
    }


def fmt(v, digits: int = 1) -> str:
    """A figure for the table: thousands separated, NaN as a dash."""
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def as_json(result: dict) -> str:
    """`result` as JSON, NaN (a figure with nothing to measure) as null."""
    def clean(v):
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(result), indent=2, ensure_ascii=False)

