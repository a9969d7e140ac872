"""The `/wechat` webhook: server-URL verification, and each post of a message answered within
WeChat's 5-second window."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, request

from bot.models import OTHER, TEXT, IncomingMessage
from handlers.wechat.inbound import WeChatInbound
from handlers.wechat.send import HANDOFF_S, TEXT_LIMIT_BYTES, Mailbox, finish, mailbox_for

blueprint = Blueprint("wechat", __name__)

ACK = "success"
"""WeChat's 'received, no passive reply' answer."""
WECHAT_GIVES_UP_S = 5.5
"""A delivery that must be retried is kept open until WeChat has given up on it."""
DELIVERIES = 3
"""WeChat posts a message at most three times."""


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
    msg, raw = inbound.parse(request.args, request.get_data(cache=False))
    mailbox = mailbox_for(runtime.settings, runtime.redis)
    text = Passive(runtime, mailbox, msg, started).respond()
    if text is None:
        return Response(ACK, mimetype="text/plain")
    return Response(inbound.render_reply(raw, text, request.args), mimetype="application/xml")


class Passive:
    """What one delivery of a message answers within WeChat's 5-second window.

    A question is admitted (or recognised as a re-delivery) and then held for up to 4.5 s on a
    Redis blocking wait for its answer. The passive reply carries, in order, a page of an earlier
    answer still pending for this user and the page of this one. Not ready on the first or second
    post: stay silent past WeChat's cut-off so that it posts again. Not ready on the third: an
    empty ack where the worker may push, else a note that `继续` will fetch the answer.
    """

    def __init__(self, runtime, mailbox: Mailbox, msg: IncomingMessage, started: float):
        self.runtime, self.mailbox, self.msg, self.started = runtime, mailbox, msg, started
        self.settings = runtime.settings
        self.store = runtime.store

    def respond(self) -> str | None:
        msg = self.msg
        if msg.kind == TEXT and msg.text.strip() == self.settings.wechat_continue_word \
                and self.mailbox.pending(msg.user):
            return self._fetch()
        decision = self.runtime.admit_and_enqueue(msg)
        a = decision.admission
        if decision.reply is not None:
            return decision.reply
        own = a.delivery_id if decision.enqueue else None
        if a.outcome == "duplicate" and a.delivery_id and self._open(a.delivery_id):
            own = a.delivery_id
        if own is None:
            return None
        # The first post is the admission; re-posts count themselves (WeChat posts at most three times).
        tries = 1 + self.mailbox.count_try(msg.message_key) if a.outcome == "duplicate" else 1
        wait = self.settings.wechat_reply_wait
        pending = self.mailbox.pending(msg.user, hold=own if wait > 0 else None,
                                       seconds=wait + HANDOFF_S)
        earlier = self._take_earlier(pending, exclude=own)
        page = self._wait_for(own, check_first=a.outcome == "duplicate") if wait > 0 else None
        if earlier and page:
            return self._reply([earlier, page])
        if page:
            return self._reply([page])
        if earlier:  # this delivery ends here: say that the new answer is on its way
            return self._reply([earlier], coming=not self._may_push())
        if wait == 0:
            return None  # configured not to wait: the worker pushes, or it waits for the next message
        if tries < DELIVERIES:
            # Not ready: stay silent past WeChat's cut-off so that it posts the message again.
            time.sleep(max(0.0, self.started + WECHAT_GIVES_UP_S - time.monotonic()))
            return None
        if self._may_push():
            return None  # the worker pushes the answer when it is ready
        return self._word(self.settings.wechat_pending_text)

    def _word(self, text: str) -> str:
        return text.replace("{continue}", self.settings.wechat_continue_word)

    def _open(self, delivery_id: int) -> bool:
        """A re-delivered question is worth holding while its answer is not yet out."""
        d = self.store.delivery(delivery_id)
        return d is not None and d["status"] in ("queued", "answered")

    def _may_push(self) -> bool:
        mode = self.settings.wechat_reply_mode
        return mode == "push" or (mode == "auto" and not self.mailbox.push_refused())

    def _wait_for(self, delivery_id: int, check_first: bool) -> tuple | None:
        """Wait (held, see Mailbox.pending) for this question's answer until the reply window ends."""
        remaining = self.started + self.settings.wechat_reply_wait - time.monotonic()
        try:
            if not self.mailbox.wait_ready(delivery_id, remaining, check_first=check_first):
                return None
            return self._take(delivery_id)
        finally:
            self.mailbox.release(delivery_id)

    def _take(self, delivery_id: int) -> tuple | None:
        pages, left = self.mailbox.take(delivery_id)
        return (delivery_id, pages[0], left) if pages else None

    def _take_earlier(self, pending: list[int], exclude: int) -> tuple | None:
        for delivery_id in pending:
            if delivery_id != exclude:
                taken = self._take(delivery_id)
                if taken:
                    return taken
        return None

    def _fetch(self) -> str | None:
        """`继续`: the next page of the oldest pending answer; the word itself is not a question."""
        fetch = IncomingMessage(self.msg.platform, self.msg.user, self.msg.message_key, OTHER, detail="fetch")
        if self.runtime.admit_and_enqueue(fetch).admission.outcome == "duplicate":
            return None
        taken = self._take_earlier(self.mailbox.pending(self.msg.user), exclude=0)
        return self._reply([taken]) if taken else None

    def _reply(self, taken: list[tuple], coming: bool = False) -> str:
        """Join the claimed pages that fit into one passive reply; give the rest back; settle."""
        text, used = "", []
        for item in taken:
            joined = item[1] if not text else text + "\n\n" + item[1]
            if len(joined.encode()) <= TEXT_LIMIT_BYTES:
                text, used = joined, used + [item]
            else:
                self.mailbox.give_back(item[0], [item[1]])
        for delivery_id, _, left in used:
            if delivery_id > 0:
                self.store.add_parts_sent(delivery_id, 1)
            if left == 0:
                finish(self.store, self.mailbox, self.msg.user, delivery_id)
        extra = self.settings.wechat_pending_text if coming else (
            self.settings.wechat_more_text if self.mailbox.pending(self.msg.user) else "")
        if extra and len((text + "\n\n" + self._word(extra)).encode()) <= TEXT_LIMIT_BYTES:
            text += "\n\n" + self._word(extra)
        return text
