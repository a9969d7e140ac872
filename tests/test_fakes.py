"""Self-tests: the fakes and the Redis launcher work with the real SDK clients."""

import os
import signal
import time

import openai
import pytest
import redis
import requests
from rq import Queue, Worker
from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException

from tests.fakes import FakeLLM, FakeWeChat
from tests.jobs_for_selftest import add
from tests.redis_server import RedisServer


@pytest.fixture(scope="module")
def llm():
    with FakeLLM() as fake:
        yield fake


@pytest.fixture(scope="module")
def wechat():
    with FakeWeChat(app_id="wx123", app_secret="s3cret") as fake:
        yield fake


@pytest.fixture(autouse=True)
def _reset(request):
    yield
    for name in ("llm", "wechat"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()


def oa(fake, **kw):
    return openai.OpenAI(api_key=kw.pop("api_key", "test-key"), base_url=fake.url, max_retries=0, **kw)


def wx_client(fake, secret="s3cret", **kw):
    class Client(WeChatClient):
        API_BASE_URL = fake.url + "/cgi-bin/"

        def fetch_access_token(self):
            return self._fetch_access_token(url=self.API_BASE_URL + "token", params={
                "grant_type": "client_credential", "appid": self.appid, "secret": self.secret})

    return Client("wx123", secret, **kw)


# -- FakeLLM --

def test_llm_non_streaming(llm):
    r = oa(llm).chat.completions.create(model="m1", messages=[{"role": "system", "content": "be nice"},
                                                              {"role": "user", "content": "你好 world"}])
    assert r.choices[0].message.content == "echo: 你好 world"
    assert r.choices[0].finish_reason == "stop" and r.usage.total_tokens > 0
    assert llm.calls[0]["model"] == "m1" and not llm.calls[0].get("stream")


def test_llm_streaming(llm):
    llm.set_answer("The quick brown fox jumps")
    chunks = list(oa(llm).chat.completions.create(model="m1", stream=True, stream_options={"include_usage": True},
                                                  messages=[{"role": "user", "content": "hi"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The quick brown fox jumps"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    assert llm.wait_for_calls(1, timeout=1)[0]["stream"] is True


@pytest.mark.parametrize("shape", ["field", "inline", "unopened"])
def test_llm_streams_a_reasoning_model(llm, shape):
    llm.set_thinking("step one, step two", shape)
    llm.set_answer("done")
    chunks = list(oa(llm).chat.completions.create(model="m1", stream=True, stream_options={"include_usage": True},
                                                  messages=[{"role": "user", "content": "hi"}]))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    contents = [d.content for d in deltas if d.content]
    reasoning = [getattr(d, "reasoning_content", None) for d in deltas]
    if shape == "field":
        assert "".join(r for r in reasoning if r) == "step one, step two" and len([r for r in reasoning if r]) == 4
        assert "".join(contents) == "done"
    else:
        opening = ["<th", "ink>"] if shape == "inline" else []
        assert contents[:len(opening)] == opening and "</th" in contents and "ink>\n\ndo" in contents
        assert "".join(contents) == "<think>" * (shape == "inline") + "step one, step two</think>\n\ndone"
    assert chunks[-1].usage.completion_tokens == len("step one, step two") + len("done")


def test_llm_wrong_key(llm):
    with pytest.raises(openai.AuthenticationError):
        oa(llm, api_key="nope").chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert len(llm.calls) == 1 and llm.requests[0].headers["authorization"] == "Bearer nope"


def test_llm_scripted_failure_then_recovery(llm):
    llm.fail(503)
    client = oa(llm)
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code == 503
    assert client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}]) \
        .choices[0].message.content == "echo: x"
    llm.fail(429, times=None)
    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert len(llm.calls) == 4


def test_llm_delay_times_out_and_stop_is_quick():
    fake = FakeLLM().start()
    fake.delay(30)
    with pytest.raises(openai.APITimeoutError):
        oa(fake, timeout=0.3).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    t0 = time.monotonic()
    fake.stop()
    assert time.monotonic() - t0 < 2


# -- FakeWeChat --

def test_wechat_send_text(wechat):
    client = wx_client(wechat)
    res = client.message.send_text("openid1", "你好")
    assert res["errcode"] == 0
    assert wechat.wait_for_sent(1, timeout=1) == [("openid1", "你好")]
    assert wechat.token_fetches == 1
    send = [r for r in wechat.requests if r.path.endswith("/custom/send")][0]
    assert send.query["access_token"] == client.session.get(client.access_token_key)
    assert "你好".encode() in send.raw  # wechatpy sends UTF-8 with ensure_ascii=False


def test_wechat_bad_secret(wechat):
    with pytest.raises(WeChatClientException) as exc:
        wx_client(wechat, secret="wrong").message.send_text("openid1", "x")
    assert exc.value.errcode == 40125 and wechat.sent == []


def test_wechat_invalid_token_auto_refetch(wechat):
    client = wx_client(wechat)
    client.message.send_text("u", "one")
    wechat.invalidate(client.session.get(client.access_token_key))
    client.message.send_text("u", "two")  # 40001 -> wechatpy refetches the token and retries
    assert wechat.sent == [("u", "one"), ("u", "two")] and wechat.token_fetches == 2


def test_wechat_scripted_failure_and_strict_tokens(wechat):
    client = wx_client(wechat)
    wechat.fail_send(45015, errmsg="response out of time limit")
    with pytest.raises(WeChatClientException) as exc:
        client.message.send_text("u", "late")
    assert exc.value.errcode == 45015
    client.message.send_text("u", "ok")
    assert wechat.sent == [("u", "ok")]

    with FakeWeChat(strict_tokens=True) as strict:
        t1 = requests.get(strict.url + "/cgi-bin/token", timeout=5, params={
            "grant_type": "client_credential", "appid": "wx123", "secret": "s3cret"}).json()["access_token"]
        stable = requests.post(strict.url + "/cgi-bin/stable_token", timeout=5, json={
            "grant_type": "client_credential", "appid": "wx123", "secret": "s3cret"}).json()
        assert stable["access_token"] == t1  # no force_refresh: same token
        t2 = requests.post(strict.url + "/cgi-bin/stable_token", timeout=5, json={
            "grant_type": "client_credential", "appid": "wx123", "secret": "s3cret",
            "force_refresh": True}).json()["access_token"]
        assert t2 != t1 and strict.valid_tokens == [t2] and strict.token_fetches == 3


def test_wechat_typing_keeps_the_platform_rules(wechat):
    client = wx_client(wechat)

    def typing(user, command="Typing"):
        try:
            return client.post("message/custom/typing", data={"touser": user, "command": command})["errcode"]
        except WeChatClientException as exc:
            return exc.errcode

    assert typing("u") == 45015  # the user has not written (within 30 s)
    wechat.user_wrote("u")
    assert typing("u") == 0
    assert typing("u") == 45081  # one is showing
    client.message.send_text("u", "the answer")  # a message ends it
    assert typing("u") == 0
    assert typing("u", "CancelTyping") == 0
    assert typing("u") == 0
    assert typing("other") == 45015  # per user
    assert [(c.touser, c.command, c.errcode) for c in wechat.typing] == [
        ("u", "Typing", 45015), ("u", "Typing", 0), ("u", "Typing", 45081), ("u", "Typing", 0),
        ("u", "CancelTyping", 0), ("u", "Typing", 0), ("other", "Typing", 45015)]


def test_wechat_typing_scripted_failures(wechat):
    client = wx_client(wechat)
    wechat.user_wrote("u")
    wechat.fail_typing(48001)
    with pytest.raises(WeChatClientException) as exc:
        client.post("message/custom/typing", data={"touser": "u", "command": "Typing"})
    assert exc.value.errcode == 48001
    wechat.fail_typing(status=500, times=None)
    for _ in range(2):
        with pytest.raises(WeChatClientException) as exc:
            client.post("message/custom/typing", data={"touser": "u", "command": "Typing"})
        assert exc.value.errcode is None and exc.value.response.status_code == 500
    wechat.reset_failures()
    assert client.post("message/custom/typing", data={"touser": "u", "command": "Typing"})["errcode"] == 0
    assert [c.errcode for c in wechat.typing] == [48001, None, None, 0]


# -- RedisServer --

def test_redis_server_with_forking_rq_worker():
    with RedisServer() as srv:
        r = redis.Redis.from_url(srv.url)
        assert r.ping() and srv.url.startswith("unix://")
        q = Queue("selftest", connection=r)
        job = q.enqueue(add, 2, 3)
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            assert Worker([q], connection=r).work(burst=True, with_scheduler=False)
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
        job.refresh()
        assert job.is_finished, job.get_status()
        assert job.return_value()["sum"] == 5 and job.return_value()["pid"] != os.getpid()
        sock_dir = srv.dir
        r.close()
    assert not sock_dir.exists()
