"""Fixtures built the way the bot runs: a real Redis, a real SQLite file, the Flask app from its
factory, real RQ workers, fake WeChat, Feishu, afdian and LLM servers on 127.0.0.1 that the real wechatpy,
lark-oapi and openai clients talk to, and the Procfile's processes themselves (`live`)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from redis import Redis
from rq.serializers import JSONSerializer

from tests import feishu_sim as fs
from tests import wechat_sim
from tests.fakes import FakeAfdian, FakeFeishu, FakeLLM, FakeWeChat
from tests.redis_server import RedisServer

LLM_KEY = "sk-test-0123456789"


@pytest.fixture(scope="session")
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def _wechat_server():
    with FakeWeChat(app_id=wechat_sim.APP_ID, app_secret=wechat_sim.APP_SECRET) as server:
        yield server


@pytest.fixture(scope="session")
def _llm_server():
    with FakeLLM(api_key=LLM_KEY) as server:
        yield server


@pytest.fixture
def fake_wechat(_wechat_server):
    _wechat_server.reset()
    return _wechat_server


@pytest.fixture
def fake_llm(_llm_server):
    _llm_server.reset()
    return _llm_server


@pytest.fixture
def redis_url(redis_server):
    Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture
def env(tmp_path, monkeypatch, redis_url, fake_wechat, fake_llm):
    """A production environment pointing at the local fakes; the worker's forked jobs read it too."""
    monkeypatch.chdir(tmp_path)  # no stray .env from the checkout
    values = {
        "CHATGATE_ENV": "production",
        "CHATGATE_DB": str(tmp_path / "data" / "chatgate.db"),
        "REDIS_URL": redis_url,
        "OPENAI_API_KEY": LLM_KEY,
        "OPENAI_BASE_URL": fake_llm.url,
        "CHATGATE_MODEL": "test-model",
        "CHATGATE_SYSTEM_PROMPT": "You are the test assistant.",
        "CHATGATE_LLM_TIMEOUT": "5",
        "CHATGATE_RETRY_DELAYS": "0,0",
        "WECHAT_TOKEN": wechat_sim.TOKEN,
        "WECHAT_APP_ID": wechat_sim.APP_ID,
        "WECHAT_APP_SECRET": wechat_sim.APP_SECRET,
        "WECHAT_AES_KEY": wechat_sim.AES_KEY,
        "WECHAT_API_BASE": fake_wechat.url,
        "WECHAT_HTTP_TIMEOUT": "5",
        "WECHAT_REPLY_WAIT": "0",  # answers go out by push; tests/test_wechat_delivery.py drives the wait
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def app(env):
    from handlers.app import create_app

    return create_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def store(env):
    from bot.store import Store

    s = Store(env["CHATGATE_DB"])
    yield s
    s.close()


@pytest.fixture
def run_worker(env, redis_url):
    """Run chatgate's real RQ worker in burst mode until the queue is empty, in this process (not
    patched by gevent: its jobs take turns rather than run at once; tests/test_pool.py runs the real
    `chatgate worker` process for that)."""
    from workers.pool import GeventWorker

    def run(with_scheduler: bool = False):
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        connection = Redis.from_url(redis_url)
        worker = GeventWorker(["chatgate"], connection=connection, serializer=JSONSerializer)
        try:
            worker.work(burst=True, with_scheduler=with_scheduler)
        finally:  # RQ installs its own signal handlers in this process
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    return run


@pytest.fixture
def webhook(env, monkeypatch):
    """A webhook built after changing settings: `webhook(CHATGATE_FREE_TRIAL="1")` → post(xml)."""
    def make(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        from handlers.app import create_app

        client = create_app().test_client()

        def post(xml: str):
            signed = wechat_sim.sign_encrypted(xml)
            return client.post(signed.path, data=signed.body, content_type="text/xml")
        return post
    return make


@pytest.fixture
def reconcile(env):
    """One pass of the reconciler, as the worker runs it, as if `seconds` had passed."""
    def run(seconds: float = 0):
        from config import load_settings
        from workers.answer import Context
        from workers.reconcile import reconcile as one_pass

        ctx = Context(load_settings())
        try:
            return one_pass(ctx, now=time.time() + seconds)
        finally:
            ctx.close()
    return run


@pytest.fixture
def post(client):
    """POST a signed (and by default encrypted) WeChat message XML to /wechat."""
    def send(xml: str, *, encrypted: bool = True):
        signed = wechat_sim.sign_encrypted(xml) if encrypted else wechat_sim.sign_plain(xml)
        return client.post(signed.path, data=signed.body, content_type="text/xml")
    return send


@pytest.fixture(scope="session")
def _feishu_server():
    with FakeFeishu(app_id=fs.APP_ID, app_secret=fs.APP_SECRET, bot_open_id=fs.BOT_OPEN_ID) as server:
        yield server


@pytest.fixture
def fake_feishu(_feishu_server):
    _feishu_server.reset()
    return _feishu_server


@pytest.fixture
def feishu_env(env, monkeypatch, fake_feishu):
    """A Feishu app pointed at the fake. Answers go out as text replies: these tests are about what
    comes in and what is charged; tests/test_feishu_cards.py streams answers into cards."""
    values = {"FEISHU_APP_ID": fs.APP_ID, "FEISHU_APP_SECRET": fs.APP_SECRET,
              "FEISHU_VERIFICATION_TOKEN": fs.VERIFICATION_TOKEN, "FEISHU_ENCRYPT_KEY": fs.ENCRYPT_KEY,
              "FEISHU_API_BASE": fake_feishu.url, "CHATGATE_FEISHU_STREAM": "off"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return {**env, **values}


@pytest.fixture
def feishu(feishu_env):
    """POST an event to /feishu the way Feishu does (encrypted and signed by default)."""
    from handlers.app import create_app

    client = create_app().test_client()

    def send(event: dict, **kw):
        body, headers = fs.signed(event, **kw)
        return client.post("/feishu", data=body, headers=headers)
    send.client = client
    return send


@pytest.fixture
def live(env, tmp_path, monkeypatch):
    """Start the Procfile's web and worker processes with the test environment; yield a starter.

    `start(**settings)` sets extra environment variables and returns the web URL once the web
    answers and a worker listens; both processes write their output, unbuffered, to
    `tmp_path / "procs.log"`."""
    from tests.live import LiveBot

    bots = []

    def start(**settings):
        values = {"WEB_CONCURRENCY": "2", "CHATGATE_WORKERS": "2", "CHATGATE_LLM_TIMEOUT": "40",
                  "CHATGATE_LOG_LEVEL": "INFO", "WECHAT_REPLY_WAIT": "4.5", **settings}
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        bots.append(LiveBot(tmp_path, dict(os.environ), own_redis=False))
        return bots[-1].start()

    yield start
    for bot in bots:
        bot.stop()


@pytest.fixture(scope="session")
def _afdian_server():
    with FakeAfdian() as server:
        yield server


@pytest.fixture
def fake_afdian(_afdian_server):
    _afdian_server.reset()
    return _afdian_server


@pytest.fixture
def afdian_env(env, monkeypatch, fake_afdian):
    """Selling on afdian: its user id and token, the fake's origin, three plans and a purchase link."""
    values = {"AFDIAN_USER_ID": fake_afdian.user_id, "AFDIAN_TOKEN": fake_afdian.token,
              "AFDIAN_API_BASE": fake_afdian.url, "AFDIAN_PLANS": "plan_month=30@19.90,plan_year=365,sku_week=7",
              "AFDIAN_LINK": "https://afdian.com/order/create?plan_id=plan_month&product_type=0"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return {**env, **values}


@pytest.fixture
def pay(afdian_env):
    """The web app with afdian configured: `.webhook(body)` posts afdian's webhook, `.say(openid,
    text)` posts a signed WeChat message and returns the passive reply's text ('' for an ack)."""
    from handlers.app import create_app
    from tests.wechat_sim import text_xml

    client = create_app().test_client()
    ids = iter(range(8_100_000_000_000_000, 9_000_000_000_000_000))

    class Pay:
        @staticmethod
        def webhook(body, **kw):
            return client.post("/pay/afdian", json=body, **kw)

        @staticmethod
        def say(openid: str, text: str) -> str:
            signed = wechat_sim.sign_encrypted(text_xml(openid, text, next(ids)))
            res = client.post(signed.path, data=signed.body, content_type="text/xml")
            assert res.status_code == 200
            body = res.get_data(as_text=True)
            return "" if body == "success" else wechat_sim.read_reply(body)["Content"]
    Pay.client = client
    return Pay


@pytest.fixture
def worker_log(tmp_path):
    """What the web app, the worker and its forked work-horses log, as text (read it after the work)."""
    import logging

    path = tmp_path / "worker.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    yield lambda: path.read_text()
    root.removeHandler(handler)
    root.setLevel(level)
    handler.close()
