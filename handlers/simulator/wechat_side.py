"""WeChat's side of the `/wechat` webhook, played by the simulator: messages and events as WeChat's
servers post them (XML, the query signature, AES encryption in safe mode), posted over HTTP to this
same web process with WeChat's rhythm, and the passive reply read back (decrypted in safe mode).

The rhythm: WeChat waits 5 s for the reply to a post; without one it posts the same message (same
MsgId) again, three posts at most. The first post answered in time ends it: an XML reply is shown to
the user, `success` or an empty body shows nothing.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import requests
import xmltodict
from wechatpy.crypto import WeChatCrypto

from config import Settings
from config.simulator import web_origin
from handlers.wechat.inbound import escape_cdata

ACCOUNT = "gh_simulator0001"
"""The simulated account's original id (ToUserName of every message)."""
POST_TIMEOUT_S = 5.0
"""WeChat's cut-off for the reply to one post."""
POSTS = 3
"""WeChat posts a message at most three times."""


@dataclass
class Exchange:
    """How one message's posts went: the passive reply shown to the user (None: nothing), the posts
    made, and an error when the webhook refused the message (what WeChat would log; the user sees
    nothing)."""

    reply: str | None = None
    posts: int = 0
    error: str | None = None


def new_msg_id() -> int:
    """A MsgId as WeChat's: a large positive 64-bit number."""
    return 10**18 + secrets.randbelow(8 * 10**18)


def text_xml(openid: str, text: str, msg_id: int, now: int) -> str:
    return (f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{now}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{escape_cdata(text)}]]></Content><MsgId>{msg_id}</MsgId></xml>")


def voice_xml(openid: str, recognition: str, msg_id: int, now: int) -> str:
    """A voice message with WeChat's speech recognition of it (`Recognition`)."""
    return (f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{now}</CreateTime><MsgType><![CDATA[voice]]></MsgType>"
            f"<MediaId><![CDATA[sim-media-{msg_id}]]></MediaId><Format><![CDATA[amr]]></Format>"
            f"<Recognition><![CDATA[{escape_cdata(recognition)}]]></Recognition><MsgId>{msg_id}</MsgId></xml>")


def event_xml(openid: str, event: str, now: int) -> str:
    return (f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{now}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[{event}]]></Event><EventKey><![CDATA[]]></EventKey></xml>")


def _sha1_sorted(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


class WeChatSide:
    """Posts messages to `/wechat` as WeChat does, for the account the settings describe."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.url = web_origin(settings) + "/wechat"
        self.crypto = (WeChatCrypto(settings.wechat_token, settings.wechat_aes_key, settings.wechat_app_id)
                       if settings.wechat_aes_key else None)

    @property
    def mode(self) -> str:
        """`safe` when the account encrypts (WECHAT_AES_KEY set), else `plain`."""
        return "safe" if self.crypto else "plain"

    def signed(self, openid: str, xml: str) -> tuple[dict, bytes]:
        """The query and body of one post of `xml`, signed (and encrypted in safe mode)."""
        timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**10))
        query = {"signature": _sha1_sorted(self.settings.wechat_token, timestamp, nonce), "timestamp": timestamp,
                 "nonce": nonce, "openid": openid}
        if self.crypto is None:
            return query, xml.encode()
        packed = xmltodict.parse(self.crypto.encrypt_message(xml, nonce, timestamp))["xml"]
        query.update(encrypt_type="aes", msg_signature=packed["MsgSignature"])
        body = (f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>"
                f"<Encrypt><![CDATA[{packed['Encrypt']}]]></Encrypt></xml>")
        return query, body.encode()

    def exchange(self, openid: str, xml: str) -> Exchange:
        """Post `xml` with WeChat's rhythm; the passive reply the user sees."""
        result = Exchange()
        for post in range(1, POSTS + 1):
            result.posts = post
            query, body = self.signed(openid, xml)
            try:
                resp = requests.post(self.url, params=query, data=body, timeout=POST_TIMEOUT_S,
                                     headers={"Content-Type": "text/xml", "User-Agent": "Mozilla/4.0"})
            except requests.Timeout:
                continue  # no reply within 5 s: WeChat posts the same message again
            except requests.RequestException as exc:
                result.error = f"the webhook could not be reached ({type(exc).__name__})"
                return result
            if resp.status_code != 200:
                result.error = f"the webhook answered HTTP {resp.status_code}: {resp.text.strip()[:200]}"
                return result
            result.reply = self.read_reply(resp.text)
            return result
        return result

    def read_reply(self, body: str) -> str | None:
        """The text of a passive reply (decrypted in safe mode); None for `success` or an empty body."""
        body = body.strip()
        if body in ("", "success"):
            return None
        fields = xmltodict.parse(body)["xml"]
        if self.crypto is not None:
            plain = self.crypto.decrypt_message(body, fields.get("MsgSignature", ""), fields.get("TimeStamp", ""),
                                                fields.get("Nonce", ""))
            fields = xmltodict.parse(plain)["xml"]
        return fields.get("Content") or ""
