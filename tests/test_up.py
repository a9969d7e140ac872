"""`chatgate up` as a service manager sees it: the real command, started as systemd or a terminal starts
it (a session of its own), running the real Procfile (gunicorn, `chatgate worker`) on its embedded Redis
in production mode, WeChat and the LLM played by the local fakes. A part killed makes it stop the rest
and exit non-zero; SIGTERM and Ctrl-C stop it in order, an answer in flight still goes out, Redis is
saved; a busy port is refused with one line. After each, nothing it started may still run."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest
import requests
from redis import Redis
from rq import Worker

from bot.embedded_redis import EmbeddedRedis, embedded_redis_dir
from config import VARIABLES
from tests import wechat_sim
from tests.live import ROOT, free_port

CHATGATE = Path(sys.executable).parent / "chatgate"
FAST = {"WEB_CONCURRENCY": "1", "CHATGATE_WORKERS": "2", "CHATGATE_RECONCILE_INTERVAL": "1",
        "CHATGATE_STOP_GRACE": "15", "CHATGATE_HOST": "127.0.0.1", "WECHAT_REPLY_WAIT": "0"}


def processes() -> list[dict]:
    """Every live (not zombie) process: pid, ppid, process group, session, command line, cwd."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if fields[0] not in ("Z", "X"):
            found.append({"pid": int(entry.name), "ppid": int(fields[1]), "pgrp": int(fields[2]),
                          "sid": int(fields[3]), "cmdline": cmdline, "cwd": cwd})
    return found


