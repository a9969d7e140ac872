"""The simulated WeChat API (`/simulator/wechat-api/cgi-bin/...`), what wechatpy in the workers talks to
when the account is the simulator's: access tokens (`token`, `stable_token`), customer-service texts
(`message/custom/send`: they appear in the conversation as pushes) and the typing state
(`message/custom/typing`). It checks what WeChat checks here: the AppID and AppSecret, the token, the
message's shape, and that the user still follows the account (43004 otherwise).
"""

from __future__ import annotations

import secrets

from flask import jsonify, request

from handlers.simulator.outbox import PREFIX, conversation

TOKEN_TTL_S = 7200


def _issue(settings, redis, appid, secret) -> dict:
    if appid != settings.wechat_app_id:
        return {"errcode": 40013, "errmsg": "invalid appid"}
    if secret != settings.wechat_app_secret:
        return {"errcode": 40125, "errmsg": "invalid appsecret"}
    token = "SIM-" + secrets.token_urlsafe(24)
    redis.set(PREFIX + "wechat-token:" + token, 1, ex=TOKEN_TTL_S)
    return {"access_token": token, "expires_in": TOKEN_TTL_S}


def route(path: str, settings, redis, outbox):
    """The response to one call of the simulated WeChat API at `path` (below `/cgi-bin/`)."""
    body = request.get_json(force=True, silent=True) or {}
    if path == "token" and request.method == "GET":
        if request.args.get("grant_type") != "client_credential":
            return jsonify(errcode=40002, errmsg="invalid grant_type")
        return jsonify(_issue(settings, redis, request.args.get("appid"), request.args.get("secret")))
    if path == "stable_token" and request.method == "POST":
        if body.get("grant_type") != "client_credential":
            return jsonify(errcode=40002, errmsg="invalid grant_type")
        return jsonify(_issue(settings, redis, body.get("appid"), body.get("secret")))
    token = request.args.get("access_token", "")
    if not token:
        return jsonify(errcode=41001, errmsg="access_token missing")
    if not redis.exists(PREFIX + "wechat-token:" + token):
        return jsonify(errcode=40001, errmsg="invalid credential, access_token is invalid or not latest")
    touser = body.get("touser") or ""
    known = outbox.user("wechat", touser) if touser else None
    if path == "message/custom/send" and request.method == "POST":
        if body.get("msgtype") != "text" or not isinstance(body.get("text"), dict) or not touser:
            return jsonify(errcode=44002, errmsg="empty post data")
        if known is None:
            return jsonify(errcode=40003, errmsg="invalid openid")
        if not known.get("following", True):
            return jsonify(errcode=43004, errmsg="require subscribe")
        outbox.add(conversation("wechat", touser), sender="bot", kind="text", text=body["text"].get("content", ""),
                   via="push", user=touser)
        return jsonify(errcode=0, errmsg="ok")
    if path == "message/custom/typing" and request.method == "POST":
        if known is None or body.get("command") not in ("Typing", "CancelTyping"):
            return jsonify(errcode=44002, errmsg="bad typing call")
        outbox.typing(conversation("wechat", touser), body["command"] == "Typing")
        return jsonify(errcode=0, errmsg="ok")
    return jsonify(errcode=-1, errmsg=f"simulator: no API {request.method} /cgi-bin/{path}"), 404
