"""The plain values that cross layers: what came in, and what admission decided."""

from __future__ import annotations

from dataclasses import dataclass

TEXT = "text"
"""A question in words (typed, or a voice message WeChat transcribed)."""
MEDIA = "media"
"""An image, video, file, location…: answered with a polite 'text only', never charged."""
SUBSCRIBE = "subscribe"
UNSUBSCRIBE = "unsubscribe"
CLICK = "click"
"""A menu click: recorded, no LLM."""
OTHER = "other"
"""Any other event: recorded and acknowledged."""

KINDS = (TEXT, MEDIA, SUBSCRIBE, UNSUBSCRIBE, CLICK, OTHER)


@dataclass(frozen=True)
class IncomingMessage:
    """One platform delivery, stripped of everything platform-specific.

    `message_key` is what the platform repeats on a re-delivery (WeChat's MsgId, or sender and
    CreateTime for events); it is unique per platform. `chat` separates conversations of one user
    (empty for WeChat, the chat id for Feishu).
    """

    platform: str
    user: str
    message_key: str
    kind: str
    text: str = ""
    chat: str = ""
    detail: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown message kind {self.kind!r}")


@dataclass(frozen=True)
class Admission:
    """What the gate decided about one delivery.

    outcome is one of:
      duplicate  this delivery was seen before (delivery_id is the first one's); nothing new happens
      trial      one answer was reserved from the free trial; queue the question
      member     the user is a member; queue the question
      exhausted  trial used up and no membership; reply with the trial-over text
      busy       refused for today's LLM spend (`reason` budget or hard_cap); not charged
      limited    refused for the user's rate (`reason` flood) or a member's daily limit
                 (`reason` member_daily); not charged
      command    an in-chat command (`me`, `reset`, `redeem`, `help`) or a fetch (`继续`); answered at
                 once, not charged
      recorded   not a question (event, media); recorded, nothing charged
    """

    outcome: str
    delivery_id: int | None = None
    user_id: int | None = None
    trial_left: int = 0
    member_until: float | None = None
    new_user: bool = False
    post: int = 1
    """Which delivery of the message this is (1 for the first; WeChat posts a message up to 3 times)."""
    reason: str = ""
    """Why a question was refused (`bot/guard.py`: trial_over, budget, hard_cap, flood, member_daily)."""
    remind_until: float | None = None
    """The expiry this delivery's reply reminds the member of (once per expiry), or None."""

    @property
    def queued(self) -> bool:
        return self.outcome in ("trial", "member")
