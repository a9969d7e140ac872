"""The simulator's conversations, kept in Redis (every gunicorn process and the workers' pushes share
them), for a week after their last message: what each simulated user sent, what the bot replied
passively, and everything the workers sent to the simulated platform APIs (the dev outbox).

One sequence number counts every change of every conversation (`chatgate:simulator:seq`): a message
gets the next one when it is added, and a card message (a Feishu streaming card) gets a new one
each time its card changes, so `messages(since=n)` returns what is new or changed after n.
Nothing here is durable or counted: the store (SQLite) stays the truth about answers and money.
"""

from __future__ import annotations

import json
import time

PREFIX = "chatgate:simulator:"
TTL_S = 7 * 86400
"""Conversations, users and cards are forgotten a week after their last change."""
TYPING_S = 15
"""WeChat shows a typing state for up to 15 s, or until a message arrives."""


def conversation(platform: str, user: str, chat: str = "") -> str:
    """The conversation a message belongs to: a WeChat user's chat with the account, or a Feishu chat
    (a direct chat or a group) by its chat id."""
    return f"feishu:{chat}" if platform == "feishu" and chat else f"{platform}:{user}"


class Outbox:
    """Conversations, simulated users, message ids and cards, in Redis."""

    def __init__(self, redis):
        self.redis = redis

    # -- messages ----------------------------------------------------------------------------------

    def add(self, conv: str, *, sender: str, kind: str, text: str = "", via: str | None = None,
            card_id: str | None = None, user: str = "", chat: str = "", **extra) -> int:
        """Append one message to conversation `conv`; returns its sequence number."""
        seq = int(self.redis.incr(PREFIX + "seq"))
        message = {"seq": seq, "at": time.time(), "from": sender, "kind": kind, "text": text, "via": via,
                   "card_id": card_id, "user": user, "chat": chat, **extra}
        key = PREFIX + "conv:" + conv
        with self.redis.pipeline() as pipe:
            pipe.rpush(key, json.dumps(message, ensure_ascii=False))
            pipe.expire(key, TTL_S)
            if card_id:
                pipe.set(PREFIX + "card-conv:" + card_id, conv, ex=TTL_S)
            if sender == "bot":
                pipe.delete(PREFIX + "typing:" + conv)  # a message ends the typing state
            pipe.execute()
        return seq

    def messages(self, conv: str, since: int = 0, cards=None) -> tuple[list[dict], int]:
        """The messages of `conv` added or changed after `since`, oldest first, and the last sequence
        number of the conversation. `cards(card_id)` gives a card's current view (or None)."""
        out, last = [], 0
        for raw in self.redis.lrange(PREFIX + "conv:" + conv, 0, -1):
            message = json.loads(raw)
            changed = message["seq"]
            card_id = message.pop("card_id", None)
            message["card"] = None
            if card_id and cards is not None:
                view = cards(card_id)
                if view is not None:
                    changed = max(changed, view.pop("changed", 0))
                    message["card"] = view
                    message["text"] = view["text"]
            last = max(last, changed)
            if changed > since:
                out.append(message)
        return out, last

    def bump(self) -> int:
        """A new sequence number, for a change to something a message shows (a card)."""
        return int(self.redis.incr(PREFIX + "seq"))

    def card_conversation(self, card_id: str) -> str | None:
        value = self.redis.get(PREFIX + "card-conv:" + card_id)
        return value.decode() if value else None

    # -- typing ------------------------------------------------------------------------------------

    def typing(self, conv: str, on: bool) -> None:
        """WeChat's typing state for `conv`: shown for up to `TYPING_S`, or ended."""
        if on:
            self.redis.set(PREFIX + "typing:" + conv, time.time() + TYPING_S, ex=TYPING_S)
        else:
            self.redis.delete(PREFIX + "typing:" + conv)

    def typing_until(self, conv: str) -> float | None:
        value = self.redis.get(PREFIX + "typing:" + conv)
        return float(value) if value else None

    # -- message ids -------------------------------------------------------------------------------

    def link(self, message_id: str, conv: str, **facts) -> None:
        """Remember which conversation a Feishu message id belongs to (and `facts` about it)."""
        self.redis.set(PREFIX + "msg:" + message_id, json.dumps({"conv": conv, **facts}), ex=TTL_S)

    def linked(self, message_id: str) -> dict | None:
        value = self.redis.get(PREFIX + "msg:" + message_id)
        return json.loads(value) if value else None

    def once(self, name: str, value: str, ttl: int = 3600) -> str:
        """The value stored first under `name` (a reply's uuid → its message id), storing `value` if none."""
        key = PREFIX + "once:" + name
        if self.redis.set(key, value, nx=True, ex=ttl):
            return value
        return (self.redis.get(key) or value.encode()).decode()

    # -- users -------------------------------------------------------------------------------------

    def add_user(self, platform: str, user: str, label: str = "") -> dict:
        """Remember a simulated user (kept if known; a new label replaces the old)."""
        key = PREFIX + "users"
        field = f"{platform}:{user}"
        known = self.redis.hget(key, field)
        entry = json.loads(known) if known else {"platform": platform, "user": user, "label": "",
                                                  "following": True, "created": time.time()}
        if label:
            entry["label"] = label
        entry["label"] = entry["label"] or user[-6:]
        self.redis.hset(key, field, json.dumps(entry, ensure_ascii=False))
        self.redis.expire(key, TTL_S)
        return entry

    def user(self, platform: str, user: str) -> dict | None:
        known = self.redis.hget(PREFIX + "users", f"{platform}:{user}")
        return json.loads(known) if known else None

    def follow(self, platform: str, user: str, following: bool) -> None:
        entry = self.add_user(platform, user)
        entry["following"] = following
        self.redis.hset(PREFIX + "users", f"{platform}:{user}", json.dumps(entry, ensure_ascii=False))

    def users(self) -> list[dict]:
        """Every simulated user, oldest first."""
        entries = [json.loads(v) for v in self.redis.hvals(PREFIX + "users")]
        return sorted(entries, key=lambda e: e.get("created", 0))
