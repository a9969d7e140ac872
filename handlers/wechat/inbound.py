"""WeChat in: the webhook's signature, encryption and XML.

`WeChatInbound` turns a request (query args + body) into an `IncomingMessage`, raising `Forbidden`
(403) for anything not signed by our token, signed too long ago or replayed with another body, and
`BadRequest` (400) for bodies that do not fit what handlers/wechat/message.py reads (logged as one
WARNING line); `render_reply` builds the passive reply (encrypted in safe mode).
"""

from __future__ import annotations

import hashlib
import logging
import time

from redis import Redis, RedisError
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
from wechatpy.replies import TextReply
from wechatpy.utils import check_signature
from werkzeug.exceptions import BadRequest, Forbidden

from config import Settings
from handlers.fields import Invalid
from handlers.freshness import is_fresh
from handlers.wechat.message import PLATFORM, encrypted_part, parse

log = logging.getLogger("chatgate.wechat")


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
        """A POST body → (IncomingMessage, the reply's addressing). 403 if forged, stale or replayed
        with another body, 400 if it does not fit (handlers/wechat/message.py)."""
        self.check(args)
        if not is_fresh(args.get("timestamp", ""), self.window):
            raise Forbidden("timestamp outside the replay window")
        if self.crypto is not None:
            if args.get("encrypt_type") != "aes":
                # With an AES key configured, a plaintext body is not authenticated by anything.
                raise Forbidden("encrypted messages expected (safe mode)")
            envelope = self._read(encrypted_part, body)
            try:
                xml = self.crypto.decrypt_message(envelope, args.get("msg_signature", ""),
                                                  args.get("timestamp", ""), args.get("nonce", ""))
            except (InvalidSignatureException, InvalidAppIdException):
                raise Forbidden("bad message signature") from None
            except Exception as exc:  # base64, padding, length, UTF-8: wechatpy raises many kinds
                self._refuse(f"cannot decrypt the message ({type(exc).__name__})")
        else:
            self._bind_body(args, body)
            xml = body
        return self._read(parse, xml)

    def _read(self, reader, data):
        try:
            return reader(data)
        except Invalid as exc:
            self._refuse(str(exc))

    @staticmethod
    def _refuse(reason: str):
        """400 with a short reason, logged as one line (a hostile or broken body is not our error)."""
        log.warning("wechat: body refused (%s)", reason, extra={"platform": PLATFORM, "outcome": "refused"})
        raise BadRequest(f"malformed message: {reason}")

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

    def render_reply(self, addressing: dict, text: str, args) -> str:
        """The passive reply XML for `text` to the message addressed as `addressing` (what `parse`
        returned), encrypted in safe mode."""
        xml = TextReply(source=addressing["ToUserName"], target=addressing["FromUserName"],
                        content=escape_cdata(text)).render()
        if self.crypto is None:
            return xml
        return self.crypto.encrypt_message(xml, args.get("nonce", ""), args.get("timestamp") or None)


def escape_cdata(text: str) -> str:
    """wechatpy writes fields as CDATA without escaping; `]]>` inside would end it early."""
    return text.replace("]]>", "]]]]><![CDATA[>")
