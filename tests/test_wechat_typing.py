"""WeChat's typing state while a slow answer is written, against the running Procfile processes
(gunicorn web + `chatgate worker` on gevent), with WeChat's side posting each message as WeChat does
and the fake WeChat API keeping the typing rules (a user message within 30 s, 45081 while one shows)."""

from __future__ import annotations

import time

import gevent
import pytest
import requests
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from config import load_settings
from handlers.senders import NO_PROGRESS
from handlers.wechat.send import WeChatSender
from handlers.wechat.typing_state import TypingState
from tests.live import Asker, free_port

OPENID = "oUser_typing_01"


def typing_counts(url: str) -> dict[str, float]:
    """chatgate_wechat_typing_total by result, as `/metrics` adds it up over every process."""
    res = requests.get(url + "/metrics", timeout=10)
    assert res.status_code == 200, res.text
    return {s.labels["result"]: s.value for family in text_string_to_metric_families(res.text)
            for s in family.samples if s.name == "chatgate_wechat_typing_total"}


def ask(url: str, fake_wechat, text: str, msg_id: int) -> tuple[Asker, float]:
    """The user writes `text` (the fake WeChat learns it), posted in the background; returns the asker
    and when it wrote (`time.monotonic()`)."""
    asker = Asker(url, OPENID)
    fake_wechat.user_wrote(OPENID)
    wrote = time.monotonic()
    asker.say_in_background(text, msg_id)
    return asker, wrote


