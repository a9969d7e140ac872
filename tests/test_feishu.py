"""Feishu/Lark end to end: an encrypted, signed event into /feishu → SQLite → Redis → RQ worker →
openai client → fake LLM → lark-oapi client → fake Feishu API, which records the reply."""

from __future__ import annotations

import json
import time

import pytest

from tests import feishu_sim as fs

USER = "ou_user_feishu_1"


def mention_bot(text="hello", **kw):
    return fs.message_event(text=f"@_user_1 {text}", chat_type="group", mentions=[("@_user_1", fs.BOT_OPEN_ID)],
                            **kw)


def test_a_group_mention_is_answered_as_a_reply_to_that_message(feishu, run_worker, fake_feishu, fake_llm, store):
    fake_llm.set_answer("4")
    event = mention_bot("what is 2+2?", sender=USER, chat_id="oc_group_1")
    res = feishu(event)
    assert res.status_code == 200 and res.get_json() == {"msg": "success"}
    run_worker()
    message_id = event["event"]["message"]["message_id"]
    assert [(mid, text) for mid, text, _ in fake_feishu.replies] == [(message_id, "4")]
    assert fake_llm.calls[0]["messages"][-1] == {"role": "user", "content": "what is 2+2?"}
    user = store.find_user("feishu", USER)
    assert user["trial_used"] == 1
    assert store.deliveries(user["id"])[0]["chat"] == "oc_group_1"


def test_a_group_message_mentioning_someone_else_is_ignored(feishu, run_worker, fake_feishu, fake_llm, store):
    event = fs.message_event(text="@_user_1 lunch?", chat_type="group", sender=USER,
                             mentions=[("@_user_1", "ou_someone_else")])
    assert feishu(event).status_code == 200
    run_worker()
    assert fake_llm.calls == [] and fake_feishu.replies == []
    assert store.find_user("feishu", USER) is None


def test_a_group_message_without_mentions_is_ignored(feishu, run_worker, fake_feishu, fake_llm):
    assert feishu(fs.message_event(text="just chatting", chat_type="group")).status_code == 200
    run_worker()
    assert fake_llm.calls == [] and fake_feishu.replies == []


def test_the_bot_open_id_is_fetched_once(feishu, run_worker, fake_feishu):
    for i in range(3):
        feishu(mention_bot(f"q{i}", sender=f"ou_u{i}"))
    assert fake_feishu.bot_info_calls == 1
    run_worker()
    assert len(fake_feishu.replies) == 3
    assert fake_feishu.token_fetches == 1  # the tenant token is cached in Redis, not fetched per job


def test_a_direct_message_is_answered(feishu, run_worker, fake_feishu):
    event = fs.message_event(text="hi there", sender=USER, chat_id="oc_p2p_1")
    assert feishu(event).status_code == 200
    run_worker()
    assert [(mid, text) for mid, text, _ in fake_feishu.replies] == [
        (event["event"]["message"]["message_id"], "echo: hi there")]


def test_history_is_kept_per_chat(feishu, run_worker, fake_llm):
    feishu(fs.message_event(text="direct one", sender=USER, chat_id="oc_p2p"))
    run_worker()
    feishu(mention_bot("group one", sender=USER, chat_id="oc_group"))
    run_worker()
    feishu(fs.message_event(text="direct two", sender=USER, chat_id="oc_p2p"))
    run_worker()
    contents = [m["content"] for m in fake_llm.calls[2]["messages"] if m["role"] == "user"]
    assert contents == ["direct one", "direct two"]
    group = [m["content"] for m in fake_llm.calls[1]["messages"] if m["role"] == "user"]
    assert group == ["group one"]


def test_messages_from_other_bots_are_ignored(feishu, run_worker, fake_llm, store):
    feishu(fs.message_event(text="beep", sender="ou_other_bot", sender_type="app"))
    run_worker()
    assert fake_llm.calls == []
    assert store.count("users") == 0


def test_non_text_gets_a_text_only_reply_and_no_charge(feishu, run_worker, fake_feishu, fake_llm, store):
    event = fs.message_event(sender=USER, message_type="image", content={"image_key": "img_1"})
    feishu(event)
    run_worker()
    assert fake_llm.calls == []
    [(mid, text, _)] = fake_feishu.replies
    assert mid == event["event"]["message"]["message_id"] and "only read text" in text
    assert store.find_user("feishu", USER)["trial_used"] == 0


