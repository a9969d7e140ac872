"""The bot as it runs, for fault tests and the reliability benchmark: the Procfile's processes
(gunicorn web, `chatgate worker`) on a Redis of their own that can be killed, wiped and restarted;
WeChat's side posting each message with its real rhythm; and the tally of what every asker got.

Nothing here reaches into chatgate's code: processes are started as an operator starts them, WeChat
is played over HTTP, and the outcome is read from what the fake WeChat API and the asker received
and from the SQLite file.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bot.embedded_redis import EmbeddedRedis
from tests import wechat_sim

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def procfile_command(name: str) -> list[str]:
    """The command of one Procfile line, as honcho would run it."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return shlex.split(line.split(":", 1)[1])
    raise KeyError(name)


class LiveBot:
    """The web and worker processes of the Procfile, started with `env`, on their own Redis."""

    def __init__(self, workdir: Path, env: dict[str, str], *, own_redis: bool = True, bin_dir: Path = BIN):
        """`own_redis`: a Redis of its own with no persistence (a killed one loses everything, the
        worst case); otherwise the processes use `env["REDIS_URL"]`. `bin_dir`: where the Procfile's
        commands are found (default: this test run's venv; tests/test_install.py: a plain install's)."""
        self.workdir = workdir
        self.bin_dir = bin_dir
        self.env = dict(env)
        self.redis = EmbeddedRedis() if own_redis else None
        self.log_path = workdir / "procs.log"
        self.web: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.url = ""

    def start(self, **settings: str) -> str:
        """Start web and worker; returns the web URL once it answers and a worker listens."""
        if self.redis is not None:
            self.redis.start()
            self.env["REDIS_URL"] = self.redis.url
        port = free_port()
        self.env.update({"PORT": str(port), "CHATGATE_HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1",
                         "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", **settings})
        self.web = self._spawn("web")
        self.start_worker()
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok and self._workers_listen():
                    return self.url
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError("web or worker did not start:\n" + self.log()[-3000:])

    def _workers_listen(self) -> bool:
        from redis import Redis
        from rq import Worker

        with Redis.from_url(self.env["REDIS_URL"]) as connection:
            return Worker.count(connection=connection) >= 1

    def _spawn(self, name: str) -> subprocess.Popen:
        out = open(self.log_path, "ab")
        return subprocess.Popen(procfile_command(name), env=self.env, cwd=self.workdir, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def start_worker(self) -> None:
        self.worker = self._spawn("worker")

    def stop(self) -> None:
        for proc in (self.web, self.worker):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in (self.web, self.worker):
            if proc is not None:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if self.redis is not None:
            self.redis.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- faults --------------------------------------------------------------------------------------

    def _worker_session(self) -> list[tuple[int, int]]:
        """(pid, process group) of every process of the worker's session: `chatgate worker` and, with
        CHATGATE_WORKERS > 1, the worker processes of its pool."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if self.worker and int(fields[3]) == self.worker.pid and fields[0] not in ("Z", "X"):
                found.append((int(entry.name), int(fields[2])))
        return found

    def kill_worker(self) -> None:
        """SIGKILL the whole worker at once, as a host crash or the OOM killer would: every process of
        it, with all the answers it has in flight."""
        for pid, _ in self._worker_session():
            os.kill(pid, signal.SIGKILL)
        self.worker.wait()

    def kill_a_worker_process(self, timeout: float = 20) -> int:
        """SIGKILL one worker process of `chatgate worker`'s pool (CHATGATE_WORKERS > 1) with the answers
        it has in flight, as the OOM killer would; the pool starts another. Returns its pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid, _ in self._worker_session():
                if pid != self.worker.pid and _parent(pid) == self.worker.pid:
                    os.kill(pid, signal.SIGKILL)
                    return pid
            time.sleep(0.05)
        raise TimeoutError("no worker process of a pool appeared")

    def stop_worker(self, signum: int = signal.SIGTERM) -> None:
        """Send `signum` to the worker's process group, as `chatgate up` and systemd do (no wait)."""
        os.killpg(self.worker.pid, signum)

    def kill_redis(self) -> None:
        os.kill(self.redis.proc.pid, signal.SIGKILL)
        self.redis.proc.wait()

    def restart_redis(self) -> None:
        self.redis.restart()

    def wipe_redis(self) -> None:
        with self.redis.client() as r:
            r.flushall()


def _parent(pid: int) -> int:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


@dataclass
class Asker:
    """WeChat's side for one user: posts each message up to three times, 5 s apart, dropping a reply
    that comes after 5 s (as WeChat does), and keeps the passive replies that reached it."""

    url: str
    openid: str
    replies: list[str] = field(default_factory=list)
    posts: int = 0
    errors: Counter = field(default_factory=Counter)

    def say(self, text: str, msg_id: int) -> None:
        xml = wechat_sim.text_xml(self.openid, text, msg_id)
        for _ in range(3):
            signed = wechat_sim.sign_encrypted(xml)
            started = time.monotonic()
            self.posts += 1
            try:
                res = requests.post(self.url + signed.path, data=signed.body, timeout=5)
            except requests.Timeout:
                time.sleep(max(0.0, started + 5 - time.monotonic()))
                continue
            except requests.RequestException as exc:
                self.errors[type(exc).__name__] += 1
                time.sleep(max(0.0, started + 5 - time.monotonic()))
                continue
            if res.status_code != 200:
                self.errors[f"HTTP {res.status_code}"] += 1
                time.sleep(max(0.0, started + 5 - time.monotonic()))
                continue  # WeChat treats an error like no answer: the user sees an error, it posts again
            if res.text not in ("success", ""):
                self.replies.append(wechat_sim.read_reply(res.text)["Content"])
            return

    def say_in_background(self, text: str, msg_id: int) -> threading.Thread:
        thread = threading.Thread(target=self.say, args=(text, msg_id), daemon=True)
        thread.start()
        return thread


@dataclass
class Tally:
    """What happened to each question, from what its asker read and what the store holds."""

    sent: int = 0
    answered_once: int = 0
    answered_twice: int = 0
    refunded_and_told: int = 0
    lost: int = 0
    charged_twice: int = 0
    wrong: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"sent {self.sent}, answered once {self.answered_once}, answered twice or more "
                f"{self.answered_twice}, refunded-and-told {self.refunded_and_told}, lost {self.lost}, "
                f"charged twice {self.charged_twice}")

    @property
    def exact(self) -> bool:
        return (self.answered_once + self.refunded_and_told == self.sent and not self.answered_twice
                and not self.lost and not self.charged_twice and not self.wrong)


