"""`/healthz`, `/readyz` and `/metrics` through the Flask app: a real SQLite file, a real Redis that can
be stopped, chatgate's real RQ worker, the real openai client probing the fake LLM. Whatever is
down, the answer is JSON (200 or 503 naming the part), never an error page."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import tempfile

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import wechat_sim
from tests.live import free_port
from tests.redis_server import RedisServer
from tests.wechat_sim import text_xml

OPENID = "oUser_health_01"


def ready(client):
    res = client.get("/readyz")
    assert res.status_code in (200, 503), res.data
    assert res.is_json, res.data
    return res.status_code, res.get_json()


def samples(text: str) -> dict[tuple, float]:
    """`{(name, (label pairs…)): value}` from a Prometheus text exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(client, **kw) -> dict[tuple, float]:
    res = client.get("/metrics", **kw)
    assert res.status_code == 200, res.data
    assert res.content_type == "text/plain; version=0.0.4; charset=utf-8"  # Prometheus' text format
    return samples(res.get_data(as_text=True))


def test_healthz_is_alive_with_nothing_checked(client):
    res = client.get("/healthz")
    assert res.status_code == 200 and res.get_json() == {"ok": True}


def test_readyz_names_the_workers_until_one_runs_and_then_reports_its_llm_probe(client, run_worker, fake_llm):
    status, body = ready(client)
    assert status == 503
    assert body["checks"]["database"]["ok"] is True and body["checks"]["redis"]["ok"] is True
    assert "workers" in body["failing"]
    assert body["checks"]["llm"] == {"ok": False,
                                     "detail": "not probed yet: a worker probes the endpoint when it starts"}

    run_worker()  # a burst: it probes the LLM at its start, then leaves
    probes = [r for r in fake_llm.requests if r.path == "/v1/models"]
    assert len(probes) == 1 and probes[0].headers["authorization"] == f"Bearer {os.environ['OPENAI_API_KEY']}"
    status, body = ready(client)
    assert status == 503 and body["failing"] == ["workers"]
    assert body["checks"]["llm"]["ok"] is True and body["checks"]["llm"]["detail"] == "HTTP 200"


def test_a_refused_llm_key_makes_the_llm_not_ready(env, monkeypatch, run_worker, fake_llm):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-0123")
    from handlers.app import create_app

    client = create_app().test_client()
    run_worker()
    status, body = ready(client)
    assert status == 503 and body["failing"] == ["workers", "llm"]
    assert body["checks"]["llm"]["detail"] == "the endpoint refused the key (HTTP 401)"


