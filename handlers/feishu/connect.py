"""`chatgate feishu-connect`: Feishu events over lark-oapi's long connection, fed to the same
dispatcher and admission path as the webhook."""

from __future__ import annotations

from config import Settings
from handlers.app import Runtime
from handlers.feishu.events import FeishuEvents
from handlers.feishu.send import _lark


def connect_forever(settings: Settings) -> None:
    """`chatgate feishu-connect`: receive events over lark-oapi's WebSocket client and feed them
    to the same dispatcher and admission path as the webhook. Blocks."""
    lark = _lark()
    events = FeishuEvents(Runtime(settings))
    client = lark.ws.Client(settings.feishu_app_id, settings.feishu_app_secret, event_handler=events.dispatcher,
                            domain=settings.feishu_api_base.rstrip("/"), log_level=lark.LogLevel.INFO)
    client.start()
