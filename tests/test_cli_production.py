"""The operator's CLI in production as the README sets it up: `CHATGATE_ENV=production`, REDIS_URL
unset, and `chatgate up`'s embedded Redis running beside the database (a real one, started on the
data dir the way `up` starts it). The LLM key is missing too: commands that do not use it must not
ask for it. And `chatgate config`: every variable, what is wrong, and whether chatgate would start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from rq import Queue
from rq.serializers import JSONSerializer
from werkzeug.serving import make_server

from bot.cli import embedded_redis_dir
from bot.embedded_redis import EmbeddedRedis
from bot.models import TEXT, IncomingMessage
from config import VARIABLES, SettingsError, load_settings
from tests.cli_run import cli, ok
from tests.conftest import LLM_KEY
from tests.wechat_sim import sign_encrypted, text_xml

CHATGATE = str(Path(sys.executable).parent / "chatgate")
WIDTH = max(len(var.name) for var in VARIABLES)
OPENID = "oUser_prod_0001"




@pytest.fixture
def beside_up(env, monkeypatch):
    """The embedded Redis of a running `chatgate up`; REDIS_URL and OPENAI_API_KEY unset."""
    server = EmbeddedRedis(embedded_redis_dir(env["CHATGATE_DB"])).start()
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(SettingsError, match="REDIS_URL.*OPENAI_API_KEY"):
        load_settings()  # production is not ready: as the processes load them, the settings are refused
    yield server
    server.stop()


@contextmanager
def as_up_runs_them(monkeypatch, server):
    """The environment `chatgate up` gives web and worker: REDIS_URL of its Redis (and here the key)."""
    with monkeypatch.context() as m:
        m.setenv("REDIS_URL", server.url)
        m.setenv("OPENAI_API_KEY", LLM_KEY)
        yield


def run_worker(server):
    """chatgate's real worker, in burst mode, on the embedded Redis."""
    from workers.pool import GeventWorker

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        GeventWorker(["chatgate"], connection=server.client(), serializer=JSONSerializer).work(burst=True)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def webhook(monkeypatch, server):
    """A test client of the web app, built as `chatgate up` starts it."""
    from handlers.app import create_app

    with as_up_runs_them(monkeypatch, server):
        return create_app(load_settings()).test_client()


def person(store, openid=OPENID):
    store.admit(IncomingMessage("wechat", openid, f"{openid}-{time.time_ns()}", TEXT, "hi"), free_trial=10,
                charge=True)
    return store.find_user("wechat", openid)


# -- every operator command, beside `chatgate up` --------------------------------------------------


@pytest.mark.parametrize("args", [
    ("users",), ("user", f"wechat:{OPENID}"), ("grant", "u1", "--days", 3), ("revoke", "u1"),
    ("trial", "u1", "--add", 2), ("grant-all", "--days", 1, "--yes"), ("stats",), ("codes", "list"),
    ("codes", "create", "--days", 7), ("db", "migrate"), ("db", "backup", "copy.db")],
    ids=lambda a: " ".join(map(str, a)))
def test_database_commands_need_neither_redis_nor_the_llm_key(beside_up, store, args):
    person(store)
    ok(*args)


def test_database_commands_run_with_no_redis_at_all(beside_up, store):
    beside_up.stop()  # `chatgate up` is not running either
    person(store)
    assert f"wechat:{OPENID}" in ok("users").output
    result = cli("jobs", "failed")
    assert result.exit_code == 1
    assert "no Redis: REDIS_URL is unset and no `chatgate up` runs" in result.output


def test_jobs_find_the_embedded_redis_of_chatgate_up(beside_up, monkeypatch, fake_llm, fake_wechat, store):
    fake_llm.fail(503, times=None)
    signed = sign_encrypted(text_xml(OPENID, "still there?", 81001))
    res = webhook(monkeypatch, beside_up).post(signed.path, data=signed.body, content_type="text/xml")
    assert res.status_code == 200
    with as_up_runs_them(monkeypatch, beside_up):
        run_worker(beside_up)  # every try fails: the job ends in the failed registry of up's Redis

    [job] = json.loads(ok("jobs", "failed", "--json").output)
    assert (job["id"], job["user"]) == ("wechat-81001", f"wechat:{OPENID}")
    fake_llm.reset()
    assert "requeued wechat-81001" in ok("jobs", "retry", "--all").output
    assert Queue("chatgate", connection=beside_up.client(), serializer=JSONSerializer).count == 1
    with as_up_runs_them(monkeypatch, beside_up):
        run_worker(beside_up)
    assert fake_wechat.sent[-1] == (OPENID, "echo: still there?")
    assert ok("jobs", "failed").output.strip() == "no failed jobs"