def test_rich_text_posts_are_questions(feishu, run_worker, fake_llm):
    content = {"title": "", "content": [[{"tag": "at", "user_id": "@_user_1"}, {"tag": "text", "text": "tell me"}],
                                        [{"tag": "text", "text": "a joke"}]]}
    feishu(fs.message_event(message_type="post", content=content, sender=USER))
    run_worker()
    assert fake_llm.calls[0]["messages"][-1]["content"] == "tell me\na joke"


def test_the_same_event_three_times_and_a_replay_under_a_new_event_id_are_answered_once(
        feishu, run_worker, fake_feishu, fake_llm, store):
    event = fs.message_event(text="once please", sender=USER)
    for _ in range(3):
        assert feishu(event).status_code == 200
    replay = json.loads(json.dumps(event))
    replay["header"]["event_id"] = "a-new-event-id-after-reconnect"
    assert feishu(replay).status_code == 200
    run_worker()
    assert len(fake_llm.calls) == 1
    assert len(fake_feishu.replies) == 1
    assert store.find_user("feishu", USER)["trial_used"] == 1


def test_the_trial_over_text_is_sent_as_a_reply(feishu, run_worker, fake_feishu, fake_llm, monkeypatch):
    monkeypatch.setenv("CHATGATE_FREE_TRIAL", "1")
    from handlers.app import create_app

    client = create_app().test_client()
    for text in ("first", "second"):
        body, headers = fs.signed(fs.message_event(text=text, sender=USER))
        assert client.post("/feishu", data=body, headers=headers).status_code == 200
    run_worker()
    assert len(fake_llm.calls) == 1
    assert sorted(text for _, text, _ in fake_feishu.replies) == [
        "Your 1 free answers are used up. Become a member to keep asking.", "echo: first"]


def test_a_reply_that_keeps_failing_is_kept_and_pushed_once_when_feishu_recovers(feishu, run_worker, reconcile,
                                                                                   fake_feishu, fake_llm, store):
    fake_feishu.fail_reply(99991400, times=None, status=429)  # rate limited on every try
    feishu(fs.message_event(text="hello?", sender=USER))
    run_worker()
    assert fake_feishu.replies == []
    [d] = store.deliveries()
    assert d["status"] == "answered" and store.find_user("feishu", USER)["trial_used"] == 1  # kept, not lost
    fake_feishu.reset()  # Feishu recovers
    assert reconcile(seconds=61)["pushes queued again"] == 1
    run_worker()
    assert [text for _, text, _ in fake_feishu.replies] == ["echo: hello?"]
    assert store.deliveries()[0]["status"] == "delivered" and len(fake_llm.calls) == 1


def test_a_reply_refused_for_good_refunds_and_the_apology_is_dropped(feishu, run_worker, fake_feishu, store):
    fake_feishu.fail_reply(230002, times=None)  # the bot was removed from the chat
    feishu(fs.message_event(text="hello?", sender=USER))
    run_worker()
    assert fake_feishu.replies == []
    assert store.find_user("feishu", USER)["trial_used"] == 0
    [d] = store.deliveries()
    assert d["status"] == "failed" and d["due_at"] is None
    assert [(p["kind"], p["state"]) for p in store.pages(d["id"])] == [("answer", "cancelled"), ("notice", "cancelled")]


# -- the challenge and bad input ---------------------------------------------------------------


def test_the_url_challenge_plain_and_encrypted(feishu, feishu_env, monkeypatch):
    event = fs.challenge()
    res = feishu(event, sign=False)  # the challenge carries no signature headers
    assert res.status_code == 200 and res.get_json() == {"challenge": event["challenge"]}

    monkeypatch.delenv("FEISHU_ENCRYPT_KEY")
    from handlers.app import create_app

    plain = create_app().test_client()
    res = plain.post("/feishu", json=event)
    assert res.status_code == 200 and res.get_json() == {"challenge": event["challenge"]}
    assert plain.post("/feishu", json=fs.challenge(token="wrong")).status_code == 403


def test_a_wrong_verification_token_is_403_and_stores_nothing(feishu, store, fake_llm):
    assert feishu(fs.message_event(text="hi", token="not-our-token")).status_code == 403
    assert feishu(fs.challenge(token="not-our-token"), sign=False).status_code == 403
    assert store.count("users") == 0


