"""The simulated Feishu API (`/open-apis/...` at the web process root), what lark-oapi in the web process
and the workers talks to when the app is the simulator's: the tenant token, the bot's info (its
open_id, for the group @mention rule), replies to a message (text, or a card entity: they appear in the
message's conversation) and CardKit (`handlers/simulator/cardkit.py`, the cards kept in Redis, each
change of a card shown in its conversation as the card message changing in place).
"""

from __future__ import annotations

import dataclasses
import json
import threading

from flask import jsonify, request

from handlers.simulator.cardkit import Card, FakeCards
from handlers.simulator.feishu_side import bot_open_id, new_message_id
from handlers.simulator.outbox import PREFIX, TTL_S

CARD_OPS_KEPT = 12
"""The recent operations a stored card keeps (enough for CardKit's per-second rate rule)."""
THINKING_ELEMENT = "thinking"


class RedisCards(FakeCards):
    """CardKit's rules (`FakeCards`) over cards kept in Redis: each call loads the card it touches under a
    Redis lock, applies the rule and stores the card back, with a new sequence number of the outbox."""

    def __init__(self, redis, outbox):
        super().__init__(threading.Condition())
        self.redis, self.outbox = redis, outbox

    def _new_id(self) -> str:
        return str(7_400_000_000_000_000_000 + int(self.redis.incr(PREFIX + "card-seq")))

    def load(self, card_id: str) -> Card | None:
        raw = self.redis.get(PREFIX + "card:" + card_id)
        if raw is None:
            return None
        data = json.loads(raw)
        data.pop("changed", None)
        data["ops"] = [tuple(op) for op in data["ops"]]
        return Card(**data)

    def view(self, card_id: str) -> dict | None:
        """What the page shows of a card: its answer, thinking, whether it still streams, and the
        outbox sequence number of its last change (`changed`)."""
        raw = self.redis.get(PREFIX + "card:" + card_id)
        if raw is None:
            return None
        data = json.loads(raw)
        return {"card_id": card_id, "text": data["elements"].get("answer", ""),
                "thinking": data["elements"].get(THINKING_ELEMENT, ""), "streaming": data["streaming"],
                "summary": data.get("summary", ""), "changed": data.get("changed", 0)}

    def _save(self, card: Card) -> None:
        data = dataclasses.asdict(card)
        data["ops"] = [list(op) for op in card.ops[-CARD_OPS_KEPT:]]
        data["changed"] = self.outbox.bump()
        self.redis.set(PREFIX + "card:" + card.card_id, json.dumps(data, ensure_ascii=False), ex=TTL_S)

    def call(self, method: str, path: str, body: dict):
        """(status, body) of one CardKit call (see `FakeCards.route`), with the card kept in Redis."""
        parts = path.split("/")
        card_id = parts[5] if len(parts) > 5 else ""
        lock = self.redis.lock(PREFIX + "card-lock:" + (card_id or "new"), timeout=10, blocking_timeout=10)
        with lock:
            self.cards = {}
            if card_id:
                card = self.load(card_id)
                if card is not None:
                    self.cards[card_id] = card
            result = self.route(method, path, body)
            for card in self.cards.values():
                self._save(card)
            self.cards = {}
        return result


def route(path: str, settings, redis, outbox):
    """The response to one call of the simulated Feishu API at `path` (below `/open-apis/`)."""
    body = request.get_json(force=True, silent=True) or {}
    token = "t-" + PREFIX.replace(":", "-") + settings.feishu_app_id
    if path == "auth/v3/tenant_access_token/internal" and request.method == "POST":
        if (body.get("app_id"), body.get("app_secret")) != (settings.feishu_app_id, settings.feishu_app_secret):
            return jsonify(code=10014, msg="app secret invalid")
        return jsonify(code=0, msg="ok", tenant_access_token=token, expire=7200)
    if request.headers.get("Authorization") != f"Bearer {token}":
        return jsonify(code=99991663, msg="Invalid access token for authorization."), 400
    if path == "bot/v3/info" and request.method == "GET":
        return jsonify(code=0, msg="ok", bot={"activate_status": 2, "app_name": "chatgate",
                                              "open_id": bot_open_id(settings)})
    if path.startswith("cardkit/v1/cards"):
        status, answer = RedisCards(redis, outbox).call(request.method, "/open-apis/" + path, body)
        return jsonify(answer), status
    parts = path.split("/")
    if request.method == "POST" and len(parts) == 5 and parts[:3] == ["im", "v1", "messages"] and parts[4] == "reply":
        return _reply(parts[3], body, redis, outbox)
    return jsonify(code=404, msg=f"simulator: no API {request.method} /open-apis/{path}"), 404


def _reply(message_id: str, body: dict, redis, outbox):
    """A reply to a message the simulator sent: text, or a card entity."""
    asked = outbox.linked(message_id)
    if asked is None:
        return jsonify(code=230011, msg="the message was withdrawn or is not found"), 400
    try:
        content = json.loads(body.get("content") or "{}")
    except ValueError:
        return jsonify(code=230001, msg="content is not JSON"), 400
    kind, card_id = body.get("msg_type"), None
    if kind == "interactive":
        card_id = (content.get("data") or {}).get("card_id") if content.get("type") == "card" else None
        if not card_id or not redis.exists(PREFIX + "card:" + card_id):
            return jsonify(code=230099, msg="card content is not a card entity that exists"), 400
    elif kind != "text":
        return jsonify(code=230001, msg=f"simulator: msg_type {kind!r} not shown"), 400
    idem = body.get("uuid") or ""
    reply_id = new_message_id()
    if idem:
        first = outbox.once("feishu-reply:" + idem, reply_id)
        if first != reply_id:  # Feishu dedupes replies by uuid
            return jsonify(code=0, msg="success", data={"message_id": first})
    conv = asked["conv"]
    facts = {"user": asked.get("user", ""), "chat": asked.get("chat", ""), "reply_to": message_id}
    if card_id:
        outbox.add(conv, sender="bot", kind="card", via="card", card_id=card_id, **facts)
    else:
        outbox.add(conv, sender="bot", kind="text", text=str(content.get("text", "")), via="feishu_reply", **facts)
    outbox.link(reply_id, conv, user=asked.get("user", ""), chat=asked.get("chat", ""))
    return jsonify(code=0, msg="success", data={"message_id": reply_id})
