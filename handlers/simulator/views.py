"""The simulator's routes (see the package docstring for the API): the page, its JSON API, and the
simulated platform APIs the workers send to. Loopback clients only, never through a proxy: anyone
else gets 404, as if there were no simulator."""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

from flask import Blueprint, abort, current_app, jsonify, request, send_from_directory

from handlers.metrics import direct_from_loopback
from handlers.simulator import feishu_api, feishu_side, operator, wechat_api
from handlers.simulator.outbox import Outbox, conversation
from handlers.simulator.wechat_side import WeChatSide, event_xml, new_msg_id, text_xml, voice_xml

blueprint = Blueprint("simulator", __name__, url_prefix="/simulator")
feishu_blueprint = Blueprint("simulator_feishu_api", __name__)
"""The simulated Feishu API, at `/open-apis/...` of the web process (lark-oapi takes only an origin)."""

STATIC = Path(__file__).resolve().parent / "static"
USER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TEXT = 4000
"""The most characters one simulated message may carry (WeChat's own limit is about 2048 bytes)."""


class BadInput(Exception):
    """The request is malformed (400): the message says why."""


@blueprint.before_request
@feishu_blueprint.before_request
def local_only():
    """404 unless the client is on loopback and the request did not come through a proxy."""
    if not direct_from_loopback():
        abort(404)


@blueprint.errorhandler(BadInput)
@blueprint.errorhandler(operator.BadAction)
def bad_input(exc):
    return jsonify(error=str(exc)), 400


def _runtime():
    return current_app.extensions["chatgate"]


def _outbox() -> Outbox:
    return Outbox(_runtime().redis)


# -- the page ----------------------------------------------------------------------------------------

@blueprint.get("")
@blueprint.get("/")
def page():
    """The simulator page."""
    return send_from_directory(STATIC, "index.html", max_age=0)


@blueprint.get("/static/<path:filename>")
def static_file(filename):
    """The page's scripts, styles and images."""
    return send_from_directory(STATIC, filename, max_age=0)


# -- the JSON API ------------------------------------------------------------------------------------

@blueprint.get("/api/config")
def config():
    """What the page needs to draw itself: the platforms, words, trial size and the known users."""
    settings = _runtime().settings
    wechat = WeChatSide(settings) if settings.wechat_enabled else None
    simulated_feishu = "feishu" in settings.simulated
    return jsonify(
        wechat={"enabled": wechat is not None, "simulated": "wechat" in settings.simulated,
                "modes": [wechat.mode] if wechat else [], "mode": wechat.mode if wechat else None,
                "reply_mode": settings.wechat_reply_mode, "reply_wait": settings.wechat_reply_wait},
        feishu={"enabled": simulated_feishu, "bot_name": "chatgate",
                "bot_open_id": feishu_side.bot_open_id(settings) if simulated_feishu else None,
                "group_chat": feishu_side.GROUP_CHAT, "stream": settings.feishu_stream},
        continue_word=settings.wechat_continue_word, trial=settings.free_trial, demo_llm=settings.demo_llm,
        commands={name: list(words) for name, words in settings.command_words.items()},
        users=[{"platform": u["platform"], "user": u["user"], "label": u["label"],
                "following": u.get("following", True)} for u in _outbox().users()])


@blueprint.post("/api/users")
def new_user():
    """A new simulated user of a platform: `{"platform", "label"}` → `{"platform", "user", "label"}`."""
    body = _json()
    platform = _platform(body)
    user = ("o" + secrets.token_urlsafe(21)[:27]) if platform == "wechat" else "ou_" + secrets.token_hex(16)
    entry = _outbox().add_user(platform, user, str(body.get("label") or "")[:40])
    return jsonify(platform=platform, user=user, label=entry["label"])