def wait_for(check, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def push_times(fake_wechat) -> list[float]:
    return [r.at for r in fake_wechat.requests if r.path == "/cgi-bin/message/custom/send"]


def test_a_slow_answer_shows_typing_every_15_s_until_the_message_is_30_s_old(live, fake_llm, fake_wechat, store):
    url = live(WECHAT_REPLY_MODE="push")
    fake_llm.set_answer("一个慢慢想出来的回答")
    fake_llm.delay(5)
    fake_llm.chunk_delay = 9  # three pieces: the answer grows from 5 s and is whole at about 32 s
    _, wrote = ask(url, fake_wechat, "think hard", 7300000000000001)
    assert fake_wechat.wait_for_sent(1, timeout=50) == [(OPENID, "一个慢慢想出来的回答")]
    [pushed] = push_times(fake_wechat)
    assert pushed - wrote > 30
    typing = fake_wechat.typing
    assert [(c.touser, c.command, c.errcode) for c in typing] == [(OPENID, "Typing", 0)] * 2
    first, second = (c.at - wrote for c in typing)
    assert 0.9 < first < 3
    assert 14.5 < second - first < 16
    time.sleep(1)
    assert len(fake_wechat.typing) == 2  # none after 30 s, nor after the answer
    assert typing_counts(url) == {"sent": 2}
    user = store.find_user("wechat", OPENID)
    assert store.deliveries(user["id"])[0]["status"] == "delivered"


def test_a_typing_state_is_shown_before_an_answer_that_is_pushed(live, fake_llm, fake_wechat):
    url = live(WECHAT_REPLY_MODE="auto", WECHAT_REPLY_WAIT="0")  # auto, but no post holds the answer: pushed
    fake_llm.set_answer("pushed after a while")
    fake_llm.delay(3)
    _, wrote = ask(url, fake_wechat, "a moment", 7300000000000002)
    assert fake_wechat.wait_for_sent(1, timeout=15) == [(OPENID, "pushed after a while")]
    [typing] = fake_wechat.typing
    assert (typing.command, typing.errcode) == ("Typing", 0)
    assert typing.at < push_times(fake_wechat)[0]
    assert typing_counts(url) == {"sent": 1}


def test_a_fast_answer_comes_back_in_the_held_post_with_no_typing(live, fake_llm, fake_wechat):
    url = live(WECHAT_REPLY_MODE="push")
    fake_llm.set_answer("快")
    asker, _ = ask(url, fake_wechat, "quick", 7300000000000003)
    wait_for(lambda: asker.replies, timeout=10)
    assert asker.replies == ["快"]
    time.sleep(2)
    assert fake_wechat.typing == [] and fake_wechat.sent == []


@pytest.mark.parametrize("settings", [{"WECHAT_REPLY_MODE": "passive"},
                                      {"WECHAT_REPLY_MODE": "push", "CHATGATE_WECHAT_TYPING": "off"}],
                         ids=["passive", "typing-off"])
def test_no_typing_on_a_passive_account_or_when_turned_off(live, fake_llm, fake_wechat, settings):
    url = live(**settings)
    fake_llm.set_answer("in the held post")
    fake_llm.delay(3)
    asker, _ = ask(url, fake_wechat, "no typing", 7300000000000004)
    wait_for(lambda: asker.replies, timeout=12)
    assert asker.replies == ["in the held post"]
    assert fake_wechat.typing == [] and fake_wechat.sent == []
    assert typing_counts(url) == {}


def test_a_48001_from_typing_switches_auto_to_passive_with_no_more_typing(live, fake_llm, fake_wechat, store):
    url = live(WECHAT_REPLY_MODE="auto")
    fake_wechat.fail_typing(48001, times=None)  # an account without the customer-service API
    fake_wechat.fail_send(48001, times=None)
    fake_llm.answer_fn = lambda messages: "answer to " + messages[-1]["content"]
    fake_llm.delay(3)
    first, _ = ask(url, fake_wechat, "one", 7300000000000005)
    wait_for(lambda: first.replies, timeout=12)
    assert first.replies == ["answer to one"]
    assert [(c.command, c.errcode) for c in fake_wechat.typing] == [("Typing", 48001)]
    second, _ = ask(url, fake_wechat, "two", 7300000000000006)
    wait_for(lambda: second.replies, timeout=12)
    assert second.replies == ["answer to two"]
    assert len(fake_wechat.typing) == 1  # passive now: no typing, no push
    assert push_times(fake_wechat) == []
    assert typing_counts(url) == {"refused": 1}
    user = store.find_user("wechat", OPENID)
    assert [d["status"] for d in store.deliveries(user["id"])] == ["delivered", "delivered"]


def test_no_typing_once_a_push_48001_switched_auto_to_passive(live, fake_llm, fake_wechat):
    url = live(WECHAT_REPLY_MODE="auto", WECHAT_REPLY_WAIT="0")  # no post holds an answer: it is pushed
    fake_wechat.fail_send(48001, times=None)
    fake_llm.answer_fn = lambda messages: "answer to " + messages[-1]["content"]
    ask(url, fake_wechat, "fast", 7300000000000008)
    wait_for(lambda: len(push_times(fake_wechat)) == 1 and len(fake_llm.calls) == 1)  # refused: 48001
    time.sleep(0.5)
    fake_llm.delay(3)
    ask(url, fake_wechat, "slow", 7300000000000009)
    wait_for(lambda: len(fake_llm.calls) == 2)
    time.sleep(4)  # the slow answer is written, and stored for the user's next message
    assert fake_wechat.typing == [] and len(push_times(fake_wechat)) == 1
    assert typing_counts(url) == {}


def test_typing_refreshes_a_stale_shared_token_as_a_push_does(live, fake_llm, fake_wechat):
    url = live(WECHAT_REPLY_MODE="push", WECHAT_REPLY_WAIT="0")
    ask(url, fake_wechat, "fast", 7300000000000010)
    fake_wechat.wait_for_sent(1)  # the shared token is in Redis now
    fake_wechat.forget_tokens()  # and WeChat no longer takes it
    fetches = fake_wechat.token_fetches
    fake_llm.delay(3)
    ask(url, fake_wechat, "slow", 7300000000000011)
    fake_wechat.wait_for_sent(2)
    assert [(c.command, c.errcode) for c in fake_wechat.typing] == [("Typing", 40001), ("Typing", 0)]
    assert fake_wechat.token_fetches == fetches + 1
    assert typing_counts(url) == {"sent": 1}


@pytest.mark.parametrize("case", ["45081", "http-500", "timeout", "stalled"])
def test_typing_failing_neither_delays_nor_fails_the_answer(live, fake_llm, fake_wechat, store, case):
    # WECHAT_HTTP_TIMEOUT is 5 s; "timeout": 1 s, so that the call made at 1 s times out at 2 s
    url = live(WECHAT_REPLY_MODE="push", WECHAT_REPLY_WAIT="0", WECHAT_HTTP_TIMEOUT="1" if case == "timeout" else "5")
    if case == "45081":
        fake_wechat.fail_typing(45081, times=None)
    elif case == "http-500":
        fake_wechat.fail_typing(status=500, times=None)
    else:  # no answer within the HTTP timeout, or none before the answer is ready (the call is cut off then)
        fake_wechat.delay_typing(30)
    fake_llm.set_answer("answered regardless")
    fake_llm.delay(4)
    _, wrote = ask(url, fake_wechat, "typing trouble", 7300000000000007)
    assert fake_wechat.wait_for_sent(1, timeout=15) == [(OPENID, "answered regardless")]
    [pushed] = push_times(fake_wechat)
    assert pushed - wrote < 4 + 1.5  # the model's 4 s, and no more than a moment for the rest
    assert len(fake_wechat.typing) == 1
    if case == "stalled":
        time.sleep(2.5)  # past the 5 s timeout of the call made at 1 s: cut off, it counts nothing
    expected = {"45081": {"refused": 1}, "http-500": {"failed": 1}, "timeout": {"failed": 1}, "stalled": {}}
    assert typing_counts(url) == expected[case]
    user = store.find_user("wechat", OPENID)
    assert store.deliveries(user["id"])[0]["status"] == "delivered"


def test_the_token_store_down_is_counted_and_the_state_stops_at_once(env):
    """Run here by hand: this process is not patched by gevent, so it would keep no typing state (a
    blocking answer leaves a greenlet no turn) — the worker's is."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    sender = WeChatSender(load_settings(redis_url=dead), Redis.from_url(dead))
    d = {"user_external_id": OPENID, "received_at": time.time()}
    assert sender.progress(d, None) is NO_PROGRESS
    failed = REGISTRY.get_sample_value("chatgate_wechat_typing_total", {"result": "failed"}) or 0
    state = TypingState(sender, OPENID, time.time() + 29)
    gevent.sleep(1.5)  # its first ask, at 1 s: the shared token cannot be read
    started = time.monotonic()
    state.stop()  # while it waits for the next one
    assert time.monotonic() - started < 0.2
    assert REGISTRY.get_sample_value("chatgate_wechat_typing_total", {"result": "failed"}) == failed + 1
