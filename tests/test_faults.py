"""Faults against the running bot: the Procfile's gunicorn web and `chatgate worker` on a Redis of their
own, WeChat posting each message with its real rhythm (three posts, 5 s apart, replies after 5 s
dropped). After each fault, every question must be answered exactly once or refunded and told exactly
once, charged once, and no page may have gone out twice.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time

import pytest
from redis import Redis
from rq import Queue
from rq.suspension import resume, suspend

from tests.live import Asker, LiveBot, ask_all, settle

FAST = {"WEB_CONCURRENCY": "2", "CHATGATE_WORKERS": "2", "CHATGATE_RECONCILE_INTERVAL": "1",
        "CHATGATE_RETRY_DELAYS": "1,1", "CHATGATE_LLM_TIMEOUT": "4", "WECHAT_REPLY_WAIT": "4.5",
        "CHATGATE_LOG_LEVEL": "INFO"}


@pytest.fixture
def bot(env, tmp_path, fake_wechat, fake_llm):
    b = LiveBot(tmp_path, {**os.environ, **env, **FAST})
    yield b
    b.stop()


def test_the_worker_killed_with_many_answers_in_flight_answers_each_once_after_its_restart(bot, fake_llm,
                                                                                          fake_wechat, store):
    """A host crash or the OOM killer: the worker process dies with 20 answers in flight, their tries
    unsettled. The reconciler restarts each when its lease runs out; none is answered twice."""
    bot.start(CHATGATE_LLM_TIMEOUT="2", WECHAT_REPLY_WAIT="0", CHATGATE_WORKERS="1")  # a lease of 2 + 30 + 15 s
    fake_llm.delay(1.5)
    askers, questions, threads = ask_all(bot, 20, "killmany", 8100000000000001)
    fake_llm.wait_for_calls(20)
    bot.kill_worker()
    bot.start_worker()
    for t in threads:
        t.join()
    settle(bot, askers, questions, fake_wechat, timeout=90)
    assert sum(map(int, re.findall(r"dead tries restarted (\d+)", bot.log()))) == 20  # in one pass or a few
    assert {d["attempts"] for a in askers for d in store.deliveries(store.find_user("wechat", a.openid)["id"])} == {2}


def test_the_worker_killed_on_a_last_try_refunds_and_tells_once(bot, fake_llm, fake_wechat, store):
    """The try that dies with its worker is the question's last: when its lease runs out the reconciler
    gives it up, refunded and told once."""
    bot.start(CHATGATE_LLM_TIMEOUT="2", WECHAT_REPLY_WAIT="0")
    fake_llm.fail(500, times=2)
    askers, questions, threads = ask_all(bot, 1, "killlast", 8100000000000101)
    fake_llm.wait_for_calls(2, timeout=30)
    fake_llm.delay(1.5)
    fake_llm.wait_for_calls(3, timeout=30)
    bot.kill_worker()
    bot.start_worker()
    for t in threads:
        t.join()
    result = settle(bot, askers, questions, fake_wechat, timeout=90)
    assert result.refunded_and_told == 1 and "dead last tries given up 1" in bot.log()
    user = store.find_user("wechat", askers[0].openid)
    assert user["trial_used"] == 0
    assert [r["kind"] for r in store.ledger(user["id"])] == ["trial_start", "trial_use", "trial_refund"]


@pytest.mark.parametrize("last", [False, True], ids=["first-try", "every-try"])
def test_a_try_killed_by_its_job_timeout_is_tried_again_or_refunded_once(bot, fake_llm, fake_wechat, store, last):
    """RQ's job timeout ends a try that hangs (here: an LLM slower than the job's 2 s timeout, within the
    answer's own deadline) in its greenlet only; the try settles itself: tried again, or, after the last,
    refunded and told."""
    bot.start(CHATGATE_LLM_TIMEOUT="20", WECHAT_REPLY_WAIT="0")
    fake_llm.delay(5)
    with Redis.from_url(bot.env["REDIS_URL"]) as r:
        suspend(r)  # while the question is queued, its job is given a 2 s timeout
        time.sleep(1.5)
        askers, questions, threads = ask_all(bot, 1, f"jobtimeout{int(last)}", 8100000000000301 + int(last))
        for t in threads:
            t.join()
        [job_id] = Queue("chatgate", connection=r).job_ids
        r.hset(f"rq:job:{job_id}", "timeout", 2)
        resume(r)
    fake_llm.wait_for_calls(1, timeout=20)
    if not last:
        fake_llm.delay(0)
    result = settle(bot, askers, questions, fake_wechat, timeout=60)
    [d] = store.deliveries(store.find_user("wechat", askers[0].openid)["id"])
    assert "JobTimeoutException" in bot.log()
    if last:
        assert result.refunded_and_told == 1 and d["attempts"] == 3 and len(fake_llm.calls) == 3
    else:
        assert result.answered_once == 1 and d["attempts"] == 2 and len(fake_llm.calls) == 2


@pytest.mark.parametrize("fault", ["killed", "wiped"])
def test_redis_killed_or_wiped_mid_run_loses_no_question(bot, fake_llm, fake_wechat, fault):
    bot.start()
    fake_llm.delay(2)
    askers, questions, threads = ask_all(bot, 6, f"redis{fault}", 8100000000001001 + 100 * (fault == "wiped"))
    fake_llm.wait_for_calls(2)
    if fault == "killed":
        bot.kill_redis()
        time.sleep(3)
        bot.restart_redis()  # empty: no persistence, the worst case
    else:
        bot.wipe_redis()
    more = [a.say_in_background(f"after-{fault}-{i}", 8100000000002001 + i + 100 * (fault == "wiped"))
            for i, a in enumerate(askers[:2])]
    questions.update({f"after-{fault}-{i}": a.openid for i, a in enumerate(askers[:2])})
    for t in threads + more:
        t.join()
    settle(bot, askers, questions, fake_wechat, timeout=90)


def test_the_push_api_down_then_back_delivers_each_answer_once(bot, fake_llm, fake_wechat):
    bot.start(WECHAT_REPLY_WAIT="0")  # acknowledge at once: every answer has to be pushed
    fake_wechat.down_for(12)
    askers, questions, threads = ask_all(bot, 4, "pushdown", 8100000000003001)
    for t in threads:
        t.join()
    settle(bot, askers, questions, fake_wechat, timeout=60)
    assert fake_wechat.refused_sends >= 4


def test_a_push_refused_for_good_is_answered_with_the_next_message(bot, fake_llm, fake_wechat, store):
    bot.start(WECHAT_REPLY_WAIT="0")
    fake_wechat.fail_send(40164, times=None, errmsg="invalid ip, not in whitelist")
    askers, questions, threads = ask_all(bot, 3, "refused", 8100000000004001)
    for t in threads:
        t.join()
    fake_llm.wait_for_calls(3)
    time.sleep(2)  # the pushes are refused; the answers wait
    assert fake_wechat.sent == []
    for i, a in enumerate(askers):
        a.say("thanks", 8100000000004101 + i)  # the reply carries the earlier answer
    settle(bot, askers, questions, fake_wechat)
    assert all("echo: refused-" in a.replies[0] for a in askers)
    for a in askers:
        assert store.find_user("wechat", a.openid)["trial_used"] == 2  # both questions, each once


def test_an_llm_failing_a_fifth_of_its_calls_answers_or_refunds_each_question_once(bot, fake_llm, fake_wechat):
    bot.start()
    fake_llm.flaky(0.2, stall=6, seed=7)  # half 500s, half stalls past CHATGATE_LLM_TIMEOUT
    askers, questions, threads = ask_all(bot, 10, "flaky", 8100000000005001)
    for t in threads:
        t.join()
    settle(bot, askers, questions, fake_wechat, timeout=90)


def test_a_sqlite_write_lock_held_across_wechats_five_seconds(bot, fake_llm, fake_wechat):
    bot.start()
    fake_llm.delay(2.5)
    askers, questions, threads = ask_all(bot, 3, "locked", 8100000000006001)
    locked = threading.Event()

    def hold_the_lock():
        db = sqlite3.connect(bot.env["CHATGATE_DB"], timeout=30, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")  # as a long operator command or a backup would
        locked.set()
        time.sleep(5.5)
        db.execute("COMMIT")
        db.close()

    time.sleep(2)
    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    locked.wait()
    for t in threads + [holder]:
        t.join()
    settle(bot, askers, questions, fake_wechat)


def test_a_reply_that_could_not_reach_wechat_in_time_is_served_to_the_next_post(bot, fake_llm, fake_wechat, store):
    """Behaviour 5: a passive reply held up past WeChat's 5 s (here by a SQLite write lock) never
    arrives; WeChat posts again, and that post gets the page."""
    bot.start(WECHAT_REPLY_MODE="passive", WECHAT_REPLY_WAIT="0")
    asker = Asker(bot.url, "oLateReply")
    asker.say("late-000", 8100000000007001)  # acknowledged at once; the answer waits for 继续
    deadline = time.monotonic() + 20
    while not store.find_user("wechat", asker.openid) or store.deliveries(
            store.find_user("wechat", asker.openid)["id"])[0]["status"] != "answered":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    db = sqlite3.connect(bot.env["CHATGATE_DB"], timeout=30, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")  # every post's admission now waits until the lock is gone
    fetch = asker.say_in_background("继续", 8100000000007002)
    time.sleep(6.5)  # past WeChat's cut-off for the first post of 继续
    db.execute("COMMIT")
    db.close()
    fetch.join()
    settle(bot, [asker], {"late-000": asker.openid}, fake_wechat)
    assert asker.posts == 3 and asker.replies == ["echo: late-000"]
