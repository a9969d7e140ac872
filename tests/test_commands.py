"""In-chat commands through the real path: signed, encrypted webhook → SQLite → passive reply.

Commands are answered at once in the passive reply, never charged and never queued: the RQ worker
finds nothing to do and the fake LLM is never called. A redeemed code is checked end to end: the
next question of a user whose trial was used up is answered by the worker.
"""

from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from redis import Redis
from rq import Queue

from bot import codes, texts
from tests import wechat_sim
from tests.wechat_sim import text_xml

OPENID = "oUser_cmd_0001"
OTHER = "oUser_cmd_0002"
SHANGHAI = ZoneInfo("Asia/Shanghai")


def reply_of(res) -> str:
    assert res.status_code == 200
    body = res.get_data(as_text=True)
    assert body != "success", "expected a passive reply"
    return wechat_sim.read_reply(body)["Content"]


def queued(redis_url) -> int:
    return Queue("chatgate", connection=Redis.from_url(redis_url)).count


@pytest.fixture
def new_code(store):
    """Make a code the way `chatgate codes create` does and return it as printed."""
    made = []

    def make(days: int = 30, batch: str | None = None) -> str:
        code = codes.generate()
        store.create_codes([codes.code_hash(code)], batch=batch or f"test{len(made)}", days=days, actor="test")
        made.append(code)
        return code
    return make


def test_me_is_answered_at_once_with_no_llm_call_no_job_and_no_charge(post, run_worker, redis_url, fake_llm,
                                                                       fake_wechat, store):
    content = reply_of(post(text_xml(OPENID, "我的", 10001)))
    assert f"wechat:{OPENID}" in content
    assert "剩余 10 / 10" in content
    assert texts.MEMBER_NONE in content
    assert queued(redis_url) == 0
    run_worker()
    assert fake_llm.calls == [] and fake_wechat.sent == []
    user = store.find_user("wechat", OPENID)
    assert user["trial_used"] == 0
    [delivery] = store.deliveries(user["id"])
    assert (delivery["command"], delivery["status"], delivery["charge"]) == ("me", "recorded", "none")
    assert [r["kind"] for r in store.ledger(user["id"])] == ["trial_start"]


@pytest.mark.parametrize("text", ["me", "  ME ", "/me", "我的\n", "Me", "我的。", "我的！"])
def test_command_words_match_after_trimming_in_any_case(post, text):
    assert f"wechat:{OPENID}" in reply_of(post(text_xml(OPENID, text, 10002)))


@pytest.mark.parametrize("text", ["我的天哪，今天好热", "tell me a joke", "what does reset mean?", "redeemed?",
                                  "兑换率是多少", "reset?"])
def test_a_message_that_merely_contains_a_command_word_is_a_question(post, run_worker, fake_wechat, store, text):
    assert post(text_xml(OPENID, text, 10003)).get_data(as_text=True) == "success"
    run_worker()
    assert fake_wechat.sent == [(OPENID, f"echo: {text}")]
    assert store.find_user("wechat", OPENID)["trial_used"] == 1


def test_me_counts_down_the_trial(post, run_worker):
    for i in range(3):
        post(text_xml(OPENID, f"question {i}", 10010 + i))
    run_worker()
    assert "剩余 7 / 10" in reply_of(post(text_xml(OPENID, "我的", 10013)))


def test_reset_starts_a_new_conversation_and_keeps_the_old_messages(post, run_worker, fake_llm, store):
    post(text_xml(OPENID, "My name is Ada.", 10101))
    run_worker()
    assert reply_of(post(text_xml(OPENID, "重置", 10102))) == texts.RESET
    post(text_xml(OPENID, "What is my name?", 10103))
    run_worker()
    assert fake_llm.calls[1]["messages"] == [{"role": "system", "content": "You are the test assistant."},
                                             {"role": "user", "content": "What is my name?"}]
    post(text_xml(OPENID, "And now?", 10104))
    run_worker()
    assert fake_llm.calls[2]["messages"][1:] == [{"role": "user", "content": "What is my name?"},
                                                 {"role": "assistant", "content": "echo: What is my name?"},
                                                 {"role": "user", "content": "And now?"}]
    assert store.count("messages") == 6  # nothing deleted: history is still there for the record
    assert store.find_user("wechat", OPENID)["trial_used"] == 3


def test_a_reset_sent_before_the_answer_arrived_still_forgets_that_question(post, run_worker, fake_llm):
    post(text_xml(OPENID, "My name is Ada.", 10201))
    post(text_xml(OPENID, "reset", 10202))
    post(text_xml(OPENID, "What is my name?", 10203))
    run_worker()  # the first answer is stored after the reset came in
    assert fake_llm.calls[1]["messages"][1:] == [{"role": "user", "content": "What is my name?"}]


