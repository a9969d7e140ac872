"""Everything Feishu/Lark: the event webhook and the long connection in, message replies out.

Inbound:  `FeishuInbound` opens a webhook body (decrypting it with lark-oapi's AESCipher when an
          Encrypt Key is set), answers the URL challenge, checks the verification token and the
          `X-Lark-Signature`, then hands the event to lark-oapi's `EventDispatcherHandler` — the same
          dispatcher the long-connection client (`chatgate feishu-connect`) feeds — whose callback
          turns `im.message.receive_v1` into an `IncomingMessage`: always in p2p chats, in groups only
          when the bot itself is @mentioned; other bots are ignored.
Outbound: `FeishuSender` replies to the asking message (`im/v1/messages/{id}/reply`) through
          lark-oapi, with the tenant token cached in Redis so every process and job reuses it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable

from flask import Blueprint, Response, abort, current_app, jsonify, request

from bot.errors import PermanentFailure, TransientFailure
from bot.models import MEDIA, TEXT, IncomingMessage
from config import Settings

log = logging.getLogger("chatgate.feishu")

PLATFORM = "feishu"
MESSAGE_EVENT = "im.message.receive_v1"
TEXT_LIMIT_BYTES = 30_000
"""Feishu accepts text bodies up to 150 KB; long answers are easier to read in several messages."""
MAX_PARTS = 5
EVENT_SEEN_TTL = 8 * 3600
"""Feishu re-pushes an event for about 7 hours; remember event ids a little longer."""
PERMANENT_CODES = frozenset({
    230002,  # the bot is not in the chat
    230011,  # the message was withdrawn
    230013,  # the user has not installed / cannot see the bot
    230099,  # content rejected
    99991672, 99991679,  # the app lacks a permission (scope): the operator must add it
})
_MENTION = re.compile(r"@_user_\d+")


class Forbidden(Exception):
    """The request was not signed or tokened by our app (403)."""


class Malformed(Exception):
    """The body is not a Feishu event we can read (400)."""


def _lark():
    """lark-oapi, imported on first use: the import is slow (about 2 s) and only Feishu needs it."""
    import lark_oapi

    return lark_oapi


class FeishuInbound:
    """Verify and open webhook bodies for one Feishu app; build the event dispatcher."""

    def __init__(self, settings: Settings):
        self.token = settings.feishu_verification_token
        self.encrypt_key = settings.feishu_encrypt_key

    def open(self, body: bytes, headers) -> dict:
        """The event as a dict; raises Malformed (400) or Forbidden (403).

        A `url_verification` challenge is returned as is (it carries no signature); every other
        event must carry our verification token and, with an Encrypt Key, a valid signature.
        """
        try:
            envelope = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise Malformed("body is not JSON") from None
        if not isinstance(envelope, dict):
            raise Malformed("body is not a JSON object")
        if "encrypt" in envelope:
            if not self.encrypt_key:
                raise Forbidden("encrypted event, but FEISHU_ENCRYPT_KEY is not set")
            try:
                from lark_oapi.core.utils.decryptor import AESCipher

                event = json.loads(AESCipher(self.encrypt_key).decrypt_str(envelope["encrypt"]))
            except Exception:  # bad base64, padding, UTF-8 or JSON: wrong key or a broken body
                raise Malformed("cannot decrypt the event") from None
            if not isinstance(event, dict):
                raise Malformed("decrypted event is not a JSON object")
        elif self.encrypt_key:
            raise Forbidden("plaintext event, but FEISHU_ENCRYPT_KEY is set")
        else:
            event = envelope
        header = event.get("header") if isinstance(event.get("header"), dict) else {}
        token = header.get("token", event.get("token"))
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self.token.encode()):
            raise Forbidden("wrong verification token")
        if event.get("type") != "url_verification" and self.encrypt_key:
            self._check_signature(body, headers)
        return event

    def _check_signature(self, body: bytes, headers) -> None:
        timestamp = headers.get("X-Lark-Request-Timestamp", "")
        nonce = headers.get("X-Lark-Request-Nonce", "")
        signature = headers.get("X-Lark-Signature", "")
        expected = hashlib.sha256((timestamp + nonce + self.encrypt_key).encode() + body).hexdigest()
        if not (timestamp and nonce and hmac.compare_digest(signature.encode(), expected.encode())):
            raise Forbidden("bad signature")


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
        text = _text_of(message.message_type, message.content or "")
        text = _MENTION.sub("", text).strip()
        kind = TEXT if text else MEDIA
    return IncomingMessage(PLATFORM, open_id, message.message_id, kind, text, chat=message.chat_id or "",
                           detail=message.message_type or "")


def _text_of(message_type: str, content: str) -> str:
    try:
        body = json.loads(content)
    except ValueError:
        return ""
    if message_type == "text":
        return str(body.get("text", ""))
    # rich text ("post"): a title and paragraphs of elements; keep the words and the @ keys
    post = body.get("content") and body or next((v for v in body.values() if isinstance(v, dict)), {})
    lines = [post.get("title") or ""]
    for paragraph in post.get("content") or []:
        lines.append("".join(el.get("text", "") or el.get("user_name", "") for el in paragraph
                             if isinstance(el, dict) and el.get("tag") in ("text", "a", "md")))
    return "\n".join(line for line in lines if line)


# -- outbound ---------------------------------------------------------------------------------


class RedisTokenCache:
    """lark-oapi's token cache (its `ICache`) kept in Redis, so every process and every job of the
    worker reuses one tenant token instead of fetching it per message."""

    def __init__(self, redis, prefix: str = "chatgate:feishu:cache:"):
        self.redis = redis
        self.prefix = prefix

    def get(self, key: str) -> str:
        value = self.redis.get(self.prefix + key)
        return value.decode() if value else ""

    def set(self, key: str, value: str, expire: int) -> None:
        import time

        ttl = int(expire - time.time())
        if ttl > 0:
            self.redis.set(self.prefix + key, value, ex=ttl)


def make_client(settings: Settings, redis):
    lark = _lark()
    builder = (lark.Client.builder().app_id(settings.feishu_app_id).app_secret(settings.feishu_app_secret)
               .domain(settings.feishu_api_base.rstrip("/")).timeout(10).log_level(lark.LogLevel.WARNING))
    if redis is not None:
        builder = builder.cache(RedisTokenCache(redis))
    return builder.build()


def fetch_bot_open_id(client) -> str:
    """The bot's own open_id from `/open-apis/bot/v3/info`."""
    lark = _lark()
    req = (lark.BaseRequest.builder().http_method(lark.HttpMethod.GET).uri("/open-apis/bot/v3/info")
           .token_types({lark.AccessTokenType.TENANT}).build())
    resp = client.request(req)
    body = json.loads(resp.raw.content) if resp.raw and resp.raw.content else {}
    open_id = (body.get("bot") or {}).get("open_id")
    if not open_id:
        raise TransientFailure(f"cannot read the bot's open_id (code {body.get('code')}: {body.get('msg')})")
    return open_id


