"""Hostile events at /feishu, encrypted and signed (and in plaintext mode, with the verification
token): never a 5xx, never an error logged, nothing stored for a 400 (tests/hostile.py writes them)."""

from __future__ import annotations

import hashlib
import json
import time
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis import Redis

from tests import feishu_sim as fs
from tests import hostile
from tests.fuzzing import FUZZ, Watch

ALLOWED = {200, 400, 413}


def post(client, body: bytes, *, key: str | None):
    """POST `body` (the event's JSON) as Feishu would: encrypted and signed with `key`, else plain."""
    headers = {"Content-Type": "application/json"}
    if key:
        body = json.dumps({"encrypt": fs.encrypt(body.decode(), key)}).encode()
        ts, nonce = str(int(time.time())), uuid.uuid4().hex[:16]
        headers.update({"X-Lark-Request-Timestamp": ts, "X-Lark-Request-Nonce": nonce,
                        "X-Lark-Signature": hashlib.sha256((ts + nonce + key).encode() + body).hexdigest()})
    return client.post("/feishu", data=body, headers=headers)


@pytest.fixture
def plain_feishu(feishu_env, monkeypatch):
    monkeypatch.setenv("FEISHU_ENCRYPT_KEY", "")
    from handlers.app import create_app

    return create_app().test_client()


@pytest.fixture
def bot_known(redis_url):
    """The bot's open_id cached as the app caches it: group events need no call to Feishu."""
    Redis.from_url(redis_url).set(f"chatgate:feishu:{fs.APP_ID}:bot_open_id", fs.BOT_OPEN_ID)


@FUZZ
@given(rnd=st.randoms(use_true_random=False))
def test_encrypted_hostile_events(feishu, bot_known, store, redis_url, caplog, rnd):
    watch = Watch(store, redis_url, caplog)
    event, may_403 = hostile.feishu_event(rnd)
    body = hostile.to_json(event)
    before = watch.snapshot()
    res = post(feishu.client, body, key=fs.ENCRYPT_KEY)
    watch.check(res, before, ALLOWED | ({403} if may_403 else set()), body[:500].decode(errors="replace"))


@FUZZ
@given(rnd=st.randoms(use_true_random=False))
def test_plaintext_hostile_events(plain_feishu, bot_known, store, redis_url, caplog, rnd):
    watch = Watch(store, redis_url, caplog)
    event, may_403 = hostile.feishu_event(rnd)
    body = hostile.to_json(event)
    before = watch.snapshot()
    res = post(plain_feishu, body, key=None)
    watch.check(res, before, ALLOWED | ({403} if may_403 else set()), body[:500].decode(errors="replace"))


@FUZZ
@given(text=st.text(max_size=200), content=st.one_of(st.none(), st.text(max_size=50), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)), message_type=st.sampled_from(["text", "post", "image", "", "TEXT"]))
def test_any_content(feishu, bot_known, store, redis_url, caplog, text, content, message_type):
    """The JSON inside the JSON: any text, any JSON value as the content."""
    watch = Watch(store, redis_url, caplog)
    event = fs.message_event(text=text, message_type=message_type)
    if content is not None:
        event["event"]["message"]["content"] = json.dumps(content) if not isinstance(content, str) else content
    body = hostile.to_json(event)
    before = watch.snapshot()
    watch.check(post(feishu.client, body, key=fs.ENCRYPT_KEY), before, ALLOWED, body[:500].decode())


# -- regressions ----------------------------------------------------------------------------------

def _event(change) -> dict:
    event = fs.message_event(text="hello", sender="ou_regress_1")
    change(event)
    return event


POST_OBJECT = '{"content": [[{"tag": "text", "text": {}}]]}'


def _deep(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize("body", [
    hostile.to_json(_event(lambda e: e["event"]["message"].update(mentions={"key": "@_user_1"}))),
    hostile.to_json(_event(lambda e: e["event"]["message"].update(mentions=[{"id": "ou_x"}]))),
    hostile.to_json(_event(lambda e: e["event"]["message"].update(mentions=[{"key": "k", "id": {}}] * 101))),
    hostile.to_json(_event(lambda e: e["event"].update(sender=["user"]))),
    hostile.to_json(_event(lambda e: e["event"]["sender"].update(sender_id="ou_x"))),
    hostile.to_json(_event(lambda e: e["event"]["message"].update(content='{"text": 5}'))),
    hostile.to_json(_event(lambda e: e["event"]["message"].update(content="[" * 5000 + "]" * 5000))),
    hostile.to_json(_event(lambda e: e["event"]["message"].update(content='{"text":'))),
    hostile.to_json(_event(lambda e: e["event"]["message"].update(message_id=12345))),
    hostile.to_json(_event(lambda e: e["event"]["message"].update(message_id="om_" + "x" * 200))),
    hostile.to_json(_event(lambda e: e["event"]["message"].update(message_type="post", content=POST_OBJECT))),
    hostile.to_json(_event(lambda e: e["header"].update(event_id=None))),
    _deep(5000),
], ids=["mentions-object", "mention-id-string", "101-mentions", "sender-list", "sender_id-string", "text-number",
        "content-deep", "content-not-json", "message_id-number", "message_id-long", "post-element-object",
        "no-event_id", "body-deep"])
@pytest.mark.parametrize("key", [fs.ENCRYPT_KEY, None], ids=["encrypted", "plaintext"])
def test_wrong_shapes_are_400_and_store_nothing(feishu, plain_feishu, store, redis_url, caplog, body, key):
    watch = Watch(store, redis_url, caplog)
    before = watch.snapshot()
    res = post(feishu.client if key else plain_feishu, body, key=key)
    watch.check(res, before, {400}, body[:300].decode())


def test_fields_chatgate_does_not_read_take_any_shape(feishu, bot_known, store, redis_url, caplog):
    """Only the checked fields reach lark-oapi's models: an odd shape elsewhere is not a 400."""
    watch = Watch(store, redis_url, caplog)
    event = _event(lambda e: e["event"]["message"].update(lark_agent_context="x", create_time=[1], root_id={}))
    before = watch.snapshot()
    watch.check(post(feishu.client, hostile.to_json(event), key=fs.ENCRYPT_KEY), before, {200}, "odd extras")
    assert store.count("deliveries") == before["deliveries"] + 1


def test_the_long_connection_refuses_unreadable_words_with_a_warning(feishu_env, bot_known, store, caplog):
    """The long connection hands lark-oapi's payload to the dispatcher without the webhook's checks:
    text that does not read is refused there with one WARNING, and stores nothing."""
    from config import load_settings
    from handlers.app import Runtime
    from handlers.feishu.events import FeishuEvents

    events = FeishuEvents(Runtime(load_settings()))
    for content in ('{"text": 5}', "[" * 5000 + "]" * 5000, '{"text":'):
        event = _event(lambda e, c=content: e["event"]["message"].update(content=c))
        caplog.clear()
        events.dispatcher._do_without_validation(json.dumps(event).encode())
        assert [r.levelname for r in caplog.records if "refused" in r.getMessage()] == ["WARNING"]
        assert not [r for r in caplog.records if r.levelno >= 40 or r.exc_info]
    assert store.count("users") == 0 and store.count("deliveries") == 0