def test_reset_is_per_user(post, run_worker, fake_llm):
    post(text_xml(OPENID, "I like tea.", 10301))
    post(text_xml(OTHER, "I like coffee.", 10302))
    run_worker()
    post(text_xml(OTHER, "重置", 10303))
    post(text_xml(OPENID, "What do I like?", 10304))
    run_worker()
    assert {"role": "user", "content": "I like tea."} in fake_llm.calls[-1]["messages"]


def test_a_redeemed_code_makes_an_exhausted_user_a_member_whose_next_question_is_answered(
        webhook, run_worker, redis_url, fake_wechat, fake_llm, store, new_code):
    post = webhook(CHATGATE_FREE_TRIAL="1")
    post(text_xml(OPENID, "first", 10401))
    run_worker()
    assert reply_of(post(text_xml(OPENID, "second", 10402))).startswith("Your 1 free answers are used up")
    code = new_code(days=30, batch="spring")

    before = time.time()
    typed = "兑换  " + code.lower().replace("-", " ")  # case, spaces and dashes do not matter
    content = reply_of(post(text_xml(OPENID, typed, 10403)))
    user = store.find_user("wechat", OPENID)
    assert before + 30 * 86400 <= user["member_until"] <= time.time() + 30 * 86400
    until = datetime.fromtimestamp(user["member_until"], SHANGHAI).strftime("%Y-%m-%d %H:%M")
    assert content == texts.REDEEMED.format(days=30, until=until)
    assert queued(redis_url) == 0

    assert post(text_xml(OPENID, "third", 10404)).get_data(as_text=True) == "success"
    run_worker()
    assert fake_wechat.sent == [(OPENID, "echo: first"), (OPENID, "echo: third")]
    assert len(fake_llm.calls) == 2
    ledger = store.ledger(user["id"])
    assert [r["kind"] for r in ledger] == ["trial_start", "trial_use", "redeem"]
    assert (ledger[-1]["actor"], ledger[-1]["days"], ledger[-1]["member_until"]) == (
        "code:spring", 30, user["member_until"])
    assert store.deliveries(user["id"])[-1]["charge"] == "member"
    assert code.replace("-", "") not in str(store.deliveries()).upper().replace("-", "").replace(" ", "")
    assert "有效期至" in reply_of(post(text_xml(OPENID, "我的", 10405)))


@pytest.mark.parametrize("typed", ["兑换{code}", "redeem: {code}", "REDEEM {code}", "兑换码：{code}", "{code}",
                                   "／ｒｅｄｅｅｍ　{wide}"])
def test_ways_people_type_a_code(post, new_code, store, typed):
    code = new_code()
    wide = "".join(chr(ord(ch) + 0xFEE0) if ch.isalnum() else "－" for ch in code)  # full-width input
    assert reply_of(post(text_xml(OPENID, typed.format(code=code, wide=wide), 10501))).startswith("兑换成功")
    assert store.find_user("wechat", OPENID)["member_until"] > time.time() + 29 * 86400


def test_a_code_works_once_and_every_bad_code_gets_the_same_reply(post, new_code, store):
    used, disabled = new_code(), new_code()
    store.disable_codes(hashes=[codes.code_hash(disabled)])
    assert reply_of(post(text_xml(OPENID, f"兑换 {used}", 10601))).startswith("兑换成功")
    replies = {reply_of(post(text_xml(OTHER, f"兑换 {c}", 10602 + i)))
               for i, c in enumerate([used, disabled, codes.generate(), "not-a-code", "ABCD"])}
    assert replies == {texts.CODE_INVALID}
    assert store.find_user("wechat", OTHER)["member_until"] is None
    assert store.code(codes.code_hash(used))["used_by"] == store.find_user("wechat", OPENID)["id"]


def test_the_redeem_word_alone_explains_itself(post):
    assert reply_of(post(text_xml(OPENID, "兑换", 10701))) == texts.REDEEM_USAGE.format(word="兑换")


def test_five_wrong_codes_an_hour_then_even_a_good_one_is_refused(post, new_code, store):
    good = new_code()
    for i in range(5):
        assert reply_of(post(text_xml(OPENID, f"兑换 {codes.generate()}", 10801 + i))) == texts.CODE_INVALID
    assert reply_of(post(text_xml(OPENID, f"兑换 {good}", 10806))) == texts.REDEEM_LIMITED
    assert store.code(codes.code_hash(good))["used_by"] is None  # not even tried
    assert reply_of(post(text_xml(OTHER, f"兑换 {good}", 10807))).startswith("兑换成功")  # others are not limited


