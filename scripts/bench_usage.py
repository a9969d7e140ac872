"""Where the CPU and memory of the answering benchmarks go, read from /proc.

CPU of a process tree: every process of a session (the Procfile's processes are each started in a
session of their own) summed as utime + stime + cutime + cstime, so a child that has exited and been
reaped still counts, through its parent (RQ's forked work-horses, reaped by their worker, and the
workers of RQ's pool). Memory: PSS from /proc/PID/smaps_rollup, summed over the session (PSS shares a
page among the processes that map it, so a fork's shared pages are not counted twice).
"""

from __future__ import annotations

import os
import resource
import time

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int | str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def session_pids(sid: int) -> list[int]:
    """Every live process of session `sid`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(entry)
            if fields and int(fields[3]) == sid:
                found.append(int(entry))
    return found


def cpu_s(pid: int) -> float:
    """CPU seconds of one process and its reaped children."""
    fields = _stat(pid)
    return sum(int(x) for x in fields[11:15]) / TICK if fields else 0.0


def tree_cpu_s(sid: int) -> float:
    """CPU seconds of a session: its live processes and every child they reaped."""
    return sum(cpu_s(pid) for pid in session_pids(sid))


def pss_kb(pid: int | str = "self") -> int:
    """Proportional set size of one process, in kB."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pss_kb(sid: int) -> int:
    """PSS of a session, in kB."""
    return sum(pss_kb(pid) for pid in session_pids(sid))


def machine_cpu() -> tuple[float, float]:
    """(all, idle + iowait) jiffies of the machine."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return float(sum(v[:8])), float(v[3] + v[4])


def busy_cores(before: tuple[float, float], after: tuple[float, float]) -> float:
    """How many cores were busy between two `machine_cpu()` samples."""
    total, idle = after[0] - before[0], after[1] - before[1]
    return (total - idle) / total * (os.cpu_count() or 1) if total else 0.0


class Usage:
    """CPU seconds used so far by each of the benchmark's parts, and by the whole machine."""

    def __init__(self, parts: dict[str, float]):
        self.t = time.monotonic()
        self.machine = machine_cpu()
        mine = resource.getrusage(resource.RUSAGE_SELF)
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)  # the load generator, once it has exited
        self.parts = {**parts, "benchmark": mine.ru_utime + mine.ru_stime + reaped.ru_utime + reaped.ru_stime}

    def until(self, later: Usage) -> dict:
        """Cores used between two readings: each part's, the machine's, and the rest (other work)."""
        wall = later.t - self.t
        used = {k: (later.parts[k] - v) / wall for k, v in self.parts.items()}
        busy = busy_cores(self.machine, later.machine)
        return {"seconds": wall, "busy_cores": busy, "parts_cores": used,
                "other_cores": max(0.0, busy - sum(used.values()))}


def load_average() -> str:
    """The machine's load averages over 1, 5 and 15 minutes."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_line(when: str, cpu: dict) -> str:
    """One line of where the cores went between two `Usage` readings."""
    parts = ", ".join(f"{k} {v:.2f}" for k, v in cpu["parts_cores"].items())
    line = (f"cores busy {when} ({cpu['seconds']:.0f} s): {cpu['busy_cores']:.2f} — {parts}, "
            f"other work on the machine {cpu['other_cores']:.2f}")
    if cpu["other_cores"] > 0.25:
        line += "  (WARNING: the machine was shared; figures are lower than on a quiet one)"
    return line
