"""A WeChat question end to end: signed, encrypted webhook → SQLite → Redis → RQ worker → openai
client → fake LLM → wechatpy → fake WeChat API."""

from __future__ import annotations

import threading

import pytest

from tests import wechat_sim
from tests.wechat_sim import image_xml, text_xml, voice_xml

OPENID = "oUser_e2e_0001"


def test_encrypted_question_is_answered_through_the_customer_service_api(post, run_worker, fake_wechat,
                                                                         fake_llm, store):
    fake_llm.set_answer("北京是中国的首都。")
    res = post(text_xml(OPENID, "中国的首都是哪里？", 9000000000000001))
    assert res.status_code == 200
    assert res.get_data(as_text=True) == "success"
    assert fake_llm.calls == []  # the webhook only queued it

    run_worker()

    assert fake_wechat.sent == [(OPENID, "北京是中国的首都。")]
    call = fake_llm.calls[0]
    assert call["model"] == "test-model"
    assert call["messages"] == [{"role": "system", "content": "You are the test assistant."},
                                {"role": "user", "content": "中国的首都是哪里？"}]
    user = store.find_user("wechat", OPENID)
    assert user["trial_used"] == 1
    [delivery] = store.deliveries(user["id"])
    assert delivery["status"] == "delivered"
    assert [row["kind"] for row in store.ledger(user["id"])] == ["trial_start", "trial_use"]


def test_history_goes_with_the_next_question(post, run_worker, fake_llm):
    post(text_xml(OPENID, "My name is Ada.", 1001))
    run_worker()
    post(text_xml(OPENID, "What is my name?", 1002))
    run_worker()
    messages = fake_llm.calls[1]["messages"]
    assert messages[1:] == [{"role": "user", "content": "My name is Ada."},
                            {"role": "assistant", "content": "echo: My name is Ada."},
                            {"role": "user", "content": "What is my name?"}]


def test_the_eleventh_question_gets_the_trial_over_text_and_no_llm_call(post, run_worker, fake_wechat,
                                                                        fake_llm, store):
    for i in range(10):
        assert post(text_xml(OPENID, f"question {i}", 2000 + i)).get_data(as_text=True) == "success"
    run_worker()
    assert len(fake_llm.calls) == 10

    res = post(text_xml(OPENID, "question 11", 2010))
    reply = wechat_sim.read_reply(res.get_data(as_text=True))
    assert reply["ToUserName"] == OPENID
    assert reply["Content"] == "Your 10 free answers are used up. Become a member to keep asking."
    run_worker()
    assert len(fake_llm.calls) == 10
    assert len(fake_wechat.sent) == 10
    user = store.find_user("wechat", OPENID)
    assert user["trial_used"] == 10
    assert store.deliveries(user["id"])[-1]["status"] == "refused"


def test_a_redelivered_message_is_answered_once_and_charged_once(post, run_worker, fake_wechat, fake_llm, store):
    xml = text_xml(OPENID, "hello", 3001)
    responses = [post(xml) for _ in range(3)]
    assert [r.get_data(as_text=True) for r in responses] == ["success"] * 3
    run_worker()
    post(xml)  # and once more after the answer went out
    run_worker()
    assert len(fake_llm.calls) == 1
    assert fake_wechat.sent == [(OPENID, "echo: hello")]
    assert store.find_user("wechat", OPENID)["trial_used"] == 1


def test_concurrent_redeliveries_are_answered_once_and_charged_once(app, run_worker, fake_wechat, fake_llm,
                                                                    store):
    signed = wechat_sim.sign_encrypted(text_xml(OPENID, "at once", 3002))
    barrier = threading.Barrier(6)
    codes = []

    def deliver():
        client = app.test_client()
        barrier.wait()
        codes.append(client.post(signed.path, data=signed.body).status_code)

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 6
    run_worker()
    assert len(fake_llm.calls) == 1
    assert fake_wechat.sent == [(OPENID, "echo: at once")]
    user = store.find_user("wechat", OPENID)
    assert user["trial_used"] == 1
    assert len(store.deliveries(user["id"])) == 1


