"""The passive reply: what one post of a WeChat message gets back within WeChat's 5-second window.

A question is admitted (or known as a re-post) and held up to WECHAT_REPLY_WAIT for its answer
(a Redis wake-up, the store the truth). The reply carries the user's ready pages, oldest first, as
many as fit one message: pages of earlier answers, then this one's. Pages are claimed in SQLite
for this post of this message; a re-post of the message means our reply never reached WeChat, so it
is served the same pages again. A reply that could only leave after WECHAT's cut-off gives its
pages back and stays silent instead.

Not ready on the first or second post: silent past WeChat's cut-off so that it posts again. Not
ready on the third: an empty ack where the worker may push, else a note that `继续` fetches it.
`继续` (in any case or width, typed or spoken) is a fetch while the user has a question in flight or
pages waiting: never charged; when nothing is ready within the window it says so. Immediate replies
(commands, trial over, media, the welcome) are notice pages and carry the pages waiting before them.
"""

from __future__ import annotations

import time

from bot.commands import is_word
from bot.delivery import IN_FLIGHT, OPEN
from bot.models import TEXT, IncomingMessage
from config import metrics
from handlers.wechat.inbound import PLATFORM
from handlers.wechat.send import TEXT_LIMIT_BYTES
from workers.deliver import HANDOFF_S

WECHAT_GIVES_UP_S = 5.5
"""A post that must be posted again is kept open until WeChat has given up on it."""
REPLY_DEADLINE_S = 4.8
"""A reply composed later than this after its post arrived may reach WeChat after its 5 s cut-off."""
DELIVERIES = 3
"""WeChat posts a message at most three times."""
LATE = object()
"""A reply that would leave too late: its pages were given back."""


