"""A WeChat message body, read strictly: the XML (plain, or decrypted in safe mode) → the fields
chatgate takes → an `IncomingMessage`. Anything that does not fit raises `Invalid` (400).

The XML: parsed by xmltodict on expat, with no DOCTYPE at all. xmltodict already refuses entity
declarations (no entity bombs, no external entities); refusing the DOCTYPE as well makes that
explicit and independent of its defaults. The body is one `<xml>` element of child elements, with
no text of its own between them.

The fields read, each present at most once, as text (not nested, no attributes):

    ToUserName    1..64 of [0-9A-Za-z_@.-] (the account's original id, gh_…)
    FromUserName  1..64 of [0-9A-Za-z_-] (the user's openid)
    CreateTime    ASCII digits, 1..4102444800 (up to the year 2100)
    MsgType       1..32 of [A-Za-z_], compared in lower case; types other than text and voice
                  (image, video, location, link, types WeChat adds later…) are recorded as media
    MsgId         messages: ASCII digits, 1..2^63-1 (events have none)
    Content       text: up to 8192 characters (absent or empty: an empty question)
    Recognition   voice: up to 8192 characters; a voice without it is media
    Event         events: 1..64 of [A-Za-z_], compared in lower case
    EventKey      events: up to 1024 characters

Other elements are not read and may take any shape (WeChat nests some, e.g. menu events' ScanCodeInfo).
"""

from __future__ import annotations

import re
from xml.parsers import expat

import xmltodict

from bot.models import CLICK, MEDIA, OTHER, SUBSCRIBE, TEXT, UNSUBSCRIBE, IncomingMessage
from handlers.fields import INT64_MAX, Invalid, field, integer, mapping, text

PLATFORM = "wechat"

MAX_ID_CHARS = 64
"""openids are 28 characters, original ids (gh_…) 15: room to spare, no room for a payload."""
MAX_TEXT_CHARS = 8192
"""A WeChat text message is much shorter; a longer Content is not WeChat's."""
MAX_KEY_CHARS = 1024
CREATE_TIME_MAX = 4_102_444_800
"""2100-01-01 in Unix seconds."""

_ACCOUNT = re.compile(r"[0-9A-Za-z_@.-]+")
_OPENID = re.compile(r"[0-9A-Za-z_-]+")
_NAME = re.compile(r"[A-Za-z_]{1,32}")
_EVENT = re.compile(r"[A-Za-z_]{1,64}")
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")
_EVENT_KINDS = {"subscribe": SUBSCRIBE, "unsubscribe": UNSUBSCRIBE, "click": CLICK}
_QR_SCENE = "qrscene_"
_PRODUCT_SCAN = ("scanbarcode|", "scanimage|")


def _refuse_doctype(*_args) -> None:
    raise Invalid("a DOCTYPE is not accepted")


class _NoDoctypeExpat:
    """What xmltodict's `expat` parameter expects: expat, with parsers that refuse any DOCTYPE."""

    @staticmethod
    def ParserCreate(*args, **kwargs):  # noqa: N802 (expat's name)
        parser = expat.ParserCreate(*args, **kwargs)
        parser.StartDoctypeDeclHandler = _refuse_doctype
        return parser


def read_xml(data: bytes | str) -> dict:
    """The children of the body's `<xml>` element, as xmltodict gives them (a string or None for a
    text element, a list for a repeated one, a dict for a nested one). `Invalid` for anything else."""
    try:
        doc = xmltodict.parse(data, expat=_NoDoctypeExpat, disable_entities=True)
    except Invalid:
        raise
    except Exception as exc:  # ExpatError (syntax, encoding), ValueError (entities)…
        raise Invalid(f"not well-formed XML ({type(exc).__name__})") from None
    if list(doc) != ["xml"]:
        raise Invalid("the root element is not <xml>")
    root = mapping(doc["xml"], "xml")
    if "#text" in root:
        raise Invalid("text between the elements")
    if any(name.startswith("@") for name in root):
        raise Invalid("attributes on <xml>")
    return dict(root)


def _one(fields: dict, name: str, *, required: bool = True) -> str | None:
    """A text element present at most once."""
    value = field(fields, name, required=required)
    if isinstance(value, list):
        raise Invalid(f"{name}: more than once")
    if value is not None and not isinstance(value, str):
        raise Invalid(f"{name}: not a text element")
    return value


def encrypted_part(data: bytes) -> dict:
    """Safe mode's envelope: `{"Encrypt": …}`, the one field wechatpy's decryption reads."""
    fields = read_xml(data)
    return {"Encrypt": text(_one(fields, "Encrypt"), "Encrypt", min_len=1, max_len=len(data), pattern=_BASE64)}


def parse(data: bytes | str) -> tuple[IncomingMessage, dict]:
    """A message body → (IncomingMessage, the reply's addressing `{"ToUserName", "FromUserName"}`
    as they came). `Invalid` when it does not fit the rules in the module docstring."""
    fields = read_xml(data)
    account = text(_one(fields, "ToUserName"), "ToUserName", min_len=1, max_len=MAX_ID_CHARS, pattern=_ACCOUNT)
    user = text(_one(fields, "FromUserName"), "FromUserName", min_len=1, max_len=MAX_ID_CHARS, pattern=_OPENID)
    created = integer(_one(fields, "CreateTime"), "CreateTime", lo=1, hi=CREATE_TIME_MAX)
    msg_type = text(_one(fields, "MsgType"), "MsgType", max_len=32, pattern=_NAME).lower()
    addressing = {"ToUserName": account, "FromUserName": user}
    if msg_type == "event":
        return _event(fields, user, created), addressing
    key = str(integer(_one(fields, "MsgId"), "MsgId", lo=1, hi=INT64_MAX))
    if msg_type == "text":
        content = text(_one(fields, "Content", required=False) or "", "Content", max_len=MAX_TEXT_CHARS, free=True)
        return IncomingMessage(PLATFORM, user, key, TEXT, content), addressing
    if msg_type == "voice":
        heard = text(_one(fields, "Recognition", required=False) or "", "Recognition", max_len=MAX_TEXT_CHARS,
                     free=True).strip()
        if heard:
            return IncomingMessage(PLATFORM, user, key, TEXT, heard), addressing
    return IncomingMessage(PLATFORM, user, key, MEDIA, detail=msg_type), addressing


def _event(fields: dict, user: str, created: int) -> IncomingMessage:
    """Events have no MsgId: WeChat repeats sender and CreateTime, which make the key."""
    event = text(_one(fields, "Event"), "Event", max_len=64, pattern=_EVENT).lower()
    key = text(_one(fields, "EventKey", required=False) or "", "EventKey", max_len=MAX_KEY_CHARS)
    kind = _EVENT_KINDS.get(event, OTHER)
    if event == "subscribe" and key.startswith(_QR_SCENE):
        key = key[len(_QR_SCENE):]  # subscribed by scanning a QR code with a scene
    elif event == "subscribe" and key.startswith(_PRODUCT_SCAN):
        kind = OTHER  # a product scan, not a follow
    return IncomingMessage(PLATFORM, user, f"{user}-{created}", kind, detail=key or event)
