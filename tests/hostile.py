"""Hostile bodies for the webhooks, as an attacker holding one valid signature would write them:
well-formed messages and events, then mutated (elements repeated or dropped, numbers out of range,
unicode edge cases, CDATA terminators, DOCTYPEs and entities, stray text, broken names, JSON of the
wrong shape, deep nesting, huge arrays).

Every generator takes a `random.Random`: the property-based tests pass hypothesis' (`st.randoms()`,
so a failure shrinks), `scripts/fuzz_webhooks.py` a seeded one. Signing and encryption are the
callers' (tests/wechat_sim.py, tests/feishu_sim.py): the bodies here are what gets signed.
"""

from __future__ import annotations

import json
import time
from random import Random

from tests import feishu_sim

OPENIDS = ["oHostile_user_000000000000001", "oHostile_user_000000000000002", "o" + "x" * 27]

HOSTILE_TEXT = [
    "", " ", "\t\n", "-1", "0", "1", "00000000000000000001", "1.5", "1e10", "0x10", "NaN", "+7", " 12 ",
    "9223372036854775807", "9223372036854775808", "18446744073709551616", "17999999999999999999999995574349",
    "4102444801", "1_000", "١٢٣", "１２３", "²", "\u202eevil", "\ufeff", "\u200b", "\u0301", "😀" * 3,
    "\U0010fffd", "𝕏" * 40, "]]>", "]]]]><![CDATA[>", "<![CDATA[x]]>", "&amp;&lt;&#x1F600;", "&#0;", "&#xD800;",
    "<b>nested</b>", "a]]>b<c>", "gh_test", "oX", "text", "event", "voice", "subscribe", "继续", "me", "redeem 123",
    "x" * 64, "x" * 65, "y" * 1025, "z" * 8193, "\r\n" * 3, "\x7f", "%00", "\\u0000", "null", "{}", "[]",
]
"""Values put in place of a field: numbers at and past every bound, other scripts' digits, bidi and
zero-width marks, astral characters, CDATA and markup that ends or nests an element, control-ish text."""

MSG_TYPES = ["text", "voice", "image", "video", "shortvideo", "location", "link", "file", "event", "TEXT",
             "Event", "device_event", "miniprogrampage", "unknown_type"]
EVENTS = ["subscribe", "unsubscribe", "CLICK", "SCAN", "LOCATION", "VIEW", "scancode_push", "TEMPLATESENDJOBFINISH"]
DOCTYPES = [
    '<!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>',
    '<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    '<!DOCTYPE xml SYSTEM "http://127.0.0.1:1/x.dtd">',
    '<!DOCTYPE xml>',
    '<!DOCTYPE xml [<!ENTITY % p SYSTEM "http://127.0.0.1:1/p"> %p;]>',
]


def _cdata(value: str) -> str:
    return f"<![CDATA[{value}]]>"


def _random_text(rnd: Random, limit: int = 40) -> str:
    """Text drawn from ASCII, CJK, astral and combining ranges (never lone surrogates: a body is UTF-8)."""
    ranges = [(0x20, 0x7e), (0x4e00, 0x4fff), (0x1f600, 0x1f64f), (0x300, 0x36f), (0xa0, 0x2ff), (0xe000, 0xe0ff)]
    out = []
    for _ in range(rnd.randrange(limit + 1)):
        lo, hi = rnd.choice(ranges)
        out.append(chr(rnd.randint(lo, hi)))
    return "".join(out)


def _value(rnd: Random) -> str:
    return rnd.choice(HOSTILE_TEXT) if rnd.random() < 0.7 else _random_text(rnd)


# -- WeChat XML -----------------------------------------------------------------------------------

def wechat_fields(rnd: Random, now: int | None = None) -> list[tuple[str, str, bool]]:
    """A message or event WeChat could send: (element, value, as CDATA) in order."""
    now = now or int(time.time())
    msg_type = rnd.choice(MSG_TYPES)
    fields = [("ToUserName", "gh_test", True), ("FromUserName", rnd.choice(OPENIDS), True),
              ("CreateTime", str(now - rnd.randrange(1000)), False), ("MsgType", msg_type, True)]
    if msg_type.lower() == "event":
        fields.append(("Event", rnd.choice(EVENTS), True))
        if rnd.random() < 0.5:
            fields.append(("EventKey", rnd.choice(["qrscene_123", "menu_1", "scanbarcode|x", ""]), True))
    else:
        if msg_type.lower() == "text":
            fields.append(("Content", _random_text(rnd, 60) or "hi", True))
        elif msg_type.lower() == "voice":
            fields += [("MediaId", "m1", True), ("Format", "amr", True), ("Recognition", _random_text(rnd), True)]
        else:
            fields.append(("MediaId", "m1", True))
        fields.append(("MsgId", str(rnd.randrange(1, 2**63)), False))
    return fields