class PassiveReply:
    """The reply to one post of one message (see the module docstring)."""

    def __init__(self, runtime, msg: IncomingMessage, started: float):
        self.runtime, self.msg, self.started = runtime, msg, started
        self.settings = runtime.settings
        self.store = runtime.store
        self.wakeups = runtime.wakeups
        self.sender = runtime.sender(PLATFORM)
        self.path = "passive_reply"  # how its pages count in the metrics; `fetch` for a 继续

    def respond(self) -> str | None:
        """The reply text, or None for an empty ack."""
        msg = self.msg
        if msg.kind == TEXT and is_word(msg.text, self.settings.wechat_continue_word):
            user = self.store.find_user(msg.platform, msg.user)
            waiting = self.store.in_flight(user["id"]) if user else []
            if waiting:
                return self._fetch(waiting)
        decision = self.runtime.accept(msg)
        a = decision.admission
        if a.outcome == "duplicate":
            return self._repost(a)
        if decision.reply is not None:
            self.store.add_notice(a.delivery_id, decision.reply)
            return self._finish(self._reply(a.delivery_id, a.user_id, 1), 1)
        if decision.enqueue:
            return self._hold(a.delivery_id, a.user_id, 1)
        return None

    # -- the three kinds of post -----------------------------------------------------------------

    def _hold(self, own: int, user_id: int, post: int) -> str | None:
        """A question's post: wait for its answer within the window, then reply with what is ready."""
        wait = self.settings.wechat_reply_wait
        deadline = self.started + min(wait, REPLY_DEADLINE_S - 0.2)
        if wait > 0:
            self.wakeups.hold(own, deadline - time.monotonic() + HANDOFF_S)
            try:
                with metrics.HELD_POSTS.track_inprogress():
                    self.wakeups.wait_until(lambda: not self._in_flight(own), own, deadline)
            finally:
                self.wakeups.release(own)
        text = self._reply(own, user_id, post, own=own)
        if text is LATE or text:
            return self._finish(text, post)
        if wait == 0 or not self._still_open(own):
            return None
        if post < DELIVERIES:
            return self._silent()  # not ready: WeChat posts the message again
        if self.sender.may_push():
            return None  # the worker pushes the answer when it is ready
        return self._word(self.settings.wechat_pending_text)

    def _repost(self, a) -> str | None:
        """A later post of a message: what the earlier post carried (it never arrived), else hold on."""
        again = self.store.serve_again(a.delivery_id, a.post)
        if again:
            return self._finish(self._compose(again, own=None, user_id=a.user_id), a.post)
        if self._still_open(a.delivery_id):
            return self._hold(a.delivery_id, a.user_id, a.post)
        return None

    def _fetch(self, waiting: list[int]) -> str | None:
        """`继续`: the next ready pages; if none within the window, a note that they are not ready yet."""
        self.path = "fetch"
        a = self.runtime.accept(self.msg, fetch=True).admission
        if a.outcome == "duplicate":
            again = self.store.serve_again(a.delivery_id, a.post)
            if again:
                return self._finish(self._compose(again, own=None, user_id=a.user_id), a.post)
        text = self._reply(a.delivery_id, a.user_id, a.post)
        if not text and self.settings.wechat_reply_wait > 0:
            deadline = self.started + min(self.settings.wechat_reply_wait, REPLY_DEADLINE_S - 0.2)
            with metrics.HELD_POSTS.track_inprogress():
                self.wakeups.wait_until(lambda: bool(self.store.ready_pages(a.user_id, limit=1)), waiting[0],
                                        deadline)
            text = self._reply(a.delivery_id, a.user_id, a.post)
        if text is LATE or text:
            return self._finish(text, a.post)
        return self._word(self.settings.wechat_pending_text)

    # -- composing -------------------------------------------------------------------------------

    def _reply(self, reply_to: int, user_id: int, post: int, own: int | None = None):
        """Claim the user's ready pages that fit one message for post `post` of `reply_to`: the text,
        "" when nothing is ready, or LATE when the window closed meanwhile (pages given back)."""
        picked: list[int] = []
        size = 0
        for page in self.store.ready_pages(user_id):
            size += len(page["text"].encode()) + (2 if picked else 0)
            if size > TEXT_LIMIT_BYTES:
                break
            picked.append(page["id"])
        if not picked:
            return ""
        claimed = self.store.claim_for_reply(picked, reply_to=reply_to, post=post)
        if time.monotonic() - self.started > REPLY_DEADLINE_S:
            self.store.unclaim_reply(reply_to, post)
            return LATE
        metrics.pages_sent(PLATFORM, self.path, claimed)
        return self._compose(claimed, own=own, user_id=user_id) if claimed else ""

    def _compose(self, pages: list[dict], *, own: int | None, user_id: int) -> str:
        """The claimed pages in one message, with a note on what is still to come, if it fits."""
        text = "\n\n".join(p["text"] for p in pages)
        own_pending = own is not None and own not in {p["delivery_id"] for p in pages} and self._in_flight(own)
        if own_pending and not self.sender.may_push():
            extra = self._word(self.settings.wechat_pending_text)
        elif self.store.ready_pages(user_id, limit=1):
            extra = self._word(self.settings.wechat_more_text)
        else:
            extra = ""
        if extra and len((text + "\n\n" + extra).encode()) <= TEXT_LIMIT_BYTES:
            text += "\n\n" + extra
        return text

    def _finish(self, text, post: int) -> str | None:
        if text is LATE:
            return self._silent() if post < DELIVERIES else None
        return text or None

    # -- helpers ---------------------------------------------------------------------------------

    def _in_flight(self, delivery_id: int) -> bool:
        d = self.store.delivery(delivery_id)
        return d is not None and d["status"] in IN_FLIGHT

    def _still_open(self, delivery_id: int) -> bool:
        """The question has not reached the user yet (in flight, or answered with pages waiting)."""
        d = self.store.delivery(delivery_id)
        return d is not None and (d["status"] in OPEN or any(p["state"] == "ready" for p in self.store.pages(d["id"])))

    def _silent(self) -> None:
        time.sleep(max(0.0, self.started + WECHAT_GIVES_UP_S - time.monotonic()))
        return None

    def _word(self, text: str) -> str:
        return text.replace("{continue}", self.settings.wechat_continue_word)