def test_malformed_codes_do_not_count_toward_the_limit(post, new_code):
    for i in range(6):
        assert reply_of(post(text_xml(OPENID, "redeem my points please", 10901 + i))) == texts.CODE_INVALID
    assert reply_of(post(text_xml(OPENID, f"redeem {new_code()}", 10907))).startswith("兑换成功")


def test_a_redelivered_redeem_is_redeemed_once(post, new_code, store):
    code = new_code(days=10)
    xml = text_xml(OPENID, f"兑换 {code}", 11001)
    first = reply_of(post(xml))
    assert first.startswith("兑换成功")
    assert reply_of(post(xml)) == first  # a re-post: the same confirmation again, not a second redemption
    user = store.find_user("wechat", OPENID)
    assert [r["kind"] for r in store.ledger(user["id"])] == ["trial_start", "redeem"]


def test_welcome_days_make_a_new_user_a_member_at_first_contact(webhook, run_worker, fake_wechat, store):
    post = webhook(CHATGATE_WELCOME_DAYS="3")
    assert post(text_xml(OPENID, "hello", 11101)).get_data(as_text=True) == "success"
    run_worker()
    assert fake_wechat.sent == [(OPENID, "echo: hello")]
    user = store.find_user("wechat", OPENID)
    assert user["trial_used"] == 0
    assert abs(user["member_until"] - (user["created_at"] + 3 * 86400)) < 1
    ledger = store.ledger(user["id"])
    assert [(r["kind"], r["days"], r["actor"]) for r in ledger] == [("trial_start", None, "system"),
                                                                  ("member_grant", 3, "system")]
    assert store.deliveries(user["id"])[0]["charge"] == "member"
    post(text_xml(OPENID, "again", 11102))  # only at first contact
    assert len(store.ledger(user["id"])) == 2


def test_welcome_days_on_subscribe(webhook, store):
    post = webhook(CHATGATE_WELCOME_DAYS="7", CHATGATE_WELCOME_TEXT="欢迎！送你 {welcome_days} 天会员。")
    assert reply_of(post(wechat_sim.event_xml(OPENID, "subscribe", 1700000000))) == "欢迎！送你 7 天会员。"
    assert "有效期至" in reply_of(post(text_xml(OPENID, "我的", 11201)))


def test_help_lists_the_configured_words_and_the_words_can_be_changed(webhook, run_worker, fake_wechat):
    post = webhook(CHATGATE_COMMAND_ME="余额,balance", CHATGATE_COMMAND_HELP="菜单")
    content = reply_of(post(text_xml(OPENID, "菜单", 11301)))
    assert "余额 / balance" in content and "重置 / reset" in content
    assert f"wechat:{OPENID}" in reply_of(post(text_xml(OPENID, "余额", 11302)))
    assert post(text_xml(OPENID, "我的", 11303)).get_data(as_text=True) == "success"  # now a question
    assert post(text_xml(OPENID, "help", 11304)).get_data(as_text=True) == "success"
    run_worker()
    assert fake_wechat.sent == [(OPENID, "echo: 我的"), (OPENID, "echo: help")]


def test_commands_work_when_the_trial_is_used_up(webhook, run_worker, fake_llm):
    post = webhook(CHATGATE_FREE_TRIAL="0")
    assert "剩余 0 / 0" in reply_of(post(text_xml(OPENID, "我的", 11401)))
    assert reply_of(post(text_xml(OPENID, "重置", 11402))) == texts.RESET
    run_worker()
    assert fake_llm.calls == []


@pytest.mark.parametrize("name,value,problem", [
    ("CHATGATE_COMMAND_RESET", "reset,ME", "already a word of CHATGATE_COMMAND_ME"),
    ("CHATGATE_COMMAND_HELP", "help me", "must not contain spaces"),
    ("CHATGATE_TIMEZONE", "Mars/Olympus", "unknown time zone"),
    ("CHATGATE_WELCOME_DAYS", "-3", "must not be negative"),
])
def test_bad_command_settings_are_refused_naming_the_variable(tmp_path, name, value, problem):
    from config import SettingsError, load_settings

    with pytest.raises(SettingsError, match=f"{name}: .*{problem}"):
        load_settings({"CHATGATE_ENV": "development", name: value}, dotenv_path=tmp_path / "none.env")