class Up:
    """`chatgate up` in `workdir` (a copy of the Procfile, a production `.env`), in a session of its own."""

    def __init__(self, workdir: Path, values: dict[str, str]):
        self.workdir = workdir
        self.port = free_port()
        shutil.copy(ROOT / "Procfile", workdir / "Procfile")
        env_file = "".join(f"{name}={value}\n" for name, value in values.items() if name != "REDIS_URL")
        (workdir / ".env").write_text(env_file + "".join(f"{k}={v}\n" for k, v in FAST.items())
                                      + f"PORT={self.port}\n")
        self.db = Path(values["CHATGATE_DB"])
        self.redis_dir = embedded_redis_dir(self.db)
        self.env = {k: v for k, v in os.environ.items() if k not in {var.name for var in VARIABLES}}
        self.log = workdir / "up.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Up:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([CHATGATE, "up"], cwd=self.workdir, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 40) -> None:
        """Until the web answers and both RQ workers listen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    with Redis.from_url(f"unix://{self.redis_dir / 'redis.sock'}") as r:
                        if Worker.count(connection=r) >= 2:
                            return
            except (requests.RequestException, OSError, ConnectionError):
                pass
            time.sleep(0.2)
        raise AssertionError("chatgate up did not get ready:\n" + self.output())

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"chatgate up still runs after {timeout}s:\n{self.output()}") from None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def children(self) -> list[dict]:
        return [p for p in processes() if p["ppid"] == self.proc.pid]

    def part(self, name: str) -> dict:
        """The process a Procfile line runs (gunicorn's master, the worker pool), under its `sh -c`."""
        command = {"web": "gunicorn", "worker": "chatgate worker"}[name]
        shells = {p["pid"] for p in self.children() if p["cmdline"].startswith("/bin/sh")}
        return next(p for p in processes() if p["ppid"] in shells and command in p["cmdline"])

    def redis_server(self) -> dict:
        return next(p for p in self.children() if "redis-server" in p["cmdline"])

    def left_running(self) -> list[dict]:
        """Processes still running in the work directory (all that `up` starts runs there)."""
        return [p for p in processes() if p["pid"] != os.getpid()
                and (p["cwd"] == str(self.workdir) or p["cwd"].startswith(f"{self.workdir}/"))]

    def kill_all(self) -> None:
        for p in self.left_running():
            with suppress(ProcessLookupError, PermissionError):
                os.kill(p["pid"], signal.SIGKILL)


@pytest.fixture
def up(env, tmp_path, fake_llm, fake_wechat):
    started = Up(tmp_path, env)
    yield started
    if started.proc is not None and started.proc.poll() is None:
        started.proc.kill()
        started.proc.wait()
    started.kill_all()


def ask(up: Up, text: str, msg_id: int) -> None:
    signed = wechat_sim.sign_encrypted(wechat_sim.text_xml("oAsker", text, msg_id))
    res = requests.post(up.url + signed.path, data=signed.body, timeout=5)
    assert res.status_code == 200 and res.text in ("success", ""), res.text


def lines(output: str, *needles: str) -> list[int]:
    """The index of the first output line holding each needle."""
    rows = output.splitlines()
    return [next(i for i, row in enumerate(rows) if needle in row) for needle in needles]


@pytest.mark.parametrize("victim", ["redis", "web", "worker"])
def test_a_part_killed_stops_everything_and_exits_non_zero(up, victim):
    up.start().wait_ready()
    target = up.redis_server() if victim == "redis" else up.part(victim)
    os.kill(target["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    assert up.wait(timeout=20) == 1
    took = time.monotonic() - killed_at
    out = up.output()
    died = [row for row in out.splitlines() if " died: " in row]
    assert len(died) == 1 and died[0].split("| ", 1)[1].startswith(f"{victim} (pid "), out
    assert "killed by SIGKILL" in died[0], died
    assert took < 15, out
    assert up.left_running() == [], out
    if victim != "redis":  # Redis outlived web and worker, and saved
        assert "DB saved on disk" in (up.redis_dir / "redis.log").read_text().split("User requested shutdown")[-1]


def test_one_worker_of_the_pool_killed_is_replaced_by_the_pool_and_up_runs_on(up):
    up.start().wait_ready()
    pool = up.part("worker")

    def rq_workers() -> set[int]:
        return {p["pid"] for p in processes() if p["ppid"] == pool["pid"] and "chatgate worker" in p["cmdline"]}

    first = rq_workers()
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not (len(rq_workers()) == 2 and victim not in rq_workers()):
        assert time.monotonic() < deadline, up.output()
        time.sleep(0.2)
    assert up.proc.poll() is None and " died: " not in up.output()
    up.proc.send_signal(signal.SIGTERM)
    assert up.wait(timeout=20) == 0
    assert up.left_running() == [], up.output()


def test_sigterm_lets_the_answer_in_flight_go_out_and_saves_redis(up, fake_llm, fake_wechat):
    up.start().wait_ready()
    with Redis.from_url(f"unix://{up.redis_dir / 'redis.sock'}") as r:
        r.set("written-before-the-stop", "kept")
    fake_llm.delay(3)
    ask(up, "slow-question", 8200000000000001)
    fake_llm.wait_for_calls(1)
    up.proc.send_signal(signal.SIGTERM)  # as systemd stops it
    assert up.wait(timeout=30) == 0
    out = up.output()
    assert fake_wechat.sent == [("oAsker", "echo: slow-question")], out
    assert "Traceback" not in out, out
    web_stopped, worker_stopping, worker_stopped, redis_stopping = lines(
        out, "system | web stopped", "stopping worker (SIGTERM)", "system | worker stopped", "stopping redis")
    assert web_stopped < worker_stopping < worker_stopped < redis_stopping, out
    assert "killing" not in out, out
    assert up.left_running() == [], out
    with EmbeddedRedis(up.redis_dir) as restarted, restarted.client() as r:
        assert r.get("written-before-the-stop") == b"kept"


def test_ctrl_c_stops_it_cleanly_and_an_idle_worker_hears_it_at_once(up):
    up.start().wait_ready()
    # An idle worker waits on the queue a second at a time: it hears the stop at once, not after the
    # dequeue timeout (30 s).
    pool = up.part("worker")
    workers = [p for p in processes() if p["ppid"] == pool["pid"] and "chatgate worker" in p["cmdline"]]
    assert len(workers) == 2  # CHATGATE_WORKERS processes under the pool
    os.killpg(up.proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole foreground process group
    stopped_at = time.monotonic()
    assert up.wait(timeout=20) == 0
    out = up.output()
    assert time.monotonic() - stopped_at < 8, out
    assert "SIGINT received" in out and "Traceback" not in out and "killing" not in out, out
    assert up.left_running() == [], out


def test_a_port_in_use_is_one_line_and_nothing_starts(up):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", up.port))
        taken.listen()
        up.start()
        code = up.wait(timeout=20)
    out = up.output()
    assert code != 0
    assert len(out.strip().splitlines()) == 1 and f"PORT {up.port}" in out, out
    assert not up.redis_dir.exists() and not up.db.exists()
    assert up.left_running() == []


# A worker that ignores SIGTERM, with a child in a process group of its own (which a signal to the
# part's group does not reach).
STUBBORN = """
import os, signal, time
from pathlib import Path
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.fork() == 0:
    os.setpgrp()
    Path("horse.pid").write_text(str(os.getpid()))
    time.sleep(600)
    os._exit(0)
time.sleep(600)
"""


def test_what_outlives_the_grace_is_killed_children_in_groups_of_their_own_too(tmp_path):
    (tmp_path / "stubborn.py").write_text(STUBBORN)
    (tmp_path / "Procfile").write_text(f"web: {sys.executable} -c 'import time; time.sleep(600)'\n"
                                       f"worker: {sys.executable} stubborn.py\n")
    (tmp_path / ".env").write_text(f"CHATGATE_ENV=development\nCHATGATE_DB={tmp_path / 'data' / 'chatgate.db'}\n"
                                   f"PORT={free_port()}\nCHATGATE_STOP_GRACE=2\n")
    env = {k: v for k, v in os.environ.items() if k not in {var.name for var in VARIABLES}}
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([CHATGATE, "up"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "horse.pid").exists():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        horse = int((tmp_path / "horse.pid").read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log.read_text()
    assert "worker still running 2s after the stop began (CHATGATE_STOP_GRACE): killing" in out, out
    assert lines(out, "system | web stopped", "killing", "stopping redis") == sorted(
        lines(out, "system | web stopped", "killing", "stopping redis")), out
    assert not Path(f"/proc/{horse}").exists() or "Z" in Path(f"/proc/{horse}/stat").read_text().split(")")[1][:3]
    assert [p for p in processes() if p["cwd"] == str(tmp_path) and p["pid"] != os.getpid()] == []
