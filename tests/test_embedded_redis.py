"""The embedded Redis keeps its data: the real redis-server binary, SIGKILLed, stopped and restarted
on the same data dir, and `chatgate up` really started and stopped with SIGTERM or Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import string
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from bot.embedded_redis import EmbeddedRedis, embedded_redis_dir
from config import VARIABLES
from tests.live import free_port

CHATGATE = Path(sys.executable).parent / "chatgate"


@pytest.fixture
def server(tmp_path):
    redis_server = EmbeddedRedis(tmp_path / "redis").start()
    yield redis_server
    redis_server.stop()


def config(server: EmbeddedRedis, *names: str) -> dict:
    with server.client(decode_responses=True) as r:
        return {name: r.config_get(name)[name] for name in names}


def test_with_a_data_dir_it_keeps_an_append_only_file_and_snapshots(server, tmp_path):
    assert config(server, "appendonly", "appendfsync", "save", "dir") == {
        "appendonly": "yes", "appendfsync": "everysec", "save": "60 1", "dir": str(tmp_path / "redis")}


def test_without_a_data_dir_it_keeps_nothing():
    with EmbeddedRedis() as temporary:
        assert config(temporary, "appendonly", "save") == {"appendonly": "no", "save": ""}


def test_writes_survive_a_sigkill(server):
    with server.client() as r:
        r.mset({f"k{i}": i for i in range(100)})
    time.sleep(1.5)  # appendfsync everysec
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    socket_path = server.socket_path
    server.restart()
    assert server.socket_path == socket_path
    with server.client() as r:
        assert r.mget([f"k{i}" for i in range(100)]) == [str(i).encode() for i in range(100)]


def test_queued_jobs_survive_a_stop_and_run_after_the_restart(server):
    with server.client() as r:
        queue = Queue("chatgate", connection=r, serializer=JSONSerializer)
        ids = [queue.enqueue("tests.jobs_for_selftest.add", i, 1).id for i in range(3)]
    server.stop()
    assert (server.data_dir / "redis.rdb").exists()  # SHUTDOWN SAVE wrote a final snapshot
    server.start()
    with server.client() as r:
        queue = Queue("chatgate", connection=r, serializer=JSONSerializer)
        assert queue.job_ids == ids
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            Worker([queue], connection=r, serializer=JSONSerializer).work(burst=True)
        finally:  # RQ installs its own signal handlers in this process
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        assert [queue.fetch_job(i).return_value()["sum"] for i in ids] == [1, 2, 3]


def test_a_server_that_does_not_answer_shutdown_is_killed_and_loses_nothing(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis", stop_timeout=0.5).start()
    with server.client() as r:
        r.set("k", "v")
    os.kill(server.proc.pid, signal.SIGSTOP)  # neither SHUTDOWN nor SIGTERM is served; SIGKILL is
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3
    with server, server.client() as r:
        assert r.get("k") == b"v"


def test_a_snapshot_without_an_append_only_file_is_loaded_not_skipped(server):
    """Redis 6.2 with appendonly yes ignores an RDB alone (e.g. a snapshot put back from a backup)."""
    with server.client() as r:
        r.set("from-the-snapshot", "1")
    server.stop()
    (server.data_dir / "appendonly.aof").unlink()
    server.start()
    assert config(server, "appendonly") == {"appendonly": "yes"}
    assert (server.data_dir / "appendonly.aof").stat().st_size > 0
    server.restart()  # now from the append-only file
    with server.client() as r:
        assert r.get("from-the-snapshot") == b"1"


# -- chatgate up ----------------------------------------------------------------------------------

# A Procfile process: on SIGTERM or SIGINT it takes a moment to stop (as a worker finishing a job
# would), checks that Redis still answers, and writes down when it exited.
CHILD = """
import json, os, signal, sys, time
from pathlib import Path
import redis

name, got = sys.argv[1], []
signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
Path(f"ready-{name}").touch()
while not got:
    time.sleep(0.02)
print(f"{name} got signal {got[0]}, stopping", flush=True)
time.sleep(1)
try:
    answered = redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=1).ping()
except redis.RedisError:
    answered = False
Path(f"exit-{name}.json").write_text(json.dumps({"signal": got[0], "redis": answered, "at": time.time()}))
"""


def redis_shutdown_time(log: str) -> float:
    """When the last SHUTDOWN command reached Redis, by its own log (local time, milliseconds)."""
    stamps = re.findall(r"^\d+:M (\d+ \w+ \d+ [\d:.]+) # User requested shutdown", log, re.MULTILINE)
    return datetime.strptime(stamps[-1], "%d %b %Y %H:%M:%S.%f").timestamp()


@pytest.mark.parametrize("stop", ["sigterm", "ctrl-c twice"])
def test_chatgate_up_stops_redis_last_and_keeps_its_data(tmp_path, stop):
    db = tmp_path / "data" / "chatgate.db"
    token = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(16))
    (tmp_path / ".env").write_text(f"CHATGATE_ENV=development\nWECHAT_TOKEN={token}\n"
                                   f"CHATGATE_DB={db}\nPORT={free_port()}\n")
    (tmp_path / "child.py").write_text(CHILD)
    procfile = tmp_path / "Procfile"
    names = ("web", "worker", "feishu")  # feishu, like any line but `worker`, stops with web, before the worker
    procfile.write_text("".join(f"{name}: {sys.executable} child.py {name}\n" for name in names))
    env = {k: v for k, v in os.environ.items() if k not in {var.name for var in VARIABLES}}
    output = tmp_path / "up.log"
    with output.open("wb") as out:  # its own process group, as a shell gives a foreground job
        up = subprocess.Popen([CHATGATE, "up", "--procfile", str(procfile)], cwd=tmp_path, env=env,
                              stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not all((tmp_path / f"ready-{name}").exists() for name in names):
            assert up.poll() is None and time.monotonic() < deadline, output.read_text()
            time.sleep(0.05)
        data_dir = embedded_redis_dir(str(db))
        redis_server = EmbeddedRedis(data_dir)
        redis_server.dir = data_dir
        with redis_server.client() as r:
            r.set("before-the-stop", "kept")
        if stop == "sigterm":  # as systemd sends it
            up.send_signal(signal.SIGTERM)
        else:  # the terminal sends SIGINT to the whole foreground process group
            os.killpg(up.pid, signal.SIGINT)
            time.sleep(0.5)
            os.killpg(up.pid, signal.SIGINT)  # hurries the stop: SIGINT to what still runs, Redis still last
        assert up.wait(timeout=15) == 0, output.read_text()
    finally:
        if up.poll() is None:
            up.kill()
    exits = {name: json.loads((tmp_path / f"exit-{name}.json").read_text()) for name in names}
    assert all(e["redis"] for e in exits.values()), (exits, output.read_text())
    assert exits["worker"]["at"] > max(exits["web"]["at"], exits["feishu"]["at"]), output.read_text()
    log = (data_dir / "redis.log").read_text()
    assert redis_shutdown_time(log) > max(e["at"] for e in exits.values()), log
    assert "Received SIG" not in log  # Redis was asked to SHUTDOWN, not signalled
    assert "DB saved on disk" in log.split("User requested shutdown")[-1]
    with EmbeddedRedis(data_dir) as restarted, restarted.client() as r:
        assert r.get("before-the-stop") == b"kept"
