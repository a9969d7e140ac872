"""No secret in any log line at any level: the redaction itself on the lines the SDKs really write,
then DEBUG logs of the Procfile's processes (WeChat) and of the in-process app and RQ worker (Feishu)
while a question is answered end to end."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest
import requests

from config.logs import FORMAT, MARK, JsonFormatter, install_redaction, redact, secrets_of
from tests import feishu_sim as fs
from tests import wechat_sim
from tests.conftest import LLM_KEY
from tests.live import free_port
from tests.redis_server import RedisServer
from tests.wechat_sim import text_xml

OPENID = "oUser_logs_01"
REDIS_PASSWORD = "redis-pass-for-tests"
SECRETS = [wechat_sim.APP_SECRET, wechat_sim.TOKEN, wechat_sim.AES_KEY, LLM_KEY, fs.APP_SECRET,
           fs.VERIFICATION_TOKEN, fs.ENCRYPT_KEY, REDIS_PASSWORD]


@pytest.fixture
def redacting():
    install_redaction(SECRETS)


@pytest.mark.parametrize("line,expected", [
    ('http://127.0.0.1:8001 "GET /cgi-bin/token?grant_type=client_credential&appid=wx0123456789abcdef'
     '&secret=app-secret-for-tests HTTP/1.1" 200 47',
     'http://127.0.0.1:8001 "GET /cgi-bin/token?grant_type=client_credential&appid=wx0123456789abcdef'
     '&secret=[redacted] HTTP/1.1" 200 47'),
    ('https://api.weixin.qq.com:443 "POST /cgi-bin/message/custom/send?access_token=87_AbC-dEf HTTP/1.1" 200 27',
     'https://api.weixin.qq.com:443 "POST /cgi-bin/message/custom/send?access_token=[redacted] HTTP/1.1" 200 27'),
    ("HTTPSConnectionPool(host='api.weixin.qq.com', port=443): Max retries exceeded with url: "
     "/cgi-bin/token?grant_type=client_credential&appid=wx01&secret=0f1e2d3c4b5a69788796a5b4c3d2e1f0 "
     "(Caused by NewConnectionError('Failed to establish a new connection: [Errno 111] Connection refused'))",
     "HTTPSConnectionPool(host='api.weixin.qq.com', port=443): Max retries exceeded with url: "
     "/cgi-bin/token?grant_type=client_credential&appid=wx01&secret=[redacted] "
     "(Caused by NewConnectionError('Failed to establish a new connection: [Errno 111] Connection refused'))"),
    ("Request options: {'method': 'post', 'url': '/chat/completions', 'headers': "
     "{'Authorization': 'Bearer sk-proj-0123456789abcdef', 'X-Stainless-Lang': 'python'}}",
     "Request options: {'method': 'post', 'url': '/chat/completions', 'headers': "
     "{'Authorization': '[redacted]', 'X-Stainless-Lang': 'python'}}"),
    ("send_request_headers.started request=<Request [b'POST']> headers=[(b'Host', b'api.openai.com'), "
     "(b'Authorization', b'Bearer sk-test-0123456789'), (b'api-key', b'azure0123456789')]",
     "send_request_headers.started request=<Request [b'POST']> headers=[(b'Host', b'api.openai.com'), "
     "(b'Authorization', b'[redacted]'), (b'api-key', b'[redacted]')]"),
    ("POST /open-apis/im/v1/messages/om_1/reply Authorization: Bearer t-g1044ghJRUIJJ5ELQOKAIZX5TJ3Y4VRXBHFNXQ5T",
     "POST /open-apis/im/v1/messages/om_1/reply Authorization: Bearer [redacted]"),
    ('{"code":0,"msg":"ok","tenant_access_token":"t-g1044ghJRUIJJ5ELQOKAIZX5TJ3Y4VRXBHFNXQ5T","expire":7200}',
     '{"code":0,"msg":"ok","tenant_access_token":"[redacted]","expire":7200}'),
    ('{"app_id": "cli_a1b2c3d4e5f6", "app_secret": "an-app-secret-not-configured"}',
     '{"app_id": "cli_a1b2c3d4e5f6", "app_secret": "[redacted]"}'),
    ("Error 111 connecting to redis://default:s3cr3t-pa55@redis.example.com:6379/0. Connection refused.",
     "Error 111 connecting to redis://default:[redacted]@redis.example.com:6379/0. Connection refused."),
    ("decrypted with tok3nForTests and abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG for redis-pass-for-tests",
     "decrypted with [redacted] and [redacted] for [redacted]"),
    ("connected to wss://msg-frontier.feishu.cn/ws/v2?fpid=493&aid=552564&device_id=7618153736343260346"
     "&access_key=04266e24eb8083bc73ff5c058f0d086a&service_id=33554678&ticket=855f82fe-5f23-4953-a8c7 [conn_id=76]",
     "connected to wss://msg-frontier.feishu.cn/ws/v2?fpid=493&aid=552564&device_id=7618153736343260346"
     "&access_key=[redacted]&service_id=33554678&ticket=[redacted] [conn_id=76]"),
    ("wechat msg=8001 user=u1 kind=text outcome=trial trial_left=9",
     "wechat msg=8001 user=u1 kind=text outcome=trial trial_left=9"),
    ('HTTP Request: POST http://127.0.0.1:8002/v1/chat/completions "HTTP/1.1 200 OK"',
     'HTTP Request: POST http://127.0.0.1:8002/v1/chat/completions "HTTP/1.1 200 OK"'),
], ids=["urllib3-token", "urllib3-push", "requests-error", "openai-options", "httpcore-headers", "lark-header",
        "lark-token-body", "app-secret-field", "redis-url", "by-value", "lark-long-connection", "our-line",
        "httpx-line"])
def test_sample_lines_keep_what_happened_and_lose_the_secrets(redacting, line, expected):
    assert redact(line) == expected


def test_short_values_are_not_redacted_by_value_but_credential_shapes_still_are():
    install_redaction(["abc", "wechat"])
    assert redact("wechat msg=1 abc") == "wechat msg=1 abc"
    assert redact("GET /x?token=abc") == f"GET /x?token={MARK}"


def test_the_configured_secrets_include_the_redis_password_and_not_the_redis_url():
    from config import load_settings

    settings = load_settings({"CHATGATE_ENV": "development", "REDIS_URL": "redis://:pa%40ss-word@10.0.0.5:6379/0",
                              "WECHAT_APP_SECRET": "wx-secret", "OPENAI_API_KEY": "sk-1"}, dotenv_path="/nonexistent")
    assert sorted(secrets_of(settings)) == ["pa%40ss-word", "pa@ss-word", "sk-1", "wx-secret"]


def test_every_logger_is_redacted_whatever_its_handler_with_the_traceback_and_the_stack(redacting):
    """A logger with its own handler and no propagation, as RQ and gunicorn set theirs up, logging a
    real requests ConnectionError: the message, the exception's text and the stack are all clean."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter(FORMAT))
    log = logging.getLogger("tests.own-handler")
    log.addHandler(handler)
    log.propagate = False
    url = f"http://127.0.0.1:{free_port()}/cgi-bin/token"  # nothing listens there
    try:
        requests.get(url, params={"grant_type": "client_credential", "appid": wechat_sim.APP_ID,
                                  "secret": wechat_sim.APP_SECRET}, timeout=2)
    except requests.ConnectionError as exc:
        log.exception("token fetch failed: %s", exc, stack_info=True)
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert wechat_sim.APP_SECRET not in text
    assert "token fetch failed: HTTPConnectionPool(host='127.0.0.1'" in text
    assert text.count(f"/cgi-bin/token?grant_type=client_credential&appid={wechat_sim.APP_ID}&secret={MARK}") >= 3
    assert "Traceback (most recent call last)" in text and "requests.exceptions.ConnectionError" in text
    assert "Stack (most recent call last)" in text


