"""Spend guardrails, per-user limits and expiry reminders, driven through the real webhook (signed,
encrypted WeChat posts into the Flask app) and a real RQ worker, with the fake LLM.

With `test-model=10000/10000` every token costs 0.01 CNY, and the fake LLM reports the characters
sent and answered as tokens: a first question `qN` of a user costs (27 + 2 + 8) × 0.01 = 0.37.
"""

from __future__ import annotations

import json
import logging

from click.testing import CliRunner
from prometheus_client import REGISTRY

from bot import texts
from bot.cli import main
from tests import wechat_sim
from tests.wechat_sim import text_xml

PRICES = "test-model=10000/10000"
BUSY = "please come back tomorrow"


def reply_of(res) -> str:
    assert res.status_code == 200
    body = res.get_data(as_text=True)
    assert body != "success", "expected a passive reply"
    return wechat_sim.read_reply(body)["Content"]


def acked(res) -> bool:
    return res.status_code == 200 and res.get_data(as_text=True) == "success"


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("chatgate_refused_total", {"platform": "wechat", "reason": reason}) or 0


def today() -> dict:
    result = CliRunner().invoke(main, ["stats", "--days", "1", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)[-1]


def member(store, post, openid: str, days: int, msg_id: int) -> dict:
    """A user (first seen through a command, never charged) granted `days` days of membership."""
    reply_of(post(text_xml(openid, "帮助", msg_id)))
    user = store.find_user("wechat", openid)
    store.grant(user["id"], days, actor="test")
    return store.find_user("wechat", openid)


def test_past_the_budget_trial_users_are_refused_uncharged_members_go_on_until_the_hard_cap(
        webhook, run_worker, fake_llm, fake_wechat, store, tmp_path):
    post = webhook(CHATGATE_PRICES=PRICES, CHATGATE_DAILY_BUDGET="0.3", CHATGATE_DAILY_HARD_CAP="1")
    log_file = tmp_path / "worker.log"
    handler = logging.FileHandler(log_file)  # the worker's forked work-horses write here too
    logging.getLogger().addHandler(handler)
    before = {reason: refused(reason) for reason in ("budget", "hard_cap")}
    try:
        vip = member(store, post, "o-vip", 30, 80001)
        assert acked(post(text_xml("o-trial", "q1", 80002)))
        run_worker()  # 0.37: the budget of 0.3 is reached
        assert fake_wechat.sent == [("o-trial", "echo: q1")]

        assert BUSY in reply_of(post(text_xml("o-late", "q2", 80003)))  # a trial user: refused
        assert BUSY in reply_of(post(text_xml("o-trial", "q3", 80004)))
        assert acked(post(text_xml("o-vip", "m1", 80005)))  # a member: answered
        run_worker()  # 0.74
        assert acked(post(text_xml("o-vip", "m2", 80006)))
        run_worker()  # + (27 + 2 + 8 + 2 + 8) × 0.01 = 1.21: the hard cap of 1 is reached
        assert BUSY in reply_of(post(text_xml("o-vip", "m3", 80007)))  # now members too
        assert BUSY in reply_of(post(text_xml("o-trial", "q4", 80008)))
        assert "wechat:o-vip" in reply_of(post(text_xml("o-vip", "我的", 80009)))  # commands still work
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()

    assert len(fake_llm.calls) == 3
    assert [text for _, text in fake_wechat.sent] == ["echo: q1", "echo: m1", "echo: m2"]
    late, trial = store.find_user("wechat", "o-late"), store.find_user("wechat", "o-trial")
    assert (late["trial_used"], trial["trial_used"]) == (0, 1)  # refusals are never charged
    assert [r["kind"] for r in store.ledger(late["id"])] == ["trial_start"]
    assert [(d["status"], d["charge"], d["refusal"]) for d in store.deliveries(vip["id"])][-2:] == [
        ("refused", "none", "hard_cap"), ("recorded", "none", None)]
    figures = today()
    assert (figures["refused_budget"], figures["refused_hard_cap"], figures["refused"]) == (2, 2, 0)
    assert figures["llm_cost"] == "1.2100"
    assert (refused("budget") - before["budget"], refused("hard_cap") - before["hard_cap"]) == (2, 2)
    lines = log_file.read_text().splitlines()
    budget_lines = [line for line in lines if "reached the daily budget" in line]
    cap_lines = [line for line in lines if "reached the daily hard cap" in line]
    assert len(budget_lines) == 1 and "0.3700 of 0.3 CNY" in budget_lines[0]
    assert len(cap_lines) == 1 and "1.2100 of 1 CNY" in cap_lines[0]


def test_a_budget_of_zero_refuses_trial_users_at_once_and_no_budget_none(webhook, run_worker, fake_wechat):
    post = webhook(CHATGATE_DAILY_BUDGET="0")  # no price: nothing costs anything, 0 is reached at once
    assert BUSY in reply_of(post(text_xml("o-zero", "q", 80101)))
    post = webhook(CHATGATE_DAILY_BUDGET="")
    assert acked(post(text_xml("o-zero", "q", 80102)))
    run_worker()
    assert fake_wechat.sent == [("o-zero", "echo: q")]


def test_a_flood_gets_a_clear_reply_uncharged_and_commands_and_fetches_pass(webhook, run_worker, fake_llm, store):
    post = webhook(CHATGATE_USER_RATE="2/minute,5/hour", WECHAT_REPLY_MODE="passive")
    assert acked(post(text_xml("o-fast", "q1", 80201)))
    assert acked(post(text_xml("o-fast", "q2", 80202)))
    before = refused("flood")
    text = reply_of(post(text_xml("o-fast", "q3", 80203)))
    assert "too fast (at most 2/minute, 5/hour)" in text
    assert "wechat:o-fast" in reply_of(post(text_xml("o-fast", "我的", 80204)))
    assert texts.HELP.split("\n")[0] in reply_of(post(text_xml("o-fast", "帮助", 80205)))
    fetched = reply_of(post(text_xml("o-fast", "继续", 80206)))  # a fetch, not a question: never limited
    assert "too fast" not in fetched
    assert acked(post(text_xml("o-other", "q1", 80207)))  # the limit is per user
    run_worker()
    user = store.find_user("wechat", "o-fast")
    assert user["trial_used"] == 2 and len(fake_llm.calls) == 3
    assert refused("flood") - before == 1
    assert today()["refused_flood"] == 1


def test_a_members_daily_limit_gets_a_clear_reply_and_trial_users_are_not_affected(webhook, run_worker, fake_llm,
                                                                                  store):
    post = webhook(CHATGATE_MEMBER_DAILY_LIMIT="2")
    member(store, post, "o-member", 30, 80301)
    assert acked(post(text_xml("o-member", "m1", 80302)))
    assert acked(post(text_xml("o-member", "m2", 80303)))
    assert "daily limit" in reply_of(post(text_xml("o-member", "m3", 80304)))
    for i in range(3):
        assert acked(post(text_xml("o-trial", f"t{i}", 80310 + i)))
    run_worker()
    assert len(fake_llm.calls) == 5
    assert today()["refused_member_daily"] == 1


def test_a_reminder_comes_once_per_expiry_and_again_after_an_extension(post, run_worker, fake_wechat, store):
    user = member(store, post, "o-ending", 2, 80401)
    first = reply_of(post(text_xml("o-ending", "我的", 80402)))
    assert "Reminder: your membership ends on" in first and "(2 days left)" in first
    assert "兑换 / 兑换码 / redeem" in first  # how to renew
    assert "Reminder" not in reply_of(post(text_xml("o-ending", "我的", 80403)))  # once
    post(text_xml("o-ending", "q1", 80404))
    run_worker()
    assert fake_wechat.sent[-1] == ("o-ending", "echo: q1")  # no reminder on the answer either

    store.grant(user["id"], 1, actor="test")  # a new expiry, still within 3 days: armed again
    post(text_xml("o-ending", "q2", 80405))
    run_worker()
    to, text = fake_wechat.sent[-1]
    assert text.startswith("echo: q2\n\n") and "Reminder" in text and "(3 days left)" in text
    assert store.history(user["id"], "", turns=5, max_chars=1000)[-1]["content"] == "echo: q2"  # not in history
    assert "Reminder" not in reply_of(post(text_xml("o-ending", "帮助", 80406)))
    assert [d["remind_until"] is not None for d in store.deliveries(user["id"])].count(True) == 2

    member(store, post, "o-far", 30, 80407)
    assert "Reminder" not in reply_of(post(text_xml("o-far", "我的", 80408)))  # ends in 30 days: none


def test_a_reminder_on_a_question_that_failed_is_carried_by_the_next_reply(post, run_worker, fake_llm, store):
    member(store, post, "o-failing", 1, 80501)
    fake_llm.fail(400, times=None)  # refused for good: the question fails
    post(text_xml("o-failing", "q", 80502))
    run_worker()
    assert "Reminder" in reply_of(post(text_xml("o-failing", "我的", 80503)))


def test_on_feishu_a_flood_reply_and_a_reminder_go_out_as_replies(feishu_env, run_worker, fake_feishu, fake_llm,
                                                                  store, monkeypatch):
    from handlers.app import create_app
    from tests import feishu_sim as fs

    monkeypatch.setenv("CHATGATE_USER_RATE", "1/hour")
    client = create_app().test_client()

    def send(text: str):
        body, headers = fs.signed(fs.message_event(text=text, sender="ou_limits"))
        assert client.post("/feishu", data=body, headers=headers).status_code == 200

    send("first")
    send("second")
    run_worker()
    user = store.find_user("feishu", "ou_limits")
    store.grant(user["id"], 1, actor="test")
    send("我的")
    run_worker()
    replies = [text for _, text, _ in fake_feishu.replies]
    assert len(fake_llm.calls) == 1 and store.find_user("feishu", "ou_limits")["trial_used"] == 1
    assert "echo: first" in replies
    assert any("too fast (at most 1/hour)" in text for text in replies)
    assert any("feishu:ou_limits" in text and "Reminder: your membership ends" in text for text in replies)


def test_the_reminder_names_the_buy_words_when_memberships_are_sold_on_afdian():
    from bot.reminders import renew_words
    from config import load_settings

    plain = load_settings({"CHATGATE_ENV": "development"}, dotenv_path="/nonexistent")
    selling = load_settings({"CHATGATE_ENV": "development", "AFDIAN_USER_ID": "adf397fe8374811eaacee52540025c377",
                             "AFDIAN_TOKEN": "Xq3kV9mZpT2wLr8sN4bYcD6fHj"}, dotenv_path="/nonexistent")
    assert renew_words(plain) == "兑换 / 兑换码 / redeem"
    assert renew_words(selling) == "购买 / buy"
