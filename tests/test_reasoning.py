"""A reasoning model behind the bot: its thinking (streamed as `reasoning_content`, as `<think>…</think>`
in the content, or with only the closing tag) never reaches a user, the store, the next question's
history or the page budget. Signed webhooks into the Flask app, a real RQ worker, the openai client
against the fake LLM; and once the Procfile's own processes, for WeChat's passive reply."""

from __future__ import annotations

import logging
import sqlite3
import time

import pytest

from tests import feishu_sim as fs
from tests.test_wechat_delivery import content, deliver
from tests.wechat_sim import text_xml

OPENID = "oUser_reasoning_1"
SHAPES = ["field", "inline", "unopened"]
MARK = "THINKING"  # in every thought of the fake model (FakeLLM.default_thinking)


def everything_stored(db_path: str) -> str:
    """Every row of every table of the SQLite file, as SQL text."""
    with sqlite3.connect(db_path) as conn:
        return "\n".join(conn.iterdump())


def answered_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "outcome", None) == "answered"]


@pytest.mark.parametrize("shape", SHAPES)
def test_a_wechat_user_gets_the_answer_and_history_carries_it_without_the_thinking(
        post, run_worker, fake_llm, fake_wechat, store, env, caplog, shape):
    caplog.set_level(logging.INFO)
    fake_llm.reasoning = shape
    post(text_xml(OPENID, "My name is Ada.", 13001))
    run_worker()
    post(text_xml(OPENID, "What is my name?", 13002))
    run_worker()
    assert fake_wechat.sent == [(OPENID, "echo: My name is Ada."), (OPENID, "echo: What is my name?")]
    assert fake_llm.calls[1]["messages"][1:] == [{"role": "user", "content": "My name is Ada."},
                                                 {"role": "assistant", "content": "echo: My name is Ada."},
                                                 {"role": "user", "content": "What is my name?"}]
    user = store.find_user("wechat", OPENID)
    assert [d["answer"] for d in store.deliveries(user["id"])] == ["echo: My name is Ada.", "echo: What is my name?"]
    assert MARK not in everything_stored(env["CHATGATE_DB"])
    records = answered_records(caplog)
    thought = len(fake_llm.default_thinking([{"role": "user", "content": "My name is Ada."}]))
    assert [r.thinking_chars for r in records][:1] == [thought]
    assert all(MARK not in r.getMessage() and MARK not in str(vars(r)) for r in caplog.records)
    assert all(r.first_token_ms <= r.first_answer_ms <= r.llm_ms for r in records)


@pytest.mark.parametrize("shape", SHAPES)
def test_long_thinking_and_a_short_answer_make_one_page(post, run_worker, fake_llm, fake_wechat, store, shape):
    fake_llm.set_thinking("想" * 20_000, shape)  # about 60,000 UTF-8 bytes: some thirty WeChat pages
    fake_llm.thinking_chunks = 40
    fake_llm.set_answer("简短的回答。")
    post(text_xml(OPENID, "think hard", 13101))
    run_worker()
    assert fake_wechat.sent == [(OPENID, "简短的回答。")]
    [d] = store.deliveries(store.find_user("wechat", OPENID)["id"])
    assert d["status"] == "delivered" and [p["text"] for p in store.pages(d["id"])] == ["简短的回答。"]


def test_thinking_counts_in_the_estimated_tokens_when_the_endpoint_reports_none(post, run_worker, fake_llm, store):
    fake_llm.usage = "never"
    fake_llm.set_answer("ok")
    post(text_xml(OPENID, "plain", 13201))
    run_worker()
    fake_llm.set_thinking("想" * 300, "field")  # one estimated token per CJK character
    post(text_xml(OPENID, "deep", 13202))
    run_worker()
    plain, deep = store.deliveries(store.find_user("wechat", OPENID)["id"])
    assert plain["usage_estimated"] and deep["usage_estimated"]
    assert deep["answer"] == "ok" and deep["completion_tokens"] == plain["completion_tokens"] + 300


@pytest.mark.parametrize("shape", SHAPES)
def test_a_feishu_reply_holds_no_thinking(feishu, run_worker, fake_feishu, fake_llm, feishu_env, shape):
    fake_llm.reasoning = shape
    event = fs.message_event(text="hello", sender="ou_reasoning")
    assert feishu(event).status_code == 200
    run_worker()
    assert [text for _, text, _ in fake_feishu.replies] == ["echo: hello"]
    assert MARK not in everything_stored(feishu_env["CHATGATE_DB"])