def test_a_log_call_with_arguments_that_do_not_fit_is_written_not_raised(redacting, caplog):
    caplog.set_level(logging.INFO)
    logging.getLogger("tests.bad-args").info("token %s and %s", "secret=app-secret-for-tests")
    assert f"'token %s and %s' % ('secret={MARK}',)" in caplog.text


def json_lines(logger_name: str, emit) -> list[dict]:
    """What `emit(log)` writes through a JsonFormatter, one parsed object per line."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger(logger_name)
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        emit(log)
    finally:
        log.removeHandler(handler)
    lines = out.getvalue().splitlines()
    return [json.loads(line) for line in lines]


def test_a_json_line_carries_the_fields_and_redacts_the_message_and_every_field(redacting):
    def emit(log):
        log.info("wechat msg=%s outcome=%s via %s", "8001", "trial", "access_token=abc123XYZ",
                 extra={"platform": "wechat", "message_key": "8001", "delivery_id": 7, "user_id": 3,
                        "outcome": "trial", "admit_ms": 1.5, "reason": f"Bearer {LLM_KEY}",
                        "detail": {"app_secret": wechat_sim.APP_SECRET, "tries": [1, wechat_sim.TOKEN]}})
    [line] = json_lines("tests.json", emit)
    assert line["message"] == f"wechat msg=8001 outcome=trial via access_token={MARK}"
    assert (line["level"], line["logger"], line["platform"], line["message_key"]) == ("INFO", "tests.json", "wechat",
                                                                                      "8001")
    assert (line["delivery_id"], line["user_id"], line["outcome"], line["admit_ms"]) == (7, 3, "trial", 1.5)
    assert line["reason"] == f"Bearer {MARK}"
    assert line["detail"] == {"app_secret": MARK, "tries": [1, MARK]}
    assert isinstance(line["pid"], int) and line["time"].endswith("Z")


def test_a_json_line_holds_its_traceback_redacted_on_one_line(redacting):
    def emit(log):
        try:
            raise RuntimeError(f"failed with secret={wechat_sim.APP_SECRET}\nand a second line")
        except RuntimeError:
            log.exception("it broke for %s", "u1", extra={"delivery_id": 9})
    [line] = json_lines("tests.json-exc", emit)
    assert line["message"] == "it broke for u1" and line["delivery_id"] == 9
    assert "Traceback (most recent call last)" in line["exc"] and f"secret={MARK}" in line["exc"]
    assert wechat_sim.APP_SECRET not in json.dumps(line)


def test_lark_writes_through_the_root_handler_only():
    from handlers.feishu.send import _lark

    _lark()
    lark = logging.getLogger("Lark")
    assert lark.handlers == [] and lark.propagate


# -- end to end --------------------------------------------------------------------------------


@pytest.fixture
def redis_with_password():
    """A Redis of its own that requires a password, and the REDIS_URL that carries it."""
    with RedisServer() as server:
        server.client().config_set("requirepass", REDIS_PASSWORD)
        yield f"{server.url}?password={REDIS_PASSWORD}"


def wait_for_text(path, needle: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace")
        if needle in text:
            return text
        time.sleep(0.2)
    raise TimeoutError(f"{needle!r} not in {path}:\n{path.read_text()[-3000:]}")


def test_debug_logs_of_web_and_worker_name_every_call_and_hold_no_secret(redis_with_password, live, env, fake_wechat,
                                                                        fake_llm, tmp_path):
    # (redis_with_password first: it is then torn down after the processes that use it)
    url = live(CHATGATE_LOG_LEVEL="DEBUG", REDIS_URL=redis_with_password, WECHAT_REPLY_WAIT="0")
    fake_llm.set_answer("pushed by the worker")
    signed = wechat_sim.sign_encrypted(text_xml(OPENID, "what do the logs say?", 7300000000000001))
    assert requests.post(url + signed.path, data=signed.body, timeout=5).text == "success"
    assert fake_wechat.wait_for_sent(1, timeout=30) == [(OPENID, "pushed by the worker")]
    text = wait_for_text(tmp_path / "procs.log", "/cgi-bin/message/custom/send")
    assert len(fake_llm.calls) == 1 and fake_wechat.valid_tokens
    for secret in [*(env[name] for name in ("WECHAT_APP_SECRET", "WECHAT_TOKEN", "WECHAT_AES_KEY",
                                            "OPENAI_API_KEY")), REDIS_PASSWORD, *fake_wechat.valid_tokens]:
        assert secret not in text
    # DEBUG still says which call was made, to where, and how it went.
    assert (f'"GET /cgi-bin/token?grant_type=client_credential&appid={wechat_sim.APP_ID}&secret={MARK} '
            'HTTP/1.1" 200') in text
    assert f'"POST /cgi-bin/message/custom/send?access_token={MARK} HTTP/1.1" 200' in text
    assert f"POST {fake_llm.url}/chat/completions" in text
    assert "wechat msg=7300000000000001" in text


def test_feishu_debug_logs_of_webhook_and_worker_hold_no_secret(feishu, feishu_env, run_worker, fake_feishu,
                                                               fake_llm, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    handler = logging.FileHandler(tmp_path / "feishu.log")  # the webhook and the worker write here
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger().addHandler(handler)
    try:
        event = fs.message_event(text="@_user_1 hello", chat_type="group", mentions=[("@_user_1", fs.BOT_OPEN_ID)])
        assert feishu(event).status_code == 200
        run_worker()
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert [text for _, text, _ in fake_feishu.replies] == ["echo: hello"]
    text = caplog.text + (tmp_path / "feishu.log").read_text()
    for secret in [fs.APP_SECRET, fs.VERIFICATION_TOKEN, fs.ENCRYPT_KEY, "t-fake-tenant-token", LLM_KEY]:
        assert secret not in text
    assert '"POST /open-apis/auth/v3/tenant_access_token/internal HTTP/1.1" 200' in text
    assert '"GET /open-apis/bot/v3/info HTTP/1.1" 200' in text
    message_id = event["event"]["message"]["message_id"]
    assert f'"POST /open-apis/im/v1/messages/{message_id}/reply HTTP/1.1" 200' in text
