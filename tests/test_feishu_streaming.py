"""Feishu answers stream into their card while the model writes, with the Procfile's real web and
`chatgate worker` (gevent): updates come within a second of the first words, grow as the text grows,
keep CardKit's sequence and rate rules, and a worker killed mid-answer leaves the card to the next try.
"""

from __future__ import annotations

import os
import time

import pytest
import requests

from tests import feishu_sim as fs
from tests.live import LiveBot

USER = "ou_user_streaming"


@pytest.fixture
def bot(feishu_env, tmp_path, fake_feishu, fake_llm):
    b = LiveBot(tmp_path, {**os.environ, **feishu_env, "CHATGATE_FEISHU_STREAM": "on", "WEB_CONCURRENCY": "1",
                           "CHATGATE_WORKERS": "1", "CHATGATE_RECONCILE_INTERVAL": "1",
                           "CHATGATE_LOG_LEVEL": "INFO"}, own_redis=False)
    yield b
    b.stop()


def ask(url: str, text: str) -> str:
    event = fs.message_event(text=text, sender=USER)
    body, headers = fs.signed(event)
    assert requests.post(url + "/feishu", data=body, headers=headers, timeout=15).status_code == 200
    return event["event"]["message"]["message_id"]


def closed_card(fake_feishu, timeout: float = 30):
    fake_feishu.cards.wait_for(lambda: any(not c.streaming for c in fake_feishu.cards.cards.values()),
                               timeout, "a card closed")
    [card] = fake_feishu.cards.cards.values()
    return card


def test_an_answer_appears_word_by_word_within_a_second_of_the_first_token(bot, fake_feishu, fake_llm):
    answer = " ".join(f"word{i}" for i in range(60))
    fake_llm.set_answer(answer)
    fake_llm.pieces, fake_llm.chunk_delay = 30, 0.1  # three seconds of writing
    ask(bot.start(), "talk slowly")
    card = closed_card(fake_feishu)
    [chat] = [r for r in fake_llm.requests if r.path == "/v1/chat/completions"]
    updates = [(at, content) for at, op, element, content, _ in card.ops if op == "content" and element == "answer"]
    first_token_to_update = updates[0][0] - chat.at  # the fake sends the first piece as soon as it is asked
    assert first_token_to_update < 1.0, first_token_to_update
    streamed = [content for _, content in updates[:-1]]
    assert len(streamed) >= 5  # many visible steps, not one at the end
    assert all(answer.startswith(text) for text in streamed)  # each update extends the last: a typewriter
    assert [len(t) for t in streamed] == sorted(len(t) for t in streamed)
    assert card.text == answer and not card.streaming
    assert card.peak_ops_per_s("content") <= 4  # chatgate's own throttle (~3/s), well under CardKit's 10
    assert card.peak_ops_per_s() <= 6
    assert fake_feishu.cards.refusals == [] and fake_feishu.replies == []


def test_a_worker_killed_mid_answer_leaves_its_card_to_the_next_try(bot, fake_feishu, fake_llm, store):
    """SIGKILL of the whole worker while the answer streams: when the try's lease runs out the
    reconciler starts another, which writes into the same card (no second card, no second message)."""
    fake_llm.set_answer("the whole answer, written twice")
    fake_llm.pieces, fake_llm.chunk_delay = 10, 0.15
    bot.start(CHATGATE_LLM_TIMEOUT="2")  # a lease of 2 + 30 + 15 s
    ask(bot.url, "survive a crash")
    fake_feishu.cards.wait_for(lambda: any(c.updates() for c in fake_feishu.cards.cards.values()), 15,
                               "a first update")
    bot.kill_worker()
    bot.start_worker()
    card = closed_card(fake_feishu, timeout=90)
    assert card.text == "the whole answer, written twice"
    assert len(fake_llm.calls) == 2 and len(fake_feishu.cards.cards) == 1
    assert len({reply[3] for reply in fake_feishu.card_replies}) == 1
    assert fake_feishu.cards.refusals == [] and fake_feishu.replies == []
    deadline = time.monotonic() + 10  # the page is marked sent just after the card closes
    while store.deliveries()[0]["status"] != "delivered" and time.monotonic() < deadline:
        time.sleep(0.05)
    [d] = store.deliveries()
    assert d["status"] == "delivered" and d["attempts"] == 2
    assert store.find_user("feishu", USER)["trial_used"] == 1
    time.sleep(0.5)
    assert len(fake_llm.calls) == 2


def test_with_show_thinking_the_panel_fills_as_the_model_thinks_and_the_answer_stays_clean(bot, fake_feishu,
                                                                                           fake_llm):
    thought = " ".join(f"thought{i}" for i in range(40))
    fake_llm.set_thinking(thought, "field")
    fake_llm.thinking_chunks, fake_llm.pieces, fake_llm.chunk_delay = 20, 10, 0.1  # 3 s of writing
    ask(bot.start(CHATGATE_SHOW_THINKING="on"), "think it over")
    card = closed_card(fake_feishu)
    thinking = card.updates("thinking")
    assert len(thinking) >= 3 and all(thought.startswith(t) for t in thinking) and thinking[-1] == thought
    assert card.updates("answer") and not any("thought" in text for text in card.updates("answer"))
    assert card.text == "echo: think it over" and fake_feishu.cards.refusals == []
