"""The outbound side of each platform, picked by platform name.

A sender cuts an answer into the pages the platform takes, says whether it may push now, and pushes
one page at a time, raising `TransientFailure` (worth another try later) or `PermanentFailure` (this
way will not work; `waits_after` says whether the page can still go out in a passive reply).
Workers only ever see this interface (`workers/deliver.py` pushes the pages).
"""

from __future__ import annotations

import logging
from typing import Protocol

from bot.errors import PermanentFailure
from config import Settings

log = logging.getLogger("chatgate.outbox")


class Sender(Protocol):
    platform: str
    push_budget: int | None
    """Pushes allowed per delivery (WeChat: 5 per user message); None: no limit."""
    keep_s: float
    """How long an answer may wait to go out before it expires (refunded, the user told)."""

    def paginate(self, answer: str) -> list[str]:
        """The pages an answer goes out as."""

    def with_more_hint(self, text: str) -> str:
        """A pushed page after which more wait than the budget allows, with the hint to fetch them."""

    def may_push(self) -> bool:
        """True when pages may be pushed now (not only passively replied)."""

    def waits_after(self, exc: PermanentFailure) -> bool:
        """After this refusal, can the page still go out another way (a passive reply)?"""

    def send(self, user: str, text: str, *, chat: str = "", message_key: str = "", idem: str = "") -> None:
        """Push one text to the user (as a reply to `message_key` where the platform has replies)."""


class LogSender:
    """Development only: writes what would be sent to the log, for a platform with no credentials."""

    push_budget = None
    keep_s = 86400

    def __init__(self, platform: str):
        self.platform = platform

    def paginate(self, answer: str) -> list[str]:
        return [answer]

    def with_more_hint(self, text: str) -> str:
        return text

    def may_push(self) -> bool:
        return True

    def waits_after(self, exc: PermanentFailure) -> bool:
        return False

    def send(self, user: str, text: str, *, chat: str = "", message_key: str = "", idem: str = "") -> None:
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