def test_a_model_thinking_past_the_deadline_fails_every_try_then_refunds_and_apologises(
        post, run_worker, fake_llm, fake_wechat, store, monkeypatch):
    monkeypatch.setenv("CHATGATE_LLM_TIMEOUT", "1")
    fake_llm.reasoning, fake_llm.thinking_chunks, fake_llm.chunk_delay = "field", 30, 0.1  # 3 s of thinking
    post(text_xml(OPENID, "ponder forever", 13301))
    started = time.monotonic()
    run_worker()
    assert time.monotonic() - started < 3 * 3  # each try cut at the deadline, not at the thinking's end
    assert len(fake_llm.calls) == 3  # the first try and two retries (CHATGATE_RETRY_DELAYS=0,0)
    [(to, apology)] = fake_wechat.sent
    assert to == OPENID and "not used" in apology and MARK not in apology
    user = store.find_user("wechat", OPENID)
    assert user["trial_used"] == 0
    assert [r["kind"] for r in store.ledger(user["id"])] == ["trial_start", "trial_use", "trial_refund"]
    [d] = store.deliveries(user["id"])
    assert d["status"] == "failed" and "longer than 1s" in d["error"]


def test_a_model_that_only_thinks_has_no_answer(post, run_worker, fake_llm, fake_wechat, store):
    fake_llm.set_thinking("I keep thinking", "inline")
    fake_llm.set_answer("")
    post(text_xml(OPENID, "say nothing", 13401))
    run_worker()
    assert len(fake_llm.calls) == 3
    [d] = store.deliveries(store.find_user("wechat", OPENID)["id"])
    assert d["status"] == "failed" and "only thinking" in d["error"]
    assert [MARK not in text and "keep thinking" not in text for _, text in fake_wechat.sent] == [True]


def test_the_passive_reply_of_the_running_processes_holds_no_thinking(live, fake_llm, fake_wechat, store, env):
    url = live()
    fake_llm.set_thinking("Hmm. " * 200 + MARK, "inline")
    fake_llm.set_answer("快速回答")
    got = deliver(url, text_xml(OPENID, "quick?", 13501))
    assert [content(g) for g in got] == ["快速回答"]
    assert fake_wechat.sent == []  # it went back in the webhook's response
    fake_llm.reasoning = "field"
    got = deliver(url, text_xml(OPENID, "again?", 13502))
    assert [content(g) for g in got] == ["快速回答"]
    assert fake_llm.calls[1]["messages"][-2:] == [{"role": "assistant", "content": "快速回答"},
                                                  {"role": "user", "content": "again?"}]
    assert MARK not in everything_stored(env["CHATGATE_DB"])


@pytest.mark.parametrize("shape", SHAPES)
def test_the_answer_told_as_it_grows_never_holds_thinking(env, fake_llm, shape):
    """`on_delta(answer, thinking)`, as streaming cards and typing see it, through the openai client.
    A stream whose `<think>` was stripped shows as answer until its `</think>` (then taken back); the
    client remembers, and holds the next answers back until the thinking ends."""
    from config import load_settings
    from workers.llm import LLM

    fake_llm.reasoning, fake_llm.thinking_chunks = shape, 6
    llm = LLM(load_settings())
    try:
        for question in ("first", "second"):
            seen: list[tuple[str, str]] = []
            messages = [{"role": "user", "content": question}]
            assert llm.complete(messages, on_delta=lambda a, t, seen=seen: seen.append((a, t))) == f"echo: {question}"
            thought = fake_llm.default_thinking(messages)
            assert seen[-1] == (f"echo: {question}", thought)
            assert all(thought.startswith(t) for _, t in seen)
            if shape == "unopened" and question == "first":  # the one stream that could not be seen coming
                assert any(MARK in a for a, _ in seen)
            else:
                assert all(f"echo: {question}".startswith(a) for a, _ in seen)
                assert len({t for _, t in seen}) > 3  # the thinking told as it grows
            timing = llm.timing
            assert 0 < timing.first_token_s <= timing.first_answer_s <= timing.total_s
            assert timing.thinking == thought
    finally:
        llm.close()


def test_a_model_that_strips_its_opening_think_is_remembered_across_restarts(env, fake_llm, redis_url):
    """Learnt once from the model's first such answer, kept in Redis: the next worker process holds
    the answers back from its first one."""
    from redis import Redis

    from config import load_settings
    from workers.llm import LLM

    fake_llm.reasoning, fake_llm.thinking_chunks = "unopened", 6
    redis = Redis.from_url(redis_url)
    first = LLM(load_settings(), redis)
    try:
        assert first.unopened.is_set() is False
        first.complete([{"role": "user", "content": "learn"}])
        assert first.unopened.is_set() is True
    finally:
        first.close()
    restarted = LLM(load_settings(), redis)
    try:
        seen: list[str] = []
        assert restarted.unopened.is_set() is True
        answer = restarted.complete([{"role": "user", "content": "now"}], on_delta=lambda a, t: seen.append(a))
        assert answer == "echo: now"
        assert seen and all("echo: now".startswith(a) for a in seen)
    finally:
        restarted.close()
        redis.close()
