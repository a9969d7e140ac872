"""The outbound side of each platform, picked by platform name.

A sender splits an answer into parts the platform accepts and sends one part at a time, raising
`TransientFailure` (worth a retry) or `PermanentFailure`. Workers only ever see this interface.
"""

from __future__ import annotations

import logging
from typing import Protocol

from config import Settings

log = logging.getLogger("chatgate.outbox")


class Sender(Protocol):
    platform: str
    max_parts: int

    def split(self, text: str) -> list[str]: ...

    def send(self, user: str, text: str, *, chat: str = "", message_key: str = "") -> None: ...


class LogSender:
    """Development only: writes what would be sent to the log, for a platform with no credentials."""

    max_parts = 5

    def __init__(self, platform: str):
        self.platform = platform

    def split(self, text: str) -> list[str]:
        return [text]

    def send(self, user: str, text: str, *, chat: str = "", message_key: str = "") -> None:
        log.info("[dev outbox] %s:%s ← %s", self.platform, user, text)


def sender_for(platform: str, settings: Settings, redis) -> Sender:
    """The sender for `platform`; in development, a LogSender when its credentials are unset."""
    if platform == "wechat":
        from handlers.wechat.send import DevWeChatSender, WeChatSender

        if settings.wechat_can_send:
            return WeChatSender(settings, redis)
        if not settings.production:
            return DevWeChatSender(settings, redis)
        raise RuntimeError("WECHAT_APP_ID and WECHAT_APP_SECRET are needed to send WeChat answers")
    if platform == "feishu":
        if settings.feishu_app_id and settings.feishu_app_secret:
            from handlers.feishu.send import FeishuSender
            return FeishuSender(settings, redis)
        if not settings.production:
            return LogSender(platform)
        raise RuntimeError("FEISHU_APP_ID and FEISHU_APP_SECRET are needed to send Feishu answers")
    raise ValueError(f"unknown platform {platform!r}")
