"""Where every process keeps its metrics: prometheus-client's multiprocess mode, one folder per owner.

prometheus-client adds up the metrics of many processes through files: each process writes its own
(`counter_<pid>.db`, `histogram_<pid>.db`, `gauge_livesum_<pid>.db`) into PROMETHEUS_MULTIPROC_DIR,
which must be set before `prometheus_client` is first imported, and `/metrics` merges them all. The
layout chatgate keeps::

    <base>/                     PROMETHEUS_MULTIPROC_DIR as the operator set it, else
      .lock                     `<folder of CHATGATE_DB>/metrics`; created mode 700
      web-<host>-<pid>/         the gunicorn master's: its workers write here
      worker-<host>-<pid>/      `chatgate worker`'s: its pool's worker processes
      feishu-<host>-<pid>/      `chatgate feishu-connect`'s

Each long-lived parent process (an *owner*) calls `prepare()` at start, before anything imports
prometheus_client: it points PROMETHEUS_MULTIPROC_DIR at a new folder of its own, which its children
inherit, and removes the folders that owners of this host left when they stopped (an earlier run's).
Web and worker may start in any order and restart alone: an owner never touches a running owner's
folder, so the counts of a running process never go back. A folder of another host (containers
sharing the volume) is left to that host; one whose container was recreated under a new name stays
until removed by hand.

Inside a folder, a gunicorn worker's files stay after it exits (its counts still count) except its live
gauges, which the master drops (`process_dead`, from gunicorn's `child_exit`). A worker process runs
all its jobs itself (no process per job), so a folder holds a few files per long-lived process.
"""

from __future__ import annotations

import fcntl
import glob
import logging
import os
import shutil
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

from config.settings import Settings

log = logging.getLogger("chatgate.metrics")

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's own variable: the folder this process writes its metric files into."""
MARKER = ".chatgate-owner"
"""Marks a folder as an owner's (so a process that inherits it knows where the base is)."""


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def base_dir(settings: Settings | None = None) -> Path | None:
    """The folder that holds every owner's folder, or None when multiprocess mode is off."""
    current = os.environ.get(VARIABLE)
    if current:
        path = Path(current)
        return path.parent if (path / MARKER).exists() else path
    if settings is None:
        return None
    return Path(settings.db_path).resolve().parent / "metrics"


def prepare(settings: Settings, role: str) -> Path:
    """Make this process an owner: a new folder `<base>/<role>-<host>-<pid>` for it and its children,
    set in PROMETHEUS_MULTIPROC_DIR, and the folders of this host's stopped owners removed. Call it
    before prometheus_client is imported (a process that imported it already counts on its own)."""
    if "prometheus_client" in sys.modules and not os.environ.get(VARIABLE):
        log.warning("prometheus_client was imported before its folder was set: this process's metrics stay its own")
    base = base_dir(settings)
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(base, 0o700)
    host, pid = _host(), os.getpid()
    with locked(exclusive=True, base=base):  # not while a scrape reads them
        for folder in base.iterdir():
            try:
                _, folder_host, folder_pid = folder.name.rsplit("-", 2)
                folder_pid = int(folder_pid)
            except ValueError:
                continue
            if folder.is_dir() and folder_host == host and (folder_pid == pid or not _alive(folder_pid)):
                shutil.rmtree(folder, ignore_errors=True)
    own = base / f"{role}-{host}-{pid}"
    own.mkdir(mode=0o700)
    (own / MARKER).write_text(f"{role} {host} {pid}\n")
    os.environ[VARIABLE] = str(own)
    return own


def own_dir() -> Path | None:
    """This process's folder (its owner's), or None when multiprocess mode is off."""
    current = os.environ.get(VARIABLE)
    return Path(current) if current else None


def files() -> list[str]:
    """Every metric file of every owner."""
    base = base_dir()
    if base is None:
        return []
    own = own_dir()
    pattern = "*/*.db" if own is not None and (own / MARKER).exists() else "*.db"
    return glob.glob(str(base / pattern))


@contextmanager
def locked(exclusive: bool = False, base: Path | None = None):
    """Hold the base folder's lock: shared to read the files, exclusive to rewrite or remove them."""
    base = base or base_dir()
    if base is None:
        yield
        return
    fd = os.open(base / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def process_dead(pid: int) -> None:
    """A child of this owner exited: its live gauges (posts it was holding) stop counting."""
    folder = own_dir()
    if folder is None or not pid:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(folder))
