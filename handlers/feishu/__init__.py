"""Everything Feishu/Lark: `inbound` (decrypt, token and signature checks), `events` (the dispatcher
shared by the webhook and the long connection, and the group @mention rule), `send` (replies out),
`webhook` (the route) and `connect` (the long connection, `chatgate feishu-connect`)."""

from handlers.feishu.webhook import blueprint

__all__ = ["blueprint"]
