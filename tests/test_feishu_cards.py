"""Feishu answers streamed into cards (CardKit), driven the real way: a signed, encrypted event into
/feishu, the real worker, lark-oapi talking to the fake Feishu, whose CardKit part checks sequences,
element ids and the per-card rate and records every operation (`handlers/simulator/cardkit.py`).

Here the worker runs in this process (its jobs take turns, so a card gets its updates when the try
ends); tests/test_feishu_streaming.py runs the real `chatgate worker` for updates as the model writes.
"""

from __future__ import annotations

import json

import pytest
from redis import Redis

from tests import feishu_sim as fs

USER = "ou_user_cards"


@pytest.fixture
def cards_env(feishu_env, monkeypatch):
    monkeypatch.setenv("CHATGATE_FEISHU_STREAM", "on")
    return {**feishu_env, "CHATGATE_FEISHU_STREAM": "on"}


@pytest.fixture
def ask(cards_env):
    from handlers.app import create_app

    client = create_app().test_client()

    def send(text: str, *, group: bool = False, sender: str = USER) -> str:
        if group:
            event = fs.message_event(text=f"@_user_1 {text}", chat_type="group", sender=sender,
                                     chat_id="oc_group_cards", mentions=[("@_user_1", fs.BOT_OPEN_ID)])
        else:
            event = fs.message_event(text=text, sender=sender)
        body, headers = fs.signed(event)
        assert client.post("/feishu", data=body, headers=headers).status_code == 200
        return event["event"]["message"]["message_id"]
    return send


def only_card(fake_feishu):
    [card] = fake_feishu.cards.cards.values()
    return card


def assert_closed_with(card, text: str) -> None:
    assert card.text == text and card.streaming is False
    sequences = [seq for _, op, _, _, seq in card.ops if op != "create"]
    assert sequences == sorted(set(sequences)) and sequences


def test_a_direct_answer_goes_into_one_card_replying_to_the_question(ask, run_worker, fake_feishu, fake_llm, store):
    fake_llm.set_answer("**Paris** is the capital of France.")
    message_id = ask("capital of France?")
    run_worker()
    card = only_card(fake_feishu)
    [(replied_to, card_id, idem, _)] = fake_feishu.card_replies
    assert (replied_to, card_id) == (message_id, card.card_id) and idem
    assert_closed_with(card, "**Paris** is the capital of France.")
    assert card.summary.startswith("**Paris**")
    assert fake_feishu.replies == [] and fake_feishu.cards.refusals == []
    card_json = json.loads(card.ops[0][3])
    assert card_json["schema"] == "2.0" and card_json["config"]["streaming_mode"] is True
    assert "thinking" not in card.elements  # CHATGATE_SHOW_THINKING is off by default
    [d] = store.deliveries()
    assert d["status"] == "delivered" and store.card(d["id"])["state"] == "closed"
    assert store.find_user("feishu", USER)["trial_used"] == 1


def test_a_group_mention_is_answered_in_a_card_quoting_the_mention(ask, run_worker, fake_feishu, fake_llm):
    message_id = ask("what is 2+2?", group=True)
    run_worker()
    [(replied_to, _, _, _)] = fake_feishu.card_replies
    assert replied_to == message_id
    assert_closed_with(only_card(fake_feishu), "echo: what is 2+2?")


def test_a_long_answer_fills_the_card_and_continues_in_text_replies(ask, run_worker, fake_feishu, fake_llm):
    from handlers.feishu.cards import CARD_TEXT_BYTES

    answer = "\n".join(f"line {i}: " + "述" * 200 for i in range(120))  # about 73 KB
    fake_llm.set_answer(answer)
    message_id = ask("a long one")
    run_worker()
    card = only_card(fake_feishu)
    assert card.streaming is False and len(card.text.encode()) <= CARD_TEXT_BYTES
    follow_ups = [text for mid, text, _ in fake_feishu.replies if mid == message_id]
    assert follow_ups and card.text + "".join(follow_ups) == answer
    assert fake_feishu.cards.refusals == []


def test_without_the_card_permission_answers_go_out_as_text_and_cards_are_not_tried_again(
        ask, run_worker, fake_feishu, fake_llm, redis_url, cards_env):
    fake_feishu.cards.fail("create", 99991672, times=None, status=400)  # the app lacks cardkit:card:write
    ask("first?")
    run_worker()
    assert [text for _, text, _ in fake_feishu.replies] == ["echo: first?"]
    creates = sum(1 for r in fake_feishu.requests if r.path == "/open-apis/cardkit/v1/cards")
    assert creates == 1
    assert Redis.from_url(redis_url).ttl(f"chatgate:feishu:{cards_env['FEISHU_APP_ID']}:nocards") > 3600
    ask("second?")
    run_worker()
    assert [text for _, text, _ in fake_feishu.replies] == ["echo: first?", "echo: second?"]
    assert sum(1 for r in fake_feishu.requests if r.path == "/open-apis/cardkit/v1/cards") == 1  # remembered
    assert fake_feishu.card_replies == []