def test_llm_down_for_every_try_sends_one_apology_and_refunds(post, run_worker, fake_wechat, fake_llm, store):
    fake_llm.fail(503, times=None)
    post(text_xml(OPENID, "anyone there?", 4001))
    run_worker()
    assert len(fake_llm.calls) == 3  # the first try and two retries (CHATGATE_RETRY_DELAYS=0,0)
    assert len(fake_wechat.sent) == 1
    assert fake_wechat.sent[0][0] == OPENID
    assert "not used" in fake_wechat.sent[0][1]
    user = store.find_user("wechat", OPENID)
    assert user["trial_used"] == 0
    assert [r["kind"] for r in store.ledger(user["id"])] == ["trial_start", "trial_use", "trial_refund"]
    assert store.deliveries(user["id"])[0]["status"] == "failed"


def test_a_rejected_llm_key_gives_up_at_once(post, run_worker, fake_wechat, fake_llm, monkeypatch, store):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-000")
    post(text_xml(OPENID, "hi", 4002))
    run_worker()
    attempts = [r for r in fake_llm.requests if r.path == "/v1/chat/completions"]
    assert len(attempts) == 1  # no retries for a 401
    assert len(fake_wechat.sent) == 1
    assert store.find_user("wechat", OPENID)["trial_used"] == 0


def test_a_send_that_fails_once_is_retried_and_delivered_once(post, run_worker, fake_wechat, fake_llm, store):
    fake_wechat.fail_send(-1, times=1, errmsg="system error")
    post(text_xml(OPENID, "retry me", 4003))
    run_worker()
    assert fake_wechat.sent == [(OPENID, "echo: retry me")]
    assert len(fake_llm.calls) == 1  # the stored answer was re-sent, not re-asked
    assert store.find_user("wechat", OPENID)["trial_used"] == 1


def test_a_long_answer_goes_out_in_parts_within_the_text_limit(post, run_worker, fake_wechat, fake_llm):
    answer = "\n".join(f"第{i}段：" + "长" * 300 for i in range(8))  # about 7,300 UTF-8 bytes
    fake_llm.set_answer(answer)
    post(text_xml(OPENID, "write a lot", 5001))
    run_worker()
    parts = [content for _, content in fake_wechat.sent]
    assert 2 <= len(parts) <= 5
    assert all(len(p.encode()) <= 2048 for p in parts)
    assert "".join(parts) == answer


def test_an_answer_beyond_the_push_budget_sends_five_pages_and_keeps_the_rest_for_continue(
        post, run_worker, fake_wechat, fake_llm, store):
    from config import load_settings

    more = load_settings().wechat_more_text.replace("{continue}", "继续")
    answer = "".join(chr(0x4E00 + i % 500) for i in range(6000))  # 18,000 bytes: ten pages
    fake_llm.set_answer(answer)
    post(text_xml(OPENID, "write even more", 5002))
    run_worker()
    pushed = [content for _, content in fake_wechat.sent]
    assert len(pushed) == 5
    assert all(len(p.encode()) <= 2048 for p in pushed)
    assert pushed[-1].endswith(more)  # the last push the budget allows says how to get the rest
    pushed[-1] = pushed[-1].removesuffix("\n\n" + more)
    fetched = []
    for i in range(5):
        reply = wechat_sim.read_reply(post(text_xml(OPENID, "继续", 5100 + i)).get_data(as_text=True))["Content"]
        fetched.append(reply.removesuffix("\n\n" + more))
        assert reply.endswith(more) == (i < 4)
    assert "".join(pushed + fetched) == answer
    user = store.find_user("wechat", OPENID)
    assert user["trial_used"] == 1  # 继续 is not a question
    assert store.deliveries(user["id"])[0]["status"] == "delivered"
    assert [p["via"] for p in store.pages(store.deliveries(user["id"])[0]["id"])] == ["push"] * 5 + ["reply"] * 5
    assert post(text_xml(OPENID, "继续", 5200)).get_data(as_text=True) == "success"  # now a question again


