#!/usr/bin/env python3
"""The two commands of the README, on a fresh clone with only Python >= 3.11:

    python3 dev.py up      run the whole bot locally (web + worker + embedded Redis + SQLite)
    python3 dev.py test    run the full test suite

Both create `.venv/` on first use and install chatgate into it, editable, with its test extras, at
the exact versions of constraints.txt (again whenever pyproject.toml or constraints.txt changes).
`up` also writes a `.env` for development with a fresh random WECHAT_TOKEN and CHATGATE_SIMULATOR_SECRET (the
browser simulator at /simulator) if none exists, and adds the simulator's secret to an older one.
`test` also installs Debian's `chromium` and `chromium-driver` for the simulator's browser tests when
they are missing (as root, or through sudo); elsewhere it says what to install and those tests fail.
"""

import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".chatgate-installed"
LOCK = ROOT / "constraints.txt"


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be started by any python3
        sys.exit(f"chatgate needs Python 3.11 or newer (this is {sys.version.split()[0]})")
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + LOCK.read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == want and (BIN / "chatgate").exists():
        return
    if not (BIN / "python").exists():
        print("creating .venv …", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing chatgate and its dependencies into .venv …", flush=True)
    subprocess.run([str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-c", str(LOCK), "-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(want)


BROWSER_PACKAGES = ["chromium", "chromium-driver"]
"""Debian's headless browser and its WebDriver, for tests/test_simulator_browser.py."""


def ensure_browser() -> None:
    """Install BROWSER_PACKAGES with apt-get when chromium or chromedriver is missing (as root, or with sudo)."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    how = "apt-get install -y --no-install-recommends " + " ".join(BROWSER_PACKAGES)
    root = [] if os.geteuid() == 0 else ["sudo"] if shutil.which("sudo") else None
    if root is None or not shutil.which("apt-get"):
        print(f"the simulator's browser tests need Debian's {' and '.join(BROWSER_PACKAGES)} (`{how}` as root); "
              "without them those tests fail", flush=True)
        return
    print(f"installing {' and '.join(BROWSER_PACKAGES)} for the browser tests (apt-get) …", flush=True)
    apt = [*root, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
    subprocess.run([*apt, "update", "-qq"], stdout=subprocess.DEVNULL)  # a fresh image has no package lists
    done = subprocess.run([*apt, "install", "-y", "-qq", "--no-install-recommends", *BROWSER_PACKAGES],
                          stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        print(f"could not install them (`{how}`); the browser tests will fail", flush=True)


def write_dev_env() -> None:
    env_file = ROOT / ".env"
    if env_file.exists():
        add_simulator_secret(env_file)
        return
    template = (ROOT / "config" / "example.env").read_text()
    text = template.replace("CHATGATE_ENV=production", "CHATGATE_ENV=development")
    text = text.replace("WECHAT_TOKEN=", f"WECHAT_TOKEN={secrets.token_hex(16)}", 1)
    text = text.replace("# CHATGATE_SIMULATOR_SECRET=", f"CHATGATE_SIMULATOR_SECRET={secrets.token_hex(32)}", 1)
    fd = os.open(env_file, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    print("wrote .env for development (a random WECHAT_TOKEN and simulator secret; no LLM key, so the demo "
          "responder answers); try it at http://127.0.0.1:8000/simulator")


def add_simulator_secret(env_file: Path) -> None:
    """A development `.env` written before the simulator existed gets its secret (once: a `.env` that
    names CHATGATE_SIMULATOR_SECRET at all, even commented out, is left as it is)."""
    text = env_file.read_text()
    development = any(line.strip().replace(" ", "") == "CHATGATE_ENV=development" for line in text.splitlines())
    if not development or "CHATGATE_SIMULATOR_SECRET" in text:
        return
    with env_file.open("a") as f:
        f.write(("" if text.endswith("\n") or not text else "\n") + "\n# The browser simulator (/simulator), "
                f"development only.\nCHATGATE_SIMULATOR_SECRET={secrets.token_hex(32)}\n")
    print("added CHATGATE_SIMULATOR_SECRET to .env: try the bot at http://127.0.0.1:8000/simulator")


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else "help"
    args = sys.argv[2:]
    os.chdir(ROOT)
    if command == "up":
        ensure_venv()
        write_dev_env()
        os.execv(BIN / "chatgate", [str(BIN / "chatgate"), "up", *args])
    elif command == "test":
        ensure_venv()
        ensure_browser()
        os.execv(BIN / "python", [str(BIN / "python"), "-m", "pytest", *args])
    else:
        print(__doc__)
        sys.exit(0 if command in ("help", "-h", "--help") else 2)


if __name__ == "__main__":
    main()
