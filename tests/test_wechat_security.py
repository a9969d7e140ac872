"""Bad input at the WeChat webhook: a clear status, and nothing stored."""

from __future__ import annotations

import logging
import time

import pytest
from redis import Redis

from tests import wechat_sim
from tests.wechat_sim import sha1_sorted, text_xml

OPENID = "oUser_sec_0001"

BOMB = ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
        '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;">]>'
        '<xml><ToUserName>t</ToUserName><FromUserName>f</FromUserName><CreateTime>1</CreateTime>'
        '<MsgType>text</MsgType><Content>&d;</Content><MsgId>1</MsgId></xml>')
XXE = ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       '<xml><ToUserName>t</ToUserName><FromUserName>f</FromUserName><CreateTime>1</CreateTime>'
       '<MsgType>text</MsgType><Content>&x;</Content><MsgId>2</MsgId></xml>')


def nothing_stored(store):
    return store.count("users") == 0 and store.count("deliveries") == 0 and store.count("ledger") == 0


def test_server_url_verification_echoes_echostr(client):
    ts, nonce = "1700000000", "42"  # years old: the echo has no replay window (it changes nothing)
    sig = sha1_sorted(wechat_sim.TOKEN, ts, nonce)
    res = client.get(f"/wechat?signature={sig}&timestamp={ts}&nonce={nonce}&echostr=hello123")
    assert res.status_code == 200
    assert res.get_data(as_text=True) == "hello123"
    bad = client.get(f"/wechat?signature={'0' * 40}&timestamp={ts}&nonce={nonce}&echostr=hello123")
    assert bad.status_code == 403


def test_a_bad_signature_is_403_and_stores_nothing(client, store, fake_llm):
    signed = wechat_sim.sign_encrypted(text_xml(OPENID, "hi", 1), token="someoneElse")
    res = client.post(signed.path, data=signed.body)
    assert res.status_code == 403
    assert nothing_stored(store)


def test_a_bad_message_signature_is_403(client, store):
    signed = wechat_sim.sign_encrypted(text_xml(OPENID, "hi", 2))
    res = client.post(signed.path.replace("msg_signature=", "msg_signature=0"), data=signed.body)
    assert res.status_code == 403
    assert nothing_stored(store)


def test_an_encrypted_body_for_another_app_is_403(client, store):
    signed = wechat_sim.sign_encrypted(text_xml(OPENID, "hi", 3), app_id="wxSomeOtherApp00")
    assert client.post(signed.path, data=signed.body).status_code == 403
    assert nothing_stored(store)


def test_a_plaintext_post_is_refused_in_safe_mode(client, store):
    signed = wechat_sim.sign_plain(text_xml(OPENID, "hi", 4))
    assert client.post(signed.path, data=signed.body).status_code == 403
    assert nothing_stored(store)


def test_a_bad_aes_payload_is_400(client, store):
    ts, nonce, garbage = str(int(time.time())), "7", "bm90IHJlYWxseSBlbmNyeXB0ZWQ="
    query = (f"signature={sha1_sorted(wechat_sim.TOKEN, ts, nonce)}&timestamp={ts}&nonce={nonce}&encrypt_type=aes"
             f"&msg_signature={sha1_sorted(wechat_sim.TOKEN, ts, nonce, garbage)}")
    body = f"<xml><ToUserName>t</ToUserName><Encrypt><![CDATA[{garbage}]]></Encrypt></xml>"
    res = client.post(f"/wechat?{query}", data=body)
    assert res.status_code == 400
    assert nothing_stored(store)


@pytest.mark.parametrize("xml", [
    text_xml(OPENID, "hi", 5)[:60],                       # truncated
    "<xml><ToUserName>t</ToUserName></xml>",              # no MsgType
    "not xml at all",
    BOMB,
    XXE,
], ids=["truncated", "no-msgtype", "not-xml", "entity-bomb", "xxe"])
def test_malformed_encrypted_bodies_are_400(client, store, xml):
    signed = wechat_sim.sign_encrypted(xml)
    assert client.post(signed.path, data=signed.body).status_code == 400
    assert nothing_stored(store)


@pytest.fixture
def plain_client(env, monkeypatch):
    monkeypatch.delenv("WECHAT_AES_KEY")
    from handlers.app import create_app

    return create_app().test_client()


@pytest.mark.parametrize("xml", [text_xml(OPENID, "hi", 6)[:50], BOMB, XXE], ids=["truncated", "bomb", "xxe"])
def test_malformed_plaintext_bodies_are_400(plain_client, store, xml):
    signed = wechat_sim.sign_plain(xml)
    assert plain_client.post(signed.path, data=signed.body).status_code == 400
    assert nothing_stored(store)


def test_plaintext_mode_answers(plain_client, run_worker, fake_wechat):
    signed = wechat_sim.sign_plain(text_xml(OPENID, "plain hello", 7))
    res = plain_client.post(signed.path, data=signed.body)
    assert res.get_data(as_text=True) == "success"
    run_worker()
    assert fake_wechat.sent == [(OPENID, "echo: plain hello")]


def test_an_oversized_body_is_refused(client, store):
    signed = wechat_sim.sign_encrypted(text_xml(OPENID, "x" * 100_000, 8))
    assert client.post(signed.path, data=signed.body).status_code == 413
    assert nothing_stored(store)


# -- the replay window ------------------------------------------------------------------------------


