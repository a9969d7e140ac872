"""A Feishu `im.message.receive_v1` event, read strictly: the fields chatgate takes, checked, and
nothing else passed on. Anything that does not fit raises `Invalid` (400).

`message_event` returns a new event holding only the checked fields, which is what lark-oapi's
dispatcher then parses (so its models never see a shape they do not expect):

    header.event_id               1..128 of [0-9A-Za-z_-]
    event.sender                  an object; sender_type up to 32 characters
    event.sender.sender_id        an object or absent; open_id 1..128 of [0-9A-Za-z_-] or absent
    event.message                 an object
    event.message.message_id      1..128 of [0-9A-Za-z_-]
    event.message.chat_id         1..128 of [0-9A-Za-z_-], or absent
    event.message.chat_type       up to 32 characters, or absent
    event.message.message_type    1..32 of [a-z_], or absent
    event.message.content         a string of up to 65536 characters (JSON inside JSON); for text and
                                  rich-text ("post") messages a JSON object whose words are strings
                                  (`text_of`), at most 16384 characters of them
    event.message.mentions        up to 100 objects: key up to 64 characters, name up to 256,
                                  id an object or absent with open_id as above

`text_of` is also what the event path (handlers/feishu/events.py) reads the words with, so the
webhook and the long connection agree on them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from handlers.fields import Invalid, array, field, mapping, text

MAX_CONTENT_CHARS = 65536
MAX_TEXT_CHARS = 16384
MAX_MENTIONS = 100
MAX_PARAGRAPHS = 1000
"""Rows of a rich-text message, and elements per row."""
MAX_CHALLENGE_CHARS = 1024

_ID = re.compile(r"[0-9A-Za-z_-]{1,128}")
_TYPE = re.compile(r"[a-z_]{1,32}")
_WORD_TAGS = ("text", "a", "md")


def _optional(parent: Mapping, name: str, where: str, **rules) -> str | None:
    value = field(parent, name, required=False)
    return None if value is None else text(value, where, **rules)


def _user_id(value, where: str) -> dict | None:
    if value is None:
        return None
    ids = mapping(value, where)
    return {"open_id": _optional(ids, "open_id", f"{where}.open_id", max_len=128, pattern=_ID)}


def message_event(event: Mapping) -> dict:
    """The checked fields of a 2.0 `im.message.receive_v1` event, as a new event (see the module
    docstring); `Invalid` when a field is missing, of the wrong type, too long or out of shape."""
    header = mapping(field(event, "header"), "header")
    body = mapping(field(event, "event"), "event")
    sender = mapping(field(body, "sender"), "event.sender")
    message = mapping(field(body, "message"), "event.message")
    message_type = _optional(message, "message_type", "message.message_type", max_len=32, pattern=_TYPE)
    content = _optional(message, "content", "message.content", max_len=MAX_CONTENT_CHARS, free=True)
    if message_type in ("text", "post"):
        text_of(message_type, content or "")
    mentions = []
    for i, item in enumerate(array(message.get("mentions"), "message.mentions", max_items=MAX_MENTIONS)):
        where = f"message.mentions[{i}]"
        item = mapping(item, where)
        mentions.append({"key": _optional(item, "key", f"{where}.key", max_len=64),
                         "name": _optional(item, "name", f"{where}.name", max_len=256, free=True),
                         "id": _user_id(item.get("id"), f"{where}.id")})
    return {
        "schema": "2.0",
        "header": {"event_id": text(field(header, "event_id"), "header.event_id", pattern=_ID, max_len=128),
                   "event_type": "im.message.receive_v1"},
        "event": {
            "sender": {"sender_id": _user_id(sender.get("sender_id"), "sender.sender_id"),
                       "sender_type": _optional(sender, "sender_type", "sender.sender_type", max_len=32)},
            "message": {"message_id": text(field(message, "message_id"), "message.message_id", max_len=128,
                                           pattern=_ID),
                        "chat_id": _optional(message, "chat_id", "message.chat_id", max_len=128, pattern=_ID),
                        "chat_type": _optional(message, "chat_type", "message.chat_type", max_len=32),
                        "message_type": message_type, "content": content, "mentions": mentions},
        },
    }


def challenge(event: Mapping) -> str:
    """The URL-verification challenge to echo."""
    return text(field(event, "challenge", required=False) or "", "challenge", max_len=MAX_CHALLENGE_CHARS)


def _json_object(content: str, where: str) -> Mapping:
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        raise Invalid(f"{where}: not JSON") from None
    return mapping(body, where)


def text_of(message_type: str, content: str) -> str:
    """The words of a text or rich-text ("post") message's `content` (a JSON string): the text, or
    the title and paragraphs of text, link and markdown elements with the @ keys kept."""
    body = _json_object(content, "message.content")
    if message_type == "text":
        return text(body.get("text", ""), "content.text", max_len=MAX_TEXT_CHARS, free=True)
    # rich text: {"title", "content": [[element…]…]}, or the same under a locale key ({"zh_cn": {…}})
    post = body if body.get("content") else next((v for v in body.values() if isinstance(v, Mapping)), {})
    lines = [text(post.get("title") or "", "content.title", max_len=MAX_TEXT_CHARS, free=True)]
    for row in array(post.get("content"), "content.content", max_items=MAX_PARAGRAPHS):
        words = []
        for el in array(row, "content.content[]", max_items=MAX_PARAGRAPHS):
            if isinstance(el, Mapping) and el.get("tag") in _WORD_TAGS:
                value = el.get("text")
                value = el.get("user_name") if value is None or value == "" else value
                words.append(text("" if value is None else value, "content element", max_len=MAX_TEXT_CHARS,
                                  free=True))
        lines.append("".join(words))
    return text("\n".join(line for line in lines if line), "content", max_len=MAX_TEXT_CHARS, free=True)
