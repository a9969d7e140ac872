"""Bad input at the WeChat webhook: a clear status, and nothing stored."""

from __future__ import annotations

import pytest

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
    ts, nonce = "1700000000", "42"
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
    ts, nonce, garbage = "1700000000", "7", "bm90IHJlYWxseSBlbmNyeXB0ZWQ="
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
