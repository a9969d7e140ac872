"""The Feishu event path shared by the webhook and the long connection: lark-oapi's dispatcher calls
back with `im.message.receive_v1`, which becomes an `IncomingMessage` (always in p2p chats, in groups
only when the bot itself is @mentioned; other bots are ignored) and goes through admission."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable

import redis

from bot.models import MEDIA, TEXT, IncomingMessage
from config import metrics
from handlers.feishu.message import message_event, text_of
from handlers.feishu.send import PLATFORM, _lark, fetch_bot_open_id, make_client
from handlers.fields import Invalid

log = logging.getLogger("chatgate.feishu")

MESSAGE_EVENT = "im.message.receive_v1"
EVENT_SEEN_TTL = 8 * 3600
"""Feishu re-pushes an event for about 7 hours; remember event ids a little longer."""
_MENTION = re.compile(r"@_user_\d+")


def build_dispatcher(on_message: Callable):
    """lark-oapi's dispatcher for `im.message.receive_v1`, shared by the webhook and the long
    connection. Verification happens before it (webhook) or in the authenticated WebSocket."""
    lark = _lark()
    return (lark.EventDispatcherHandler.builder("", "")
            .register_p2_im_message_receive_v1(on_message)
            .build())


def incoming_from_event(data, bot_open_id: Callable[[], str]) -> IncomingMessage | None:
    """An `im.message.receive_v1` event (lark-oapi model) → IncomingMessage, or None to ignore it.

    p2p chats are always answered; in groups only messages that @mention the bot itself (compared
    by open_id; mentions of other people do not wake it). Messages from other bots are ignored.
    `bot_open_id` is called only for group messages.
    """
    event = data.event
    sender, message = event.sender, event.message
    if sender is None or message is None or sender.sender_type != "user":
        return None
    open_id = sender.sender_id.open_id if sender.sender_id else None
    if not open_id or not message.message_id:
        return None
    if message.chat_type != "p2p":
        mine = bot_open_id()
        mentions = message.mentions or []
        if not any(m.id and m.id.open_id == mine for m in mentions):
            return None
    kind, text = MEDIA, ""
    if message.message_type in ("text", "post"):
        text = text_of(message.message_type, message.content or "")
        text = _MENTION.sub("", text).strip()
        kind = TEXT if text else MEDIA
    return IncomingMessage(PLATFORM, open_id, message.message_id, kind, text, chat=message.chat_id or "",
                           detail=message.message_type or "")


class FeishuEvents:
    """The event path shared by the webhook and the long connection: dispatcher → admission."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.settings = runtime.settings
        self._bot_open_id = ""
        self._client = None
        self.dispatcher = build_dispatcher(self._on_message)

    def bot_open_id(self) -> str:
        """Fetched once from the API and cached in Redis for a day (and in this process)."""
        if not self._bot_open_id:
            key = f"chatgate:feishu:{self.settings.feishu_app_id}:bot_open_id"
            try:
                cached = self.runtime.redis.get(key)
            except redis.RedisError:
                cached = None
            if cached:
                self._bot_open_id = cached.decode()
            else:
                if self._client is None:
                    self._client = make_client(self.settings, self.runtime.redis)
                self._bot_open_id = fetch_bot_open_id(self._client)
                try:
                    self.runtime.redis.set(key, self._bot_open_id, ex=86400)
                except redis.RedisError:
                    pass  # kept in this process; the next one asks Feishu again
        return self._bot_open_id

    def _seen(self, event_id: str | None, mark: bool = False) -> bool:
        """Whether Feishu pushed this event before (Redis, 8 h; a shortcut only: the store dedupes
        messages durably, so a Redis failure here just lets the store decide)."""
        if not event_id:
            return False
        key = f"chatgate:feishu:event:{event_id}"
        try:
            if mark:
                self.runtime.redis.set(key, 1, ex=EVENT_SEEN_TTL)
                return True
            return bool(self.runtime.redis.exists(key))
        except redis.RedisError as exc:
            log.warning("feishu event=%s: Redis unavailable for the event dedupe (%s)", event_id, exc,
                        extra={"platform": PLATFORM, "event_id": event_id, "outcome": "dedupe skipped"})
            return False

    def _on_message(self, data) -> None:
        event_id = data.header.event_id if data.header else None
        if self._seen(event_id):
            metrics.admitted(PLATFORM, "duplicate")
            log.info("feishu event=%s seen before; acknowledged", event_id,
                     extra={"platform": PLATFORM, "event_id": event_id, "outcome": "duplicate"})
            return
        try:
            msg = incoming_from_event(data, self.bot_open_id)
        except Invalid as exc:  # the webhook checked the event before; the long connection did not
            log.warning("feishu event=%s refused (%s)", event_id, exc,
                        extra={"platform": PLATFORM, "event_id": event_id, "outcome": "refused"})
            self._seen(event_id, mark=True)
            return
        if msg is None:
            log.info("feishu event=%s not for the bot; ignored", event_id,
                     extra={"platform": PLATFORM, "event_id": event_id, "outcome": "ignored"})
        else:
            decision = self.runtime.accept(msg)
            if decision.reply is not None:
                self.runtime.push_notice(msg, decision.admission, decision.reply)
        self._seen(event_id, mark=True)

    def handle(self, event: dict) -> None:
        """Feed one verified, decrypted event (a dict) through the dispatcher, as the long
        connection does: only its checked fields (handlers/feishu/message.py; `Invalid` when they do
        not fit). Events other than messages are acknowledged and ignored."""
        header = event.get("header")
        event_type = header.get("event_type") if isinstance(header, dict) else event.get("type")
        if event.get("schema") != "2.0" or event_type != MESSAGE_EVENT:
            log.info("feishu event type %.64r ignored", event_type, extra={"platform": PLATFORM, "outcome": "ignored"})
            return
        self.dispatcher._do_without_validation(json.dumps(message_event(event)).encode())
