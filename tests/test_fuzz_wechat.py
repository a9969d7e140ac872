"""Hostile bodies at /wechat, correctly signed (plaintext mode) and encrypted (safe mode): never a
5xx, never an error logged, nothing stored for a 400 (tests/hostile.py writes the bodies)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import hostile, wechat_sim
from tests.fuzzing import FUZZ, Watch

ALLOWED = {200, 400, 413}


@pytest.fixture
def plain_client(env, monkeypatch):
    monkeypatch.setenv("WECHAT_AES_KEY", "")
    from handlers.app import create_app

    return create_app().test_client()


def _post(client, xml: str, safe: bool):
    nonce = str(int.from_bytes(os.urandom(5)))  # hypothesis seeds `random`: wechat_sim's nonces would repeat
    signed = wechat_sim.sign_encrypted(xml, nonce=nonce) if safe else wechat_sim.sign_plain(xml, nonce=nonce)
    return client.post(signed.path, data=signed.body, content_type="text/xml")


@FUZZ
@given(rnd=st.randoms(use_true_random=False))
def test_safe_mode_hostile_bodies(client, store, redis_url, caplog, rnd):
    watch = Watch(store, redis_url, caplog)
    xml = hostile.wechat_xml(rnd)
    before = watch.snapshot()
    watch.check(_post(client, xml, safe=True), before, ALLOWED, xml[:500])


@FUZZ
@given(rnd=st.randoms(use_true_random=False))
def test_plain_mode_hostile_bodies(plain_client, store, redis_url, caplog, rnd):
    watch = Watch(store, redis_url, caplog)
    xml = hostile.wechat_xml(rnd)
    before = watch.snapshot()
    watch.check(_post(plain_client, xml, safe=False), before, ALLOWED, xml[:500])


@FUZZ
@given(content=st.text(max_size=300), openid=st.text(max_size=70), msg_id=st.integers(min_value=-2, max_value=2**65),
       create_time=st.integers(min_value=-2, max_value=2**40), msg_type=st.sampled_from(hostile.MSG_TYPES),
       cdata=st.booleans())
def test_any_field_values(client, store, redis_url, caplog, content, openid, msg_id, create_time, msg_type, cdata):
    """Any text in the text fields (control characters, surrogates: whatever hypothesis draws, that
    UTF-8 can carry), any integers in the numeric ones."""
    watch = Watch(store, redis_url, caplog)
    wrap = (lambda v: f"<![CDATA[{v}]]>") if cdata else (lambda v: v)
    xml = (f"<xml><ToUserName>{wrap('gh_test')}</ToUserName><FromUserName>{wrap(openid)}</FromUserName>"
           f"<CreateTime>{create_time}</CreateTime><MsgType>{wrap(msg_type)}</MsgType>"
           f"<Content>{wrap(content)}</Content><MsgId>{msg_id}</MsgId></xml>")
    try:
        xml.encode()
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 body carries it
        xml = xml.encode(errors="replace").decode()
    before = watch.snapshot()
    res = _post(client, xml, safe=True)
    watch.check(res, before, ALLOWED, xml[:500])
    valid = (0 < msg_id < 2**63 and 0 < create_time <= 4102444800 and 0 < len(openid) <= 64
             and all(c.isascii() and (c.isalnum() or c in "_-") for c in openid))
    if not valid:
        assert res.status_code == 400, xml[:500]


# -- the examples of the issue, and the bounds, as regressions ------------------------------------

OK_XML = wechat_sim.text_xml("oX_user_regression_000000001", "hi", 5001)


def _with(old: str, new: str) -> str:
    assert old in OK_XML
    return OK_XML.replace(old, new, 1)


@pytest.mark.parametrize("xml", [
    _with("<FromUserName>", "<FromUserName><![CDATA[oX]]></FromUserName><FromUserName>"),
    _with("<MsgType>", "<MsgType><![CDATA[text]]></MsgType><MsgType>"),
    _with("<MsgId>5001</MsgId>", "<MsgId>5001</MsgId><MsgId>5002</MsgId>"),
    OK_XML.replace(OK_XML[OK_XML.index("<CreateTime>"):OK_XML.index("</CreateTime>")],
                   "<CreateTime>17999999999999999999999995574349"),
    _with("<MsgId>5001</MsgId>", "<MsgId>17999999999999999999999995574349</MsgId>"),
    _with("<MsgId>5001</MsgId>", f"<MsgId>{2**63}</MsgId>"),
    _with("<MsgId>5001</MsgId>", "<MsgId>-1</MsgId>"),
    _with("<MsgId>5001</MsgId>", "<MsgId>１２３</MsgId>"),
    _with("<MsgType>", "stray text<MsgType>"),
    _with("<MsgType><![CDATA[text]]></MsgType>", "<MsgTy pe><![CDATA[text]]></MsgTy pe>"),
    _with("<MsgType><![CDATA[text]]></MsgType>", "<MsgType><![CDATA[text]]></MsgTypo>"),
    _with("<MsgId>5001</MsgId>", ""),
    _with("<ToUserName><![CDATA[gh_test]]></ToUserName>", ""),
    _with("<CreateTime>", "<X/><CreateTime>").replace(OK_XML[OK_XML.index("<CreateTime>"):
                                                            OK_XML.index("</CreateTime>") + 13], ""),
    _with("<FromUserName><![CDATA[oX_user_regression_000000001]]>", "<FromUserName><a>oX</a>"),
    _with("<FromUserName><![CDATA[oX_user_regression_000000001]]>", "<FromUserName><![CDATA[" + "o" * 65 + "]]>"),
    _with("<FromUserName><![CDATA[oX_user_regression_000000001]]>", "<FromUserName><![CDATA[o X]]>"),
    _with("<Content><![CDATA[hi]]>", "<Content><![CDATA[" + "x" * 8193 + "]]>"),
    _with("<xml>", '<!DOCTYPE xml [<!ENTITY a "b">]><xml>'),
    _with("<xml>", "<!DOCTYPE xml><xml>"),
    _with("<xml>", '<xml a="1">'),
], ids=["FromUserName-twice", "MsgType-twice", "MsgId-twice", "CreateTime-huge", "MsgId-huge", "MsgId-int64+1",
        "MsgId-negative", "MsgId-fullwidth", "stray-text", "broken-name", "mismatched-name", "no-MsgId",
        "no-ToUserName", "no-CreateTime", "nested-FromUserName", "FromUserName-65", "FromUserName-space",
        "Content-8193", "entity-declaration", "bare-doctype", "root-attribute"])
@pytest.mark.parametrize("safe", [True, False], ids=["safe", "plain"])
def test_the_issue_examples_are_400_and_store_nothing(client, plain_client, store, redis_url, caplog, xml, safe):
    watch = Watch(store, redis_url, caplog)
    before = watch.snapshot()
    res = _post(client if safe else plain_client, xml, safe)
    records = watch.check(res, before, {400}, xml[:300])
    assert "malformed message" in res.get_data(as_text=True)
    assert [r.levelname for r in records if "body refused" in r.getMessage()] == ["WARNING"]


@pytest.mark.parametrize("xml", [
    wechat_sim.text_xml("o" * 64, "x" * 8192, 2**63 - 1, create_time=4102444800),
    wechat_sim.text_xml("oX", "]]]]><![CDATA[> &amp; 😀 \u202e", 1),
    wechat_sim.event_xml("oX_event_user", "subscribe", 1700000000, key="qrscene_42"),
    wechat_sim.event_xml("oX_event_user", "TEMPLATESENDJOBFINISH", 1700000001),
    _with("<MsgId>", "<ScanCodeInfo><ScanType>q</ScanType></ScanCodeInfo><Unknown/><Unknown/><MsgId>"),
    _with("<MsgType><![CDATA[text]]>", "<MsgType><![CDATA[TEXT]]>"),
    wechat_sim.image_xml("oX_image_user", 7),
], ids=["at-every-bound", "markup-in-cdata", "qr-subscribe", "unknown-event", "unknown-elements", "type-case",
        "image"])
def test_bodies_at_the_bounds_are_handled(client, store, redis_url, caplog, xml):
    watch = Watch(store, redis_url, caplog)
    before = watch.snapshot()
    res = _post(client, xml, True)
    watch.check(res, before, {200}, xml[:300])
    assert store.count("deliveries") == before["deliveries"] + 1
