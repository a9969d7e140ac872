"""Which sender a platform's answers go out through (see `handlers/senders.py` for the interface)."""

from __future__ import annotations

from config import Settings
from handlers.senders import LogSender, Sender


def sender_for(platform: str, settings: Settings, redis) -> Sender:
    """The sender for `platform`; in development, a LogSender when its credentials are unset (with
    CHATGATE_SIMULATOR_SECRET set they never are: the browser simulator's stand-ins fill them and the
    real senders send to it, `config/simulator.py`)."""
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
