"""Everything WeChat Official Account: `inbound` (signature, encryption, XML in), `webhook` (the
route and the reply within WeChat's 5-second window) and `send` (the customer-service API out)."""

from handlers.wechat.webhook import blueprint

__all__ = ["blueprint"]
