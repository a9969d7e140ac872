"""`chatgate up`: the Procfile's processes and, when REDIS_URL is unset, an embedded Redis, run as one
unit a service manager can trust. A part that dies stops the others in order and `up` exits 1, so
systemd's `Restart=on-failure` brings everything back; SIGTERM, Ctrl-C (SIGINT) or SIGHUP stops them
in the same order and `up` exits 0.

    start                                          stop
    ─────                                          ────
    settings checked      ┐ refused: one line,     1. web, feishu, any other line but `worker` ─ SIGTERM:
    PORT free to bind     ┘ exit 1, nothing runs      intake stops (gunicorn finishes the posts it holds)
    Redis (embedded) ─────────────────────┐        2. worker ─ SIGTERM: its warm shutdown, the answers
    database migrated                     │           in flight finish and go out
    the Procfile's lines, in file order   │        3. what still runs CHATGATE_STOP_GRACE s after the
      (sh -c LINE, each in a session      │           stop began is SIGKILLed
       of its own, output prefixed)       └──────▶ 4. Redis last: SHUTDOWN SAVE (the embedded one only)

Each line runs as `sh -c LINE` in a session of its own (as honcho runs it), so a Ctrl-C in the
terminal reaches `up` alone; `up` sends each part its stop signal, in order, to the part's process
group (gunicorn's master and workers; the worker's pool and its processes). A part counts as stopped
when nothing of its session is left (a child that moved to a process group of its own included), so
no orphan outlives `up`. A second signal during the stop hurries it: SIGINT to what still runs
(gunicorn's quick stop, the worker's cold stop, which gives the answers in flight back to the queue
at once), and whatever runs 5 s later is killed. A third kills at once. Redis is still saved. The
worker gives back what is left a few seconds before CHATGATE_STOP_GRACE runs out, so a stop within
the grace kills nothing.

A part dies when the process its Procfile line started exits (`sh` reports 128+N when its command
was killed by signal N), or when the embedded redis-server exits. Deaths inside a part are the part's
business: gunicorn's master replaces a dead gunicorn worker, and RQ's WorkerPool (`chatgate worker`
with CHATGATE_WORKERS > 1) starts a new worker process a second after one of its processes dies. With a
REDIS_URL of the operator's own, Redis is not ours to watch: the webhook keeps admitting into SQLite
through an outage, RQ's workers retry once a second until Redis answers (the pool replaces one that
gives up), and the reconciler re-queues what was lost.

honcho supplies the Procfile parser and the prefixed, coloured output; its process manager does not
fit: it signals every process at once and SIGKILLs what still runs 5 s later, which cuts answers off.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import IO

from dotenv import dotenv_values
from honcho.colour import get_colours
from honcho.environ import parse_procfile
from honcho.printer import Message, Printer

from bot.embedded_redis import EmbeddedRedis, embedded_redis_dir
from config import Settings, SettingsError, load_settings

__all__ = ["StartRefused", "Supervisor", "check_port", "describe_exit"]

DRAIN_LAST = ("worker",)
"""Procfile lines stopped after all the others: they finish what the intake queued."""

HURRY_S = 5.0
"""After a second stop signal, how long the quick stop may take before what is left is killed."""

KILL_WAIT_S = 5.0
"""How long SIGKILLed processes get to disappear before `up` gives up on them."""

POLL_S = 0.1
"""How often `up` looks at its parts."""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_EMBEDDED = "unix:///embedded-redis"  # stands in for the embedded Redis's URL while the settings are checked


class StartRefused(Exception):
    """`chatgate up` will not start; the message (one line) says why. Nothing was left running."""


def check_port(host: str, port: int) -> None:
    """Raise StartRefused unless HOST:PORT can be bound now, as gunicorn will bind it."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise StartRefused(f"CHATGATE_HOST {host!r}: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartRefused(f"PORT {port} is already in use on {host} (is chatgate already running?): "
                                   "stop what listens there or set PORT to a free port") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise StartRefused(f"CHATGATE_HOST {host} is not an address of this machine") from None
            raise StartRefused(f"PORT {port} cannot be bound on {host}: {exc.strerror}") from None


def describe_exit(returncode: int) -> str:
    """`killed by SIGKILL`, `exit status 1`, or for a shell whose command a signal killed
    `exit status 137 (killed by SIGKILL)`."""
    if returncode < 0:
        return f"killed by {_signal_name(-returncode)}"
    if returncode > 128 and _signal_name(returncode - 128):
        return f"exit status {returncode} (killed by {_signal_name(returncode - 128)})"
    return f"exit status {returncode}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return ""


