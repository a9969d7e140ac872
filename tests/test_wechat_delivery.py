"""WeChat delivery on every kind of account, driven with WeChat's real rhythm against the running
Procfile processes (gunicorn web + RQ worker): each message is posted up to three times, 5 s apart,
and the client gives up on each post after 5 s, as WeChat does."""

from __future__ import annotations

import time

import requests

from tests import wechat_sim
from tests.wechat_sim import text_xml

OPENID = "oUser_delivery_01"


def deliver(url: str, xml: str) -> list[str | None]:
    """Post like WeChat: up to three times, 5 s apart, giving up on each post at 5 s; stop at the
    first response. Returns what each post got (None: timed out)."""
    got: list[str | None] = []
    for _ in range(3):
        signed = wechat_sim.sign_encrypted(xml)
        started = time.monotonic()
        try:
            res = requests.post(url + signed.path, data=signed.body, timeout=5)
            got.append(res.text)
            return got
        except requests.Timeout:
            got.append(None)
        time.sleep(max(0.0, started + 5 - time.monotonic()))
    return got


def wait_answered(store, count: int = 1, timeout: float = 40) -> None:
    """Wait until `count` questions of OPENID have their answer stored."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        user = store.find_user("wechat", OPENID)
        if user and sum(d["status"] in ("answered", "delivered") for d in store.deliveries(user["id"])) >= count:
            time.sleep(0.5)  # and handed to the mailbox
            return
        time.sleep(0.2)
    raise TimeoutError("the answer was not stored in time")


def content(body: str | None) -> str | None:
    if body is None or body == "success":
        return body
    return wechat_sim.read_reply(body)["Content"]


def test_a_fast_answer_comes_back_in_the_first_passive_reply(live, fake_llm, fake_wechat, store):
    url = live()
    fake_llm.set_answer("快速回答")
    started = time.monotonic()
    got = deliver(url, text_xml(OPENID, "quick?", 7100000000000001))
    assert [content(g) for g in got] == ["快速回答"]
    assert time.monotonic() - started < 4.5
    assert fake_wechat.sent == []  # nothing pushed: it went back in the webhook's response
    user = store.find_user("wechat", OPENID)
    assert user["trial_used"] == 1
    assert store.deliveries(user["id"])[0]["status"] == "delivered"


def test_a_seven_second_answer_comes_back_in_a_later_delivery(live, fake_llm, fake_wechat, store):
    url = live()
    fake_llm.set_answer("slow but sure")
    fake_llm.delay(7)
    got = deliver(url, text_xml(OPENID, "take your time", 7100000000000002))
    assert got[0] is None and len(got) in (2, 3)
    assert content(got[-1]) == "slow but sure"
    assert fake_wechat.sent == []
    assert len(fake_llm.calls) == 1
    assert store.find_user("wechat", OPENID)["trial_used"] == 1


def test_a_twenty_second_answer_on_a_passive_account_is_fetched_with_continue(live, fake_llm, fake_wechat, store):
    url = live(WECHAT_REPLY_MODE="passive")
    fake_llm.set_answer("the long-awaited answer")
    fake_llm.delay(20)
    got = deliver(url, text_xml(OPENID, "hard question", 7100000000000003))
    assert got[:2] == [None, None]
    assert "继续" in content(got[2])
    wait_answered(store)
    fetched = deliver(url, text_xml(OPENID, "继续", 7100000000000004))
    assert [content(g) for g in fetched] == ["the long-awaited answer"]
    assert fake_wechat.sent == []
    user = store.find_user("wechat", OPENID)
    assert user["trial_used"] == 1  # 继续 is not a question
    assert store.deliveries(user["id"])[0]["status"] == "delivered"


def test_a_new_question_while_one_is_pending_gets_both_answers_in_order(live, fake_llm, store):
    url = live(WECHAT_REPLY_MODE="passive")
    fake_llm.answer_fn = lambda messages: "answer to " + messages[-1]["content"]
    fake_llm.delay(16)
    first = deliver(url, text_xml(OPENID, "first", 7100000000000005))
    assert "继续" in content(first[-1])
    wait_answered(store)  # the first answer is now pending
    fake_llm.delay(0)
    second = deliver(url, text_xml(OPENID, "second", 7100000000000006))
    reply = content(second[-1])
    assert reply.index("answer to first") < reply.index("answer to second")
    user = store.find_user("wechat", OPENID)
    assert user["trial_used"] == 2
    assert [d["status"] for d in store.deliveries(user["id"])] == ["delivered", "delivered"]


def test_48001_switches_auto_to_passive_and_the_answer_still_arrives(live, fake_llm, fake_wechat, store):
    url = live(WECHAT_REPLY_MODE="auto")
    fake_wechat.fail_send(48001, times=None, errmsg="api unauthorized")
    fake_llm.answer_fn = lambda messages: "answer to " + messages[-1]["content"]
    fake_llm.delay(16)
    first = deliver(url, text_xml(OPENID, "one", 7100000000000007))
    assert first == [None, None, "success"]  # auto: the worker will push when it is ready
    wait_answered(store)  # the push fails with 48001; the answer is kept
    time.sleep(1)
    fake_llm.delay(0)
    second = deliver(url, text_xml(OPENID, "two", 7100000000000008))
    reply = content(second[-1])
    assert reply.startswith("answer to one") and "answer to two" in reply
    assert fake_wechat.sent == []
    user = store.find_user("wechat", OPENID)
    assert [d["status"] for d in store.deliveries(user["id"])] == ["delivered", "delivered"]
