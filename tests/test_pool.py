"""Many answers in flight in one worker process: the Procfile's gunicorn web and the real `chatgate worker`
(gevent, no fork per answer) on a Redis of their own, the fake LLM counting the calls it answers at
once. What is checked: answers in parallel, jobs that stay RQ jobs (registries, timeouts), the limits
(the LLM cap across processes, 429s, one answer at a time per user) and the worker's stops (warm:
answers finish; cold: tries given back at once).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from itertools import pairwise
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue, Worker
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from tests.live import Asker, LiveBot, ask_all, settle

ROOT = Path(__file__).resolve().parent.parent
FAST = {"WEB_CONCURRENCY": "2", "CHATGATE_WORKERS": "1", "CHATGATE_RECONCILE_INTERVAL": "1",
        "CHATGATE_RETRY_DELAYS": "1,1", "CHATGATE_LLM_TIMEOUT": "20", "WECHAT_REPLY_WAIT": "0",
        "CHATGATE_LOG_LEVEL": "INFO", "CHATGATE_STOP_GRACE": "20"}


@pytest.fixture
def bot(env, tmp_path, fake_wechat, fake_llm):
    b = LiveBot(tmp_path, {**os.environ, **env, **FAST})
    yield b
    b.stop()


def registry(bot: LiveBot, kind) -> list[str]:
    with Redis.from_url(bot.env["REDIS_URL"]) as r:
        return kind("chatgate", connection=r, serializer=JSONSerializer).get_job_ids()


def rows(bot: LiveBot, sql: str, *args) -> list[tuple]:
    db = sqlite3.connect(f"file:{bot.env['CHATGATE_DB']}?mode=ro", uri=True)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def wait_until(what: str, check, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


def test_fifty_users_with_a_slow_llm_are_answered_together_by_one_worker_process(bot, fake_llm, fake_wechat):
    bot.start()
    fake_llm.delay(2)
    started = time.monotonic()
    askers, questions, threads = ask_all(bot, 50, "many", 8200000000000001)
    wait_until("40 LLM calls at once", lambda: fake_llm.in_flight >= 40)
    assert len(registry(bot, StartedJobRegistry)) >= 40  # each answer is an RQ job, started, in RQ's registry
    fake_wechat.wait_for_sent(50, timeout=30)
    took = time.monotonic() - started
    for t in threads:
        t.join()
    settle(bot, askers, questions, fake_wechat)
    assert took < 8, f"50 answers of a 2 s LLM took {took:.1f}s"  # not 50 × 2 s
    assert fake_llm.peak >= 45
    with Redis.from_url(bot.env["REDIS_URL"]) as r:
        assert Worker.count(connection=r) == 1  # one process did it all
        queue = Queue("chatgate", connection=r, serializer=JSONSerializer)
        # RQ records a job finished just after its last page went out: wait for the last few to be recorded.
        finished = wait_until("50 jobs finished", lambda: (ids := FinishedJobRegistry(queue=queue).get_job_ids())
                              and len(ids) == 50 and ids)
        assert len(finished) == 50 and {queue.fetch_job(j).return_value() for j in finished} == {"delivered"}
    assert registry(bot, StartedJobRegistry) == [] and registry(bot, FailedJobRegistry) == []
    assert "MonkeyPatchWarning" not in bot.log()  # gevent patched the worker before ssl was imported


def test_a_job_past_its_timeout_fails_alone_while_the_others_run_on(bot):
    bot.env["PYTHONPATH"] = str(ROOT)  # the worker can import tests.jobs_for_selftest
    bot.start()
    with Redis.from_url(bot.env["REDIS_URL"]) as r:
        queue = Queue("chatgate", connection=r, serializer=JSONSerializer)
        slow = queue.enqueue("tests.jobs_for_selftest.nap", 30, job_timeout=2)
        quick = [queue.enqueue("tests.jobs_for_selftest.nap", 3, job_timeout=10) for _ in range(5)]
        started = time.monotonic()
        wait_until("the quick jobs", lambda: all(j.get_status() == "finished" for j in quick), timeout=15)
        wait_until("the slow job's failure", lambda: slow.get_status() == "failed", timeout=10)
        took = time.monotonic() - started
        assert took < 6, took  # side by side: the five 3 s naps and the one stopped after 2 s
        assert [j.return_value()["pid"] for j in quick] == [bot.worker.pid] * 5
        assert slow.id in FailedJobRegistry(queue=queue).get_job_ids()
        assert "JobTimeoutException" in slow.latest_result().exc_string


def test_the_llm_cap_holds_across_two_worker_processes(bot, fake_llm, fake_wechat, store):
    bot.start(CHATGATE_WORKERS="2", CHATGATE_LLM_CONCURRENCY="3")
    fake_llm.delay(1)
    askers, questions, threads = ask_all(bot, 12, "capped", 8200000000001001)
    for t in threads:
        t.join()
    settle(bot, askers, questions, fake_wechat)
    assert fake_llm.peak == 3 and len(fake_llm.calls) == 12
    with Redis.from_url(bot.env["REDIS_URL"]) as r:
        assert Worker.count(connection=r) == 2
    assert {row[0] for row in rows(bot, "SELECT attempts FROM deliveries")} == {1}  # waiting spent no try


def test_a_429_is_waited_out_within_the_try_and_every_call_holds_meanwhile(bot, fake_llm, fake_wechat):
    bot.start()
    fake_llm.fail(429, times=1, headers={"Retry-After": "2"})
    first = Asker(bot.url, "oRate0")
    first.say("rated-0", 8200000000002001)
    fake_llm.wait_for_calls(1)
    refused_at = fake_llm.requests[-1].at
    time.sleep(0.5)
    second = Asker(bot.url, "oRate1")
    second.say("rated-1", 8200000000002002)  # another answer: it holds until the 429's time has passed
    settle(bot, [first, second], {"rated-0": "oRate0", "rated-1": "oRate1"}, fake_wechat)
    calls = [r for r in fake_llm.requests if r.path == "/v1/chat/completions"]
    assert len(calls) == 3 and all(r.at >= refused_at + 1.9 for r in calls[1:])
    assert [row[0] for row in rows(bot, "SELECT attempts FROM deliveries ORDER BY id")] == [1, 1]
    assert "rate limiting (HTTP 429): every worker waits 2.0s" in bot.log()


def test_one_users_questions_go_in_the_order_asked_while_other_users_go_in_parallel(bot, fake_llm, fake_wechat):
    bot.start()
    fake_llm.delay(1)
    eager = Asker(bot.url, "oEager")
    others, questions, threads = ask_all(bot, 6, "other", 8200000000003101)
    for i in range(3):
        eager.say(f"eager-{i}", 8200000000003001 + i)  # acknowledged at once, one after the other
    questions.update({f"eager-{i}": "oEager" for i in range(3)})
    for t in threads:
        t.join()
    settle(bot, [eager, *others], questions, fake_wechat)
    mine = [text for to, text in fake_wechat.sent if to == "oEager"]
    assert mine == ["echo: eager-0", "echo: eager-1", "echo: eager-2"]
    calls = [(r.at, r.body["messages"]) for r in fake_llm.requests
             if r.path == "/v1/chat/completions" and r.body["messages"][-1]["content"].startswith("eager-")]
    assert all(later[0] - earlier[0] >= 0.95 for earlier, later in pairwise(calls))  # one at a time
    assert {"role": "assistant", "content": "echo: eager-1"} in calls[2][1]  # each after the one before
    first_other = min(r.at for r in fake_llm.requests if r.path == "/v1/chat/completions"
                      and r.body["messages"][-1]["content"].startswith("other-"))
    last_other = max(r.at for r in fake_llm.requests if r.path == "/v1/chat/completions"
                     and r.body["messages"][-1]["content"].startswith("other-"))
    assert last_other - first_other < 0.9  # the other users did not queue behind each other
    assert {row[0] for row in rows(bot, "SELECT attempts FROM deliveries")} == {1}
    assert "waits for delivery" in bot.log()  # its job ended; the one before queued it again


def test_a_warm_stop_finishes_the_answers_in_flight_and_takes_no_more(bot, fake_llm, fake_wechat):
    bot.start()
    fake_llm.delay(3)
    askers, questions, threads = ask_all(bot, 5, "warm", 8200000000004001)
    fake_llm.wait_for_calls(5)
    bot.stop_worker(signal.SIGTERM)
    late = Asker(bot.url, "oWarmLate")
    late.say("warm-late", 8200000000004101)  # queued after the stop began: left for the next worker
    assert bot.worker.wait(timeout=15) == 0
    assert sorted(text for _, text in fake_wechat.sent) == [f"echo: warm-{i:03d}" for i in range(5)]
    assert len(fake_llm.calls) == 5
    fake_llm.delay(0)
    bot.start_worker()
    for t in threads:
        t.join()
    settle(bot, [*askers, late], {**questions, "warm-late": "oWarmLate"}, fake_wechat)


def test_a_cold_stop_gives_the_tries_back_at_once(bot, fake_llm, fake_wechat, store):
    bot.start()
    fake_llm.delay(15)
    askers, questions, threads = ask_all(bot, 5, "cold", 8200000000005001)
    fake_llm.wait_for_calls(5)
    bot.stop_worker(signal.SIGTERM)
    time.sleep(1.2)
    stopped = time.monotonic()
    bot.stop_worker(signal.SIGINT)  # again: stop now
    assert bot.worker.wait(timeout=10) == 0 and time.monotonic() - stopped < 5
    assert rows(bot, "SELECT status, attempts FROM deliveries") == [("queued", 0)] * 5
    with Redis.from_url(bot.env["REDIS_URL"]) as r:
        assert len(Queue("chatgate", connection=r).job_ids) == 5  # queued again at once, not after a lease
    fake_llm.delay(0)
    bot.start_worker()
    for t in threads:
        t.join()
    result = settle(bot, askers, questions, fake_wechat)
    assert result.answered_once == 5
    assert {row[0] for row in rows(bot, "SELECT attempts FROM deliveries")} == {1}
    assert "given back" in bot.log()
