"""Watching the running bot: the Procfile's gunicorn web (2 workers) and `chatgate worker` (2 worker
processes, many answers at once in each) on a Redis of their own, with JSON logs. Signed WeChat messages are
answered; then `/metrics`, read over HTTP from loopback, must add up what every process did, `/readyz`
must name what is down as it goes down, and every line either process wrote must be one JSON object.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests import wechat_sim
from tests.live import BIN, LiveBot
from tests.wechat_sim import text_xml

SETTINGS = {"WEB_CONCURRENCY": "2", "CHATGATE_WORKERS": "2", "CHATGATE_LOG_FORMAT": "json",
            "CHATGATE_LOG_LEVEL": "INFO", "WECHAT_REPLY_WAIT": "4.5", "CHATGATE_LLM_TIMEOUT": "20",
            "CHATGATE_RECONCILE_INTERVAL": "5"}


def figures(url: str, **kw) -> dict[tuple, float]:
    res = requests.get(url + "/metrics", timeout=10, **kw)
    assert res.status_code == 200, res.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(res.text) for s in family.samples}


def ready(url: str) -> tuple[int, dict]:
    res = requests.get(url + "/readyz", timeout=10)
    assert res.status_code in (200, 503) and res.headers["Content-Type"] == "application/json", res.text
    return res.status_code, res.json()


def wait_for(what, check, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, f"timed out waiting for {what}"
            return result
        time.sleep(0.3)


def post_once(url: str, openid: str, text: str, msg_id: int, replies: dict, timeout: float = 8) -> None:
    signed = wechat_sim.sign_encrypted(text_xml(openid, text, msg_id))
    res = requests.post(url + signed.path, data=signed.body, timeout=timeout)
    assert res.status_code == 200, res.text
    if res.text not in ("success", ""):
        replies[text] = wechat_sim.read_reply(res.text)["Content"]


def log_records(bot: LiveBot) -> list[dict]:
    lines = [line for line in bot.log().splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"a log line that is not JSON: {line!r}") from None
    return records


def test_the_running_bot_adds_up_its_metrics_says_what_is_down_and_logs_json(env, tmp_path, fake_wechat, fake_llm):
    bot = LiveBot(tmp_path, {**os.environ, **env, **SETTINGS})
    url = bot.start()
    try:
        status, body = wait_for("ready", lambda: (r := ready(url))[0] == 200 and r)
        assert body["failing"] == [] and body["checks"]["workers"]["detail"] == "2 alive"
        assert body["checks"]["llm"]["detail"] == "HTTP 200"

        # Questions answered within their post, in batches, until both web workers have admitted some.
        replies: dict[str, str] = {}
        questions: list[str] = []
        web_pids: set[int] = set()
        while len(web_pids) < 2 and len(questions) < 40:
            batch = [f"q-{len(questions) + i:03d}" for i in range(4)]
            threads = [threading.Thread(target=post_once, args=(url, f"oWatch{q}", q, 7500000000000000 + int(q[2:]),
                                                                  replies)) for q in batch]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            questions += batch
            web_pids = {r["pid"] for r in log_records(bot) if r.get("outcome") == "trial"}
        assert len(web_pids) == 2, "one gunicorn worker admitted every message"
        # Two questions the LLM is slow to answer: the post gives up and the worker pushes the answer.
        fake_llm.delay(6)
        slow = ["slow-1", "slow-2"]
        threads = [threading.Thread(target=post_once, args=(url, f"oWatch{q}", q, 7500000000001000 + i, replies))
                   for i, q in enumerate(slow)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        questions += slow
        asked = len(questions)
        wait_for("every answer", lambda: len(replies) + len(fake_wechat.sent) >= asked)
        passive = sum(1 for q in questions if replies.get(q) == f"echo: {q}")
        pushed = sum(1 for _, text in fake_wechat.sent if text.startswith("echo: "))
        assert passive + pushed == asked and pushed >= 2

        # /metrics adds up the two web workers and the two worker processes.
        def settled():
            f = figures(url)
            return f.get(("chatgate_llm_requests_total", (("outcome", "ok"),))) == asked and f
        f = wait_for("the workers' figures", settled)
        wechat = ("platform", "wechat")
        assert f[("chatgate_messages_total", (("outcome", "trial"), wechat))] == asked
        assert f[("chatgate_pages_sent_total", (("kind", "answer"), ("path", "passive_reply"), wechat))] == passive
        assert f[("chatgate_pages_sent_total", (("kind", "answer"), ("path", "push"), wechat))] == pushed
        assert f[("chatgate_llm_answer_seconds_count", ())] == asked
        assert f[("chatgate_llm_first_token_seconds_count", ())] == asked
        assert f[("chatgate_llm_first_token_seconds_bucket", (("le", "5.0"),))] == asked - 2  # the slow two
        assert f[("chatgate_llm_tokens_total", (("kind", "completion"),))] == sum(len(f"echo: {q}") for q in questions)
        assert f[("chatgate_wechat_held_posts", ())] == 0
        assert f[("chatgate_workers", ())] == 2 and f[("chatgate_redis_up", ())] == 1
        assert f[("chatgate_queue_jobs", (("state", "queued"),))] == 0
        assert not any(name == "chatgate_redeliveries_total" for name, _ in f)

        # Each file left belongs to a live process.
        metrics_dir = Path(env["CHATGATE_DB"]).parent / "metrics"
        owners = sorted(p.name.split("-")[0] for p in metrics_dir.iterdir() if p.is_dir())
        assert owners == ["web", "worker"]
        for path in metrics_dir.glob("*/*.db"):
            pid = re.search(r"_(\d+)\.db$", path.name)
            assert pid is None or os.path.exists(f"/proc/{pid.group(1)}"), f"{path.name} outlived its process"

        # Only loopback clients that did not come through a proxy.
        res = requests.get(url + "/metrics", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=5)
        assert res.status_code == 403 and "loopback" in res.text

        # The worker stops: not ready, naming the workers.
        os.killpg(bot.worker.pid, signal.SIGTERM)
        bot.worker.wait(timeout=30)
        status, body = ready(url)
        assert status == 503 and body["failing"] == ["workers"]
        # Redis dies: not ready, naming Redis; alive all the same; the figures still come.
        bot.kill_redis()
        status, body = ready(url)
        assert status == 503 and body["failing"] == ["redis"]
        assert requests.get(url + "/healthz", timeout=5).json() == {"ok": True}
        assert figures(url)[("chatgate_redis_up", ())] == 0
    finally:
        bot.stop()

    records = log_records(bot)  # every line, of every process, gunicorn's and RQ's included
    loggers = {r["logger"] for r in records}
    assert {"gunicorn.error", "rq.worker", "chatgate.web", "chatgate.worker"} <= loggers
    admitted = [r for r in records if r["logger"] == "chatgate.web" and r.get("outcome") == "trial"]
    assert len(admitted) == asked
    first = next(r for r in admitted if r["message_key"] == "7500000000000000")
    assert first["message"].startswith("wechat msg=7500000000000000 user=u")
    assert first["platform"] == "wechat" and first["kind"] == "text" and first["level"] == "INFO"
    assert isinstance(first["delivery_id"], int) and isinstance(first["user_id"], int)
    assert isinstance(first["admit_ms"], float)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    answered = [r for r in records if r.get("outcome") == "answered"]
    assert len(answered) == asked and all(r["llm_ms"] >= 0 and r["first_token_ms"] >= 0 for r in answered)
    assert any(r.get("failing") == "redis" for r in records if r["level"] == "WARNING")


def test_a_worker_told_to_stop_while_it_probes_the_llm_stops(env, tmp_path):
    """RQ stops an idle worker by raising StopRequested from its signal handler, wherever the worker
    is: in the middle of its upkeep (the LLM probe, the reconciler) it must not be taken for a failure."""
    stall = socket.socket()  # an LLM endpoint that accepts connections and never answers
    stall.bind(("127.0.0.1", 0))
    stall.listen(8)
    stall.settimeout(30)
    worker_env = {**os.environ, **env, "OPENAI_BASE_URL": f"http://127.0.0.1:{stall.getsockname()[1]}/v1",
                  "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(tmp_path / "worker.log", "wb") as out:
        proc = subprocess.Popen(["chatgate", "worker", "-n", "1"], env=worker_env, cwd=tmp_path, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        connection, _ = stall.accept()  # the probe is waiting for its answer now
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stall.close()
    connection.close()
    log = (tmp_path / "worker.log").read_text()
    assert proc.returncode == 0 and "warm shut down requested" in log, log
    assert "probe failed" not in log