def test_readyz_names_the_database_while_another_connection_holds_the_write_lock(client, env):
    status, before = ready(client)
    assert before["checks"]["database"]["ok"] is True
    holder = sqlite3.connect(env["CHATGATE_DB"], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        status, body = ready(client)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert status == 503 and "database" in body["failing"]
    assert body["checks"]["database"]["detail"] == "write-locked by another connection for over 1s"
    assert 900 <= body["checks"]["database"]["ms"] < 3000
    assert ready(client)[1]["checks"]["database"]["ok"] is True


def test_readyz_names_the_database_when_the_file_is_gone_or_not_a_database(client, env):
    db = env["CHATGATE_DB"]
    for suffix in ("-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    os.replace(db, db + ".moved")
    status, body = ready(client)
    assert status == 503 and "database" in body["failing"]
    assert body["checks"]["database"]["detail"] == "unusable: unable to open database file"
    with open(db, "wb") as f:
        f.write(b"this is not a database" * 100)
    status, body = ready(client)
    assert status == 503 and body["checks"]["database"]["detail"] == "unusable: file is not a database"


def test_readyz_names_the_database_when_the_file_is_read_only(env, monkeypatch):
    """The file becomes unwritable after start (a volume remounted read-only, its owner changed). Root
    writes any file whatever its mode, so as root the check runs in a child process as `nobody`, on a
    database in a folder of its own that `nobody` may enter."""
    folder = tempfile.mkdtemp(prefix="chatgate-ro-")
    os.chmod(folder, 0o755)
    db = os.path.join(folder, "chatgate.db")
    monkeypatch.setenv("CHATGATE_DB", db)
    try:
        from handlers.app import create_app

        client = create_app().test_client()
        assert ready(client)[1]["checks"]["database"]["ok"] is True
        for path in (db, db + "-wal", db + "-shm"):
            if os.path.exists(path):
                os.chmod(path, 0o444)
        status, body = _ready_in_a_child(client, as_nobody=os.getuid() == 0)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert status == 503 and "database" in body["failing"], body
    assert body["checks"]["database"]["detail"] == "read-only: SQLite cannot write the file"


def _ready_in_a_child(client, *, as_nobody: bool) -> tuple[int, dict]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer one /readyz, report it through the pipe, and leave
        try:
            os.close(read)
            if as_nobody:
                os.setgid(65534)
                os.setuid(65534)
            res = client.get("/readyz")
            os.write(write, struct.pack("!H", res.status_code) + res.get_data())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return struct.unpack("!H", answer[:2])[0], json.loads(answer[2:])


def test_with_redis_gone_readyz_names_redis_healthz_stays_up_and_metrics_still_answer(env, monkeypatch):
    with RedisServer() as server:
        monkeypatch.setenv("REDIS_URL", server.url)
        from handlers.app import create_app

        client = create_app().test_client()
        assert ready(client)[1]["checks"]["redis"]["ok"] is True
        assert scrape(client)[("chatgate_redis_up", ())] == 1
    status, body = ready(client)
    assert status == 503 and body["failing"] == ["redis"]
    assert body["checks"]["redis"]["detail"] == "no answer (ConnectionError)"
    assert body["checks"]["workers"]["ok"] is None and body["checks"]["llm"]["ok"] is None
    assert client.get("/healthz").get_json() == {"ok": True}
    figures = scrape(client)
    assert figures[("chatgate_redis_up", ())] == 0 and not any(name == "chatgate_workers" for name, _ in figures)


def test_readyz_gives_up_on_a_redis_that_does_not_answer_within_a_second(env, monkeypatch):
    """A Redis that accepts the connection and never answers (a hung server, a black-holed route)."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", free_port()))
    listener.listen(8)
    try:
        monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
        from handlers.app import create_app

        status, body = ready(create_app().test_client())
    finally:
        listener.close()
    assert status == 503 and body["failing"] == ["redis"]
    assert body["checks"]["redis"]["detail"] == "no answer (TimeoutError)"
    assert body["checks"]["redis"]["ms"] < 2500


def test_development_without_a_key_reports_the_demo_responder(env, monkeypatch):
    monkeypatch.setenv("CHATGATE_ENV", "development")
    monkeypatch.delenv("OPENAI_API_KEY")
    from handlers.app import create_app

    body = ready(create_app().test_client())[1]
    assert body["checks"]["llm"] == {"ok": True, "detail": "the demo responder (development without OPENAI_API_KEY)"}


# -- /metrics --------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers,remote", [
    ({"X-Forwarded-For": "127.0.0.1"}, "127.0.0.1"),
    ({"X-Real-IP": "203.0.113.9"}, "127.0.0.1"),
    ({"Forwarded": "for=203.0.113.9"}, "127.0.0.1"),
    ({}, "10.0.0.5"),
    ({"Authorization": "Bearer anything"}, "203.0.113.9"),
], ids=["x-forwarded-for", "x-real-ip", "forwarded", "lan-client", "a-token-nobody-set"])
def test_without_a_token_metrics_answer_loopback_only(client, headers, remote):
    res = client.get("/metrics", headers=headers, environ_base={"REMOTE_ADDR": remote})
    assert res.status_code == 403 and res.content_type.startswith("text/plain")
    assert b"loopback clients only" in res.data
    assert scrape(client, environ_base={"REMOTE_ADDR": "::1"})


def test_metrics_speak_openmetrics_to_a_scraper_that_asks_for_it(client):
    res = client.get("/metrics", headers={"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"})
    assert res.status_code == 200 and res.content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert res.get_data(as_text=True).endswith("# EOF\n")


def test_with_a_token_metrics_answer_its_bearer_from_anywhere_and_nobody_else(env, monkeypatch):
    token = "metrics-token-0123456789abcdef"
    monkeypatch.setenv("CHATGATE_METRICS_TOKEN", token)
    from handlers.app import create_app

    client = create_app().test_client()
    for headers, remote in [({}, "127.0.0.1"), ({"Authorization": "Bearer wrong"}, "127.0.0.1"),
                            ({"Authorization": f"Basic {token}"}, "203.0.113.9"),
                            ({"Authorization": f"Bearer {token}x"}, "203.0.113.9")]:
        res = client.get("/metrics", headers=headers, environ_base={"REMOTE_ADDR": remote})
        assert res.status_code == 401, (headers, remote)
        assert res.headers["WWW-Authenticate"] == 'Bearer realm="metrics"' and token.encode() not in res.data
    for remote in ("203.0.113.9", "127.0.0.1"):
        assert scrape(client, headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": "198.51.100.1"},
                      environ_base={"REMOTE_ADDR": remote})


def test_metrics_count_admissions_redeliveries_and_the_pages_a_fetch_carried(env, monkeypatch, run_worker):
    """In one process (the tests' own; the real processes add up in tests/test_watching.py)."""
    monkeypatch.setenv("WECHAT_REPLY_MODE", "passive")
    from handlers.app import create_app

    client = create_app().test_client()

    def post(xml):
        signed = wechat_sim.sign_encrypted(xml)
        return client.post(signed.path, data=signed.body, content_type="text/xml")

    def figure(name, **labels):
        return scrape(client).get((name, tuple(sorted(labels.items()))), 0)

    before = {key: figure(*key[:1], **dict(key[1])) for key in [
        ("chatgate_messages_total", (("platform", "wechat"), ("outcome", "trial"))),
        ("chatgate_messages_total", (("platform", "wechat"), ("outcome", "command"))),
        ("chatgate_redeliveries_total", (("platform", "wechat"),)),
        ("chatgate_pages_sent_total", (("platform", "wechat"), ("path", "fetch"), ("kind", "answer")))]}
    question = text_xml(OPENID, "how are the figures?", 7400000000000001)
    assert post(question).data == b"success"
    assert post(question).data == b"success"  # WeChat posts it again
    run_worker()
    reply = post(text_xml(OPENID, "继续", 7400000000000002))
    assert "echo: how are the figures?" in wechat_sim.read_reply(reply.get_data(as_text=True))["Content"]
    after = {key: figure(*key[:1], **dict(key[1])) for key in before}
    assert [after[key] - before[key] for key in before] == [1, 1, 1, 1]
