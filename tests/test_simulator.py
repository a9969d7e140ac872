"""The browser simulator's server side (`handlers/simulator/`), driven through its JSON API over HTTP:
the app served on a real port in development with the simulator's stand-in credentials, the real RQ
worker pushing through wechatpy and lark-oapi to the simulated platform APIs of that same server, the
fake LLM answering. What the page would show is read back from `/simulator/api/conversation`."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from werkzeug.serving import make_server

from tests import wechat_sim
from tests.live import free_port

SECRET = "5e" * 32
UNSET = ("WECHAT_TOKEN", "WECHAT_APP_ID", "WECHAT_APP_SECRET", "WECHAT_AES_KEY", "WECHAT_API_BASE")


class Simulator:
    """The simulator's API on a served app."""

    def __init__(self, url: str):
        self.url = url
        self.http = requests.Session()

    def get(self, path: str, **params):
        resp = self.http.get(self.url + path, params=params, timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def post(self, path: str, body: dict, status: int = 200):
        resp = self.http.post(self.url + path, json=body, timeout=30)
        assert resp.status_code == status, resp.text
        return resp.json()

    def user(self, platform: str = "wechat") -> str:
        return self.post("/simulator/api/users", {"platform": platform, "label": "tester"})["user"]

    def say(self, user: str, text: str, **kw) -> dict:
        return self.post("/simulator/api/send", {"platform": kw.pop("platform", "wechat"), "user": user,
                                                 "text": text, **kw})

    def conversation(self, user: str, platform: str = "wechat", chat: str = "", since: int = 0) -> dict:
        return self.get("/simulator/api/conversation", platform=platform, user=user, chat=chat, since=since)

    def bot_says(self, user: str, platform: str = "wechat", chat: str = "") -> list[tuple[str, str]]:
        """(via, text) of every bot message of the conversation."""
        messages = self.conversation(user, platform, chat)["messages"]
        return [(m["via"], m["text"]) for m in messages if m["from"] == "bot"]


@pytest.fixture
def sim_env(env, monkeypatch):
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    port = free_port()
    values = {"CHATGATE_ENV": "development", "CHATGATE_SIMULATOR_SECRET": SECRET, "PORT": str(port),
              "WECHAT_REPLY_WAIT": "0"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return {**{k: v for k, v in env.items() if k not in UNSET}, **values}


@pytest.fixture
def served(sim_env):
    """Serve the app (built from the environment at call time) on the port the settings name."""
    servers = []

    def start():
        from handlers.app import create_app

        app = create_app()
        server = make_server("127.0.0.1", int(sim_env["PORT"]), app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return Simulator(f"http://127.0.0.1:{sim_env['PORT']}")

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sim(served):
    return served()


def test_a_wechat_question_is_answered_by_a_push_and_a_command_passively(sim, run_worker, fake_llm):
    config = sim.get("/simulator/api/config")
    assert config["wechat"]["simulated"] and config["wechat"]["mode"] == "plain"
    user = sim.user()
    sent = sim.say(user, "what is chatgate?")
    assert sent["ok"] and sent["reply"] is None and sent["posts"] == 1  # acked: the answer comes later
    run_worker()
    assert sim.bot_says(user) == [("push", "echo: what is chatgate?")]
    assert fake_llm.calls[-1]["messages"][-1]["content"] == "what is chatgate?"

    reply = sim.say(user, "我的")["reply"]
    assert user in reply and "9" in reply  # the user's id and free answers left, as a passive reply
    messages = sim.conversation(user)["messages"]
    assert [(m["from"], m["kind"], m["via"]) for m in messages] == [
        ("user", "text", None), ("bot", "text", "push"), ("user", "text", None), ("bot", "text", "reply")]
    assert sim.conversation(user, since=messages[1]["seq"])["messages"] == messages[2:]


def test_a_voice_message_is_answered_from_its_recognition_text(sim, run_worker):
    user = sim.user()
    assert sim.say(user, "tell me a joke", voice=True)["ok"]
    run_worker()
    messages = sim.conversation(user)["messages"]
    assert messages[0]["kind"] == "voice"
    assert sim.bot_says(user) == [("push", "echo: tell me a joke")]


def test_a_held_post_carries_the_answer_as_wechat_posts_again(served, monkeypatch, run_worker, fake_llm):
    """WECHAT_REPLY_WAIT holds each post; unanswered, the post stays silent past WeChat's cut-off, the
    simulator posts the message again as WeChat does, and the answer comes back in that post's reply."""
    monkeypatch.setenv("WECHAT_REPLY_WAIT", "0.5")
    monkeypatch.setenv("WECHAT_REPLY_MODE", "passive")
    fake_llm.delay(1.5)  # longer than the first post's hold
    sim = served()
    user = sim.user()
    done = {}
    asking = threading.Thread(target=lambda: done.update(sim.say(user, "slow one")))
    asking.start()
    while not sim.conversation(user)["messages"]:
        pass
    run_worker()  # answers while the first post waits past WeChat's cut-off
    asking.join(timeout=30)
    assert done["ok"] and done["reply"] == "echo: slow one" and done["posts"] == 2
    assert sim.bot_says(user) == [("reply", "echo: slow one")]
    assert sim.conversation(user)["messages"][-1]["posts"] == 2


def test_a_safe_mode_account_gets_encrypted_posts_and_its_replies_are_decrypted(served, monkeypatch, run_worker):
    monkeypatch.setenv("WECHAT_AES_KEY", wechat_sim.AES_KEY)
    sim = served()
    assert sim.get("/simulator/api/config")["wechat"]["modes"] == ["safe"]
    user = sim.user()
    reply = sim.say(user, "帮助", mode="safe")["reply"]
    assert "兑换" in reply  # the help text, read back from the encrypted reply
    assert sim.post("/simulator/api/send", {"platform": "wechat", "user": user, "text": "hi", "mode": "plain"},
                    status=400)["error"].startswith("this account is in safe mode")
    sim.say(user, "secret question")
    run_worker()
    assert sim.bot_says(user)[-1] == ("push", "echo: secret question")


def test_a_long_answer_is_fetched_page_by_page_with_the_continue_word(served, monkeypatch, run_worker, fake_llm):
    monkeypatch.setenv("WECHAT_REPLY_MODE", "passive")
    sim = served()
    long_answer = "\n\n".join(f"part {i}: " + "字" * 500 for i in range(4))
    fake_llm.set_answer(long_answer)
    user = sim.user()
    assert sim.say(user, "a long one")["reply"] is None
    run_worker()
    pages = []
    for _ in range(6):
        reply = sim.say(user, "继续")["reply"]
        if reply is None or "part" not in reply:
            break
        pages.append(reply)
    assert len(pages) >= 2
    assert "继续" in pages[0]  # the hint that more is waiting
    assert all(f"part {i}" in "".join(pages) for i in range(4))
    assert [via for via, _ in sim.bot_says(user)][:len(pages)] == ["reply"] * len(pages)


def test_a_code_made_in_the_panel_and_redeemed_in_chat_restores_answers(served, monkeypatch, run_worker):
    monkeypatch.setenv("CHATGATE_FREE_TRIAL", "1")
    sim = served()
    user = sim.user()
    sim.say(user, "first")
    run_worker()
    assert sim.get("/simulator/api/panel", platform="wechat", user=user)["user"]["trial_left"] == 0
    over = sim.say(user, "second")["reply"]
    assert "used up" in over
    code = sim.post("/simulator/api/operator", {"action": "code", "days": 30})["code"]
    redeemed = sim.say(user, f"兑换 {code}")["reply"]
    assert "30" in redeemed
    panel = sim.get("/simulator/api/panel", platform="wechat", user=user)
    assert panel["user"]["member"] and panel["user"]["member_until"]
    assert panel["ledger"][0]["kind"] == "redeem" and panel["ledger"][0]["days"] == 30
    assert sim.say(user, "third")["reply"] is None
    run_worker()
    assert sim.bot_says(user)[-1] == ("push", "echo: third")


def test_the_operator_moves_change_the_panel_and_bad_ones_are_refused(sim):
    user = sim.user()
    sim.say(user, "help")
    granted = sim.post("/simulator/api/operator", {"action": "grant", "platform": "wechat", "user": user, "days": 7})
    assert granted["ok"] and granted["user"]["member"] and granted["ledger"][0]["kind"] == "member_grant"
    trial = sim.post("/simulator/api/operator", {"action": "trial", "platform": "wechat", "user": user, "count": 5})
    assert trial["user"]["trial_size"] == 15 and trial["user"]["trial_left"] == 15
    for body in ({"action": "grant", "platform": "wechat", "user": user, "days": 0},
                 {"action": "grant", "platform": "wechat", "user": user, "days": "7"},
                 {"action": "trial", "platform": "wechat", "user": user, "count": 10**9},
                 {"action": "grant", "platform": "wechat", "user": "o_nobody", "days": 1},
                 {"action": "refund", "platform": "wechat", "user": user},
                 {"action": "code", "days": 40000}):
        assert sim.post("/simulator/api/operator", body, status=400)["error"]
    assert sim.post("/simulator/api/send", {"platform": "qq", "user": user, "text": "hi"}, status=400)["error"]
    assert sim.post("/simulator/api/send", {"platform": "wechat", "user": "bad user!", "text": "hi"}, status=400)
    assert sim.post("/simulator/api/send", {"platform": "wechat", "user": user, "text": "hi", "mode": "safe"},
                    status=400)["error"].startswith("this account is in plain mode")


def test_following_gets_the_welcome_and_an_unfollowed_user_gets_no_pushes(sim):
    user = sim.user()
    welcome = sim.post("/simulator/api/event", {"platform": "wechat", "user": user, "event": "subscribe"})
    assert welcome["reply"].startswith("Welcome!")
    assert [(m["from"], m["kind"]) for m in sim.conversation(user)["messages"]] == [("user", "event"), ("bot", "text")]
    sim.post("/simulator/api/event", {"platform": "wechat", "user": user, "event": "unsubscribe"})
    assert sim.post("/simulator/api/send", {"platform": "wechat", "user": user, "text": "hi"},
                                 status=400)["error"].startswith("this user unfollowed")
    assert sim.get("/simulator/api/config")["users"][0]["following"] is False


def test_a_feishu_direct_message_is_answered_in_a_streamed_card(sim, run_worker, fake_llm):
    config = sim.get("/simulator/api/config")
    assert config["feishu"]["enabled"] and config["feishu"]["bot_open_id"].startswith("ou_")
    user = sim.user("feishu")
    sent = sim.say(user, "hello feishu", platform="feishu", mode="direct")
    assert sent["ok"], sent
    run_worker()
    bot = [m for m in sim.conversation(user, "feishu")["messages"] if m["from"] == "bot"]
    assert len(bot) == 1 and bot[0]["kind"] == "card" and bot[0]["via"] == "card"
    assert bot[0]["card"]["text"] == "echo: hello feishu" and bot[0]["card"]["streaming"] is False
    assert bot[0]["chat"] == sent["chat"]


def test_a_feishu_group_message_is_answered_only_when_the_bot_is_mentioned(sim, run_worker, fake_llm):
    user = sim.user("feishu")
    group = sim.get("/simulator/api/config")["feishu"]["group_chat"]
    assert sim.say(user, "not for you", platform="feishu", mode="group", mention=False)["ok"]
    run_worker()
    assert sim.bot_says(user, "feishu", group) == []
    assert fake_llm.calls == []
    assert sim.say(user, "for you", platform="feishu", mode="group", mention=True)["chat"] == group
    run_worker()
    assert sim.bot_says(user, "feishu", group) == [("card", "echo: for you")]
    assert fake_llm.calls[-1]["messages"][-1]["content"] == "for you"  # the @ key stripped


def test_the_simulator_answers_loopback_clients_only(sim):
    assert requests.get(sim.url + "/simulator", timeout=10).status_code == 200
    assert requests.get(sim.url + "/simulator/api/config", headers={"X-Forwarded-For": "203.0.113.9"},
                        timeout=10).status_code == 404
    from handlers.app import create_app

    client = create_app().test_client()
    assert client.get("/simulator", environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 404
    assert client.get("/simulator/api/config", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200


def test_production_has_no_simulator_and_refuses_its_secret(env, monkeypatch):
    from config import SettingsError, load_settings
    from handlers.app import create_app

    client = create_app().test_client()
    assert client.get("/simulator", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 404
    assert client.get("/simulator/wechat-api/cgi-bin/token").status_code == 404
    monkeypatch.setenv("CHATGATE_SIMULATOR_SECRET", SECRET)
    with pytest.raises(SettingsError, match="CHATGATE_SIMULATOR_SECRET"):
        load_settings()


def test_development_without_the_secret_has_no_simulator(sim_env, monkeypatch):
    monkeypatch.delenv("CHATGATE_SIMULATOR_SECRET")
    from handlers.app import create_app

    app = create_app()
    assert app.extensions["chatgate"].settings.simulated == ()
    assert app.test_client().get("/simulator").status_code == 404


def test_the_procfile_processes_answer_the_page_and_stream_feishu_cards(sim_env, live, fake_llm):
    """Under gunicorn's gevent workers the simulator posts to its own web process, and the worker
    process sends to the simulated APIs of that process: a WeChat answer comes back (passively, or
    pushed when the machine is slow), a slow one with the typing state shown meanwhile, and a Feishu
    card is seen streaming, then settled."""
    sim = Simulator(live(WECHAT_REPLY_WAIT="4"))
    user = sim.user()
    sent = sim.say(user, "hello live")
    assert sent["ok"] and 1 <= sent["posts"] <= 3
    _wait_for(lambda: ("echo: hello live" in [text for _, text in sim.bot_says(user)]), "the WeChat answer")

    fake_llm.delay(2.5)  # slow enough for the worker to show the typing state
    asking = threading.Thread(target=sim.say, args=(user, "slow live"))
    asking.start()
    _wait_for(lambda: sim.conversation(user)["typing_until"] is not None, "the typing state", poll=0.1)
    asking.join(timeout=30)
    _wait_for(lambda: ("echo: slow live" in [text for _, text in sim.bot_says(user)]), "the slow answer")
    assert sim.conversation(user)["typing_until"] is None  # the answer ended it
    fake_llm.delay(0)

    fake_llm.pieces, fake_llm.chunk_delay = 8, 0.4
    answer = "one two three four five six seven eight nine ten eleven twelve"
    fake_llm.set_answer(answer)
    member = sim.user("feishu")
    assert sim.say(member, "in the group", platform="feishu", mode="group")["ok"]
    group = sim.get("/simulator/api/config")["feishu"]["group_chat"]
    seen, last = [], 0

    def settled() -> bool:
        nonlocal last
        page = sim.conversation(member, "feishu", group, since=last)
        last = page["last"]
        seen.extend((m["seq"], m["card"]["text"], m["card"]["streaming"]) for m in page["messages"] if m["card"])
        return bool(seen) and seen[-1][2] is False

    _wait_for(settled, "the card settled", poll=0.1)
    assert len({seq for seq, *_ in seen}) == 1  # one message, redrawn in place
    assert any(on and answer.startswith(text) and len(text) < len(answer) for _, text, on in seen), seen
    assert seen[-1][1] == answer


def _wait_for(predicate, what: str, timeout: float = 30, poll: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def test_dev_env_gets_a_simulator_secret_new_or_added_once(tmp_path, monkeypatch, capsys):
    import dev
    from config import load_settings

    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "example.env").write_text((dev.ROOT / "config" / "example.env").read_text())
    monkeypatch.setattr(dev, "ROOT", tmp_path)
    for var in ("CHATGATE_ENV", "WECHAT_TOKEN", "WECHAT_APP_ID", "WECHAT_APP_SECRET", "WECHAT_AES_KEY",
                "WECHAT_API_BASE", "CHATGATE_SIMULATOR_SECRET", "OPENAI_API_KEY", "OPENAI_BASE_URL", "REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    dev.write_dev_env()
    env_file = tmp_path / ".env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    settings = load_settings(dotenv_path=env_file)
    assert len(settings.simulator_secret) == 64 and settings.simulated == ("wechat", "feishu")
    assert settings.wechat_api_base == f"http://127.0.0.1:{settings.port}/simulator/wechat-api"

    old = "CHATGATE_ENV=development\nWECHAT_TOKEN=abc123\n"
    env_file.write_text(old)
    dev.write_dev_env()
    dev.write_dev_env()
    text = env_file.read_text()
    assert text.startswith(old) and text.count("CHATGATE_SIMULATOR_SECRET=") == 1
    assert load_settings(dotenv_path=env_file).wechat_token == "abc123"  # its own token kept

    env_file.write_text("CHATGATE_ENV=production\n")
    dev.write_dev_env()
    assert env_file.read_text() == "CHATGATE_ENV=production\n"