def _element(name: str, value: str, cdata: bool) -> str:
    return f"<{name}>{_cdata(value) if cdata else value}</{name}>"


def wechat_xml(rnd: Random, now: int | None = None, mutations: int | None = None) -> str:
    """A WeChat body: a message or event, then `mutations` (default 0..4) hostile changes."""
    fields = wechat_fields(rnd, now)
    parts = [_element(*f) for f in fields]
    root, prolog = "xml", ""
    count = rnd.choice([0, 1, 1, 2, 2, 3, 4]) if mutations is None else mutations
    for _ in range(count):
        i = rnd.randrange(len(parts))
        name, value, cdata = fields[i % len(fields)]  # parts and fields drift apart as parts grow
        kind = rnd.randrange(16)
        if kind == 0:      # an element repeated, the same or another value
            parts.insert(i + 1, _element(name, rnd.choice([value, _value(rnd)]), cdata))
        elif kind == 1:    # an element missing
            parts[i] = ""
        elif kind == 2:    # a hostile value, as CDATA
            parts[i] = _element(name, _value(rnd), True)
        elif kind == 3:    # a hostile value, as text (markup and entities in it take effect)
            parts[i] = f"<{name}>{_value(rnd)}</{name}>"
        elif kind == 4:    # stray text between elements
            parts.insert(i, rnd.choice(["stray", " x ", "&amp;", "]]>", _random_text(rnd, 8) or "t"]))
        elif kind == 5:    # a broken element name
            parts[i] = rnd.choice([f"<{name} >{value}</{name}x>", f"<1{name}>{value}</1{name}>", f"<{name}>{value}",
                                   f"<{name}/>", f"<{name} a='1'>{value}</{name}>", f"<{name[:3]}>{value}</{name}>"])
        elif kind == 6:    # nested elements where text is expected
            parts[i] = f"<{name}><a>{value}</a><b/></{name}>"
        elif kind == 7:    # a DOCTYPE (entities, external entities, parameter entities)
            prolog = rnd.choice(DOCTYPES)
            if "ENTITY a" in prolog or "ENTITY x" in prolog:
                parts[i] = f"<{name}>&{'a' if 'ENTITY a' in prolog else 'x'};</{name}>"
        elif kind == 8:    # an extreme number
            parts[i] = f"<{name}>{rnd.choice(['-1', '0', str(2**63), str(2**64), '9' * 40, str(10**10)])}</{name}>"
        elif kind == 9:    # another root, or a second one
            root = rnd.choice(["XML", "root", "xml:x", "x"]) if rnd.random() < 0.5 else root
            parts.append(rnd.choice(["</xml><xml>", ""]))
        elif kind == 10:   # CDATA terminators and comments inside the value
            inner = _cdata(value + "]]>" + value) if cdata else f"<!--c-->{value}"
            parts[i] = f"<{name}>{inner}</{name}>"
        elif kind == 11:   # a processing instruction or comment between elements
            parts.insert(i, rnd.choice(["<?pi x?>", "<!-- c -->", "<![CDATA[loose]]>"]))
        elif kind == 12:   # an unknown element, any shape
            parts.insert(i, rnd.choice(["<Unknown>1</Unknown>", "<ScanCodeInfo><ScanType>q</ScanType></ScanCodeInfo>",
                                        "<Unknown/><Unknown/>"]))
        elif kind == 13:   # a long value
            parts[i] = _element(name, rnd.choice(["x", "中", "😀"]) * rnd.choice([63, 64, 65, 1024, 8192, 8193]), True)
        elif kind == 14:   # the type changed under the other fields
            parts.append(_element("MsgType", rnd.choice(MSG_TYPES), True))
        else:              # truncated
            whole = "".join(parts)
            parts = [whole[:rnd.randrange(len(whole) + 1)]]
    xml = f"{prolog}<{root}>{''.join(parts)}</{root}>"
    if rnd.random() < 0.05:
        xml = xml[:rnd.randrange(len(xml) + 1)]
    return xml


# -- JSON: Feishu events and afdian orders --------------------------------------------------------

def _deep(rnd: Random) -> object:
    depth = rnd.choice([10, 100, 1000, 3000])
    inner: object = rnd.choice([0, "x", None, {}])
    for _ in range(depth):
        inner = [inner] if rnd.random() < 0.5 else {"a": inner}
    return inner