def split_text(text: str, limit: int = TEXT_LIMIT_BYTES) -> list[str]:
    from handlers.wechat import split_text as split_bytes

    return split_bytes(text, limit)


class FeishuSender:
    """Replies to the asking message; in groups the reply quotes the question."""

    platform = PLATFORM
    max_parts = MAX_PARTS

    def __init__(self, settings: Settings, redis):
        self.client = make_client(settings, redis)

    def split(self, text: str) -> list[str]:
        return split_text(text)

    def send(self, user: str, text: str, *, chat: str = "", message_key: str = "") -> None:
        from lark_oapi.api.im.v1 import ReplyMessageRequest, ReplyMessageRequestBody

        idem = hashlib.sha256(f"{message_key}\n{text}".encode()).hexdigest()[:32]
        req = (ReplyMessageRequest.builder().message_id(message_key)
               .request_body(ReplyMessageRequestBody.builder().msg_type("text")
                             .content(json.dumps({"text": text}, ensure_ascii=False))
                             .reply_in_thread(False).uuid(idem).build()).build())
        try:
            resp = self.client.im.v1.message.reply(req)
        except Exception as exc:  # requests' connection errors and timeouts, bad responses
            raise TransientFailure(f"Feishu API unreachable: {type(exc).__name__}") from None
        if resp.success():
            return
        detail = f"Feishu error {resp.code}: {resp.msg}"
        if resp.code in PERMANENT_CODES:
            raise PermanentFailure(detail)
        raise TransientFailure(detail)


