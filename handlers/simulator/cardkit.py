"""CardKit as Feishu runs it, for the browser simulator's Feishu API (`handlers/simulator/feishu_api.py`,
which keeps the cards in Redis) and the tests' fake Feishu (`tests/fakes.py` `FakeFeishu.cards`): card
entities, their elements' streamed content and their settings, written from Feishu's CardKit
documentation, not from chatgate's client (`handlers/feishu/cards.py`). No Flask, no HTTP: `route`
takes a method, a path and a JSON body and gives back a status and a JSON body. It checks what the
platform checks and records every operation, so a test can see exactly what the user's card went
through.

Checked: card JSON 2.0 with element ids of 1–20 letters, digits and underscores starting with a
letter; a card under 30 KB; an element's content only while streaming mode is on; every operation's
`sequence` an integer strictly greater than the card's last one (300317 otherwise); the card taken by
a reply only once it exists. Rate: operations per card per second are recorded (`peak_ops_per_s`),
and more than 10 in a second is refused with 300320, as CardKit does past its 10 ops/s.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field

ELEMENT_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,19}$")
CARD_MAX_BYTES = 30_000
OPS_PER_S = 10

SEQUENCE_NOT_INCREASING = 300317
STREAMING_OFF = 300309
RATE_LIMITED = 300320
NO_CARD = 300301
NO_ELEMENT = 300302
BAD_CARD = 300303


@dataclass
class Card:
    """One card entity as the fake holds it."""

    card_id: str
    json: dict
    elements: dict[str, str]
    streaming: bool
    summary: str = ""
    sequence: int = 0
    ops: list[tuple[float, str, str, str, int]] = field(default_factory=list)
    """(monotonic time, op: create|content|settings, element id, content or settings, sequence)."""

    def updates(self, element: str = "answer") -> list[str]:
        """The contents put into `element`, in order."""
        return [content for _, op, el, content, _ in self.ops if op == "content" and el == element]

    @property
    def text(self) -> str:
        """What the answer element shows now."""
        return self.elements.get("answer", "")

    def peak_ops_per_s(self, op: str | None = None) -> int:
        """The most operations (of kind `op`, default all) within any one second."""
        times = [t for t, kind, *_ in self.ops if op in (None, kind)]
        return max((sum(1 for u in times if t <= u < t + 1.0) for t in times), default=0)


def _elements(node, found: dict[str, str]) -> None:
    if isinstance(node, dict):
        if "element_id" in node:
            found[node["element_id"]] = node.get("content", "") if isinstance(node.get("content"), str) else ""
        for value in node.values():
            _elements(value, found)
    elif isinstance(node, list):
        for value in node:
            _elements(value, found)


class FakeCards:
    """The CardKit routes and their state; shares the fake server's lock."""

    def __init__(self, cond: threading.Condition):
        self._cond = cond
        self.reset()

    def reset(self) -> None:
        self.cards: dict[str, Card] = {}
        self.refusals: list[tuple[str, int, str]] = []
        """(path, code, why) of every operation refused for breaking a rule (not scripted failures)."""
        self._fail: tuple[str, int, int] | None = None
        self._fail_times: int | None = 0
        self._next = 7_400_000_000_000_000_000

    def fail(self, op: str, code: int, times: int | None = 1, status: int = 400) -> None:
        """Make the next `times` operations `op` (create, content, settings or any) fail with `code`."""
        with self._cond:
            self._fail, self._fail_times = (op, code, status), times

    def wait_for(self, predicate, timeout: float = 10, what: str = "cards"):
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise TimeoutError(f"FakeCards: timed out after {timeout}s waiting for {what}")

    def _scripted(self, op: str):
        if self._fail is None or self._fail[0] not in (op, "any"):
            return None
        if self._fail_times is not None:
            if self._fail_times <= 0:
                return None
            self._fail_times -= 1
        return self._fail

    def route(self, method: str, path: str, body: dict):
        """(status, body) for a CardKit request, or None when the path is not CardKit's."""
        parts = path.split("/")  # ['', 'open-apis', 'cardkit', 'v1', 'cards', id, 'elements', el, 'content']
        if parts[:5] != ["", "open-apis", "cardkit", "v1", "cards"]:
            return None
        with self._cond:
            op = "create" if len(parts) == 5 else parts[-1] if parts[-1] in ("content", "settings") else "?"
            failing = self._scripted(op)
            if failing is not None:
                return failing[2], {"code": failing[1], "msg": "scripted failure"}
            if method == "POST" and len(parts) == 5:
                result = self._create(body)
            elif method == "PUT" and len(parts) == 9 and parts[6] == "elements" and parts[-1] == "content":
                result = self._content(parts[5], parts[7], body)
            elif method == "PATCH" and len(parts) == 7 and parts[-1] == "settings":
                result = self._settings(parts[5], body)
            else:
                return 404, {"code": 404, "msg": f"fake: no route {method} {path}"}
            if result["code"]:
                self.refusals.append((path, result["code"], result["msg"]))
            self._cond.notify_all()
            return (200 if result["code"] == 0 else 400), result

    def _create(self, body: dict) -> dict:
        if body.get("type") != "card_json" or not isinstance(body.get("data"), str):
            return {"code": BAD_CARD, "msg": "type must be card_json and data a JSON string"}
        if len(body["data"].encode("utf-8")) > CARD_MAX_BYTES:
            return {"code": BAD_CARD, "msg": "card larger than 30 KB"}
        try:
            card = json.loads(body["data"])
        except ValueError:
            return {"code": BAD_CARD, "msg": "data is not JSON"}
        if card.get("schema") != "2.0":
            return {"code": BAD_CARD, "msg": "streaming needs card JSON 2.0"}
        elements: dict[str, str] = {}
        _elements(card.get("body", {}), elements)
        if any(not ELEMENT_ID.match(e) for e in elements):
            return {"code": BAD_CARD, "msg": "bad element_id"}
        config = card.get("config") or {}
        cid = self._new_id()
        self.cards[cid] = Card(cid, card, elements, bool(config.get("streaming_mode")),
                               (config.get("summary") or {}).get("content", ""))
        self.cards[cid].ops.append((time.monotonic(), "create", "", body["data"], 0))
        return {"code": 0, "msg": "success", "data": {"card_id": cid}}

    def _new_id(self) -> str:
        """A new card's id (Feishu's are long decimal numbers)."""
        self._next += 1
        return str(self._next)

    def _sequenced(self, card: Card | None, body: dict) -> dict | None:
        """The refusal of an operation on `card` with this body's sequence, or None."""
        if card is None:
            return {"code": NO_CARD, "msg": "card not found"}
        seq = body.get("sequence")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq < 2**31:
            return {"code": BAD_CARD, "msg": "sequence must be a positive int32"}
        if seq <= card.sequence:
            return {"code": SEQUENCE_NOT_INCREASING, "msg": f"sequence {seq} not above {card.sequence}"}
        now = time.monotonic()
        if sum(1 for t, *_ in card.ops if t > now - 1.0) >= OPS_PER_S:
            return {"code": RATE_LIMITED, "msg": "more than 10 operations a second on one card"}
        return None

    def _content(self, cid: str, element: str, body: dict) -> dict:
        card = self.cards.get(cid)
        refused = self._sequenced(card, body)
        if refused:
            return refused
        if element not in card.elements:
            return {"code": NO_ELEMENT, "msg": f"no element {element}"}
        if not card.streaming:
            return {"code": STREAMING_OFF, "msg": "streaming mode is off"}
        if not isinstance(body.get("content"), str):
            return {"code": BAD_CARD, "msg": "content must be a string"}
        card.sequence = body["sequence"]
        card.elements[element] = body["content"]
        card.ops.append((time.monotonic(), "content", element, body["content"], body["sequence"]))
        return {"code": 0, "msg": "success", "data": {}}

    def _settings(self, cid: str, body: dict) -> dict:
        card = self.cards.get(cid)
        refused = self._sequenced(card, body)
        if refused:
            return refused
        try:
            config = json.loads(body.get("settings") or "").get("config") or {}
        except (ValueError, AttributeError):
            return {"code": BAD_CARD, "msg": "settings must be a JSON string"}
        card.sequence = body["sequence"]
        if "streaming_mode" in config:
            card.streaming = bool(config["streaming_mode"])
        card.summary = (config.get("summary") or {}).get("content", card.summary)
        card.ops.append((time.monotonic(), "settings", "", body["settings"], body["sequence"]))
        return {"code": 0, "msg": "success", "data": {}}
