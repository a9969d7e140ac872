"""Feishu answers streamed into a card (CardKit v1), so the user reads the answer as it is written.

The life of one card, each step written to the store (`bot/store/cards.py`) so a retried try or a
later push continues the same card and never posts a second one:

1. when a try starts: create the card entity (card JSON 2.0, streaming mode on, the answer element
   showing `CARD_WAITING`), remember it, and send it as the reply to the asking message (its `uuid`
   is the delivery's, so Feishu takes a repeat as the same message), then remember that message;
2. as the model writes: put the answer so far into its element (and the thinking into its collapsed
   panel, with CHATGATE_SHOW_THINKING), at most every `UPDATE_EVERY_S`: CardKit allows 10
   operations a second per card;
3. when the first page is pushed (`FeishuSender.push_page`): put its final text and turn streaming
   off (the chat list's preview stops saying it is being written). Later pages are text replies.

Every operation carries a `sequence` that CardKit wants strictly increasing per card: milliseconds
since the card was created (kept in the store), so processes that continue a card keep counting up.
When CardKit refuses (the app lacks `cardkit:card:write`, or a card is rejected), that answer goes out
as text and every process sends text for `NO_CARDS_S`, then tries cards again.
"""

from __future__ import annotations

import json
import logging
import time

import gevent
from gevent.event import Event

from bot import texts
from bot.errors import PermanentFailure, TransientFailure
from bot.paging import split_text
from bot.store.cards import CLOSED, DROPPED, OPEN
from config import metrics

log = logging.getLogger("chatgate.feishu")

ANSWER_ID, THINKING_ID = "answer", "thinking"
"""The card's elements: the answer (markdown) and the thinking (markdown inside a collapsed panel)."""
CARD_TEXT_BYTES = 20_000
"""The most of an answer one card shows (a card is at most 30 KB); the rest follow as text replies."""
THINKING_BYTES = 6_000
"""The most of the thinking the panel shows (its start)."""
UPDATE_EVERY_S = 0.3
"""At most about three updates a second per card (CardKit allows 10 operations a second)."""
OPEN_WAIT_S = 12.0
"""How long a try that ended waits for its card to be sent, so its answer goes into that card."""
NO_CARDS_S = 86_400
"""After CardKit refuses, answers go out as text this long before cards are tried again."""
TRANSIENT_CODES = frozenset({99991400, 230020, 99991663, 99991668})
"""Rate limits and a token to refresh: worth trying again later, not a refusal of cards."""


class CardRefused(PermanentFailure):
    """CardKit (or the reply carrying a card) refused for a reason retrying will not cure."""


class CardsRefused(CardRefused):
    """CardKit would not create a card: the app cannot have cards now (a missing permission…)."""


def card_json(show_thinking: bool) -> dict:
    """A new answer card: streaming mode on, the answer element waiting for the first words."""
    elements = [{"tag": "markdown", "element_id": ANSWER_ID, "content": texts.CARD_WAITING}]
    if show_thinking:
        elements.insert(0, {
            "tag": "collapsible_panel", "element_id": "thinking_panel", "expanded": False,
            "header": {"title": {"tag": "plain_text", "content": texts.CARD_THINKING}},
            "elements": [{"tag": "markdown", "element_id": THINKING_ID, "content": "…"}]})
    return {"schema": "2.0",
            "config": {"update_multi": True, "streaming_mode": True,
                       "summary": {"content": texts.CARD_STREAMING},
                       "streaming_config": {"print_frequency_ms": {"default": 30}, "print_step": {"default": 2},
                                            "print_strategy": "fast"}},
            "body": {"elements": elements}}


def shown(text: str, limit: int) -> str:
    """The start of `text` that fits in `limit` UTF-8 bytes (with … when cut)."""
    if len(text.encode("utf-8")) <= limit:
        return text
    return split_text(text, limit - 3)[0].rstrip() + "…"


class Sequencer:
    """CardKit's `sequence` for one card: milliseconds since it was created, strictly increasing."""

    def __init__(self, created_at: float):
        self.created_at = created_at
        self.last = 0

    def next(self) -> int:
        self.last = max(self.last + 1, int((time.time() - self.created_at) * 1000) + 1)
        return self.last