def test_voice_with_recognition_is_a_question(post, run_worker, fake_wechat):
    post(voice_xml(OPENID, "今天天气怎么样", 6001))
    run_worker()
    assert fake_wechat.sent == [(OPENID, "echo: 今天天气怎么样")]


def test_an_image_gets_a_text_only_reply_and_is_not_charged(post, run_worker, fake_llm, store):
    res = post(image_xml(OPENID, 6002))
    reply = wechat_sim.read_reply(res.get_data(as_text=True))
    assert "only read text" in reply["Content"]
    run_worker()
    assert fake_llm.calls == []
    assert store.find_user("wechat", OPENID)["trial_used"] == 0


def test_subscribe_gets_the_welcome_and_events_are_recorded_once(post, fake_llm, store):
    res = post(wechat_sim.event_xml(OPENID, "subscribe", 1700000000))
    assert wechat_sim.read_reply(res.get_data(as_text=True))["Content"] == (
        "Welcome! Ask me anything. You have 10 free answers.")
    again = post(wechat_sim.event_xml(OPENID, "subscribe", 1700000000))  # WeChat posts again: no reply reached it
    assert wechat_sim.read_reply(again.get_data(as_text=True))["Content"].startswith("Welcome!")
    assert post(wechat_sim.event_xml(OPENID, "CLICK", 1700000001, key="MENU_1")).get_data(as_text=True) == "success"
    assert post(wechat_sim.event_xml(OPENID, "unsubscribe", 1700000002)).get_data(as_text=True) == "success"
    user = store.find_user("wechat", OPENID)
    assert user["unsubscribed_at"] is not None
    assert [d["kind"] for d in store.deliveries(user["id"])] == ["subscribe", "click", "unsubscribe"]
    assert len(store.pages(store.deliveries(user["id"])[0]["id"])) == 1  # one welcome, served twice
    assert user["trial_used"] == 0
    assert fake_llm.calls == []


def test_an_answer_with_cdata_end_survives_the_passive_reply(post, env, monkeypatch):
    monkeypatch.setenv("CHATGATE_TRIAL_OVER_TEXT", "buy at https://shop.example/?a=]]>&b=1")
    monkeypatch.setenv("CHATGATE_FREE_TRIAL", "0")
    from handlers.app import create_app

    client = create_app().test_client()
    signed = wechat_sim.sign_encrypted(text_xml(OPENID, "hi", 6003))
    res = client.post(signed.path, data=signed.body)
    assert wechat_sim.read_reply(res.get_data(as_text=True))["Content"] == "buy at https://shop.example/?a=]]>&b=1"


def test_a_question_admitted_while_redis_is_down_is_queued_by_the_reconciler(env, monkeypatch, run_worker, reconcile,
                                                                             fake_wechat, fake_llm, store):
    from handlers.app import create_app

    signed = wechat_sim.sign_encrypted(text_xml(OPENID, "hello?", 7001))
    monkeypatch.setenv("REDIS_URL", "unix:///nonexistent/redis.sock")
    assert create_app().test_client().post(signed.path, data=signed.body).status_code == 200
    user = store.find_user("wechat", OPENID)
    [d] = store.deliveries(user["id"])
    assert d["status"] == "queued" and user["trial_used"] == 1  # admitted once, in the store
    monkeypatch.setenv("REDIS_URL", env["REDIS_URL"])
    # WeChat posts again while the job is still missing: the same question, not a second one
    assert create_app().test_client().post(signed.path, data=signed.body).status_code == 200
    run_worker()
    assert fake_llm.calls == []  # nothing in the queue yet
    reconcile(seconds=61)
    run_worker()
    assert fake_wechat.sent == [(OPENID, "echo: hello?")]
    user = store.find_user("wechat", OPENID)
    assert user["trial_used"] == 1 and len(store.deliveries(user["id"])) == 1