def test_a_card_feishu_will_not_take_as_a_reply_is_dropped_and_the_answer_goes_as_text(
        ask, run_worker, fake_feishu, fake_llm, store):
    fake_feishu.fail_reply(230099, times=1)  # the reply carrying the card is refused; text replies are not
    ask("hello?")
    run_worker()
    assert [text for _, text, _ in fake_feishu.replies] == ["echo: hello?"]
    [d] = store.deliveries()
    assert store.card(d["id"])["state"] == "dropped" and d["status"] == "delivered"


def test_a_retried_try_continues_the_same_card(ask, run_worker, fake_feishu, fake_llm, store):
    fake_llm.fail(500, times=1)  # the first try fails; CHATGATE_RETRY_DELAYS=0 retries at once
    ask("try me twice")
    run_worker(with_scheduler=True)
    run_worker()
    assert len(fake_llm.calls) == 2
    card = only_card(fake_feishu)
    assert len({reply[3] for reply in fake_feishu.card_replies}) == 1  # one message carries it
    assert_closed_with(card, "echo: try me twice")
    assert fake_feishu.replies == [] and fake_feishu.cards.refusals == []
    [d] = store.deliveries()
    assert d["attempts"] == 2 and d["status"] == "delivered"


def test_an_answer_that_fails_for_good_puts_the_apology_into_its_card(ask, run_worker, fake_feishu, fake_llm,
                                                                      store):
    fake_llm.fail(500, times=None)
    ask("never answered")
    run_worker(with_scheduler=True)
    run_worker()
    card = only_card(fake_feishu)
    assert card.streaming is False and "never answered" in card.text and "Sorry" in card.text
    assert fake_feishu.replies == []
    assert store.find_user("feishu", USER)["trial_used"] == 0  # refunded


def test_the_long_connection_path_streams_into_a_card_too(cards_env, run_worker, fake_feishu, fake_llm):
    from config import load_settings
    from handlers.app import Runtime
    from handlers.feishu.events import FeishuEvents

    events = FeishuEvents(Runtime(load_settings()))
    event = fs.message_event(text="over the socket", sender=USER)
    events.dispatcher._do_without_validation(json.dumps(event).encode())
    run_worker()
    [(replied_to, _, _, _)] = fake_feishu.card_replies
    assert replied_to == event["event"]["message"]["message_id"]
    assert_closed_with(only_card(fake_feishu), "echo: over the socket")


def test_streaming_off_sends_text_and_never_calls_cardkit(feishu, run_worker, fake_feishu, fake_llm):
    feishu(fs.message_event(text="plain please", sender=USER))  # feishu_env sets CHATGATE_FEISHU_STREAM=off
    run_worker()
    assert [text for _, text, _ in fake_feishu.replies] == ["echo: plain please"]
    assert not any(r.path.startswith("/open-apis/cardkit/") for r in fake_feishu.requests)


def test_the_calls_of_many_cards_share_kept_alive_connections(ask, run_worker, fake_feishu, fake_llm):
    """lark-oapi opens a connection per call; chatgate gives its transport one pooled session."""
    fake_feishu.connections = 0
    for i in range(3):
        ask(f"question {i}", sender=f"ou_pool_{i}")
    run_worker()
    assert len(fake_feishu.cards.cards) == 3 and all(not c.streaming for c in fake_feishu.cards.cards.values())
    assert len(fake_feishu.requests) >= 12 and fake_feishu.connections <= 2  # a token, then 4 calls per card


@pytest.mark.parametrize("shape", ["field", "inline"])
def test_a_reasoning_models_thinking_never_reaches_the_card_by_default(ask, run_worker, fake_feishu, fake_llm,
                                                                       shape):
    fake_llm.set_thinking("SECRET-THOUGHT: step one, step two.", shape)
    ask("think first")
    run_worker()
    card = only_card(fake_feishu)
    assert_closed_with(card, "echo: think first")
    assert "thinking" not in card.elements
    assert not any("SECRET-THOUGHT" in content for _, _, _, content, _ in card.ops)


@pytest.mark.parametrize("shape", ["field", "inline"])
def test_with_show_thinking_the_thinking_streams_into_a_collapsed_panel_above_the_answer(
        ask, run_worker, fake_feishu, fake_llm, monkeypatch, shape):
    monkeypatch.setenv("CHATGATE_SHOW_THINKING", "on")
    fake_llm.set_thinking("SECRET-THOUGHT: step one, step two.", shape)
    ask("think aloud")
    run_worker()
    card = only_card(fake_feishu)
    assert_closed_with(card, "echo: think aloud")
    [panel, answer] = json.loads(card.ops[0][3])["body"]["elements"]
    assert panel["tag"] == "collapsible_panel" and panel["expanded"] is False and answer["element_id"] == "answer"
    assert card.elements["thinking"] == "SECRET-THOUGHT: step one, step two."
    assert not any("SECRET-THOUGHT" in text for text in card.updates("answer"))