# -- the webhook and the shared event path -----------------------------------------------------


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
            cached = self.runtime.redis.get(key)
            if cached:
                self._bot_open_id = cached.decode()
            else:
                if self._client is None:
                    self._client = make_client(self.settings, self.runtime.redis)
                self._bot_open_id = fetch_bot_open_id(self._client)
                self.runtime.redis.set(key, self._bot_open_id, ex=86400)
        return self._bot_open_id

    def _on_message(self, data) -> None:
        event_id = data.header.event_id if data.header else None
        seen_key = f"chatgate:feishu:event:{event_id}"
        if event_id and self.runtime.redis.exists(seen_key):
            log.info("feishu event=%s seen before; acknowledged", event_id)
            return
        msg = incoming_from_event(data, self.bot_open_id)
        if msg is None:
            log.info("feishu event=%s not for the bot; ignored", event_id)
        else:
            decision = self.runtime.admit_and_enqueue(msg)
            if decision.reply is not None:
                self.runtime.enqueue_notice(msg, decision.reply)
        if event_id:
            self.runtime.redis.set(seen_key, 1, ex=EVENT_SEEN_TTL)

    def handle(self, event: dict) -> None:
        """Feed one verified, decrypted event (a dict) through the dispatcher, as the long
        connection does. Events other than messages are acknowledged and ignored."""
        header = event.get("header") or {}
        if event.get("schema") != "2.0" or header.get("event_type") != MESSAGE_EVENT:
            log.info("feishu event type %s ignored", header.get("event_type") or event.get("type"))
            return
        self.dispatcher._do_without_validation(json.dumps(event).encode())


blueprint = Blueprint("feishu", __name__)


def _events() -> FeishuEvents:
    runtime = current_app.extensions["chatgate"]
    return runtime.platform("Feishu", runtime.settings.feishu_enabled,
                            "FEISHU_APP_ID and FEISHU_VERIFICATION_TOKEN", lambda: FeishuEvents(runtime))


@blueprint.post("/feishu")
def receive():
    """One Feishu event: verify, decrypt, answer the challenge, or admit and enqueue."""
    events = _events()
    inbound = FeishuInbound(events.settings)
    try:
        event = inbound.open(request.get_data(cache=False), request.headers)
    except Forbidden as exc:
        abort(403, str(exc))
    except Malformed as exc:
        abort(400, str(exc))
    if event.get("type") == "url_verification":
        return jsonify(challenge=event.get("challenge", ""))
    try:
        events.handle(event)
    except (ValueError, AttributeError, TypeError, KeyError) as exc:
        log.warning("feishu event could not be read: %s", exc)
        abort(400, "not a readable im.message.receive_v1 event")
    return Response('{"msg":"success"}', mimetype="application/json")


def connect_forever(settings: Settings) -> None:
    """`chatgate feishu-connect`: receive events over lark-oapi's WebSocket client and feed them
    to the same dispatcher and admission path as the webhook. Blocks."""
    from handlers.app import Runtime

    lark = _lark()
    events = FeishuEvents(Runtime(settings))
    client = lark.ws.Client(settings.feishu_app_id, settings.feishu_app_secret, event_handler=events.dispatcher,
                            domain=settings.feishu_api_base.rstrip("/"), log_level=lark.LogLevel.INFO)
    client.start()