class CardKit:
    """The CardKit and IM calls of a card, through lark-oapi, each raising `TransientFailure` or
    `CardRefused`."""

    def __init__(self, client):
        self.client = client

    def _check(self, resp, what: str) -> None:
        if resp.success():
            return
        metrics.api_error("feishu", resp.code)
        detail = f"Feishu {what}: error {resp.code}: {resp.msg}"
        if resp.code in TRANSIENT_CODES or (resp.raw is not None and (resp.raw.status_code or 0) >= 500):
            raise TransientFailure(detail)
        raise CardRefused(detail)

    def _call(self, method, req, what: str):
        try:
            resp = method(req)
        except Exception as exc:  # requests' connection errors and timeouts, bad responses
            metrics.api_error("feishu", "network")
            raise TransientFailure(f"Feishu {what}: API unreachable ({type(exc).__name__})") from None
        self._check(resp, what)
        return resp

    def create(self, card: dict) -> str:
        """A new card entity's id; `CardsRefused` when CardKit will not make one."""
        from lark_oapi.api.cardkit.v1 import CreateCardRequest, CreateCardRequestBody

        body = CreateCardRequestBody.builder().type("card_json").data(json.dumps(card, ensure_ascii=False)).build()
        req = CreateCardRequest.builder().request_body(body).build()
        try:
            return self._call(self.client.cardkit.v1.card.create, req, "card create").data.card_id
        except CardsRefused:
            raise
        except CardRefused as exc:
            raise CardsRefused(str(exc)) from None

    def send(self, message_key: str, card_id: str, idem: str) -> str:
        """Reply to the asking message with the card; the id of the reply."""
        from lark_oapi.api.im.v1 import ReplyMessageRequest, ReplyMessageRequestBody

        content = json.dumps({"type": "card", "data": {"card_id": card_id}})
        req = (ReplyMessageRequest.builder().message_id(message_key)
               .request_body(ReplyMessageRequestBody.builder().msg_type("interactive").content(content)
                             .reply_in_thread(False).uuid(idem).build()).build())
        return self._call(self.client.im.v1.message.reply, req, "card reply").data.message_id

    def put(self, card_id: str, element_id: str, text: str, sequence: int) -> None:
        """The element's whole text (CardKit types out what was added to the text it had)."""
        from lark_oapi.api.cardkit.v1 import ContentCardElementRequest, ContentCardElementRequestBody

        req = (ContentCardElementRequest.builder().card_id(card_id).element_id(element_id)
               .request_body(ContentCardElementRequestBody.builder().uuid(f"{card_id}-{sequence}")
                             .content(text).sequence(sequence).build()).build())
        self._call(self.client.cardkit.v1.card_element.content, req, "card update")

    def settle(self, card_id: str, summary: str, sequence: int) -> None:
        """Streaming off, and the chat list's preview set to `summary`."""
        from lark_oapi.api.cardkit.v1 import SettingsCardRequest, SettingsCardRequestBody

        settings = json.dumps({"config": {"streaming_mode": False, "summary": {"content": summary}}},
                              ensure_ascii=False)
        req = (SettingsCardRequest.builder().card_id(card_id)
               .request_body(SettingsCardRequestBody.builder().settings(settings).uuid(f"{card_id}-{sequence}")
                             .sequence(sequence).build()).build())
        self._call(self.client.cardkit.v1.card.settings, req, "card settings")


def card_idem(d: dict) -> str:
    """The `uuid` of the reply carrying a delivery's card: the same for every try and push."""
    return f"card-{d['platform']}-{d['id']}"[:50]


def open_card(kit: CardKit, store, d: dict, show_thinking: bool) -> dict | None:
    """The delivery's open card, created and sent if need be (and remembered at each step); None when
    it has a card no longer open."""
    card = store.card(d["id"])
    if card is None:
        card_id = kit.create(card_json(show_thinking))
        card = store.add_card(d["id"], card_id)
        if card["card_id"] == card_id:
            metrics.FEISHU_CARDS.labels("created").inc()
    if card["state"] != OPEN:
        return None
    if not card["message_id"]:
        message_id = kit.send(d["message_key"], card["card_id"], card_idem(d))
        store.card_sent(d["id"], message_id)
        card = {**card, "message_id": message_id}
    return card


