"""Feishu in: open a webhook body (decrypting it with lark-oapi's AESCipher when an Encrypt Key is
set), answer the URL challenge, check the verification token, the `X-Lark-Signature` and the age of
the timestamp it signs."""

from __future__ import annotations

import hashlib
import hmac
import json

from config import Settings
from handlers.freshness import is_fresh


class Forbidden(Exception):
    """The request was not signed or tokened by our app (403)."""


class Malformed(Exception):
    """The body is not a Feishu event we can read (400)."""


class FeishuInbound:
    """Verify and open webhook bodies for one Feishu app; build the event dispatcher."""

    def __init__(self, settings: Settings):
        self.token = settings.feishu_verification_token
        self.encrypt_key = settings.feishu_encrypt_key
        self.window = settings.replay_window

    def open(self, body: bytes, headers) -> dict:
        """The event as a dict; raises Malformed (400) or Forbidden (403).

        A `url_verification` challenge is returned as is (it carries no signature); every other
        event must carry our verification token and, with an Encrypt Key, a valid signature over a
        timestamp inside the replay window.
        """
        try:
            envelope = json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; nesting too deep
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
        # The signature covers the body too, so a fresh timestamp is all a replay check needs here:
        # a verbatim replay inside the window is stopped by the event and message dedupe.
        if not is_fresh(timestamp, self.window):
            raise Forbidden("timestamp outside the replay window")
