"""WeChat in: the webhook's signature, encryption and XML.

`WeChatInbound` turns a request (query args + body) into an `IncomingMessage`, raising `Forbidden`
(403) for anything not signed by our token and `BadRequest` (400) for bodies that do not parse;
`render_reply` builds the passive reply (encrypted in safe mode).
"""

from __future__ import annotations

from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
from wechatpy.replies import TextReply
from wechatpy.utils import check_signature
from werkzeug.exceptions import BadRequest, Forbidden

from bot.models import CLICK, MEDIA, OTHER, SUBSCRIBE, TEXT, UNSUBSCRIBE, IncomingMessage
from config import Settings

PLATFORM = "wechat"

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
