"""The `/feishu` webhook: verify, decrypt, answer the challenge, or hand the event to the shared
event path."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, abort, current_app, jsonify, request

from handlers.feishu.events import FeishuEvents
from handlers.feishu.inbound import FeishuInbound, Forbidden, Malformed
from handlers.feishu.message import challenge
from handlers.fields import Invalid

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
        log.warning("feishu: body refused (%s)", exc, extra={"platform": "feishu", "outcome": "refused"})
        abort(400, str(exc))
    try:
        if event.get("type") == "url_verification":
            return jsonify(challenge=challenge(event))
        events.handle(event)
    except Invalid as exc:
        log.warning("feishu: event refused (%s)", exc, extra={"platform": "feishu", "outcome": "refused"})
        abort(400, f"malformed event: {exc}")
    return Response('{"msg":"success"}', mimetype="application/json")