def test_reconcile_uses_the_embedded_redis_and_names_what_it_needs(beside_up, monkeypatch, store):
    monkeypatch.setenv("CHATGATE_RECONCILE_INTERVAL", "0.05")
    signed = sign_encrypted(text_xml(OPENID, "a question", 82001))
    assert webhook(monkeypatch, beside_up).post(signed.path, data=signed.body,
                                                 content_type="text/xml").status_code == 200
    queue = Queue("chatgate", connection=beside_up.client(), serializer=JSONSerializer)
    beside_up.client().flushall()  # Redis lost the job
    time.sleep(0.2)
    result = cli("reconcile")  # its Context builds the LLM client: the key is needed
    assert result.exit_code == 1 and "OPENAI_API_KEY" in result.output and "REDIS_URL" not in result.output
    monkeypatch.setenv("OPENAI_API_KEY", LLM_KEY)
    assert json.loads(ok("reconcile", "--json").output) == {"lost jobs queued again": 1}
    assert queue.count == 1


def test_ask_posts_to_the_running_webhook(beside_up, monkeypatch):
    from handlers.app import create_app

    with as_up_runs_them(monkeypatch, beside_up):
        server = make_server("127.0.0.1", 0, create_app(load_settings()), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        out = ok("ask", "我的", "--user", "oAsk", "--url", f"http://127.0.0.1:{server.server_port}/wechat").output
    finally:
        server.shutdown()
        thread.join()
    assert "HTTP 200 reply:" in out and "wechat:oAsk" in out


def test_the_console_script_runs_beside_chatgate_up(beside_up, store, tmp_path):
    person(store)
    env = os.environ.copy()
    assert "REDIS_URL" not in env and "OPENAI_API_KEY" not in env
    for args in (["grant", f"wechat:{OPENID}", "--days", "30"], ["users", "--json"], ["jobs", "failed"]):
        res = subprocess.run([CHATGATE, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
    assert store.find_user("wechat", OPENID)["member_until"] > time.time() + 29 * 86400


# -- chatgate config -------------------------------------------------------------------------------


def test_config_marks_what_is_missing_and_exits_non_zero(beside_up):
    result = cli("config")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == [var.name for var in VARIABLES]  # every variable
    assert f"{'OPENAI_API_KEY':{WIDTH}} (unset)  ! missing" in lines
    [redis] = [line for line in lines if line.startswith("REDIS_URL ")]
    assert "(unset)  note: `chatgate up` runs its embedded Redis at " + beside_up.url in redis
    assert lines[-1] == "Error: chatgate would refuse to start (production): 1 problem, in OPENAI_API_KEY"


def test_config_json_gives_the_same_facts(beside_up, env):
    result = cli("config", "--json")
    assert result.exit_code == 1
    facts = json.loads(result.stdout)
    assert facts["ready"] is False and facts["env"] == "production"
    assert list(facts["values"]) == [var.name for var in VARIABLES]
    assert facts["problems"] == [{"variables": ["OPENAI_API_KEY"], "problem": "missing",
                                  "kind": "production"}]
    assert facts["values"]["WECHAT_APP_SECRET"] == "(set)" and env["WECHAT_APP_SECRET"] not in result.output
    assert beside_up.url in facts["notes"]["REDIS_URL"]


def test_config_is_ready_when_production_would_start(beside_up, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", LLM_KEY)
    result = ok("config")
    assert result.output.splitlines()[-1] == "ready: chatgate would start (production)"
    assert "  ! " not in result.output
    assert json.loads(ok("config", "--json").output)["ready"] is True
    beside_up.stop()  # `chatgate up` not running: REDIS_URL may still be unset, up will start a Redis
    assert "`chatgate up` starts an embedded Redis in" in ok("config").output


@pytest.mark.parametrize("name,value,mark", [
    ("WECHAT_APP_SECRET", "changeme", "(set)  ! a placeholder"),
    ("CHATGATE_FREE_TRIAL", "ten", "ten  ! invalid literal for int() with base 10: 'ten'"),
    ("CHATGATE_WELCOME_DAYS", "3000000", "3000000  ! must be at most 36500"),
    ("WECHAT_AES_KEY", "tooshort", "(set)  ! must be the 43-character EncodingAESKey"),
    ("REDIS_URL", "redis://10.1.2.3:6379/0", "(set)  ! a Redis beyond this machine must have a password in the URL")])
def test_config_marks_each_bad_value(env, monkeypatch, name, value, mark):
    monkeypatch.setenv(name, value)
    result = cli("config")
    assert result.exit_code == 1
    assert f"{name:{WIDTH}} {mark}" in result.output.splitlines()
    assert result.output.splitlines()[-1].endswith(f"1 problem, in {name}")
    if name in {var.name for var in VARIABLES if var.secret}:
        assert value not in result.output


def test_config_names_each_gap_of_an_empty_production_setup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in VARIABLES:
        monkeypatch.delenv(var.name, raising=False)
    result = cli("config")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    gap = "missing (no platform is configured): set WECHAT_TOKEN or FEISHU_APP_ID"
    for name in ("WECHAT_TOKEN", "FEISHU_APP_ID"):
        assert f"{name:{WIDTH}} (unset)  ! {gap}" in lines
    assert lines[-1] == ("Error: chatgate would refuse to start (production): 2 problems, in OPENAI_API_KEY, "
                         "WECHAT_TOKEN, FEISHU_APP_ID")
    monkeypatch.setenv("CHATGATE_ENV", "development")
    assert ok("config").output.splitlines()[-1] == "ready: chatgate would start (development)"
