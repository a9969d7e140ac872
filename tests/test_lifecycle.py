"""One regression test per behaviour of issue 8 that the fault suite (tests/test_faults.py) does not
drive already, through the signed webhook, a real RQ worker and the fakes; and the lifecycle's
conditional moves, which a stale actor must lose."""

from __future__ import annotations

import pytest

from bot import texts
from tests import feishu_sim as fs
from tests import wechat_sim
from tests.wechat_sim import image_xml, text_xml, voice_xml

OPENID = "oUser_lifecycle_1"


def reply_of(res) -> str:
    body = res.get_data(as_text=True)
    assert body != "success", "expected a passive reply"
    return wechat_sim.read_reply(body)["Content"]


def deliveries(store, openid=OPENID):
    return store.deliveries(store.find_user("wechat", openid)["id"])


# -- 1. 继续 while the answer is being written ---------------------------------------------------------


@pytest.mark.parametrize("word", ["继续", "继续。", " 继续！", "继续?"])
def test_continue_while_a_question_is_in_flight_is_a_fetch_and_never_charged(webhook, run_worker, fake_llm,
                                                                               fake_wechat, store, word):
    post = webhook(WECHAT_REPLY_WAIT="0.3")
    post(text_xml(OPENID, "a hard one", 12001))  # held 0.3 s, then left to the worker
    reply = reply_of(post(text_xml(OPENID, word, 12002)))
    assert reply == texts_pending()  # nothing ready yet: it says so
    run_worker()
    assert [c["messages"][-1]["content"] for c in fake_llm.calls] == ["a hard one"]
    assert fake_wechat.sent == [(OPENID, "echo: a hard one")]
    assert store.find_user("wechat", OPENID)["trial_used"] == 1
    assert [(d["kind"], d["command"], d["charge"]) for d in deliveries(store)] == [
        ("text", None, "trial"), ("text", "fetch", "none")]


def test_a_spoken_continue_fetches_the_waiting_answer(webhook, run_worker, store):
    post = webhook(WECHAT_REPLY_MODE="passive", WECHAT_REPLY_WAIT="0")
    post(text_xml(OPENID, "tell me", 12101))
    run_worker()
    assert reply_of(post(voice_xml(OPENID, "继续。", 12102))) == "echo: tell me"
    assert store.find_user("wechat", OPENID)["trial_used"] == 1
    assert deliveries(store)[0]["status"] == "delivered"


def texts_pending() -> str:
    from config import load_settings

    settings = load_settings()
    return settings.wechat_pending_text.replace("{continue}", settings.wechat_continue_word)


# -- 6. every immediate reply carries the pages waiting -------------------------------------------------


@pytest.mark.parametrize("second,expected", [
    (text_xml(OPENID, "我的", 12202), "免费回答 Free answers"),
    (image_xml(OPENID, 12202), texts.TEXT_ONLY),
    (text_xml(OPENID, "another question", 12202), "Your 1 free answers are used up."),
], ids=["command", "media", "trial-over"])
def test_an_immediate_reply_carries_the_answer_waiting_before_it(webhook, run_worker, store, second, expected):
    post = webhook(WECHAT_REPLY_MODE="passive", WECHAT_REPLY_WAIT="0", CHATGATE_FREE_TRIAL="1")
    post(text_xml(OPENID, "the last free one", 12201))
    run_worker()  # answered; it waits for the user's next message
    reply = reply_of(post(second))
    assert reply.startswith("echo: the last free one\n\n")
    assert expected in reply
    assert deliveries(store)[0]["status"] == "delivered"
    assert store.find_user("wechat", OPENID)["trial_used"] == 1


# -- 7. an answer stored with its pages, whose job died before pushing them -----------------------------


def test_an_answer_stored_but_never_pushed_is_pushed_by_the_reconciler(post, run_worker, reconcile, fake_wechat,
                                                                        store, env):
    from config import load_settings

    post(text_xml(OPENID, "stored only", 12301))
    [d] = deliveries(store)
    settings = load_settings()
    attempt = store.start_answer(d["id"], job_timeout=settings.job_timeout)  # as a work-horse that then dies
    assert store.record_answer(d["id"], attempt, "echo: stored only", ["echo: stored only"], keep_s=3600,
                               recheck_s=settings.recheck_s)
    from redis import Redis
    Redis.from_url(env["REDIS_URL"]).flushall()  # and its job is gone
    assert reconcile(seconds=settings.recheck_s + 1)["pushes queued again"] == 1
    run_worker()
    assert fake_wechat.sent == [(OPENID, "echo: stored only")]
    assert deliveries(store)[0]["status"] == "delivered"
    assert reconcile(seconds=settings.recheck_s + 1)["pushes queued again"] == 0


# -- 8. the expiry and a late 继续 ----------------------------------------------------------------------


def test_continue_just_before_the_expiry_wins_and_nothing_is_refunded(webhook, run_worker, reconcile, store):
    post = webhook(WECHAT_REPLY_MODE="passive", WECHAT_REPLY_WAIT="0")
    post(text_xml(OPENID, "just in time", 12401))
    run_worker()
    assert reply_of(post(text_xml(OPENID, "继续", 12402))) == "echo: just in time"
    assert not reconcile(seconds=3 * 86400)["answers expired"]
    assert deliveries(store)[0]["status"] == "delivered"
    user = store.find_user("wechat", OPENID)
    assert user["trial_used"] == 1 and "trial_refund" not in [r["kind"] for r in store.ledger(user["id"])]