@blueprint.post("/api/send")
def send():
    """One message from a simulated user, posted to the real webhook as the platform does."""
    body = _json()
    platform, user = _platform(body), _user(body)
    voice = bool(body.get("voice", False))
    text = body.get("text", "")
    if not isinstance(text, str) or len(text) > MAX_TEXT or (not text.strip() and not voice):
        raise BadInput(f"text must be 1-{MAX_TEXT} characters (a voice message may have none)")
    if platform == "wechat":
        return jsonify(_send_wechat(user, text, voice, body.get("mode")))
    return jsonify(_send_feishu(user, text, voice, body.get("mode") or "direct", body.get("mention", True)))


@blueprint.post("/api/event")
def event():
    """A WeChat follow (`subscribe`) or unfollow (`unsubscribe`) of a simulated user."""
    body = _json()
    if _platform(body) != "wechat":
        raise BadInput("events are WeChat's: Feishu users do not follow a bot")
    user, name = _user(body), body.get("event")
    if name not in ("subscribe", "unsubscribe"):
        raise BadInput("event must be subscribe or unsubscribe")
    side = _wechat_side()
    outbox = _outbox()
    outbox.follow("wechat", user, name == "subscribe")
    conv = conversation("wechat", user)
    seq = outbox.add(conv, sender="user", kind="event", text=name, user=user)
    exchange = side.exchange(user, event_xml(user, name, int(time.time())))
    _record_exchange(outbox, conv, user, exchange, "")
    return jsonify(ok=exchange.error is None, seq=seq, reply=exchange.reply, posts=exchange.posts,
                   error=exchange.error)


@blueprint.get("/api/conversation")
def conversation_view():
    """The messages of one conversation added or changed after `since`, and the last sequence number."""
    platform = _platform(request.args)
    user, chat = request.args.get("user", ""), request.args.get("chat", "")
    if platform == "feishu" and not chat:
        if not USER_ID.match(user):
            raise BadInput("user (or, for Feishu, chat) is required")
        chat = feishu_side.direct_chat(user)
    elif not USER_ID.match(user) and not chat:
        raise BadInput("user must be 1-64 letters, digits, _ or -")
    try:
        since = int(request.args.get("since", "0") or 0)
    except ValueError:
        raise BadInput("since must be a whole number") from None
    outbox = _outbox()
    conv = conversation(platform, user, chat)
    cards = feishu_api.RedisCards(_runtime().redis, outbox)
    messages, last = outbox.messages(conv, since, cards=cards.view)
    return jsonify(messages=messages, last=last, typing_until=outbox.typing_until(conv), chat=chat)


@blueprint.get("/api/panel")
def panel():
    """The user's trial, membership and ledger, as `chatgate user` shows them."""
    runtime = _runtime()
    return jsonify(operator.panel(runtime.store, runtime.settings, _platform(request.args), _user(request.args)))


@blueprint.post("/api/operator")
def operator_move():
    """grant days, add trial answers, or create a code, through the functions the CLI uses."""
    runtime = _runtime()
    body = _json()
    made = operator.act(runtime.store, body)
    if made:
        return jsonify(ok=True, **made)
    return jsonify(ok=True, **operator.panel(runtime.store, runtime.settings, _platform(body), _user(body)))


# -- the simulated platform APIs (the dev outbox) ----------------------------------------------------

@blueprint.route("/wechat-api/cgi-bin/<path:path>", methods=["GET", "POST"])
def wechat_platform_api(path):
    """WeChat's API for the simulated account (wechatpy in the workers calls it)."""
    runtime = _runtime()
    if "wechat" not in runtime.settings.simulated:
        abort(404)
    return wechat_api.route(path, runtime.settings, runtime.redis, _outbox())


@feishu_blueprint.route("/open-apis/<path:path>", methods=["GET", "POST", "PUT", "PATCH"])
def feishu_platform_api(path):
    """Feishu's API for the simulated app (lark-oapi in the web process and the workers calls it)."""
    runtime = _runtime()
    if "feishu" not in runtime.settings.simulated:
        abort(404)
    return feishu_api.route(path, runtime.settings, runtime.redis, _outbox())


# -- helpers -----------------------------------------------------------------------------------------