def hostile_json(rnd: Random) -> object:
    """A JSON value of any shape: wrong types, extreme numbers, deep nesting, huge arrays."""
    kind = rnd.randrange(12)
    if kind == 0:
        return None
    if kind == 1:
        return rnd.choice([True, False])
    if kind == 2:
        return rnd.choice([0, -1, 2**63, -(2**63) - 1, 10**30, 1.5, -0.0, 1e308, 2**31])
    if kind == 3:
        return _value(rnd)
    if kind == 4:
        return rnd.choice([[], {}, [None], [{}], {"": None}])
    if kind == 5:
        return _deep(rnd)
    if kind == 6:
        return [rnd.choice([0, "x", {}, None])] * rnd.choice([101, 1001, 5000])
    if kind == 7:
        return {"text": hostile_json(rnd)} if rnd.random() < 0.5 else [hostile_json(rnd)]
    if kind == 8:
        return "x" * rnd.choice([127, 128, 129, 257, 16385, 30000])
    if kind == 9:
        if rnd.random() < 0.2:  # JSON inside JSON, nested past any parser's recursion limit
            depth = rnd.choice([100, 1000, 5000])
            return '{"text":' * depth + '"x"' + "}" * depth
        return json.dumps(rnd.choice([{"text": 5}, [], "x", {"text": "]]>"}, {"zh_cn": {"content": [["x"]]}},
                                      {"title": [], "content": [[{"tag": "text", "text": {}}]]}]))
    if kind == 10:
        return rnd.choice(["not json", "{", '{"text":', "\"\\ud800\"", "NaN", "1e999"])
    return _random_text(rnd)


def _paths(node, prefix=()):
    """Where a value can be changed: the root, and down to 12 levels, 20 items of a list."""
    yield prefix
    if len(prefix) >= 12:
        return
    if isinstance(node, dict):
        for key, value in list(node.items()):
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node[:20]):
            yield from _paths(value, (*prefix, i))


def mutate_json(rnd: Random, doc: object, mutations: int) -> tuple[object, set]:
    """`doc` with `mutations` changes at random paths (a value replaced, a key dropped or added);
    returns it and the set of top-level keys whose subtree was touched (() for the root)."""
    touched: set = set()
    for _ in range(mutations):
        paths = list(_paths(doc))
        path = rnd.choice(paths)
        touched.add(path[0] if path else ())
        if not path:
            doc = hostile_json(rnd)
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        action = rnd.randrange(3)
        if action == 0 or not isinstance(parent, dict):
            parent[last] = hostile_json(rnd)
        elif action == 1:
            del parent[last]
        else:
            parent[rnd.choice(["extra", last + "_", "", "__proto__"])] = hostile_json(rnd)
    return doc, touched


def feishu_event(rnd: Random, mutations: int | None = None) -> tuple[object, bool]:
    """(a Feishu event as JSON, whether a 403 is legitimate: the mutations reached the header or the
    token, so it may no longer be ours)."""
    if rnd.random() < 0.05:
        event: object = feishu_sim.challenge()
    else:
        mentions = [("@_user_1", feishu_sim.BOT_OPEN_ID)] if rnd.random() < 0.5 else []
        kind = rnd.randrange(3)
        content = None
        if kind == 1:
            content = {"title": _random_text(rnd), "content": [[{"tag": "text", "text": _random_text(rnd)},
                                                                {"tag": "at", "user_id": "@_user_1"}]]}
        elif kind == 2:
            content = {"zh_cn": {"title": "t", "content": [[{"tag": "md", "text": _random_text(rnd)}]]}}
        event = feishu_sim.message_event(
            text=_random_text(rnd) or "hi", chat_type=rnd.choice(["p2p", "group"]), mentions=mentions,
            sender=rnd.choice(["ou_fuzz_1", "ou_fuzz_2"]), message_type=rnd.choice(["text", "post", "image"]),
            content=content, sender_type=rnd.choice(["user", "user", "app"]))
    count = rnd.choice([0, 1, 1, 2, 3]) if mutations is None else mutations
    event, touched = mutate_json(rnd, event, count)
    return event, bool(touched & {(), "header", "token", "type", "encrypt"})


def afdian_order(rnd: Random, mutations: int | None = None) -> object:
    """afdian's order webhook body, mutated."""
    order = {"out_trade_no": str(rnd.randrange(10**17, 10**19)) + str(rnd.randrange(100)),
             "custom_order_id": "", "user_id": "u" + str(rnd.randrange(10**6)), "plan_id": "plan_month",
             "month": rnd.choice([1, 12]), "total_amount": "19.90", "show_amount": "19.90", "status": 2,
             "remark": _random_text(rnd), "redeem_id": "", "product_type": 0, "discount": "0.00",
             "sku_detail": [], "address_person": "", "address_phone": "", "address_address": ""}
    body = {"ec": 200, "em": "ok", "data": {"type": rnd.choice(["order", "order", "other"]), "order": order}}
    count = rnd.choice([0, 1, 1, 2, 3]) if mutations is None else mutations
    return mutate_json(rnd, body, count)[0]


def to_json(doc: object) -> bytes:
    """JSON as a platform would post it (NaN and infinities included: Python's parser takes them);
    too deep for the encoder (a RecursionError) becomes a hand-written nesting of the same depth."""
    try:
        return json.dumps(doc, ensure_ascii=False).encode()
    except RecursionError:
        return b"[" * 20000 + b"]" * 20000