def session_members(sid: int) -> list[int]:
    """The live (not zombie) processes of session `sid`; without /proc, `[sid]` while its process
    group lives."""
    if not os.path.isdir("/proc"):
        try:
            os.killpg(sid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [sid]
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in (b"Z", b"X") and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


class Output:
    """Every part's lines prefixed `HH:MM:SS name | ` by honcho's Printer (coloured on a terminal);
    `up`'s own lines under the name `system`."""

    def __init__(self, names: list[str], stream: IO[str] | None = None):
        self.printer = Printer(stream or sys.stdout, width=max(len(n) for n in [*names, "system"]))
        colours = get_colours()
        self.colours = {name: next(colours) for name in names}
        self._lock = threading.Lock()

    def write(self, name: str, data: bytes | str) -> None:
        with self._lock, suppress(OSError, ValueError):  # a closed terminal must not stop the copying
            self.printer.write(Message("line", data, datetime.now(), name, self.colours.get(name)))

    def system(self, text: str) -> None:
        self.write("system", text)

    def copy(self, name: str, pipe: IO[bytes]) -> None:
        """Print each line from `pipe` until every process holding it has closed it."""
        for line in iter(pipe.readline, b""):
            self.write(name, line)
        pipe.close()


class Part:
    """One Procfile line: `sh -c COMMAND` in a session of its own, its output copied to `Output`."""

    def __init__(self, name: str, command: str):
        self.name, self.command = name, command
        self.proc: subprocess.Popen | None = None
        self._copier: threading.Thread | None = None

    def start(self, env: dict[str, str], output: Output) -> None:
        self.proc = subprocess.Popen(["/bin/sh", "-c", self.command], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self._copier = threading.Thread(target=output.copy, args=(self.name, self.proc.stdout),
                                        name=f"output of {self.name}", daemon=True)
        self._copier.start()
        output.system(f"{self.name} started (pid={self.proc.pid})")

    @property
    def exited(self) -> bool:
        """The process the line started has exited (what it started may still run)."""
        return self.proc is not None and self.proc.poll() is not None

    def running(self) -> bool:
        """Anything of this part still runs: its process or anything started from it."""
        if self.proc is None:
            return False
        self.proc.poll()  # reap it, so that its zombie does not count
        return bool(session_members(self.proc.pid))

    def signal(self, signum: int) -> None:
        """Send `signum` to the part's process group (not to a child that moved to a group of its own)."""
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL every process of the part's session, those in process groups of their own included."""
        for pid in session_members(self.proc.pid):
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.signal(signal.SIGKILL)

    def finish_output(self, timeout: float) -> None:
        if self._copier is not None:
            self._copier.join(timeout)


class Supervisor:
    """Runs a Procfile's lines and, when REDIS_URL is unset, an embedded Redis (see the module)."""

    def __init__(self, procfile: str | os.PathLike):
        self.procfile = Path(procfile)
        self.parts: list[Part] = []
        self.redis: EmbeddedRedis | None = None
        self.settings: Settings | None = None
        self.output: Output | None = None
        self._signals: list[int] = []
        self._answered = 0  # stop signals acted upon
        self._hurried = False

    def run(self) -> int:
        """Start everything, watch it, stop it in order; 0 after a stop signal, 1 when a part died.
        Raises StartRefused (nothing left running) when it cannot start."""
        handlers = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        died = None
        try:
            self._prepare()
            try:
                self._start()
                died = self._watch()
            finally:
                self._stop(died)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        return 1 if died else 0

    def _on_signal(self, signum, _frame) -> None:
        self._signals.append(signum)

    # -- start ----------------------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Everything that may refuse the start, before anything starts."""
        try:
            lines = parse_procfile(self.procfile.read_text()).processes
        except OSError as exc:
            raise StartRefused(f"cannot read the Procfile {self.procfile}: {exc.strerror}") from None
        except AssertionError as exc:  # a name twice
            raise StartRefused(f"{self.procfile}: {exc}") from None
        if not lines:
            raise StartRefused(f"{self.procfile} names no process")
        embedded = not _redis_url_configured()
        try:
            self.settings = load_settings(**({"redis_url": _EMBEDDED} if embedded else {}))
        except SettingsError as exc:
            raise StartRefused(str(exc)) from None
        if "web" in lines:
            check_port(self.settings.bind_host, self.settings.port)
        if embedded:
            self.redis = EmbeddedRedis(embedded_redis_dir(self.settings.db_path))
            if EmbeddedRedis.running_in(self.redis.data_dir):
                raise StartRefused(f"an embedded Redis already serves {self.redis.data_dir} "
                                   "(is chatgate already running?)")
        self.parts = [Part(name, command) for name, command in lines.items()]
        self.output = Output([part.name for part in self.parts])

    def _start(self) -> None:
        from bot.store import Store

        if self._signals:
            return
        s = self.settings
        env = _environment()
        if self.redis is not None:
            try:
                self.redis.start()
            except RuntimeError as exc:
                raise StartRefused(str(exc).splitlines()[0]) from None
            env["REDIS_URL"] = self.redis.url
            self.output.system(f"embedded Redis on {self.redis.url} (pid={self.redis.proc.pid})")
        env["PORT"] = str(s.port)
        Store(s.db_path).close()  # migrations run here once, not raced by every process
        self.output.system(f"chatgate ({s.env}) on http://{s.bind_host}:{s.port}  database {s.db_path}  "
                           f"LLM {'demo responder' if s.demo_llm else s.model}")
        if s.simulator:
            from config.simulator import web_origin

            stand_ins = f" (the simulator stands in for {' and '.join(s.simulated)})" if s.simulated else ""
            self.output.system(f"try it in a browser: {web_origin(s)}/simulator{stand_ins}")
        for part in self.parts:
            if self._signals:
                return
            part.start(env, self.output)

    # -- watch ----------------------------------------------------------------------------------------

    def _watch(self) -> str | None:
        """Wait for a stop signal (returns None) or a death (returns what died and how)."""
        while not self._signals:
            for part in self.parts:
                if part.exited:
                    return f"{part.name} (pid {part.proc.pid}) died: {describe_exit(part.proc.returncode)}"
            redis = self.redis.proc if self.redis is not None else None
            if redis is not None and redis.poll() is not None:
                return f"redis (pid {redis.pid}) died: {describe_exit(redis.returncode)}"
            time.sleep(POLL_S)
        return None

    # -- stop -----------------------------------------------------------------------------------------

    def _stop(self, died: str | None) -> None:
        self._answered = len(self._signals)
        if self.output is None:
            return
        if died:
            self.output.system(f"{died}; stopping the rest, then exiting with status 1")
        elif self._signals:
            self.output.system(f"{_signal_name(self._signals[0])} received; stopping "
                               f"(again to hurry: answers in flight are cut off)")
        deadline = time.monotonic() + self.settings.stop_grace
        first = [p for p in self.parts if p.name not in DRAIN_LAST]
        last = [p for p in self.parts if p.name in DRAIN_LAST]
        for stage in (first, last):
            running = [p for p in stage if p.running()]
            for part in running:
                self.output.system(f"stopping {part.name} (SIGTERM)")
                part.signal(signal.SIGTERM)
            deadline = self._wait_for(running, deadline)
        left = [p for p in self.parts if p.running()]
        if left:
            when = ("after the hurried stop" if self._hurried else
                    f"{self.settings.stop_grace:g}s after the stop began (CHATGATE_STOP_GRACE)")
            self.output.system(f"{', '.join(p.name for p in left)} still running {when}: killing")
            for part in left:
                part.kill()
            self._wait_for(left, time.monotonic() + KILL_WAIT_S)
        for part in self.parts:
            part.finish_output(timeout=1)
        if self.redis is not None and self.redis.proc is not None:
            if self.redis.proc.poll() is None:
                self.output.system("stopping redis (SHUTDOWN SAVE)")
                self.redis.stop()
                self.output.system("redis stopped")
            else:
                self.redis.stop()  # it died: only reaped

    def _wait_for(self, parts: list[Part], deadline: float) -> float:
        """Wait until none of `parts` runs or `deadline` passes; a further stop signal hurries (the
        first) or ends (the next) the wait. Returns the deadline, perhaps brought forward."""
        waiting = list(parts)
        while waiting and time.monotonic() < deadline:
            if len(self._signals) > self._answered:
                self._answered = len(self._signals)
                deadline = self._hurry(deadline)
            for part in [p for p in waiting if not p.running()]:
                waiting.remove(part)
                self.output.system(f"{part.name} stopped")
            time.sleep(POLL_S)
        return deadline

    def _hurry(self, deadline: float) -> float:
        if self._hurried:
            self.output.system("stop signal again: killing what still runs")
            return time.monotonic()
        self._hurried = True
        running = [p for p in self.parts if p.running()]
        self.output.system(f"stop signal again: SIGINT to {', '.join(p.name for p in running) or 'nothing'}; "
                           f"killing what still runs in {HURRY_S:g}s")
        for part in running:
            part.signal(signal.SIGINT)
        return min(deadline, time.monotonic() + HURRY_S)


def _redis_url_configured() -> bool:
    """REDIS_URL is set, in the environment or in `.env` (the environment wins, as in the settings)."""
    if "REDIS_URL" in os.environ:
        return bool(os.environ["REDIS_URL"])
    return Path(".env").is_file() and bool(dotenv_values(".env").get("REDIS_URL"))


def _environment() -> dict[str, str]:
    """The parts' environment: `.env` under the environment (as the settings read them, so that a
    Procfile line may use `$NAME` from either), the Procfile's commands found beside this Python."""
    env = {k: v for k, v in dotenv_values(".env").items() if v} if Path(".env").is_file() else {}
    env.update(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")  # lines as they are written, not a pipe's buffer at a time
    return env
