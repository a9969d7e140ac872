"""Checking settings and loading them checked.

Two kinds of problem, kept apart. A malformed value (not a number, an unknown time zone, a 20-letter
AES key) is an error wherever the settings are read. A production gap (a secret missing or left a
placeholder, no platform, REDIS_URL unset, a remote Redis without a password) is what production
refuses to start with: the web app, the worker and `chatgate up` refuse every gap
(`load_settings()`), an operator command only those in the variables it uses
(`load_settings(need=...)`), and `chatgate config` lists them all (`check_settings()`).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from config.settings import VARIABLES, Settings, SettingsError, is_placeholder
from config.simulator import with_simulator


def _read_environment(env: Mapping[str, str] | None, dotenv_path: str | os.PathLike | None) -> dict:
    values: dict[str, str] = {}
    path = Path(dotenv_path) if dotenv_path is not None else Path.cwd() / ".env"
    if path.is_file():
        values.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    values.update(os.environ if env is None else env)
    return values


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the settings: the variable(s) it is about and what is wrong.

    A `readiness` problem (a secret missing or a placeholder, REDIS_URL unset or an open remote
    Redis) stops production only, and only what uses the variable; any other is a malformed value,
    an error wherever the settings are read.
    """

    variables: tuple[str, ...]
    message: str
    readiness: bool = False

    def __str__(self) -> str:
        return f"{' or '.join(self.variables)}: {self.message}"

    def concerns(self, need: Iterable[str] | None) -> bool:
        """True when a process or command that uses the variables `need` (None: all) must stop for it."""
        return not self.readiness or need is None or any(name in need for name in self.variables)


@dataclass(frozen=True)
class SettingsCheck:
    """What `check_settings` found: the settings (defaults standing in for malformed values), every
    variable as the operator may see it (secrets only as set or unset), and every problem."""

    settings: Settings
    shown: dict[str, str]
    problems: tuple[Problem, ...]

    @property
    def ready(self) -> bool:
        """True when chatgate would start with these settings."""
        return not self.problems

    def problems_of(self, name: str) -> list[Problem]:
        """The problems that name the variable `name`."""
        return [p for p in self.problems if name in p.variables]


def _build(raw: Mapping[str, str], overrides: dict) -> tuple[Settings, list[Problem]]:
    """Settings from raw strings (a malformed one: its default stands in) and the malformed ones."""
    kwargs: dict[str, Any] = {}
    problems: list[Problem] = []
    for var in VARIABLES:
        kwargs[var.attr] = var.default
        if var.name in raw and raw[var.name] != "":
            try:
                kwargs[var.attr] = var.kind(raw[var.name])
            except ValueError as exc:
                problems.append(Problem((var.name,), str(exc)))
    unknown = set(overrides) - {f.name for f in fields(Settings)}
    if unknown:
        raise TypeError(f"unknown settings: {sorted(unknown)}")
    kwargs.update(overrides)
    return with_simulator(Settings(**kwargs)), problems


def load_settings(env: Mapping[str, str] | None = None, *, dotenv_path=None, need: Iterable[str] | None = None,
                  **overrides) -> Settings:
    """Build and validate settings from `env` (default: `os.environ`) over a `.env` file.

    A malformed value is always a `SettingsError`. By default (`need=None`) so is every gap that
    production refuses, as the web app, the worker and `chatgate up` start. An operator command
    passes `need`, the variables it uses, and stops only for the gaps that concern them (`need=()`:
    well-formed values are enough). Keyword overrides use attribute names (`free_trial=3`) and win
    over both; tests use them.
    """
    settings, problems = _build(_read_environment(env, dotenv_path), overrides)
    _refuse(problems + value_problems(settings) + readiness_problems(settings), need)
    return settings


def validate(settings: Settings, need: Iterable[str] | None = None) -> None:
    """Raise `SettingsError` for malformed values and for the production gaps that concern `need`
    (variable names; None: every gap). For settings changed after loading, e.g. REDIS_URL filled in
    with the embedded Redis of a running `chatgate up`."""
    _refuse(value_problems(settings) + readiness_problems(settings), need)


def check_settings(env: Mapping[str, str] | None = None, *, dotenv_path=None,
                   embedded_redis: bool = False) -> SettingsCheck:
    """Every problem at once, never raising (for `chatgate config`).

    `embedded_redis`: judge as `chatgate up` starts, which runs an embedded Redis when REDIS_URL is
    unset (the web and worker processes started on their own still need it).
    """
    raw = _read_environment(env, dotenv_path)
    settings, problems = _build(raw, {})
    problems += value_problems(settings) + readiness_problems(settings, embedded_redis=embedded_redis)
    shown = settings.redacted()
    secret = {var.name for var in VARIABLES if var.secret}
    for problem in problems:  # a malformed value is shown as it was given, not as the default standing in
        for name in problem.variables:
            if not problem.readiness and raw.get(name):
                shown[name] = "(set)" if name in secret else raw[name]
    return SettingsCheck(settings, shown, tuple(problems))


def _refuse(problems: list[Problem], need: Iterable[str] | None) -> None:
    need = None if need is None else frozenset(need)
    stopping = [str(p) for p in problems if p.concerns(need)]
    if stopping:
        raise SettingsError("refusing to start: " + "; ".join(dict.fromkeys(stopping)))


