"""The outbound side of each platform, picked by platform name.

A sender cuts an answer into the pages the platform takes, says whether it may push now, and pushes
one page at a time, raising `TransientFailure` (worth another try later) or `PermanentFailure` (this
way will not work; `waits_after` says whether the page can still go out in a passive reply).
Workers only ever see this interface (`workers/deliver.py` pushes the pages).
"""

from __future__ import annotations

import logging
from typing import Protocol

from bot.errors import PermanentFailure

log = logging.getLogger("chatgate.outbox")


class Sender(Protocol):
    platform: str
    push_budget: int | None
    """Pushes allowed per delivery (WeChat: 5 per user message); None: no limit."""
    keep_s: float
    """How long an answer may wait to go out before it expires (refunded, the user told)."""

    def paginate(self, answer: str) -> list[str]:
        """The pages an answer goes out as."""

    def with_more_hint(self, text: str) -> str:
        """A pushed page after which more wait than the budget allows, with the hint to fetch them."""

    def may_push(self) -> bool:
        """True when pages may be pushed now (not only passively replied)."""

    def waits_after(self, exc: PermanentFailure) -> bool:
        """After this refusal, can the page still go out another way (a passive reply)?"""

    def send(self, user: str, text: str, *, chat: str = "", message_key: str = "", idem: str = "") -> None:
        """Push one text to the user (as a reply to `message_key` where the platform has replies)."""

    def push_page(self, store, d: dict, page: dict, text: str) -> None:
        """Push page `page` (a store row) of delivery `d` as `text` (`send`, or into the answer's card)."""

    def progress(self, d: dict, store) -> Progress:
        """What the user is shown while delivery `d` (a store row) is being answered: a streaming
        card, a typing state, or nothing (`NO_PROGRESS`)."""


class Progress(Protocol):
    """Shows one try's answer taking shape. Never raises: a failure to show progress costs the user
    only the view, not the answer."""

    def update(self, answer: str, thinking: str) -> None:
        """The answer so far and the model's thinking so far (the answer never holds the thinking)."""

    def stop(self) -> None:
        """The try has ended (answered or not): stop showing progress, within a moment."""


class NoProgress:
    """Nothing shown while an answer is written."""

    def update(self, answer: str, thinking: str) -> None:
        pass

    def stop(self) -> None:
        pass


NO_PROGRESS = NoProgress()


class PlainSender:
    """The defaults of a sender: nothing is shown while an answer is written, and each page is pushed
    as a message of its own."""

    def progress(self, d: dict, store) -> Progress:
        return NO_PROGRESS

    def push_page(self, store, d: dict, page: dict, text: str) -> None:
        self.send(d["user_external_id"], text, chat=d["chat"], message_key=d["message_key"], idem=f"page-{page['id']}")


class PushOnly(PlainSender):
    """The policy of a platform with no passive reply (Feishu): every page is pushed, with no budget,
    and a page refused for good can go out no other way."""

    push_budget = None

    def with_more_hint(self, text: str) -> str:
        return text

    def may_push(self) -> bool:
        return True

    def waits_after(self, exc: PermanentFailure) -> bool:
        return False


class LogSender(PushOnly):
    """Development only: writes what would be sent to the log, for a platform with no credentials."""

    keep_s = 86400

    def __init__(self, platform: str):
        self.platform = platform

    def paginate(self, answer: str) -> list[str]:
        return [answer]

    def send(self, user: str, text: str, *, chat: str = "", message_key: str = "", idem: str = "") -> None:
        log.info("[dev outbox] %s:%s ← %s", self.platform, user, text)
