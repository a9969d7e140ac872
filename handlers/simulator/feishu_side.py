"""Feishu's side of the `/feishu` webhook, played by the simulator: `im.message.receive_v1` events as
Feishu's servers post them (in a direct chat, or in a group with or without the bot's @mention),
encrypted with the Encrypt Key (AES-256-CBC, key = sha256(Encrypt Key)) and signed
(`X-Lark-Signature`) when one is set, posted over HTTP to this same web process.

Feishu acks within 3 s; the answer comes later, as a reply through the API (the simulated one, in
`feishu_api.py`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
import uuid

import requests
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from config import Settings
from config.simulator import derived, web_origin

TENANT = "simulator-tenant"
GROUP_CHAT = "oc_simulator_group_chat_000000001"
"""The one simulated group chat every simulated user is in."""
ACK_TIMEOUT_S = 3.0
"""Feishu's cut-off for the webhook's ack."""
LATE_ACK_S = 15.0
"""How long the simulator waits for an ack at most (the first event of a process imports lark-oapi)."""


def bot_open_id(settings: Settings) -> str:
    """The simulated bot's own open_id (what `/open-apis/bot/v3/info` answers, what @mentions carry)."""
    return "ou_" + derived(settings.simulator_secret, "feishu-bot")


def direct_chat(open_id: str) -> str:
    """The chat id of a user's direct (p2p) chat with the bot."""
    return "oc_" + hashlib.sha256(f"p2p:{open_id}".encode()).hexdigest()[:32]


def new_message_id() -> str:
    return "om_" + secrets.token_hex(16)


def message_event(settings: Settings, *, sender: str, chat_id: str, group: bool, text: str, mention: bool,
                  voice: bool, message_id: str) -> dict:
    """An `im.message.receive_v1` event as Feishu posts it. In a group with `mention`, the text starts
    with the bot's @ key and `mentions` names the bot; a voice message is an `audio` one (Feishu sends
    no recognition text)."""
    now_ms = str(int(time.time() * 1000))
    mentions = []
    if voice:
        message_type, content = "audio", {"file_key": "file_sim_" + secrets.token_hex(8), "duration": 3000}
    else:
        if group and mention:
            text = "@_user_1 " + text
            mentions = [{"key": "@_user_1", "id": {"open_id": bot_open_id(settings), "union_id": "on_simulator_bot",
                                                   "user_id": None}, "name": "chatgate", "tenant_key": TENANT}]
        message_type, content = "text", {"text": text}
    return {
        "schema": "2.0",
        "header": {"event_id": uuid.uuid4().hex, "event_type": "im.message.receive_v1", "create_time": now_ms,
                   "token": settings.feishu_verification_token, "app_id": settings.feishu_app_id,
                   "tenant_key": TENANT},
        "event": {
            "sender": {"sender_id": {"open_id": sender, "union_id": "on_" + sender[3:], "user_id": None},
                       "sender_type": "user", "tenant_key": TENANT},
            "message": {"message_id": message_id, "root_id": "", "parent_id": "", "create_time": now_ms,
                        "chat_id": chat_id, "chat_type": "group" if group else "p2p", "message_type": message_type,
                        "content": json.dumps(content, ensure_ascii=False), "mentions": mentions},
        },
    }


def encrypt(plaintext: str, key: str) -> str:
    """Feishu's event encryption: base64(iv + AES-256-CBC(sha256(key), PKCS#7))."""
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    data = padder.update(plaintext.encode()) + padder.finalize()
    enc = Cipher(algorithms.AES(hashlib.sha256(key.encode()).digest()), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + enc.update(data) + enc.finalize()).decode()


def signed(event: dict, encrypt_key: str) -> tuple[bytes, dict]:
    """The body and headers Feishu posts: encrypted and signed with the Encrypt Key, plain JSON without one."""
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "Feishu-Callback"}
    if not encrypt_key:
        return json.dumps(event, ensure_ascii=False).encode(), headers
    body = json.dumps({"encrypt": encrypt(json.dumps(event, ensure_ascii=False), encrypt_key)}).encode()
    timestamp, nonce = str(int(time.time())), secrets.token_hex(8)
    headers.update({"X-Lark-Request-Timestamp": timestamp, "X-Lark-Request-Nonce": nonce,
                    "X-Lark-Signature": hashlib.sha256((timestamp + nonce + encrypt_key).encode() + body).hexdigest()})
    return body, headers


def post(settings: Settings, event: dict) -> tuple[str | None, float]:
    """Post `event` to `/feishu`: (None when it was acknowledged, else what went wrong; seconds to the ack).
    An ack later than Feishu's 3 s still counts (Feishu would push the event again, and chatgate
    dedupes it); the caller shows the delay."""
    body, headers = signed(event, settings.feishu_encrypt_key)
    started = time.monotonic()
    try:
        resp = requests.post(web_origin(settings) + "/feishu", data=body, headers=headers, timeout=LATE_ACK_S)
    except requests.Timeout:
        return f"the webhook did not ack within {LATE_ACK_S:.0f} s", time.monotonic() - started
    except requests.RequestException as exc:
        return f"the webhook could not be reached ({type(exc).__name__})", time.monotonic() - started
    if resp.status_code != 200:
        return f"the webhook answered HTTP {resp.status_code}: {resp.text.strip()[:200]}", time.monotonic() - started
    return None, time.monotonic() - started
