"""Feishu out: replies to the asking message (`im/v1/messages/{id}/reply`) through lark-oapi, with the
tenant token cached in Redis so every process and job reuses it."""

from __future__ import annotations

import hashlib
import json
import logging
import time

import redis
import requests
from requests.adapters import HTTPAdapter

from bot.errors import PermanentFailure, TransientFailure
from bot.paging import fit_pages, split_text
from bot.store.cards import OPEN
from bot.texts import TRUNCATED
from config import Settings, metrics
from config.logs import adopt
from handlers.feishu.cards import (
    CARD_TEXT_BYTES,
    NO_CARDS_S,
    CardKit,
    CardRefused,
    CardsRefused,
    CardStream,
    drop_card,
    finish_card,
)
from handlers.senders import NO_PROGRESS, Progress, PushOnly
from workers.marks import Mark

log = logging.getLogger("chatgate.feishu")

PLATFORM = "feishu"
TEXT_LIMIT_BYTES = 30_000
"""Feishu accepts text bodies up to 150 KB; long answers are easier to read in several messages."""
MAX_PARTS = 5
CHECK_AGAIN_S = 30.0
"""How long a process believes what it read about cards being refused before reading Redis again."""
KEEP_S = 6 * 3600
"""An answer Feishu would not take (outage, rate limit) is pushed again for this long, then refunded."""
PERMANENT_CODES = frozenset({
    230002,  # the bot is not in the chat
    230011,  # the message was withdrawn
    230013,  # the user has not installed / cannot see the bot
    230099,  # content rejected
    99991672, 99991679,  # the app lacks a permission (scope): the operator must add it
})


def _lark():
    """lark-oapi, imported on first use: the import is slow (about 2 s) and only Feishu needs it.
    Its logger's own stdout handler is dropped: its lines go out in chatgate's format, once. Its
    calls share one pool of kept-alive connections (`PooledRequests`)."""
    import lark_oapi
    from lark_oapi.core.http import transport

    adopt("Lark")
    if not isinstance(transport.requests, PooledRequests):
        transport.requests = PooledRequests()
    return lark_oapi


class PooledRequests:
    """Stands in for the `requests` module inside lark-oapi's transport, whose every API call is a bare
    `requests.request(...)`: a new connection, TCP and TLS handshakes included, per call. A streamed
    card makes about 20 calls per answer; here they all share one session's kept-alive connections."""

    def __init__(self, connections: int = 64):
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=connections)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def request(self, method: str, url: str, **kwargs):
        return self.session.request(method, url, **kwargs)


class RedisTokenCache:
    """lark-oapi's token cache (its `ICache`) kept in Redis, so every process and every job of the
    worker reuses one tenant token instead of fetching it per message."""

    def __init__(self, redis, prefix: str = "chatgate:feishu:cache:"):
        self.redis = redis
        self.prefix = prefix

    def get(self, key: str) -> str:
        try:
            value = self.redis.get(self.prefix + key)
        except redis.RedisError:  # Redis down: the SDK fetches a token (Feishu hands back the same one)
            return ""
        return value.decode() if value else ""

    def set(self, key: str, value: str, expire: int) -> None:
        ttl = int(expire - time.time())
        if ttl > 0:
            try:
                self.redis.set(self.prefix + key, value, ex=ttl)
            except redis.RedisError:
                pass


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


class FeishuSender(PushOnly):
    """Replies to the asking message; in groups the reply quotes the question. Feishu has no reply
    inside the webhook's response: every page is pushed, and a page Feishu refuses for good (the bot
    left the chat, a missing permission) can never go out.

    With CHATGATE_FEISHU_STREAM (the default) each answer streams into a card (`cards.py`): its first
    page goes into the card, the rest as text replies."""

    platform = PLATFORM
    keep_s = KEEP_S

    def __init__(self, settings: Settings, redis):
        self.settings = settings
        self.redis = redis
        self.client = make_client(settings, redis)
        self.kit = CardKit(self.client)
        self._nocards = Mark(redis, f"chatgate:feishu:{settings.feishu_app_id}:nocards", NO_CARDS_S,
                             reread_s=CHECK_AGAIN_S)

    def paginate(self, answer: str) -> list[str]:
        limit = CARD_TEXT_BYTES if self.settings.feishu_stream else TEXT_LIMIT_BYTES
        return fit_pages(split_text(answer, limit), MAX_PARTS, TRUNCATED, limit)

    def progress(self, d: dict, store) -> Progress:
        """The answer streamed into a card, unless streaming is off or CardKit refused lately."""
        if not self.settings.feishu_stream or not self.cards_allowed():
            return NO_PROGRESS
        return CardStream(self, store, d, self.settings.show_thinking)

    def push_page(self, store, d: dict, page: dict, text: str) -> None:
        """The first page pushed while the delivery's card is open goes into the card; other pages,
        and all pages when the card cannot be used, are text replies."""
        card = store.card(d["id"])
        if card is not None and card["state"] == OPEN:
            try:
                finish_card(self.kit, store, d, card, text)
                return
            except CardRefused as exc:
                if isinstance(exc, CardsRefused):
                    self.refused(exc)
                drop_card(store, d, exc)
        self.send(d["user_external_id"], text, chat=d["chat"], message_key=d["message_key"], idem=f"page-{page['id']}")

    def cards_allowed(self) -> bool:
        """False while CardKit's refusal is remembered (in Redis, for every process)."""
        return not self._nocards.is_set()

    def refused(self, exc: Exception) -> None:
        """CardKit refused: answers go out as text for `NO_CARDS_S`."""
        metrics.FEISHU_CARDS.labels("refused").inc()
        log.warning("Feishu refused a card (%s): answers go out as text for %d h (does the app have the "
                    "cardkit:card:write permission?)", exc, NO_CARDS_S // 3600,
                    extra={"platform": PLATFORM, "outcome": "cards refused"})
        self._nocards.set()

    def send(self, user: str, text: str, *, chat: str = "", message_key: str = "", idem: str = "") -> None:
        """Reply to `message_key`; `idem` names this page so that Feishu drops a repeat of it."""
        from lark_oapi.api.im.v1 import ReplyMessageRequest, ReplyMessageRequestBody

        idem = hashlib.sha256(f"{message_key}\n{idem or text}".encode()).hexdigest()[:32]
        req = (ReplyMessageRequest.builder().message_id(message_key)
               .request_body(ReplyMessageRequestBody.builder().msg_type("text")
                             .content(json.dumps({"text": text}, ensure_ascii=False))
                             .reply_in_thread(False).uuid(idem).build()).build())
        try:
            resp = self.client.im.v1.message.reply(req)
        except Exception as exc:  # requests' connection errors and timeouts, bad responses
            metrics.api_error(PLATFORM, "network")
            raise TransientFailure(f"Feishu API unreachable: {type(exc).__name__}") from None
        if resp.success():
            return
        metrics.api_error(PLATFORM, resp.code)
        detail = f"Feishu error {resp.code}: {resp.msg}"
        if resp.code in PERMANENT_CODES:
            raise PermanentFailure(detail)
        raise TransientFailure(detail)
