"""WeChat's typing state (“对方正在输入…”) while a question is answered, on accounts that may push.

WeChat's rules for `POST /cgi-bin/message/custom/typing` (`{"touser": openid, "command": "Typing"}`):
it needs the customer-service permission and a message of the user within the last 30 s; the state
lasts 15 s; asking again while it lasts is refused (45081); any message that reaches the user ends it.

So each try at a question gets a `TypingState` (from `WeChatSender.progress`), which asks for the
first Typing once the try has gone `FIRST_AFTER_S` without its answer (a faster answer costs no
call, and a held post carries it back anyway), again every `EVERY_S` while the try goes on, and
never once the user's message is `WINDOW_S` old. It runs in a greenlet of the worker and is killed
the moment the try ends, answered or not; a call still in flight is cut off, so no Typing reaches
WeChat after the answer has gone out. No CancelTyping is sent: the answer (or the apology, or the
note that it is coming) ends the state, and a try that fails leaves it to run out within 15 s —
one more call per answer would buy nothing the user sees.

Showing the state never costs the answer. Each ask is counted in
`chatgate_wechat_typing_total{result}`: `sent`, `refused` (WeChat answered an errcode) or `failed`
(an HTTP error, no answer, the token store in Redis down), and nothing else happens; the access
token is the shared one, refreshed on 40001/40014/42001 as a push's is. A refusal other than 45081
(a state already showing, e.g. a failed try's) ends the asking for this try. A 48001 (the account
has no customer-service API) is treated as a push's: in `auto` mode the account answers by passive
replies from then on, with no push and no typing.

It needs a process gevent has patched (`chatgate worker`): elsewhere a greenlet would make its call
only when the answer yields, and hold it up, so nothing is shown.
"""

from __future__ import annotations

import logging
import time

import gevent
from gevent.monkey import is_module_patched
from wechatpy.exceptions import WeChatClientException

from config import metrics
from handlers.senders import NO_PROGRESS, Progress

log = logging.getLogger("chatgate.wechat")

FIRST_AFTER_S = 1.0
"""How long a try goes without its answer before the user is shown the typing state."""
EVERY_S = 15.0
"""How long one typing state lasts: it is asked for again after that while the try goes on."""
WINDOW_S = 29.0
"""WeChat shows the state only within 30 s of the user's message; a second less, for the message's way
to us and the call's way back."""
STOP_WAIT_S = 1.0
"""At most how long `stop()` waits for a call in flight to be cut off."""
ALREADY_TYPING = 45081
"""The errcode of a Typing asked for while one is showing."""
NO_PUSH = 48001
"""The errcode of an account without the customer-service API."""


def keep(sender, user: str, received_at: float) -> Progress:
    """The typing state of `user`, whose message came at `received_at` (epoch seconds), while one try
    answers it through `sender` (a `WeChatSender`); nothing when it could not be shown in time."""
    if not is_module_patched("socket") or time.time() + FIRST_AFTER_S >= received_at + WINDOW_S:
        return NO_PROGRESS
    return TypingState(sender, user, received_at + WINDOW_S)


class TypingState:
    """Keeps WeChat's typing state up for one user while one try answers (a `Progress`: never raises)."""

    def __init__(self, sender, user: str, until: float):
        self._sender, self._user, self._until = sender, user, until
        self._greenlet = gevent.spawn_later(FIRST_AFTER_S, self._run)

    def update(self, answer: str, thinking: str) -> None:
        """The answer is growing, but not ready to go out: the state stays as it is."""

    def stop(self) -> None:
        """The try has ended: ask for no more, and cut off a call in flight."""
        self._greenlet.kill(block=True, timeout=STOP_WAIT_S)

    def _run(self) -> None:
        while time.time() < self._until and self._show():
            gevent.sleep(EVERY_S)

    def _show(self) -> bool:
        """Ask for the state once; False when asking again would not help this try."""
        fields = {"platform": "wechat", "outcome": "typing"}
        try:
            self._sender.typing(self._user)
        except WeChatClientException as exc:
            if exc.errcode is None:  # an HTTP error status
                metrics.wechat_typing("failed")
                log.debug("typing state not shown: HTTP %s", getattr(exc.response, "status_code", "?"), extra=fields)
                return True
            metrics.wechat_typing("refused")
            log.info("WeChat refused the typing state (%s: %s)", exc.errcode, exc.errmsg,
                     extra={**fields, "code": exc.errcode})
            if exc.errcode == NO_PUSH:
                self._sender.cannot_push()
            return exc.errcode == ALREADY_TYPING
        except Exception as exc:  # no answer, the token store down: try again with the next state
            metrics.wechat_typing("failed")
            log.debug("typing state not shown: %s", type(exc).__name__, extra=fields)
            return True
        metrics.wechat_typing("sent")
        return True
