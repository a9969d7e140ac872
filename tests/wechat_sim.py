"""WeChat's side of the webhook, written independently of wechatpy and of chatgate's code: builds
message XML, signs it, encrypts it the way the platform does (safe mode), and reads replies."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import re
import struct
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

TOKEN = "tok3nForTests"
APP_ID = "wx0123456789abcdef"
APP_SECRET = "app-secret-for-tests"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"  # 43 characters, as the console gives


def sha1_sorted(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def _pad(data: bytes, block: int = 32) -> bytes:
    n = block - len(data) % block
    return data + bytes([n]) * n


def _key(aes_key: str) -> bytes:
    return base64.b64decode(aes_key + "=")


def encrypt(xml: str, aes_key: str = AES_KEY, app_id: str = APP_ID) -> str:
    key = _key(aes_key)
    body = xml.encode()
    plain = os.urandom(16) + struct.pack(">I", len(body)) + body + app_id.encode()
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(enc.update(_pad(plain)) + enc.finalize()).decode()


def decrypt(text: str, aes_key: str = AES_KEY) -> str:
    key = _key(aes_key)
    dec = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = dec.update(base64.b64decode(text)) + dec.finalize()
    plain = plain[:-plain[-1]]
    (length,) = struct.unpack(">I", plain[16:20])
    return plain[20:20 + length].decode()


def text_xml(openid: str, content: str, msg_id: int | str, *, to: str = "gh_test", create_time: int | None = None
             ) -> str:
    return (f"<xml><ToUserName><![CDATA[{to}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{create_time or int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>")


def voice_xml(openid: str, recognition: str, msg_id: int | str) -> str:
    return (f"<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[voice]]></MsgType>"
            f"<MediaId><![CDATA[media1]]></MediaId><Format><![CDATA[amr]]></Format>"
            f"<Recognition><![CDATA[{recognition}]]></Recognition><MsgId>{msg_id}</MsgId></xml>")


def image_xml(openid: str, msg_id: int | str) -> str:
    return (f"<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[image]]></MsgType>"
            f"<PicUrl><![CDATA[http://example.invalid/p.jpg]]></PicUrl><MediaId><![CDATA[m1]]></MediaId>"
            f"<MsgId>{msg_id}</MsgId></xml>")


def event_xml(openid: str, event: str, create_time: int, key: str = "") -> str:
    extra = f"<EventKey><![CDATA[{key}]]></EventKey>" if key else ""
    return (f"<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[{event}]]></Event>{extra}</xml>")


@dataclass
class Signed:
    """A request ready to POST: query string and body."""

    query: str
    body: bytes

    @property
    def path(self) -> str:
        return f"/wechat?{self.query}"


def _nonce() -> str:
    """WeChat's nonces are random numbers, so two posts in one second get different queries."""
    return str(random.randrange(10**9, 10**10))


def sign_plain(xml: str, token: str = TOKEN, *, timestamp: str | None = None, nonce: str | None = None) -> Signed:
    """A plaintext-mode post: the signature covers token, timestamp and nonce, not the body."""
    timestamp = timestamp or str(int(time.time()))
    nonce = nonce or _nonce()
    q = {"signature": sha1_sorted(token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce,
         "openid": "x"}
    return Signed(urlencode(q), xml.encode())


def sign_encrypted(xml: str, token: str = TOKEN, aes_key: str = AES_KEY, app_id: str = APP_ID, *,
                   timestamp: str | None = None, nonce: str | None = None) -> Signed:
    timestamp = timestamp or str(int(time.time()))
    nonce = nonce or _nonce()
    encrypted = encrypt(xml, aes_key, app_id)
    q = {"signature": sha1_sorted(token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce,
         "openid": "x", "encrypt_type": "aes", "msg_signature": sha1_sorted(token, timestamp, nonce, encrypted)}
    body = f"<xml><ToUserName><![CDATA[gh_test]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
    return Signed(urlencode(q), body.encode())


def read_reply(body: str, token: str = TOKEN, aes_key: str | None = AES_KEY) -> dict:
    """A passive reply's fields; an encrypted one is checked and decrypted first."""
    def field(xml, name):
        m = re.search(rf"<{name}><!\[CDATA\[(.*?)\]\]></{name}>|<{name}>(.*?)</{name}>", xml, re.S)
        return None if m is None else (m.group(1) if m.group(1) is not None else m.group(2))

    if aes_key and "<Encrypt>" in body:
        enc, ts, nonce = field(body, "Encrypt"), field(body, "TimeStamp"), field(body, "Nonce")
        assert field(body, "MsgSignature") == sha1_sorted(token, ts, nonce, enc), "bad reply signature"
        body = decrypt(enc, aes_key)
    content = re.search(r"<Content><!\[CDATA\[(.*)\]\]></Content>", body, re.S)
    return {"ToUserName": field(body, "ToUserName"), "MsgType": field(body, "MsgType"),
            "Content": content.group(1).replace("]]]]><![CDATA[>", "]]>") if content else None}
