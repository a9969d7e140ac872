"""The browser simulator: WeChat and Feishu chats with the bot, on this machine, with no account.

Development only (CHATGATE_ENV=development with CHATGATE_SIMULATOR_SECRET set; `python3 dev.py up` writes
one): `handlers/app.py` registers it then and never in production, where `/simulator` is 404. Every
route answers loopback clients only, never a request that came through a proxy (`X-Forwarded-For`,
`X-Real-IP`, `Forwarded`): anyone else gets 404.

It drives the real path. The server side plays the platform: it builds each message as WeChat or
Feishu does, signs it (and encrypts it in WeChat's safe mode / with Feishu's Encrypt Key) and posts it
over HTTP to this same web process's `/wechat` or `/feishu` (`wechat_side.py`, `feishu_side.py`). For a
platform without credentials it is also the platform's API (`config/simulator.py` gives it stand-in
credentials and points WECHAT_API_BASE / FEISHU_API_BASE here), so what the workers push or reply,
through wechatpy and lark-oapi, lands in the conversation (`wechat_api.py`, `feishu_api.py`, the "dev
outbox"). Conversations live in Redis for a week (`outbox.py`); the store stays the truth.

The JSON API the page uses (errors: 400 `{"error": "..."}`):

    GET  /simulator                       the page (static/index.html); /simulator/static/<file> the rest
    GET  /simulator/api/config            {"wechat": {"enabled", "simulated", "modes": [the account's mode],
                                           "mode": "plain"|"safe", "reply_mode", "reply_wait"},
                                           "feishu": {"enabled", "bot_name", "bot_open_id", "group_chat", "stream"},
                                           "continue_word": "继续", "trial": N, "demo_llm": bool,
                                           "commands": {"me": [...], "redeem": [...], ...},
                                           "users": [{"platform", "user", "label", "following"}, ...]}
    POST /simulator/api/users             {"platform", "label"?} → {"platform", "user", "label"}: a new user
                                           (a WeChat openid `o…` or a Feishu open_id `ou_…`)
    POST /simulator/api/send              {"platform": "wechat"|"feishu", "user", "text", "voice": false,
                                           "mode": "plain"|"safe" (WeChat: must be the account's mode; WECHAT_AES_KEY
                                           set means safe) | "direct"|"group" (Feishu), "mention": true (groups)}
                                           → {"ok", "message_id", "seq", "error"} and, for WeChat, "reply" (the
                                           passive reply or null) and "posts" (1-3); for Feishu "chat".
                                           WeChat: returns once WeChat's exchange ends (up to 3 posts 5 s apart,
                                           so at most ~16 s); Feishu: once the webhook acked (it answers later).
    POST /simulator/api/event             {"platform": "wechat", "user", "event": "subscribe"|"unsubscribe"}
                                           → {"ok", "seq", "reply", "posts", "error"}
    GET  /simulator/api/conversation?platform=&user=&chat=&since=<seq>
                                           → {"messages": [{"seq", "at", "from": "user"|"bot"|"system",
                                           "kind": "text"|"voice"|"event"|"card"|"error", "text",
                                           "via": "reply"|"push"|"feishu_reply"|"card"|null,
                                           "card": {"card_id", "text", "thinking", "streaming", "summary"}|null,
                                           "user", "chat", ...}], "last": seq, "typing_until": epoch|null,
                                           "chat": the chat id}
                                           Messages added or changed after `since` (0: all). A card message keeps
                                           its seq but comes again, with its card's current text, each time the
                                           card changes (CardKit streaming). Feishu: `chat` is the group's chat id
                                           (config's feishu.group_chat), or empty for the user's direct chat.
                                           `typing_until`: WeChat's typing state (对方正在输入…) shows until then.
    GET  /simulator/api/panel?platform=&user=
                                           → {"user": {"ref", "trial_left", "trial_size", "member", "member_until"
                                           (epoch or null), "membership" (text), ...the users row} | null (never
                                           wrote), "ledger": [rows newest first, with "at_text"], "trial_size"}
    POST /simulator/api/operator          {"action": "grant"|"trial"|"code", "platform", "user", "days", "count"}
                                           → code: {"ok", "code", "batch"}; grant/trial: {"ok", ...the panel}

The simulated platform APIs (called by the SDKs, not the page): `/simulator/wechat-api/cgi-bin/...`
(token, stable_token, message/custom/send, message/custom/typing) and `/open-apis/...` at the root, as
lark-oapi takes only an origin for its domain (tenant token, bot info, message reply, CardKit cards,
element content and settings); both loopback only, and only for a platform the simulator stands in for.
"""

from handlers.simulator.views import blueprint, feishu_blueprint

__all__ = ["blueprint", "feishu_blueprint"]