def _json() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadInput("the body must be a JSON object")
    return body


def _platform(source) -> str:
    platform = source.get("platform")
    if platform not in ("wechat", "feishu"):
        raise BadInput("platform must be wechat or feishu")
    return platform


def _user(source) -> str:
    user = source.get("user")
    if not isinstance(user, str) or not USER_ID.match(user):
        raise BadInput("user must be 1-64 letters, digits, _ or -")
    return user


def _wechat_side() -> WeChatSide:
    settings = _runtime().settings
    if not settings.wechat_enabled:
        raise BadInput("WeChat is not configured (set WECHAT_TOKEN, or CHATGATE_SIMULATOR_SECRET for the simulator's)")
    return WeChatSide(settings)


def _record_exchange(outbox, conv: str, user: str, exchange, reply_to: str) -> None:
    if exchange.reply is not None:
        outbox.add(conv, sender="bot", kind="text", text=exchange.reply, via="reply", user=user, reply_to=reply_to,
                   posts=exchange.posts)
    if exchange.error:
        outbox.add(conv, sender="system", kind="error", text=exchange.error, user=user)


def _send_wechat(user: str, text: str, voice: bool, mode) -> dict:
    side = _wechat_side()
    if mode not in (None, "", side.mode):
        raise BadInput(f"this account is in {side.mode} mode" + (
            ": set WECHAT_AES_KEY (43 letters and digits) to try safe mode" if side.mode == "plain"
            else ": unset WECHAT_AES_KEY to try plain mode"))
    outbox = _outbox()
    known = outbox.user("wechat", user) or outbox.add_user("wechat", user)
    if not known.get("following", True):
        raise BadInput("this user unfollowed the account: WeChat lets only followers write to it")
    msg_id = new_msg_id()
    now = int(time.time())
    xml = voice_xml(user, text, msg_id, now) if voice else text_xml(user, text, msg_id, now)
    conv = conversation("wechat", user)
    seq = outbox.add(conv, sender="user", kind="voice" if voice else "text", text=text, user=user,
                     message_id=str(msg_id))
    exchange = side.exchange(user, xml)
    _record_exchange(outbox, conv, user, exchange, str(msg_id))
    return {"ok": exchange.error is None, "message_id": str(msg_id), "seq": seq, "reply": exchange.reply,
            "posts": exchange.posts, "error": exchange.error}


def _send_feishu(user: str, text: str, voice: bool, mode, mention) -> dict:
    settings = _runtime().settings
    if "feishu" not in settings.simulated:
        raise BadInput("Feishu is not simulated here (a Feishu app is configured, or CHATGATE_SIMULATOR_SECRET "
                       "is unset)")
    if mode not in ("direct", "group"):
        raise BadInput("mode must be direct or group for Feishu")
    group = mode == "group"
    chat = feishu_side.GROUP_CHAT if group else feishu_side.direct_chat(user)
    outbox = _outbox()
    outbox.add_user("feishu", user)
    message_id = feishu_side.new_message_id()
    conv = conversation("feishu", user, chat)
    outbox.link(message_id, conv, user=user, chat=chat)
    mentioned = group and bool(mention)
    seq = outbox.add(conv, sender="user", kind="voice" if voice else "text", text=text, user=user, chat=chat,
                     message_id=message_id, mention=mentioned)
    event = feishu_side.message_event(settings, sender=user, chat_id=chat, group=group, text=text,
                                      mention=mentioned, voice=voice, message_id=message_id)
    error, took = feishu_side.post(settings, event)
    if error:
        outbox.add(conv, sender="system", kind="error", text=error, user=user, chat=chat)
    elif took > feishu_side.ACK_TIMEOUT_S:
        outbox.add(conv, sender="system", kind="notice", user=user, chat=chat,
                   text=f"the webhook acked after {took:.1f} s, past Feishu's 3 s: Feishu would push the event again")
    return {"ok": error is None, "message_id": message_id, "seq": seq, "chat": chat, "error": error,
            "ack_s": round(took, 3)}
