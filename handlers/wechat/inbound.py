"""WeChat in: the webhook's signature, encryption and XML.

`WeChatInbound` turns a request (query args + body) into an `IncomingMessage`, raising `Forbidden`
(403) for anything not signed by our token, signed too long ago or replayed with another body, and
`BadRequest` (400) for bodies that do not parse; `render_reply` builds the passive reply (encrypted
in safe mode).
"""

from __future__ import annotations

import hashlib
import logging
import time

from redis import Redis, RedisError
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
from wechatpy.replies import TextReply
from wechatpy.utils import check_signature
from werkzeug.exceptions import BadRequest, Forbidden

from bot.models import CLICK, MEDIA, OTHER, SUBSCRIBE, TEXT, UNSUBSCRIBE, IncomingMessage
from config import Settings
from handlers.freshness import is_fresh

log = logging.getLogger("chatgate.wechat")

PLATFORM = "wechat"

_EVENT_KINDS = {"subscribe": SUBSCRIBE, "subscribe_scan": SUBSCRIBE, "unsubscribe": UNSUBSCRIBE,
                "click": CLICK}


class WeChatInbound:
    """Verify, decrypt and parse webhook requests for one official account.

    `redis` keeps, in plaintext mode, which body each signed query came with (see `_bind_body`).
    """

    def __init__(self, settings: Settings, redis: Redis):
        self.token = settings.wechat_token
        self.crypto = (WeChatCrypto(settings.wechat_token, settings.wechat_aes_key, settings.wechat_app_id)
                       if settings.wechat_aes_key else None)
        self.window = settings.replay_window
        self.redis = redis

    def check(self, args) -> None:
        """The plain signature every request carries: sha1 of sorted token, timestamp and nonce."""
        try:
            check_signature(self.token, args.get("signature", ""), args.get("timestamp", ""),
                            args.get("nonce", ""))
        except InvalidSignatureException:
            raise Forbidden("bad signature") from None

    def echo(self, args) -> str:
        """Server-URL verification (GET): a valid signature gets `echostr` back verbatim."""
        # No replay window here: the echo stores and changes nothing, so a replayed one gains an
        # attacker nothing, while refusing it on a skewed clock would make the console's 提交 fail
        # with no hint why.
        self.check(args)
        return args.get("echostr", "")

    def parse(self, args, body: bytes):
        """A POST body → (IncomingMessage, wechatpy message). 403 if forged, stale or replayed with
        another body, 400 if unparseable."""
        self.check(args)
        if not is_fresh(args.get("timestamp", ""), self.window):
            raise Forbidden("timestamp outside the replay window")
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
            self._bind_body(args, body)
            xml = body
        try:
            raw = parse_message(xml)
            return self._to_incoming(raw), raw
        except Exception as exc:  # xmltodict's ValueError/ExpatError, KeyError for missing fields…
            raise BadRequest(f"cannot parse the message ({type(exc).__name__})") from None

    def _bind_body(self, args, body: bytes) -> None:
        """Plaintext mode: the signature covers the query, not the body, so the first body a signed
        query comes with is remembered (its sha256, while the timestamp is fresh) and the same query
        with any other body is refused. The same body again passes: WeChat may post a message up to
        three times and may reuse the query (not documented), and admission dedupes it by MsgId."""
        timestamp, nonce, signature = (args.get(name, "") for name in ("timestamp", "nonce", "signature"))
        key = f"chatgate:wechat:query:{timestamp}:{nonce}:{signature}"
        digest = hashlib.sha256(body).hexdigest()
        # Kept until the timestamp leaves the window; after that the freshness check refuses it.
        ttl = max(1, int(timestamp) + self.window - int(time.time()) + 1)
        try:
            if self.redis.set(key, digest, nx=True, ex=ttl):
                return
            first = self.redis.get(key)
        except RedisError as exc:
            # Fail open, so that the webhook keeps working while Redis is down (admission lives in
            # SQLite). Within the window, a forged body could then pass: safe mode (WECHAT_AES_KEY),
            # whose signature covers the body, is the protection that does not depend on Redis.
            log.warning("wechat: Redis unavailable (%s); a signed query with a fresh timestamp "
                        "accepted without its replay check", type(exc).__name__,
                        extra={"platform": PLATFORM, "outcome": "replay check skipped"})
            return
        # None: the record expired between the two calls, as the timestamp leaves the window.
        if first is not None and first.decode() != digest:
            raise Forbidden("this signed query came before with another body")

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