def test_the_expiry_and_a_claim_cannot_both_act(env, store):
    """The page claim and the expiry are conditional writes: whichever comes second finds nothing."""
    from bot.models import TEXT, IncomingMessage

    a = store.admit(IncomingMessage("wechat", OPENID, "12501", TEXT, "race"), free_trial=10, charge=True)
    attempt = store.start_answer(a.delivery_id, job_timeout=10)
    store.record_answer(a.delivery_id, attempt, "echo: race", ["echo: race"], keep_s=0, recheck_s=60)
    [page] = store.ready_pages(a.user_id)
    assert store.expire(a.delivery_id, note=texts.expired("race")) == "expired"
    assert store.claim_for_reply([page["id"]], reply_to=a.delivery_id, post=1) == []
    assert store.find_user("wechat", OPENID)["trial_used"] == 0
    b = store.admit(IncomingMessage("wechat", OPENID, "12502", TEXT, "race 2"), free_trial=10, charge=True)
    attempt = store.start_answer(b.delivery_id, job_timeout=10)
    store.record_answer(b.delivery_id, attempt, "echo: race 2", ["echo: race 2"], keep_s=0, recheck_s=60)
    page = next(p for p in store.ready_pages(b.user_id) if p["delivery_id"] == b.delivery_id)
    assert [p["id"] for p in store.claim_for_reply([page["id"]], reply_to=b.delivery_id, post=1)] == [page["id"]]
    assert store.expire(b.delivery_id, note=texts.expired("race 2")) is None  # delivered: nothing to expire
    assert store.delivery(b.delivery_id)["status"] == "delivered"


# -- suspected: a stale try, a duplicated job, a Feishu notice whose job was never queued -----------------


def test_a_try_that_lost_its_lease_cannot_store_its_answer(env, store):
    from bot.models import TEXT, IncomingMessage

    a = store.admit(IncomingMessage("wechat", OPENID, "12601", TEXT, "slow"), free_trial=10, charge=True)
    first = store.start_answer(a.delivery_id, job_timeout=-100)  # its lease is already over
    second = store.start_answer(a.delivery_id, job_timeout=60)
    assert (first, second) == (1, 2)
    assert store.start_answer(a.delivery_id, job_timeout=60) is None  # a third finds it held
    assert not store.record_answer(a.delivery_id, first, "late", ["late"], keep_s=60, recheck_s=60)
    assert store.give_up(a.delivery_id, reason="late", apology=texts.apology("slow"), attempt=first) is None
    assert store.record_answer(a.delivery_id, second, "on time", ["on time"], keep_s=60, recheck_s=60)
    assert [p["text"] for p in store.pages(a.delivery_id)] == ["on time"]


def test_the_reconciler_leaves_a_question_whose_job_is_still_queued(post, run_worker, reconcile, fake_llm,
                                                                      fake_wechat):
    post(text_xml(OPENID, "patience", 12701))  # its job waits in Redis, as on a busy launch night
    assert reconcile(seconds=3600)["still in the queue"] == 1
    run_worker()
    assert len(fake_llm.calls) == 1 and fake_wechat.sent == [(OPENID, "echo: patience")]


def test_a_feishu_redemption_admitted_while_redis_is_down_is_confirmed_once_later(
        feishu_env, monkeypatch, run_worker, reconcile, fake_feishu, store):
    from bot import codes
    from handlers.app import create_app

    code = codes.generate()
    store.create_codes([codes.code_hash(code)], batch="b1", days=7, actor="test")
    monkeypatch.setenv("REDIS_URL", "unix:///nonexistent/redis.sock")
    client = create_app().test_client()
    body, headers = fs.signed(fs.message_event(text=f"兑换 {code}", sender="ou_redeemer"))
    assert client.post("/feishu", data=body, headers=headers).status_code == 200
    user = store.find_user("feishu", "ou_redeemer")
    assert [r["kind"] for r in store.ledger(user["id"])] == ["trial_start", "redeem"]
    monkeypatch.setenv("REDIS_URL", feishu_env["REDIS_URL"])
    assert reconcile(seconds=61)["pushes queued again"] == 1
    run_worker()
    assert [text[:4] for _, text, _ in fake_feishu.replies] == ["兑换成功"]
    assert reconcile(seconds=61)["pushes queued again"] == 0


def test_the_operator_retrying_a_failed_question_gets_it_answered_free(post, run_worker, fake_llm, fake_wechat,
                                                                        store, env):
    from click.testing import CliRunner

    from bot.cli import main

    fake_llm.fail(503, times=3)
    post(text_xml(OPENID, "again later", 12801))
    run_worker()
    assert deliveries(store)[0]["status"] == "failed"
    result = CliRunner().invoke(main, ["jobs", "retry", "--all"])
    assert result.exit_code == 0, result.output
    run_worker()
    assert [t for _, t in fake_wechat.sent][-1] == "echo: again later"
    user = store.find_user("wechat", OPENID)
    assert user["trial_used"] == 0 and deliveries(store)[0]["charge"] == "none"


def test_reconcile_command_says_what_it_did(post, env, fake_wechat):
    from click.testing import CliRunner

    from bot.cli import main

    post(text_xml(OPENID, "anything", 12901))
    result = CliRunner().invoke(main, ["reconcile", "--json"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "{}"  # the question's job is queued and not due yet
