"""Settings: production refuses missing or placeholder secrets, naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config import SettingsError, load_settings

GOOD = {
    "CHATGATE_ENV": "production",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "OPENAI_API_KEY": "sk-live-abcdef123456",
    "WECHAT_TOKEN": "abcDEF123456",
    "WECHAT_APP_ID": "wx0123456789abcdef",
    "WECHAT_APP_SECRET": "0123456789abcdef0123456789abcdef",
}


def load(tmp_path, need=None, **changes):
    env = {**GOOD, **changes}
    return load_settings({k: v for k, v in env.items() if v is not None}, dotenv_path=tmp_path / "none.env",
                         need=need)


def test_a_complete_production_configuration_loads(tmp_path):
    s = load(tmp_path)
    assert s.production and not s.demo_llm
    assert s.free_trial == 10
    assert s.bind_host == "0.0.0.0"


@pytest.mark.parametrize("name", ["REDIS_URL", "OPENAI_API_KEY", "WECHAT_TOKEN", "WECHAT_APP_ID",
                                  "WECHAT_APP_SECRET"])
def test_production_refuses_a_missing_secret(tmp_path, name):
    with pytest.raises(SettingsError, match=name):
        load(tmp_path, **{name: None})


@pytest.mark.parametrize("name,value", [("OPENAI_API_KEY", "changeme"), ("OPENAI_API_KEY", "sk-xxx"),
                                        ("WECHAT_APP_SECRET", "your-app-secret"),
                                        ("WECHAT_APP_SECRET", "<secret>"), ("WECHAT_TOKEN", "xxxx"),
                                        ("CHATGATE_METRICS_TOKEN", "changeme")])
def test_production_refuses_placeholders(tmp_path, name, value):
    with pytest.raises(SettingsError, match=name):
        load(tmp_path, **{name: value})


def test_the_metrics_token_is_optional_and_a_real_one_is_kept(tmp_path):
    assert load(tmp_path).metrics_token == ""
    assert load(tmp_path, CHATGATE_METRICS_TOKEN="0f3c9a51d2e84b7f").metrics_token == "0f3c9a51d2e84b7f"
    assert "0f3c9a51d2e84b7f" not in repr(load(tmp_path, CHATGATE_METRICS_TOKEN="0f3c9a51d2e84b7f"))


def test_a_remote_redis_needs_a_password(tmp_path):
    with pytest.raises(SettingsError, match="REDIS_URL"):
        load(tmp_path, REDIS_URL="redis://10.1.2.3:6379/0")
    assert load(tmp_path, REDIS_URL="redis://:s3cretPass@10.1.2.3:6379/0")


@pytest.mark.parametrize("name,value", [("WECHAT_AES_KEY", "tooshort"), ("CHATGATE_FREE_TRIAL", "-1"),
                                        ("CHATGATE_FREE_TRIAL", "ten"), ("CHATGATE_ENV", "staging"),
                                        ("CHATGATE_RETRY_DELAYS", "10,soon"), ("REDIS_URL", "http://x"),
                                        ("CHATGATE_LOG_FORMAT", "yaml"), ("CHATGATE_PRICES", "gpt=1"),
                                        ("CHATGATE_PRICES", "gpt=1/-2"), ("CHATGATE_PRICES", "gpt=1/2,gpt=3/4"),
                                        ("CHATGATE_DAILY_BUDGET", "1e3"), ("CHATGATE_DAILY_BUDGET", "-5"),
                                        ("CHATGATE_USER_RATE", "6/week"), ("CHATGATE_USER_RATE", "0/minute"),
                                        ("CHATGATE_CURRENCY", "US dollars"), ("CHATGATE_MEMBER_DAILY_LIMIT", "-1")])
def test_bad_values_name_the_variable(tmp_path, name, value):
    with pytest.raises(SettingsError, match=name):
        load(tmp_path, **{name: value})


def test_the_replay_window_is_whole_positive_seconds(tmp_path):
    assert load(tmp_path).replay_window == 300
    assert load(tmp_path, CHATGATE_REPLAY_WINDOW="60").replay_window == 60
    for bad in ("0", "-5", "2.5", "5m"):
        with pytest.raises(SettingsError, match="CHATGATE_REPLAY_WINDOW"):
            load(tmp_path, CHATGATE_REPLAY_WINDOW=bad)


def test_development_runs_without_secrets_and_uses_the_demo_responder(tmp_path):
    s = load_settings({"CHATGATE_ENV": "development"}, dotenv_path=tmp_path / "none.env")
    assert s.demo_llm
    assert s.bind_host == "127.0.0.1"


def test_dotenv_is_read_and_the_environment_wins(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("CHATGATE_ENV=development\nCHATGATE_FREE_TRIAL=3\nCHATGATE_MODEL=from-dotenv\n")
    s = load_settings({"CHATGATE_MODEL": "from-env"}, dotenv_path=dotenv)
    assert (s.free_trial, s.model) == (3, "from-env")


def test_redacted_settings_show_no_secret(tmp_path):
    values = load(tmp_path).redacted()
    for name in ("OPENAI_API_KEY", "WECHAT_APP_SECRET", "WECHAT_TOKEN", "REDIS_URL"):
        assert values[name] == "(set)"
    assert GOOD["OPENAI_API_KEY"] not in repr(load(tmp_path))


def clean_env(tmp_path):
    keep = {"PATH", "HOME", "LANG", "SYSTEMROOT"}
    return {k: v for k, v in os.environ.items() if k in keep} | {"CHATGATE_DB": str(tmp_path / "c.db")}


def test_the_web_process_refuses_to_start_without_secrets(tmp_path):
    gunicorn = Path(sys.executable).parent / "gunicorn"
    res = subprocess.run([str(gunicorn), "--config", "python:config.gunicorn_conf", "--check-config",
                          "handlers.app:create_app()"], cwd=tmp_path, env=clean_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "OPENAI_API_KEY" in res.stderr + res.stdout


def test_the_worker_refuses_to_start_without_secrets(tmp_path):
    chatgate = Path(sys.executable).parent / "chatgate"
    res = subprocess.run([str(chatgate), "worker"], cwd=tmp_path, env=clean_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "REDIS_URL" in res.stderr and "WECHAT_TOKEN" in res.stderr


# -- malformed values against production's gaps ---------------------------------------------------


def test_an_operator_command_needs_only_the_variables_it_uses(tmp_path):
    bare = {"CHATGATE_ENV": "production"}
    with pytest.raises(SettingsError) as refused:
        load_settings(bare, dotenv_path=tmp_path / "none.env")  # the processes: every gap
    for name in ("REDIS_URL", "OPENAI_API_KEY", "WECHAT_TOKEN or FEISHU_APP_ID"):
        assert name in str(refused.value)
    assert load_settings(bare, dotenv_path=tmp_path / "none.env", need=()).production  # database only
    with pytest.raises(SettingsError) as refused:
        load_settings(bare, dotenv_path=tmp_path / "none.env", need={"REDIS_URL"})
    assert "REDIS_URL" in str(refused.value) and "OPENAI_API_KEY" not in str(refused.value)
    assert load(tmp_path, OPENAI_API_KEY=None, need={"REDIS_URL", "WECHAT_TOKEN"}).redis_url


def test_a_placeholder_stops_only_what_uses_it(tmp_path):
    with pytest.raises(SettingsError, match="WECHAT_TOKEN"):
        load(tmp_path, WECHAT_TOKEN="xxxx", need={"WECHAT_TOKEN"})
    assert load(tmp_path, WECHAT_TOKEN="xxxx", need=()).wechat_token == "xxxx"


@pytest.mark.parametrize("name,value", [("CHATGATE_FREE_TRIAL", "ten"), ("WECHAT_AES_KEY", "tooshort"),
                                        ("CHATGATE_TIMEZONE", "Mars/Olympus"), ("REDIS_URL", "http://x")])
def test_a_malformed_value_is_an_error_whatever_is_needed(tmp_path, name, value):
    with pytest.raises(SettingsError, match=name):
        load(tmp_path, need=(), **{name: value})
    with pytest.raises(SettingsError, match=name):
        load_settings({"CHATGATE_ENV": "development", name: value}, dotenv_path=tmp_path / "none.env", need=())


def test_validate_checks_settings_changed_after_loading(tmp_path):
    import dataclasses

    from config import validate

    s = load(tmp_path, REDIS_URL=None, need=())
    with pytest.raises(SettingsError, match="REDIS_URL"):
        validate(s, {"REDIS_URL"})
    validate(dataclasses.replace(s, redis_url="unix:///run/chatgate/redis.sock"), {"REDIS_URL"})
    with pytest.raises(SettingsError, match="REDIS_URL"):  # a remote Redis without a password
        validate(dataclasses.replace(s, redis_url="redis://10.1.2.3:6379/0"), {"REDIS_URL"})


def test_check_settings_finds_every_problem_at_once(tmp_path):
    from config import check_settings

    env = {**GOOD, "OPENAI_API_KEY": "changeme", "CHATGATE_FREE_TRIAL": "ten", "WECHAT_APP_SECRET": ""}
    check = check_settings(env, dotenv_path=tmp_path / "none.env")
    assert not check.ready
    found = {(p.variables, p.readiness) for p in check.problems}
    assert found == {(("OPENAI_API_KEY",), True), (("CHATGATE_FREE_TRIAL",), False), (("WECHAT_APP_SECRET",), True)}
    assert check.shown["CHATGATE_FREE_TRIAL"] == "ten"  # as given, not the default standing in
    assert check.shown["OPENAI_API_KEY"] == "(set)" and "changeme" not in repr(check.shown)
    assert check.settings.free_trial == 10
    assert check_settings(GOOD, dotenv_path=tmp_path / "none.env").ready


def test_check_settings_as_chatgate_up_starts_lets_redis_url_be_unset(tmp_path):
    from config import check_settings

    env = {k: v for k, v in GOOD.items() if k != "REDIS_URL"}
    assert [p.variables for p in check_settings(env, dotenv_path=tmp_path / "none.env").problems] == [("REDIS_URL",)]
    assert check_settings(env, dotenv_path=tmp_path / "none.env", embedded_redis=True).ready
    remote = {**env, "REDIS_URL": "redis://10.1.2.3:6379/0"}  # but a remote one still needs its password
    assert not check_settings(remote, dotenv_path=tmp_path / "none.env", embedded_redis=True).ready


@pytest.mark.parametrize("name,good,bad", [("CHATGATE_WELCOME_DAYS", "36500", "36501"),
                                           ("CHATGATE_FREE_TRIAL", "1000000", "99999999999999999999")])
def test_numbers_that_become_entitlements_are_bounded(tmp_path, name, good, bad):
    assert load(tmp_path, **{name: good})
    with pytest.raises(SettingsError, match=f"{name}: must be at most"):
        load(tmp_path, **{name: bad})


def test_the_settings_bounds_are_the_library_bounds():
    from bot import limits
    from config import settings

    assert settings.MAX_WELCOME_DAYS == limits.MAX_DAYS
    assert settings.MAX_FREE_TRIAL == limits.MAX_TRIAL_ADD


def test_chatgate_up_refuses_to_start_without_secrets(tmp_path):
    chatgate = Path(sys.executable).parent / "chatgate"
    procfile = tmp_path / "Procfile"
    procfile.write_text("web: sleep 60\n")
    res = subprocess.run([str(chatgate), "up", "--procfile", str(procfile)], cwd=tmp_path, env=clean_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "refusing to start" in res.stderr and "OPENAI_API_KEY" in res.stderr and "REDIS_URL" not in res.stderr


AFDIAN = {"AFDIAN_USER_ID": "adf397fe8374811eaacee52540025c377", "AFDIAN_TOKEN": "Xq3kV9mZpT2wLr8sN4bYcD6fHj"}


@pytest.mark.parametrize("changes,name", [({"AFDIAN_TOKEN": "changeme"}, "AFDIAN_TOKEN"),
                                          ({"AFDIAN_TOKEN": None}, "AFDIAN_TOKEN"),
                                          ({"AFDIAN_USER_ID": None}, "AFDIAN_USER_ID"),
                                          ({"AFDIAN_USER_ID": "your-user-id"}, "AFDIAN_USER_ID")])
def test_production_refuses_afdian_half_configured_or_with_a_placeholder(tmp_path, changes, name):
    with pytest.raises(SettingsError, match=name):
        load(tmp_path, **{**AFDIAN, **changes})


def test_afdian_settings_load_and_the_token_stays_secret(tmp_path):
    s = load(tmp_path, **AFDIAN, AFDIAN_PLANS="plan_a=30@19.9, plan_b=365", AFDIAN_LINK="https://afdian.com/a/me")
    assert s.afdian_enabled and s.afdian_plans == (("plan_a", 30, 1990), ("plan_b", 365, None))
    assert AFDIAN["AFDIAN_TOKEN"] not in repr(s)
    shown = s.redacted()
    assert shown["AFDIAN_TOKEN"] == "(set)" and shown["AFDIAN_PLANS"] == "plan_a=30@19.90,plan_b=365"
    assert not load(tmp_path).afdian_enabled  # selling on afdian is optional


@pytest.mark.parametrize("name,value", [("AFDIAN_PLANS", "plan_a"), ("AFDIAN_PLANS", "plan_a=0"),
                                        ("AFDIAN_PLANS", "plan_a=30@0"), ("AFDIAN_PLANS", "plan_a=30@1.999"),
                                        ("AFDIAN_PLANS", "plan_a=1,plan_a=2"), ("AFDIAN_PLANS", "plan_a=36501"),
                                        ("AFDIAN_LINK", "afdian.com/a/me"), ("AFDIAN_API_BASE", "ftp://afdian.com"),
                                        ("CHATGATE_COMMAND_BUY", "购买,帮助")])
def test_malformed_afdian_settings_are_refused_naming_the_variable(tmp_path, name, value):
    with pytest.raises(SettingsError, match=name):
        load(tmp_path, need=(), **{name: value})


def test_economics_settings_are_parsed_exactly_and_shown_as_written(tmp_path):
    from decimal import Decimal

    s = load(tmp_path, CHATGATE_PRICES="deepseek-chat=2/8, *=0.5/1.25", CHATGATE_DAILY_BUDGET="50",
             CHATGATE_DAILY_HARD_CAP="80.5", CHATGATE_USER_RATE="6/min,30/hours")
    assert s.prices == (("deepseek-chat", Decimal(2), Decimal(8)), ("*", Decimal("0.5"), Decimal("1.25")))
    assert (s.daily_budget, s.daily_hard_cap, s.user_rate) == (Decimal(50), Decimal("80.5"), ((6, 60), (30, 3600)))
    shown = s.redacted()
    assert (shown["CHATGATE_PRICES"], shown["CHATGATE_USER_RATE"]) == ("deepseek-chat=2/8,*=0.5/1.25",
                                                                         "6/minute,30/hour")
    assert load(tmp_path).daily_budget is None and load(tmp_path).redacted()["CHATGATE_DAILY_BUDGET"] == ""
    with pytest.raises(SettingsError, match="CHATGATE_DAILY_HARD_CAP: must be at least CHATGATE_DAILY_BUDGET"):
        load(tmp_path, CHATGATE_DAILY_BUDGET="50", CHATGATE_DAILY_HARD_CAP="10")
