"""The folders of metric files: an owner starting removes what stopped owners of this host left, and
nothing of a running one or of another host. (Folding work-horse files: tests/test_watching.py.)"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from config import load_settings, metric_files


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # reaped: no process has it now (pids are not reused this soon)


def test_an_owner_takes_a_folder_of_its_own_and_clears_only_stopped_owners_of_this_host(tmp_path, monkeypatch):
    monkeypatch.setenv(metric_files.VARIABLE, "restored-at-teardown")
    monkeypatch.delenv(metric_files.VARIABLE)
    settings = load_settings({"CHATGATE_ENV": "development", "CHATGATE_DB": str(tmp_path / "data" / "chatgate.db")},
                             dotenv_path="/nonexistent")
    base = tmp_path / "data" / "metrics"
    host = metric_files._host()
    stopped, running = base / f"worker-{host}-{dead_pid()}", base / f"web-{host}-{os.getppid()}"
    elsewhere = base / f"worker-otherhost-{dead_pid()}"
    for folder in (stopped, running, elsewhere):
        folder.mkdir(parents=True)
        (folder / "counter_1.db").write_bytes(b"")

    own = metric_files.prepare(settings, "worker")

    assert own == base / f"worker-{host}-{os.getpid()}" and os.environ[metric_files.VARIABLE] == str(own)
    assert not stopped.exists() and running.exists() and elsewhere.exists()
    assert stat.S_IMODE(base.stat().st_mode) == 0o700 and stat.S_IMODE(own.stat().st_mode) == 0o700
    assert metric_files.base_dir() == base  # as a child of this owner finds it
    assert sorted(Path(f).parent.name for f in metric_files.files()) == sorted([running.name, elsewhere.name])


def test_an_operators_folder_is_the_base(tmp_path, monkeypatch):
    monkeypatch.setenv(metric_files.VARIABLE, str(tmp_path / "prom"))
    settings = load_settings({"CHATGATE_ENV": "development", "CHATGATE_DB": str(tmp_path / "chatgate.db")},
                             dotenv_path="/nonexistent")
    own = metric_files.prepare(settings, "web")
    assert own.parent == tmp_path / "prom" and own.name.startswith("web-")