def test_a_bad_signature_is_403(feishu, store):
    body, headers = fs.signed(fs.message_event(text="hi"))
    headers["X-Lark-Signature"] = "0" * 64
    assert feishu.client.post("/feishu", data=body, headers=headers).status_code == 403
    body, headers = fs.signed(fs.message_event(text="hi"), sign=False)
    assert feishu.client.post("/feishu", data=body, headers=headers).status_code == 403
    assert store.count("users") == 0


def test_an_event_encrypted_with_another_key_is_refused(feishu, store):
    body, headers = fs.signed(fs.message_event(text="hi"), key="some-other-key")
    assert feishu.client.post("/feishu", data=body, headers=headers).status_code in (400, 403)
    assert store.count("users") == 0


def test_plaintext_events_are_refused_when_an_encrypt_key_is_set(feishu, store):
    assert feishu(fs.message_event(text="hi"), key=None).status_code == 403
    assert store.count("users") == 0


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"", json.dumps({"encrypt": "%%%"}).encode()],
                         ids=["broken", "array", "empty", "bad-ciphertext"])
def test_malformed_bodies_are_400(feishu, store, body):
    assert feishu.client.post("/feishu", data=body, headers={"Content-Type": "application/json"}).status_code == 400
    assert store.count("users") == 0


@pytest.mark.parametrize("timestamp", ["{old}", "{future}", "soon", "{now}.0", "{now}000"],
                         ids=["old", "future", "not-a-number", "decimal", "milliseconds"])
def test_a_signed_timestamp_outside_the_window_is_403_and_stores_nothing(feishu, store, timestamp):
    """The signature says who, not when: a logged request (body and headers) is refused later."""
    now = int(time.time())
    ts = timestamp.format(old=now - 301, future=now + 301, now=now)
    body, headers = fs.signed(fs.message_event(text="hi", sender=USER), timestamp=ts)
    res = feishu.client.post("/feishu", data=body, headers=headers)
    assert res.status_code == 403 and "replay window" in res.get_data(as_text=True)
    assert store.count("users") == 0 and store.count("deliveries") == 0


@pytest.mark.parametrize("offset", [-290, 290], ids=["nearly-old", "a-skewed-clock"])
def test_a_signed_timestamp_inside_the_window_is_answered(feishu, run_worker, fake_feishu, offset):
    event = fs.message_event(text="fresh", sender=USER)
    body, headers = fs.signed(event, timestamp=str(int(time.time()) + offset))
    assert feishu.client.post("/feishu", data=body, headers=headers).status_code == 200
    run_worker()
    assert [text for _, text, _ in fake_feishu.replies] == ["echo: fresh"]


def test_the_window_setting_applies_to_feishu(feishu_env, monkeypatch, store):
    monkeypatch.setenv("CHATGATE_REPLAY_WINDOW", "60")
    from handlers.app import create_app

    client = create_app().test_client()
    now = int(time.time())
    body, headers = fs.signed(fs.message_event(text="hi", sender=USER), timestamp=str(now - 90))
    assert client.post("/feishu", data=body, headers=headers).status_code == 403
    assert store.count("users") == 0
    body, headers = fs.signed(fs.message_event(text="hi", sender=USER), timestamp=str(now - 30))
    assert client.post("/feishu", data=body, headers=headers).status_code == 200


# -- the long connection --------------------------------------------------------------------------


def test_the_long_connection_path_feeds_the_same_dispatcher(feishu_env, run_worker, fake_feishu, fake_llm, store):
    """`chatgate feishu-connect` hands each event payload to the dispatcher's `_do_without_validation`
    (lark-oapi's ws client does exactly that); dedupe and quotas are the webhook's."""
    from config import load_settings
    from handlers.app import Runtime
    from handlers.feishu.events import FeishuEvents

    events = FeishuEvents(Runtime(load_settings()))
    event = mention_bot("over the socket", sender=USER)
    payload = json.dumps(event).encode()
    events.dispatcher._do_without_validation(payload)
    events.dispatcher._do_without_validation(payload)  # a replay after a reconnect
    run_worker()
    assert [text for _, text, _ in fake_feishu.replies] == ["echo: over the socket"]
    assert store.find_user("feishu", USER)["trial_used"] == 1
