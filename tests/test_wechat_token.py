"""The WeChat access token: fetched once, shared by every process through Redis, refreshed under a
lock, and refreshed once (not in a loop) when WeChat says it is no longer valid."""

from __future__ import annotations

import threading

import pytest
from redis import Redis

from bot.errors import PermanentFailure, TransientFailure
from config import load_settings
from handlers.wechat.send import WeChatSender


@pytest.fixture
def senders(env, redis_url):
    """Several independent senders (as in separate processes), each with its own Redis client."""
    settings = load_settings()
    return lambda n: [WeChatSender(settings, Redis.from_url(redis_url)) for _ in range(n)]


def test_the_token_is_fetched_once_and_shared(senders, fake_wechat):
    a, b = senders(2)
    a.send("o1", "one")
    b.send("o2", "two")
    assert fake_wechat.token_fetches == 1
    assert fake_wechat.sent == [("o1", "one"), ("o2", "two")]


def test_a_cold_start_by_many_at_once_fetches_once(senders, fake_wechat):
    many = senders(8)
    barrier = threading.Barrier(len(many))

    def go(i, sender):
        barrier.wait()
        sender.send(f"o{i}", "hi")

    threads = [threading.Thread(target=go, args=(i, s)) for i, s in enumerate(many)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake_wechat.token_fetches == 1
    assert len(fake_wechat.sent) == 8


def test_an_invalidated_token_is_refreshed_once_for_everyone(senders, fake_wechat):
    a, b = senders(2)
    a.send("o1", "before")
    fake_wechat.invalidate(fake_wechat.valid_tokens[-1])
    a.send("o1", "after")
    b.send("o2", "also after")
    assert fake_wechat.token_fetches == 2
    assert [text for _, text in fake_wechat.sent] == ["before", "after", "also after"]


def test_a_token_error_that_persists_is_not_retried_forever(senders, fake_wechat):
    [a] = senders(1)
    a.send("o1", "warm up")
    fake_wechat.fail_send(40001, times=None)
    with pytest.raises(TransientFailure):
        a.send("o1", "never")
    assert fake_wechat.token_fetches == 2


@pytest.mark.parametrize("errcode", [45015, 45047, 48001])
def test_platform_refusals_are_permanent(senders, fake_wechat, errcode):
    [a] = senders(1)
    fake_wechat.fail_send(errcode)
    with pytest.raises(PermanentFailure, match=str(errcode)):
        a.send("o1", "hi")
