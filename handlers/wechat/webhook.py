"""The `/wechat` webhook: server-URL verification, and each post of a message answered within
WeChat's 5-second window."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, request

from handlers.wechat.inbound import WeChatInbound
from handlers.wechat.reply import PassiveReply

blueprint = Blueprint("wechat", __name__)

ACK = "success"
"""WeChat's 'received, no passive reply' answer."""


def _inbound() -> WeChatInbound:
    runtime = current_app.extensions["chatgate"]
    return runtime.platform("WeChat", runtime.settings.wechat_enabled, "WECHAT_TOKEN",
                            lambda: WeChatInbound(runtime.settings, runtime.redis))


@blueprint.get("/wechat")
def verify():
    """Server-URL verification: echo `echostr` when the signature is ours."""
    return Response(_inbound().echo(request.args), mimetype="text/plain")


@blueprint.post("/wechat")
def receive():
    """One message or event: verify, decrypt, parse, admit, enqueue; then reply with what is ready."""
    started = time.monotonic()
    inbound = _inbound()
    runtime = current_app.extensions["chatgate"]
    msg, addressing = inbound.parse(request.args, request.get_data(cache=False))
    text = PassiveReply(runtime, msg, started).respond()
    if text is None:
        return Response(ACK, mimetype="text/plain")
    return Response(inbound.render_reply(addressing, text, request.args), mimetype="application/xml")