def finish_card(kit: CardKit, store, d: dict, card: dict, text: str) -> None:
    """Put a page's text into the open card and turn streaming off: the card is closed."""
    if not card["message_id"]:
        card = open_card(kit, store, d, False) or card
    seq = Sequencer(card["created_at"])
    kit.put(card["card_id"], ANSWER_ID, text or " ", seq.next())
    try:
        kit.settle(card["card_id"], " ".join(text.split())[:60], seq.next())
    except CardRefused as exc:  # the text is in: only the chat list's preview still says "writing"
        log.info("delivery %s: the card's streaming mode stays on (%s)", d["id"], exc,
                 extra={"platform": "feishu", "delivery_id": d["id"], "outcome": "card not settled"})
    store.end_card(d["id"], CLOSED)
    metrics.FEISHU_CARDS.labels("closed").inc()


def drop_card(store, d: dict, exc: Exception) -> None:
    """The card cannot be used: its pages go out as text replies."""
    if store.end_card(d["id"], DROPPED):
        metrics.FEISHU_CARDS.labels("dropped").inc()
        log.warning("delivery %s: its card cannot be used (%s); the answer goes out as text", d["id"], exc,
                    extra={"platform": "feishu", "delivery_id": d["id"], "message_key": d["message_key"],
                           "outcome": "card dropped"})


class CardStream:
    """One try's answer, streamed into the delivery's card by a greenlet of its own, so the model's
    stream is never held up by Feishu. `update` only notes the latest text; `stop` lets the greenlet
    put the last of it and end (and waits, up to `OPEN_WAIT_S`, for a card being sent)."""

    def __init__(self, sender, store, d: dict, show_thinking: bool):
        self.sender, self.store, self.d = sender, store, d
        self.show_thinking = show_thinking
        self.latest = ("", "")
        self.first_words_at: float | None = None
        """When the first words of the answer came (for `chatgate_feishu_card_first_update_seconds`)."""
        self.changed = Event()
        self.done = False
        self.greenlet = gevent.spawn(self._run)

    def update(self, answer: str, thinking: str) -> None:
        if answer and self.first_words_at is None:  # -1 once the first update is out
            self.first_words_at = time.monotonic()
        self.latest = (answer, thinking)
        self.changed.set()

    def stop(self) -> None:
        self.done = True
        self.changed.set()
        self.greenlet.join(timeout=OPEN_WAIT_S)
        if not self.greenlet.dead:
            self.greenlet.kill(block=False)

    def _run(self) -> None:
        try:
            card = open_card(self.sender.kit, self.store, self.d, self.show_thinking)
        except CardRefused as exc:  # no card for this answer (nor for any, when CardKit refused to make one)
            if isinstance(exc, CardsRefused):
                self.sender.refused(exc)
            drop_card(self.store, self.d, exc)
            return
        except Exception as exc:  # not now: the push sends the card, or the answer as text
            self._failed(exc)
            return
        if card is None:
            return
        try:
            self._stream(card)
        except Exception as exc:  # a lost update costs the user only the view; the push puts the final text
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        metrics.FEISHU_CARDS.labels("update_failed").inc()
        log.info("delivery %s: card not updated (%s)", self.d["id"], exc,
                 extra={"platform": "feishu", "delivery_id": self.d["id"], "outcome": "card update failed"})

    def _stream(self, card: dict) -> None:
        kit, seq = self.sender.kit, Sequencer(card["created_at"])
        put = {ANSWER_ID: texts.CARD_WAITING, THINKING_ID: "…"}
        last = 0.0
        while True:
            self.changed.wait()
            self.changed.clear()
            pause = last + UPDATE_EVERY_S - time.monotonic()
            if pause > 0 and not self.done:
                gevent.sleep(pause)
            answer, thinking = self.latest
            # Once the try has ended, the push puts the answer's final text: only the thinking is left.
            want = {} if self.done else {ANSWER_ID: shown(answer, CARD_TEXT_BYTES)}
            if self.show_thinking:
                want[THINKING_ID] = shown(thinking, THINKING_BYTES)
            for element, text in want.items():
                if text and text != put[element]:
                    kit.put(card["card_id"], element, text, seq.next())
                    put[element] = text
                    last = time.monotonic()
                    metrics.FEISHU_CARDS.labels("update").inc()
                    if element == ANSWER_ID and self.first_words_at is not None:
                        metrics.CARD_FIRST_UPDATE.observe(last - self.first_words_at)
                        self.first_words_at = -1.0  # observed once
            if self.done:
                return
