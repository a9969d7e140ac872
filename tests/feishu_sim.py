"""Feishu's side of the event webhook, written independently of lark-oapi and of chatgate's code:
builds `im.message.receive_v1` events, encrypts them (AES-256-CBC, key = sha256(Encrypt Key)) and
signs them (`X-Lark-Signature`)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

APP_ID = "cli_a1b2c3d4e5f6"
APP_SECRET = "feishu-app-secret-for-tests"
VERIFICATION_TOKEN = "vtok-0123456789abcdef"
ENCRYPT_KEY = "encrypt-key-for-tests-0123456789"
BOT_OPEN_ID = "ou_bot_000000000000000000000000000"


def encrypt(plaintext: str, key: str = ENCRYPT_KEY) -> str:
    digest = hashlib.sha256(key.encode()).digest()
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    data = padder.update(plaintext.encode()) + padder.finalize()
    enc = Cipher(algorithms.AES(digest), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + enc.update(data) + enc.finalize()).decode()


def message_event(*, text: str = "hello", chat_type: str = "p2p", sender: str = "ou_user_1",
                  mentions: list[tuple[str, str]] = (), message_id: str | None = None,
                  event_id: str | None = None, chat_id: str = "oc_chat_1", message_type: str = "text",
                  content: dict | None = None, sender_type: str = "user", token: str = VERIFICATION_TOKEN) -> dict:
    """An `im.message.receive_v1` event; `mentions` are (key, open_id) pairs like ("@_user_1", BOT_OPEN_ID)."""
    return {
        "schema": "2.0",
        "header": {"event_id": event_id or uuid.uuid4().hex, "event_type": "im.message.receive_v1",
                   "create_time": str(int(time.time() * 1000)), "token": token, "app_id": APP_ID,
                   "tenant_key": "tenant1"},
        "event": {
            "sender": {"sender_id": {"open_id": sender, "union_id": "on_" + sender, "user_id": None},
                       "sender_type": sender_type, "tenant_key": "tenant1"},
            "message": {"message_id": message_id or f"om_{uuid.uuid4().hex}", "root_id": "", "parent_id": "",
                        "create_time": str(int(time.time() * 1000)), "chat_id": chat_id, "chat_type": chat_type,
                        "message_type": message_type,
                        "content": json.dumps(content if content is not None else {"text": text}),
                        "mentions": [{"key": key, "id": {"open_id": oid, "union_id": "on_x", "user_id": None},
                                      "name": "someone", "tenant_key": "tenant1"} for key, oid in mentions]},
        },
    }


def challenge(token: str = VERIFICATION_TOKEN) -> dict:
    return {"challenge": "ch-" + uuid.uuid4().hex, "token": token, "type": "url_verification"}


def signed(event: dict, *, key: str | None = ENCRYPT_KEY, sign: bool = True, timestamp: str | None = None
           ) -> tuple[bytes, dict]:
    """The body and headers Feishu would post: encrypted and signed when `key` is set; `timestamp`
    (Unix seconds, default now) is the signed `X-Lark-Request-Timestamp`."""
    if key is None:
        return json.dumps(event).encode(), {"Content-Type": "application/json"}
    body = json.dumps({"encrypt": encrypt(json.dumps(event), key)}).encode()
    headers = {"Content-Type": "application/json"}
    if sign:
        ts, nonce = timestamp or str(int(time.time())), uuid.uuid4().hex[:16]
        headers.update({"X-Lark-Request-Timestamp": ts, "X-Lark-Request-Nonce": nonce,
                        "X-Lark-Signature": hashlib.sha256((ts + nonce + key).encode() + body).hexdigest()})
    return body, headers
