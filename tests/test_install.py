"""A plain install runs: a fresh virtual environment, the production install (`deploy/install.sh`:
`pip install -c constraints.txt <checkout>`, no test extras, not editable), then the Procfile's `web`
and `worker` from that environment, in production settings, answering one signed, encrypted WeChat
message. This is the test that sees a runtime dependency missing from pyproject.toml (it once was:
gunicorn's gevent worker needs `packaging`), which the test suite's own venv, full of test extras,
hides. It installs from PyPI (or pip's cache), so it takes a minute or so.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.live import Asker, LiveBot

ROOT = Path(__file__).resolve().parent.parent
INSTALL_SCRIPT = "deploy/install.sh"
LOCK = ROOT / "constraints.txt"
QUESTION = "hello from a plain install"


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """name → version of the `name==version` lines of a lock or of `pip freeze`."""
    found = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            found[normalized(name)] = version.strip()
    return found


def run(cmd: list, *, cwd: Path, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory) -> Path:
    """`deploy/install.sh VENV` into a fresh temporary venv, run from outside the checkout."""
    where = tmp_path_factory.mktemp("plain-install")
    venv = where / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHON"] = str(Path(sys.base_prefix) / "bin" / "python3")  # the Python the suite runs on, not its venv
    started = time.monotonic()
    result = run(["sh", ROOT / INSTALL_SCRIPT, venv], cwd=where, env=env, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{INSTALL_SCRIPT} failed:\n{output[-6000:]}"
    print(f"\nplain install: {time.monotonic() - started:.0f} s")
    return venv


@pytest.fixture
def run_env(env, tmp_path) -> dict[str, str]:
    """The test's production settings for processes of the plain install: nothing from the checkout
    on the import path, a HOME of their own (where gunicorn would put a control socket)."""
    home = tmp_path / "home"
    home.mkdir()
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "XDG_RUNTIME_DIR")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **env, "HOME": str(home)}


def test_the_plain_install_is_the_lock_without_test_extras(plain_install, tmp_path, run_env):
    frozen = run([plain_install / "bin" / "python", "-m", "pip", "freeze", "--all", "--exclude", "chatgate",
                  "--exclude", "pip"], cwd=tmp_path, env=run_env)
    assert frozen.returncode == 0, frozen.stderr
    installed, locked = pins(frozen.stdout), pins(LOCK.read_text())
    unlocked = {name: v for name, v in installed.items() if locked.get(name) != v}
    assert not unlocked, f"installed but not at the lock's version (run scripts/lock.py): {unlocked}"
    assert "pytest" not in installed and "ruff" not in installed


def test_a_plain_install_runs_the_procfile_and_answers(plain_install, tmp_path, run_env, fake_llm, fake_wechat):
    bin_dir = plain_install / "bin"
    modules = run([bin_dir / "python", "-c", "import bot, config, handlers, workers, sysconfig; "
                   "print(sysconfig.get_paths()['purelib']); "
                   "print('\\n'.join(m.__file__ for m in (bot, config, handlers, workers)))"],
                  cwd=tmp_path, env=run_env)
    assert modules.returncode == 0, modules.stderr
    site, *files = modules.stdout.split()
    assert site.startswith(str(plain_install)) and all(f.startswith(site) for f in files), modules.stdout

    bot = LiveBot(tmp_path, run_env, bin_dir=bin_dir)
    try:
        url = bot.start(WEB_CONCURRENCY="1", CHATGATE_WORKERS="1", WECHAT_REPLY_WAIT="4.5")
        asker = Asker(url, "o-plain-install")
        asker.say(QUESTION, 8800000000000001)
        if not asker.replies:  # not answered within the post: it is pushed
            try:
                fake_wechat.wait_for_sent(1, timeout=30)
            except TimeoutError:
                pass
        got = asker.replies + [content for _, content in fake_wechat.sent]
        assert any(f"echo: {QUESTION}" in text for text in got), \
            f"no answer (asker errors {dict(asker.errors)}, got {got}):\n{bot.log()[-6000:]}"
        assert len(fake_llm.calls) == 1, bot.log()[-6000:]
        assert not (Path(run_env["HOME"]) / ".gunicorn").exists(), "gunicorn opened a control socket"
    finally:
        bot.stop()
