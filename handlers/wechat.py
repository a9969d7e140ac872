"""Everything WeChat Official Account: the webhook's signature, encryption and XML, and the
customer-service API that carries answers back.

Inbound:  `WeChatInbound` turns a request (query args + body) into an `IncomingMessage`, raising
          `Forbidden` (403) for anything not signed by our token and `BadRequest` (400) for bodies
          that do not parse; `render_reply` builds the passive reply (encrypted in safe mode).
Outbound: `WeChatSender` sends text through `message/custom/send` with wechatpy, the access token
          shared by every process through Redis and refreshed under a Redis lock, so no process
          invalidates another's token.
"""

from __future__ import annotations

import logging

import requests
from flask import Blueprint, Response, abort, current_app, request
from wechatpy import parse_message
from wechatpy.client import WeChatClient
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException, WeChatClientException
from wechatpy.replies import TextReply
from wechatpy.session.redisstorage import RedisStorage
from wechatpy.utils import check_signature
from werkzeug.exceptions import BadRequest, Forbidden

from bot.errors import PermanentFailure, TransientFailure
from bot.models import CLICK, MEDIA, OTHER, SUBSCRIBE, TEXT, UNSUBSCRIBE, IncomingMessage
from config import Settings

log = logging.getLogger("chatgate.wechat")

PLATFORM = "wechat"
TEXT_LIMIT_BYTES = 2000
"""WeChat caps a text message at about 2048 UTF-8 bytes; keep a margin."""
PUSH_BUDGET = 5
"""Customer-service messages allowed per user message (45047 past that)."""
TOKEN_ERRORS = frozenset({40001, 40014, 42001})
"""access_token invalid, not the latest, or expired: refresh once and try again."""
PERMANENT_ERRORS = frozenset({
    40003,  # invalid openid
    43004,  # the user unfollowed
    45002,  # content too long
    45015,  # the user has not written within 48 hours
    45047,  # customer-service message budget used up
    48001,  # the account may not use this API (unverified subscription account)
    40013, 40125, 40164,  # bad AppID / AppSecret / IP not whitelisted: the operator must fix these
})

_EVENT_KINDS = {"subscribe": SUBSCRIBE, "subscribe_scan": SUBSCRIBE, "unsubscribe": UNSUBSCRIBE,
                "click": CLICK}


class WeChatInbound:
    """Verify, decrypt and parse webhook requests for one official account."""

    def __init__(self, settings: Settings):
        self.token = settings.wechat_token
        self.crypto = (WeChatCrypto(settings.wechat_token, settings.wechat_aes_key, settings.wechat_app_id)
                       if settings.wechat_aes_key else None)

    def check(self, args) -> None:
        """The plain signature every request carries: sha1 of sorted token, timestamp and nonce."""
        try:
            check_signature(self.token, args.get("signature", ""), args.get("timestamp", ""),
                            args.get("nonce", ""))
        except InvalidSignatureException:
            raise Forbidden("bad signature") from None

    def echo(self, args) -> str:
        """Server-URL verification (GET): a valid signature gets `echostr` back verbatim."""
        self.check(args)
        return args.get("echostr", "")

    def parse(self, args, body: bytes):
        """A POST body → (IncomingMessage, wechatpy message). 403 if forged, 400 if unparseable."""
        self.check(args)
        if self.crypto is not None:
            if args.get("encrypt_type") != "aes":
                # With an AES key configured, a plaintext body is not authenticated by anything.
                raise Forbidden("encrypted messages expected (safe mode)")
            try:
                xml = self.crypto.decrypt_message(body, args.get("msg_signature", ""),
                                                  args.get("timestamp", ""), args.get("nonce", ""))
            except (InvalidSignatureException, InvalidAppIdException):
                raise Forbidden("bad message signature") from None
            except Exception as exc:  # base64, padding, XML: wechatpy raises many kinds
                raise BadRequest(f"cannot decrypt the message ({type(exc).__name__})") from None
        else:
            xml = body
        try:
            raw = parse_message(xml)
            return self._to_incoming(raw), raw
        except Exception as exc:  # xmltodict's ValueError/ExpatError, KeyError for missing fields…
            raise BadRequest(f"cannot parse the message ({type(exc).__name__})") from None

    @staticmethod
    def _to_incoming(raw) -> IncomingMessage:
        user = raw.source
        if not user:
            raise ValueError("no FromUserName")
        if raw.type == "event":
            kind = _EVENT_KINDS.get(raw.event, OTHER)
            return IncomingMessage(PLATFORM, user, f"{user}-{raw.time}", kind,
                                   detail=str(getattr(raw, "key", "") or raw.event))
        if not raw.id:
            raise ValueError("message without MsgId")
        key = str(raw.id)
        if raw.type == "text":
            return IncomingMessage(PLATFORM, user, key, TEXT, raw.content or "")
        if raw.type == "voice" and (raw.recognition or "").strip():
            return IncomingMessage(PLATFORM, user, key, TEXT, raw.recognition.strip())
        return IncomingMessage(PLATFORM, user, key, MEDIA, detail=raw.type)

    def render_reply(self, raw, text: str, args) -> str:
        """The passive reply XML for `text` (encrypted in safe mode)."""
        xml = TextReply(content=escape_cdata(text), message=raw).render()
        if self.crypto is None:
            return xml
        return self.crypto.encrypt_message(xml, args.get("nonce", ""), args.get("timestamp") or None)