def test_the_database_is_owner_only(app, env):
    import os
    import stat

    assert stat.S_IMODE(os.stat(env["CHATGATE_DB"]).st_mode) == 0o600


def test_logs_say_what_happened_to_which_message_and_no_secret(post, env, caplog):
    import logging

    caplog.set_level(logging.INFO)
    post(text_xml(OPENID, "log me", 8001))
    text = caplog.text
    assert "wechat msg=8001" in text and "outcome=trial" in text
    for name in ("OPENAI_API_KEY", "WECHAT_APP_SECRET", "WECHAT_AES_KEY", "WECHAT_TOKEN"):
        assert env[name] not in text


def test_an_answer_job_run_twice_sends_once(post, run_worker, fake_wechat, fake_llm, env, redis_url):
    from redis import Redis

    from config import load_settings
    from workers.queue import answer_queue, enqueue_answer

    post(text_xml(OPENID, "once only", 9001))
    run_worker()
    queue = answer_queue(load_settings(), Redis.from_url(redis_url))
    job = queue.fetch_job("wechat-9001")
    enqueue_answer(queue, load_settings(), job.args[0])  # as RQ does for an abandoned job
    run_worker()
    assert fake_wechat.sent == [(OPENID, "echo: once only")]
    assert len(fake_llm.calls) == 1


def test_an_llm_slower_than_the_deadline_is_retried_then_refunded(post, run_worker, fake_wechat, fake_llm,
                                                                  monkeypatch, store):
    monkeypatch.setenv("CHATGATE_LLM_TIMEOUT", "0.5")
    fake_llm.delay(2)
    post(text_xml(OPENID, "slow one", 9002))
    run_worker()
    assert len(fake_llm.calls) == 3
    assert len(fake_wechat.sent) == 1 and "not used" in fake_wechat.sent[0][1]
    assert store.find_user("wechat", OPENID)["trial_used"] == 0


def test_a_pending_answer_nobody_fetches_is_refunded_and_the_user_told_later(post, run_worker, reconcile,
                                                                            fake_wechat, monkeypatch, store):
    monkeypatch.setenv("WECHAT_REPLY_MODE", "passive")
    post(text_xml(OPENID, "never fetched", 9101))
    run_worker()
    user = store.find_user("wechat", OPENID)
    assert store.deliveries(user["id"])[0]["status"] == "answered" and fake_wechat.sent == []
    counts = reconcile(seconds=2 * 86400 + 1)  # past WECHAT_PENDING_TTL
    assert counts["answers expired"] == 1
    assert store.deliveries(user["id"])[0]["status"] == "expired"
    assert store.find_user("wechat", OPENID)["trial_used"] == 0
    reply = wechat_sim.read_reply(post(text_xml(OPENID, "继续", 9102)).get_data(as_text=True))["Content"]
    assert "never fetched" in reply and "echo:" not in reply  # told, and never the expired answer
    assert post(text_xml(OPENID, "继续", 9103)).get_data(as_text=True) == "success"  # nothing pending now


@pytest.mark.parametrize("errcode", [45015, 45047])
def test_a_push_refused_for_silence_or_budget_keeps_the_answer_for_the_next_message(
        post, run_worker, fake_wechat, fake_llm, store, errcode):
    fake_wechat.fail_send(errcode, times=None)
    post(text_xml(OPENID, "first question", 9201))
    run_worker()
    assert fake_wechat.sent == []
    user = store.find_user("wechat", OPENID)
    assert store.deliveries(user["id"])[0]["status"] == "answered"  # kept, not failed, not refunded
    assert user["trial_used"] == 1
    reply = wechat_sim.read_reply(post(text_xml(OPENID, "second question", 9202)).get_data(as_text=True))
    assert reply["Content"].startswith("echo: first question")
    assert store.deliveries(user["id"])[0]["status"] == "delivered"