def _is_loopback_redis(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _gap(value: str) -> str:
    return "a placeholder" if value.strip() else "missing"


def _secret_problems(s: Settings, *required: str, optional: str) -> list[Problem]:
    """One platform's credentials: every required one set and real, the optional one real if set."""
    attrs = {var.name: var.attr for var in VARIABLES}
    problems = [Problem((name,), _gap(getattr(s, attrs[name])), readiness=True)
                for name in required if is_placeholder(getattr(s, attrs[name]))]
    value = getattr(s, attrs[optional])
    if value and is_placeholder(value):
        problems.append(Problem((optional,), "a placeholder", readiness=True))
    return problems


def value_problems(s: Settings) -> list[Problem]:
    """Values no environment should run with (beyond each variable's own parsing)."""
    problems: list[Problem] = []
    if s.production and s.simulator_secret:
        problems.append(Problem(("CHATGATE_SIMULATOR_SECRET",), "development only (the browser simulator); unset "
                                "it in production"))
    if s.wechat_aes_key and len(s.wechat_aes_key) != 43:
        problems.append(Problem(("WECHAT_AES_KEY",), "must be the 43-character EncodingAESKey"))
    if s.wechat_token and not (3 <= len(s.wechat_token) <= 32 and s.wechat_token.isalnum()):
        problems.append(Problem(("WECHAT_TOKEN",), "must be 3-32 letters or digits, as the WeChat console requires"))
    if s.wechat_aes_key and not s.wechat_app_id:
        problems.append(Problem(("WECHAT_APP_ID",), "required with WECHAT_AES_KEY (the AppID is part of decryption)"))
    if s.redis_url and urlsplit(s.redis_url).scheme not in ("redis", "rediss", "unix"):
        problems.append(Problem(("REDIS_URL",), "must start with redis://, rediss:// or unix://"))
    for name, value in (("OPENAI_BASE_URL", s.openai_base_url), ("WECHAT_API_BASE", s.wechat_api_base),
                        ("FEISHU_API_BASE", s.feishu_api_base), ("AFDIAN_API_BASE", s.afdian_api_base),
                        ("AFDIAN_LINK", s.afdian_link)):
        if value and urlsplit(value).scheme not in ("http", "https"):
            problems.append(Problem((name,), "must be an http(s) URL"))
    if s.daily_budget is not None and s.daily_hard_cap is not None and s.daily_hard_cap < s.daily_budget:
        problems.append(Problem(("CHATGATE_DAILY_HARD_CAP",), f"must be at least CHATGATE_DAILY_BUDGET "
                                f"({s.daily_budget}): members are answered past the budget, up to the cap"))
    seen: dict[str, str] = {}
    for command, words in s.command_words.items():
        for word in words:
            other = seen.setdefault(word.casefold(), command)
            if other != command:
                problems.append(Problem((f"CHATGATE_COMMAND_{command.upper()}",),
                                        f"{word!r} is already a word of CHATGATE_COMMAND_{other.upper()}"))
    return problems


def readiness_problems(s: Settings, *, embedded_redis: bool = False) -> list[Problem]:
    """What production refuses: missing or placeholder secrets, no platform, no Redis (unless
    `embedded_redis`: `chatgate up` starts one), a remote Redis without a password. None in development."""
    if not s.production:
        return []
    problems: list[Problem] = []
    if not s.redis_url:
        if not embedded_redis:
            problems.append(Problem(("REDIS_URL",), "required in production (or start everything with `chatgate up`)",
                                    readiness=True))
    elif not _is_loopback_redis(s.redis_url) and not urlsplit(s.redis_url).password:
        problems.append(Problem(("REDIS_URL",), "a Redis beyond this machine must have a password in the URL",
                                readiness=True))
    if is_placeholder(s.openai_api_key):
        problems.append(Problem(("OPENAI_API_KEY",), _gap(s.openai_api_key), readiness=True))
    if s.metrics_token and is_placeholder(s.metrics_token):
        problems.append(Problem(("CHATGATE_METRICS_TOKEN",), "a placeholder (leave it unset to serve /metrics on "
                                "loopback only)", readiness=True))
    if not s.wechat_token and not s.feishu_app_id:
        problems.append(Problem(("WECHAT_TOKEN", "FEISHU_APP_ID"), "missing (no platform is configured)",
                                readiness=True))
    if s.feishu_app_id:
        problems += _secret_problems(s, "FEISHU_APP_ID", "FEISHU_APP_SECRET", "FEISHU_VERIFICATION_TOKEN",
                                     optional="FEISHU_ENCRYPT_KEY")
    if s.wechat_token:
        problems += _secret_problems(s, "WECHAT_TOKEN", "WECHAT_APP_ID", "WECHAT_APP_SECRET",
                                     optional="WECHAT_AES_KEY")
    if s.afdian_user_id or s.afdian_token:  # selling on afdian: orders are looked up with both
        problems += [Problem((name,), _gap(value) + " (afdian orders are looked up with AFDIAN_USER_ID and "
                             "AFDIAN_TOKEN)", readiness=True)
                     for name, value in (("AFDIAN_USER_ID", s.afdian_user_id), ("AFDIAN_TOKEN", s.afdian_token))
                     if is_placeholder(value)]
    return problems
