"""The `/feishu` webhook: verify, decrypt, answer the challenge, or hand the event to the shared
event path."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, abort, current_app, jsonify, request

from handlers.feishu.events import FeishuEvents
from handlers.feishu.inbound import FeishuInbound, Forbidden, Malformed

log = logging.getLogger("chatgate.feishu")

blueprint = Blueprint("feishu", __name__)


def _events(runtime=None) -> FeishuEvents:
    runtime = runtime or current_app.extensions["chatgate"]
    return runtime.platform("Feishu", runtime.settings.feishu_enabled,
                            "FEISHU_APP_ID and FEISHU_VERIFICATION_TOKEN", lambda: FeishuEvents(runtime))


def warm_up(runtime) -> None:
    """Build the event path (and import lark-oapi, about 2 s) as the web process starts, so the first
    event is acknowledged within Feishu's 3 s."""
    _events(runtime)


@blueprint.post("/feishu")
def receive():
    """One Feishu event: verify, decrypt, answer the challenge, or admit and enqueue."""
    events = _events()
    inbound = FeishuInbound(events.settings)
    try:
        event = inbound.open(request.get_data(cache=False), request.headers)
    except Forbidden as exc:
        abort(403, str(exc))
    except Malformed as exc:
        abort(400, str(exc))
    if event.get("type") == "url_verification":
        return jsonify(challenge=event.get("challenge", ""))
    try:
        events.handle(event)
    except (ValueError, AttributeError, TypeError, KeyError) as exc:
        log.warning("feishu event could not be read: %s", exc)
        abort(400, "not a readable im.message.receive_v1 event")
    return Response('{"msg":"success"}', mimetype="application/json")