def escape_cdata(text: str) -> str:
    """wechatpy writes fields as CDATA without escaping; `]]>` inside would end it early."""
    return text.replace("]]>", "]]]]><![CDATA[>")


def split_text(text: str, limit: int = TEXT_LIMIT_BYTES) -> list[str]:
    """Split `text` into parts of at most `limit` UTF-8 bytes, never inside a character.

    A part ends at the last line break in its second half when there is one, so paragraphs stay
    whole where they can.
    """
    parts: list[str] = []
    rest = text
    while rest:
        if len(rest.encode("utf-8")) <= limit:
            parts.append(rest)
            break
        size, cut = 0, 0
        for i, ch in enumerate(rest):
            size += len(ch.encode("utf-8"))
            if size > limit:
                cut = i
                break
        newline = rest.rfind("\n", 0, cut)
        if newline >= cut // 2:
            cut = newline + 1
        parts.append(rest[:cut])
        rest = rest[cut:]
    return [p for p in parts if p.strip()] or [text]


class SharedTokenClient(WeChatClient):
    """wechatpy's client with the access token kept in Redis and refreshed under a Redis lock.

    Each `/cgi-bin/token` fetch invalidates the previous token (after a short grace), so only one
    process may fetch at a time, and a process that finds a fresh token already stored by another
    uses it instead of fetching again. The token URL honours `WECHAT_API_BASE`.
    """

    def __init__(self, settings: Settings, redis):
        super().__init__(settings.wechat_app_id, settings.wechat_app_secret,
                         session=RedisStorage(redis, prefix="chatgate:wechat"),
                         timeout=settings.wechat_http_timeout, auto_retry=False)
        self.API_BASE_URL = settings.wechat_api_base.rstrip("/") + "/cgi-bin/"
        self._redis = redis

    def fetch_access_token(self, stale: str | None = None):
        """Store a new token unless another process already replaced `stale` (or the missing one)."""
        lock = self._redis.lock(f"chatgate:wechat:{self.appid}:token-lock", timeout=30, blocking_timeout=30)
        with lock:
            current = self.session.get(self.access_token_key)
            if current and current != stale:
                return {"access_token": current}
            res = self._http.get(self.API_BASE_URL + "token", timeout=self.timeout, params={
                "grant_type": "client_credential", "appid": self.appid, "secret": self.secret})
            res.raise_for_status()
            result = res.json()
            if result.get("errcode"):
                raise WeChatClientException(result["errcode"], result.get("errmsg"), client=self)
            expires_in = int(result.get("expires_in", 7200))
            # Expire our copy two minutes early; the old token stays valid for a while after that.
            self.session.set(self.access_token_key, result["access_token"], max(expires_in - 120, 60))
            log.info("fetched a new WeChat access token (expires in %ss)", expires_in)
            return result


class WeChatSender:
    """Sends answers through the customer-service API (`message/custom/send`)."""

    platform = PLATFORM
    max_parts = PUSH_BUDGET

    def __init__(self, settings: Settings, redis):
        self.client = SharedTokenClient(settings, redis)

    def split(self, text: str) -> list[str]:
        return split_text(text)

    def send(self, user: str, text: str, *, chat: str = "", message_key: str = "") -> None:
        """Send one text; refresh the token and try once more on 40001/40014/42001."""
        try:
            try:
                token = self.client.access_token
                self.client.message.send_text(user, text)
            except WeChatClientException as exc:
                if exc.errcode not in TOKEN_ERRORS:
                    raise
                log.info("WeChat rejected the access token (%s); refreshing", exc.errcode)
                self.client.fetch_access_token(stale=token)
                self.client.message.send_text(user, text)
        except WeChatClientException as exc:
            detail = f"WeChat error {exc.errcode}: {exc.errmsg}"
            if exc.errcode in PERMANENT_ERRORS:
                raise PermanentFailure(detail) from None
            raise TransientFailure(detail) from None
        except requests.RequestException as exc:  # connection errors and timeouts
            raise TransientFailure(f"WeChat API unreachable: {type(exc).__name__}") from None


# -- the webhook ------------------------------------------------------------------------------

blueprint = Blueprint("wechat", __name__)

ACK = "success"
"""WeChat's 'received, no passive reply' answer."""


def _inbound() -> WeChatInbound:
    runtime = current_app.extensions["chatgate"]
    if not runtime.settings.wechat_enabled:
        abort(503, "WeChat is not configured (set WECHAT_TOKEN)")
    inbound = current_app.extensions.get("chatgate.wechat")
    if inbound is None:
        inbound = current_app.extensions["chatgate.wechat"] = WeChatInbound(runtime.settings)
    return inbound


@blueprint.get("/wechat")
def verify():
    """Server-URL verification: echo `echostr` when the signature is ours."""
    return Response(_inbound().echo(request.args), mimetype="text/plain")


@blueprint.post("/wechat")
def receive():
    """One message or event: verify, decrypt, parse, admit, enqueue; ack or reply at once."""
    inbound = _inbound()
    msg, raw = inbound.parse(request.args, request.get_data(cache=False))
    decision = current_app.extensions["chatgate"].admit_and_enqueue(msg)
    if decision.reply is None:
        return Response(ACK, mimetype="text/plain")
    return Response(inbound.render_reply(raw, decision.reply, request.args), mimetype="application/xml")