def tally(db_path: str | Path, questions: dict[str, str], read: dict[str, list[str]]) -> Tally:
    """`questions` maps each question's text (unique, e.g. `q-0017`) to its asker's openid; `read`
    maps each openid to every text that reached it (passive replies and pushes, in any order).

    The fake LLM answers `echo: <question>`; an apology or an expiry note quotes the question."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    result = Tally(sent=len(questions))
    for question, openid in questions.items():
        texts = read.get(openid, [])
        answers = sum(t.count(f"echo: {question}") for t in texts)
        told = sum(t.count(f"“{question}”") for t in texts) // 2  # each notice quotes it in both languages
        rows = db.execute("SELECT d.id, d.status, (SELECT COUNT(*) FROM ledger l WHERE l.delivery_id = d.id "
                          "AND l.kind = 'trial_use'), (SELECT COUNT(*) FROM ledger l WHERE l.delivery_id = d.id "
                          "AND l.kind = 'trial_refund') FROM deliveries d WHERE d.question = ?",
                          (question,)).fetchall()
        if len(rows) != 1 or rows[0][2] > 1:
            result.charged_twice += 1
        refunds = sum(r[3] for r in rows)
        if answers >= 2:
            result.answered_twice += 1
        elif answers == 1 and not told and not refunds:
            result.answered_once += 1
        elif not answers and told == 1 and refunds <= 1:
            result.refunded_and_told += 1
        elif not answers and not told:
            result.lost += 1
        else:
            result.wrong.append(f"{question}: {answers} answer(s), {told} notice(s), {refunds} refund(s), "
                                f"status {[r[1] for r in rows]}")
    db.close()
    return result


# -- for the tests that drive it ---------------------------------------------------------------------


def texts_read(askers: list[Asker], fake_wechat) -> dict[str, list[str]]:
    read = {a.openid: list(a.replies) for a in askers}
    for to, content in fake_wechat.sent:
        read.setdefault(to, []).append(content)
    return read


def settle(bot: LiveBot, askers: list[Asker], questions: dict[str, str], fake_wechat, timeout: float = 60) -> Tally:
    """Wait until every question is settled exactly once; fail with the tally and the log if not."""
    deadline = time.monotonic() + timeout
    while True:
        result = tally(bot.env["CHATGATE_DB"], questions, texts_read(askers, fake_wechat))
        # A pushed page reaches the fake WeChat a moment before SQLite records it sent: wait for both.
        if (result.exact and not pages_pushing(bot.env["CHATGATE_DB"])) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert result.exact, f"{result.line()}; {result.wrong}\n{bot.log()[-4000:]}"
    no_page_twice(bot.env["CHATGATE_DB"], fake_wechat)
    return result


def no_page_twice(db_path: str, fake_wechat) -> None:
    pushed = fake_wechat.sent
    assert len(pushed) == len(set(pushed)), "a page was pushed twice"
    assert not pages_pushing(db_path), "a page was left pushing"


def pages_pushing(db_path: str) -> int:
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT COUNT(*) FROM pages WHERE state = 'pushing'").fetchone()[0]
    finally:
        db.close()


def ask_all(bot: LiveBot, count: int, prefix: str, first_msg_id: int) -> tuple[list[Asker], dict, list]:
    askers = [Asker(bot.url, f"o{prefix}{i:03d}") for i in range(count)]
    questions = {f"{prefix}-{i:03d}": a.openid for i, a in enumerate(askers)}
    threads = [a.say_in_background(q, first_msg_id + i) for i, (q, a) in enumerate(zip(questions, askers, strict=True))]
    return askers, questions, threads
