"""The deploy files start and install exactly what CI tests: their start commands are the Procfile's
lines or `chatgate up`, their install step is `deploy/install.sh` (the script tests/test_install.py
runs), and the lock is what the tests run on. Docker cannot run here, so these read the files.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from handlers.app import MAX_BODY_BYTES
from tests.live import procfile_command
from tests.test_install import INSTALL_SCRIPT, LOCK, normalized, pins

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
README = (ROOT / "README.md").read_text()
VENV = "/opt/chatgate/venv"  # where the README's systemd walkthrough installs


def unit(name: str) -> dict[str, list[str]]:
    """The `Key=value` lines of a systemd unit: key → every value, in order."""
    found: dict[str, list[str]] = {}
    for line in (DEPLOY / name).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    return [tuple(line.split(None, 1)) for line in text.splitlines() if line.strip() and not line.startswith("#")]


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


# -- the lock ----------------------------------------------------------------------------------


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in project["dependencies"] + extras]


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_every_declared_dependency_is_locked_within_its_range(requirement):
    locked = pins(LOCK.read_text())
    name = normalized(requirement.name)
    assert name in locked, f"{requirement.name} is not in constraints.txt: run scripts/lock.py"
    assert requirement.specifier.contains(locked[name], prereleases=True), \
        f"constraints.txt pins {requirement.name}=={locked[name]}, outside {requirement}: run scripts/lock.py"


def test_the_tests_run_on_the_lock():
    installed = {normalized(d.metadata["Name"]): d.version for d in metadata.distributions()}
    off = {name: (installed[name], version) for name, version in pins(LOCK.read_text()).items()
           if installed.get(name, version) != version}
    assert not off, f"(installed, locked) differ: {off}; python3 dev.py test reinstalls from the lock"


def test_the_lock_says_how_it_is_made_and_dev_py_installs_with_it():
    assert "python3 scripts/lock.py" in LOCK.read_text().split("\n\n")[0]
    dev = (ROOT / "dev.py").read_text()
    assert '"-c", str(LOCK), "-e", f"{ROOT}[test]"' in dev and "LOCK.read_bytes()" in dev


# -- the one install ---------------------------------------------------------------------------


def test_the_install_script_installs_the_checkout_plainly_with_the_lock():
    script = (ROOT / INSTALL_SCRIPT).read_text()
    pip_line = re.search(r"-m pip install .*?\n(.*)\n", script)
    assert pip_line, script
    pip = shlex.split(pip_line.group(0).replace("\\\n", " "))
    assert pip[-3:] == ["-c", "$src/constraints.txt", "$src"]
    assert "-e" not in pip and "--editable" not in pip and not any("[" in arg for arg in pip)


def test_the_dockerfile_installs_with_the_script_and_runs_chatgate_up():
    steps = dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    runs = [args for instruction, args in steps if instruction == "RUN"]
    assert any(f"sh /opt/chatgate/src/{INSTALL_SCRIPT} /opt/chatgate/venv" in run for run in runs), runs
    users = [args for instruction, args in steps if instruction == "USER"]
    assert users and users[-1] not in ("root", "0")
    health = next(args for instruction, args in steps if instruction == "HEALTHCHECK")
    assert "/readyz" in health and "urllib" in health
    cmd = next(args for instruction, args in reversed(steps) if instruction == "CMD")
    assert yaml.safe_load(cmd)[:2] == ["chatgate", "up"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", "**/.env", ".venv", "var"} <= set(ignored)


def test_compose_runs_the_procfile_on_a_redis_with_a_password_and_shared_data():
    services = compose()["services"]
    for name in ("web", "worker"):
        service = services[name]
        assert service["command"] == procfile_command(name)
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert re.fullmatch(r"redis://:\$\{REDIS_PASSWORD:\?[^}]+\}@redis:6379/0", service["environment"]["REDIS_URL"])
        db_dir = str(Path(service["environment"]["CHATGATE_DB"]).parent)
        assert f"data:{db_dir}" in service["volumes"]
    assert services["web"]["ports"] == ["127.0.0.1:8000:8000"]
    redis = services["redis"]
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")  # no default
    assert "--appendonly yes" in redis["command"][-1] and '--requirepass "$$REDIS_PASSWORD"' in redis["command"][-1]
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_the_systemd_unit_runs_chatgate_up_from_the_installed_venv():
    service = unit("chatgate.service")
    command = shlex.split(service["ExecStart"][0])
    assert command[:2] == [f"{VENV}/bin/chatgate", "up"]
    assert command[2:] == ["--procfile", "/opt/chatgate/src/Procfile"]
    assert service["KillMode"] == ["mixed"] and service["Restart"] == ["on-failure"]
    assert service["User"][0] not in ("root", "0") and service["EnvironmentFile"]
    assert service["NoNewPrivileges"] == ["yes"] and service["ProtectSystem"] == ["strict"]
    data = service["WorkingDirectory"][0]
    assert service["ReadWritePaths"] == [data] and service["StateDirectory"] == [Path(data).name]
    # the walkthrough installs there, with the script, and puts the database in the data directory
    assert f"{INSTALL_SCRIPT} {VENV}" in README and f"CHATGATE_DB={data}/chatgate.db" in README


def test_the_backup_timer_runs_chatgate_db_backup():
    backup = unit("chatgate-backup.service")
    assert f"{VENV}/bin/chatgate db backup" in backup["ExecStart"][0]
    assert backup["User"] == unit("chatgate.service")["User"]
    assert unit("chatgate-backup.timer")["OnCalendar"]


def test_nginx_proxies_only_the_webhooks_and_caps_the_body():
    conf = (DEPLOY / "nginx.conf").read_text()
    locations = dict(re.findall(r"location\s+([^{]+?)\s*\{([^}]*)\}", conf))
    proxied = {where for where, body in locations.items() if "proxy_pass" in body}
    assert proxied == {"= /wechat", "= /feishu", "= /pay/afdian"}
    assert all("proxy_pass http://127.0.0.1:8000;" in locations[where] for where in proxied)
    assert "return 404;" in locations["/"]
    size = re.search(r"client_max_body_size\s+(\d+)k;", conf)
    assert size and int(size.group(1)) * 1024 == MAX_BODY_BYTES
