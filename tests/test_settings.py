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


def load(tmp_path, **changes):
    env = {**GOOD, **changes}
    return load_settings({k: v for k, v in env.items() if v is not None}, dotenv_path=tmp_path / "none.env")


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
                                        ("CHATGATE_LOG_FORMAT", "yaml")])
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