@pytest.fixture(params=["safe", "plain"])
def mode(request, env, monkeypatch):
    """(client, sign) for safe mode and for plaintext mode (no EncodingAESKey)."""
    if request.param == "plain":
        monkeypatch.delenv("WECHAT_AES_KEY")
    from handlers.app import create_app

    sign = wechat_sim.sign_encrypted if request.param == "safe" else wechat_sim.sign_plain
    return create_app().test_client(), sign


@pytest.mark.parametrize("offset", [-301, 301, -86400 * 365], ids=["old", "future", "a-year-old"])
def test_a_timestamp_outside_the_window_is_403_and_touches_nothing(mode, store, redis_url, offset):
    client, sign = mode
    signed = sign(text_xml(OPENID, "hi", 20), timestamp=str(int(time.time()) + offset))
    res = client.post(signed.path, data=signed.body)
    assert res.status_code == 403 and "replay window" in res.get_data(as_text=True)
    assert nothing_stored(store)
    assert Redis.from_url(redis_url).dbsize() == 0


@pytest.mark.parametrize("timestamp", ["soon", "{now}.0", "+{now}", "{now:_d}", "0x{now:x}", "{now}{now}"],
                         ids=["word", "decimal", "plus-sign", "underscores", "hex", "huge"])
def test_a_timestamp_that_is_not_whole_seconds_is_403(mode, store, timestamp):
    client, sign = mode
    signed = sign(text_xml(OPENID, "hi", 21), timestamp=timestamp.format(now=int(time.time())))
    assert client.post(signed.path, data=signed.body).status_code == 403
    assert nothing_stored(store)


@pytest.mark.parametrize("offset", [-290, 0, 290], ids=["nearly-old", "now", "a-skewed-clock"])
def test_a_timestamp_inside_the_window_is_answered(mode, run_worker, fake_wechat, offset):
    client, sign = mode
    signed = sign(text_xml(OPENID, "fresh", 22), timestamp=str(int(time.time()) + offset))
    res = client.post(signed.path, data=signed.body)
    assert res.status_code == 200 and res.get_data(as_text=True) == "success"
    run_worker()
    assert fake_wechat.sent == [(OPENID, "echo: fresh")]


def test_a_smaller_window_setting_is_honoured(env, monkeypatch, store):
    monkeypatch.setenv("CHATGATE_REPLAY_WINDOW", "60")
    from handlers.app import create_app

    client = create_app().test_client()
    now = int(time.time())
    stale = wechat_sim.sign_encrypted(text_xml(OPENID, "hi", 23), timestamp=str(now - 90))
    assert client.post(stale.path, data=stale.body).status_code == 403
    assert nothing_stored(store)
    fresh = wechat_sim.sign_encrypted(text_xml(OPENID, "hi", 23), timestamp=str(now - 30))
    assert client.post(fresh.path, data=fresh.body).status_code == 200


def test_a_plaintext_query_replayed_with_another_body_is_403(plain_client, store, run_worker, fake_wechat):
    """The plaintext signature covers the query only: one logged query must not carry any body."""
    signed = wechat_sim.sign_plain(text_xml(OPENID, "my own question", 24))
    assert plain_client.post(signed.path, data=signed.body).status_code == 200
    forged = text_xml("oAttacker_0001", "a forged question", 25).encode()
    res = plain_client.post(signed.path, data=forged)
    assert res.status_code == 403 and "another body" in res.get_data(as_text=True)
    assert store.find_user("wechat", "oAttacker_0001") is None
    assert store.count("users") == 1 and store.count("deliveries") == 1

    for _ in range(2):  # WeChat's re-posts of the same message may reuse the query: let through
        res = plain_client.post(signed.path, data=signed.body)
        assert res.status_code == 200 and res.get_data(as_text=True) == "success"
    run_worker()
    assert fake_wechat.sent == [(OPENID, "echo: my own question")]
    assert store.find_user("wechat", OPENID)["trial_used"] == 1


def test_a_plaintext_body_is_remembered_only_while_its_timestamp_is_fresh(plain_client, redis_url):
    now = int(time.time())
    signed = wechat_sim.sign_plain(text_xml(OPENID, "hi", 26), timestamp=str(now - 200))
    assert plain_client.post(signed.path, data=signed.body).status_code == 200
    [key] = Redis.from_url(redis_url).keys("chatgate:wechat:query:*")
    assert 95 <= Redis.from_url(redis_url).ttl(key) <= 102  # until the timestamp is 300 s old


def test_plaintext_mode_without_redis_accepts_a_fresh_query_and_says_so(env, monkeypatch, store, caplog):
    """Redis down must not take the webhook down: commands are answered from SQLite alone. The
    timestamp is still checked; only the body binding waits for Redis to come back."""
    monkeypatch.delenv("WECHAT_AES_KEY")
    monkeypatch.setenv("REDIS_URL", "unix:///nonexistent/redis.sock")
    from handlers.app import create_app

    client = create_app().test_client()
    stale = wechat_sim.sign_plain(text_xml(OPENID, "help", 27), timestamp=str(int(time.time()) - 400))
    assert client.post(stale.path, data=stale.body).status_code == 403
    signed = wechat_sim.sign_plain(text_xml(OPENID, "help", 27))
    with caplog.at_level(logging.WARNING, logger="chatgate.wechat"):
        res = client.post(signed.path, data=signed.body)
    assert res.status_code == 200
    assert "我的" in wechat_sim.read_reply(res.get_data(as_text=True), aes_key=None)["Content"]
    assert "without its replay check" in caplog.text
