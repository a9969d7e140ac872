"""Everything WeChat Official Account: the webhook's signature, encryption and XML, and the
customer-service API that carries answers back.

Inbound:  `WeChatInbound` turns a request (query args + body) into an `IncomingMessage`, raising
          `Forbidden` (403) for anything not signed by our token and `BadRequest` (400) for bodies
          that do not parse; `render_reply` builds the passive reply (encrypted in safe mode).
Outbound: `WeChatSender` sends text through `message/custom/send` with wechatpy, the access token
          shared by every process through Redis and refreshed under a Redis lock, so no process
          invalidates another's token.
"""

from __future__ import annotations

import logging
import time

import requests
from flask import Blueprint, Response, current_app, request
from wechatpy import parse_message
from wechatpy.client import WeChatClient
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException, WeChatClientException
from wechatpy.replies import TextReply
from wechatpy.session.redisstorage import RedisStorage
from wechatpy.utils import check_signature
from werkzeug.exceptions import BadRequest, Forbidden

from bot.errors import PermanentFailure, TransientFailure
from bot.models import CLICK, MEDIA, OTHER, SUBSCRIBE, TEXT, UNSUBSCRIBE, IncomingMessage
from config import Settings

log = logging.getLogger("chatgate.wechat")

PLATFORM = "wechat"
TEXT_LIMIT_BYTES = 2000
"""WeChat caps a text message at about 2048 UTF-8 bytes; keep a margin."""
PAGE_BYTES = TEXT_LIMIT_BYTES - 160
"""An answer's page leaves room for the 'send 继续 for more' hint."""
PUSH_BUDGET = 5
"""Customer-service messages allowed per user message (45047 past that)."""
TOKEN_ERRORS = frozenset({40001, 40014, 42001})
"""access_token invalid, not the latest, or expired: refresh once and try again."""
PERMANENT_ERRORS = frozenset({
    40003,  # invalid openid
    43004,  # the user unfollowed
    45002,  # content too long
    45015,  # the user has not written within 48 hours
    45047,  # customer-service message budget used up
    48001,  # the account may not use this API (unverified subscription account)
    40013, 40125, 40164,  # bad AppID / AppSecret / IP not whitelisted: the operator must fix these
})

_EVENT_KINDS = {"subscribe": SUBSCRIBE, "subscribe_scan": SUBSCRIBE, "unsubscribe": UNSUBSCRIBE,
                "click": CLICK}


class WeChatInbound:
    """Verify, decrypt and parse webhook requests for one official account."""

    def __init__(self, settings: Settings):
        self.token = settings.wechat_token
        self.crypto = (WeChatCrypto(settings.wechat_token, settings.wechat_aes_key, settings.wechat_app_id)
                       if settings.wechat_aes_key else None)

    def check(self, args) -> None:
        """The plain signature every request carries: sha1 of sorted token, timestamp and nonce."""
        try:
            check_signature(self.token, args.get("signature", ""), args.get("timestamp", ""),
                            args.get("nonce", ""))
        except InvalidSignatureException:
            raise Forbidden("bad signature") from None

    def echo(self, args) -> str:
        """Server-URL verification (GET): a valid signature gets `echostr` back verbatim."""
        self.check(args)
        return args.get("echostr", "")

    def parse(self, args, body: bytes):
        """A POST body → (IncomingMessage, wechatpy message). 403 if forged, 400 if unparseable."""
        self.check(args)
        if self.crypto is not None:
            if args.get("encrypt_type") != "aes":
                # With an AES key configured, a plaintext body is not authenticated by anything.
                raise Forbidden("encrypted messages expected (safe mode)")
            try:
                xml = self.crypto.decrypt_message(body, args.get("msg_signature", ""),
                                                  args.get("timestamp", ""), args.get("nonce", ""))
            except (InvalidSignatureException, InvalidAppIdException):
                raise Forbidden("bad message signature") from None
            except Exception as exc:  # base64, padding, XML: wechatpy raises many kinds
                raise BadRequest(f"cannot decrypt the message ({type(exc).__name__})") from None
        else:
            xml = body
        try:
            raw = parse_message(xml)
            return self._to_incoming(raw), raw
        except Exception as exc:  # xmltodict's ValueError/ExpatError, KeyError for missing fields…
            raise BadRequest(f"cannot parse the message ({type(exc).__name__})") from None

    @staticmethod
    def _to_incoming(raw) -> IncomingMessage:
        user = raw.source
        if not user:
            raise ValueError("no FromUserName")
        if raw.type == "event":
            kind = _EVENT_KINDS.get(raw.event, OTHER)
            return IncomingMessage(PLATFORM, user, f"{user}-{raw.time}", kind,
                                   detail=str(getattr(raw, "key", "") or raw.event))
        if not raw.id:
            raise ValueError("message without MsgId")
        key = str(raw.id)
        if raw.type == "text":
            return IncomingMessage(PLATFORM, user, key, TEXT, raw.content or "")
        if raw.type == "voice" and (raw.recognition or "").strip():
            return IncomingMessage(PLATFORM, user, key, TEXT, raw.recognition.strip())
        return IncomingMessage(PLATFORM, user, key, MEDIA, detail=raw.type)

    def render_reply(self, raw, text: str, args) -> str:
        """The passive reply XML for `text` (encrypted in safe mode)."""
        xml = TextReply(content=escape_cdata(text), message=raw).render()
        if self.crypto is None:
            return xml
        return self.crypto.encrypt_message(xml, args.get("nonce", ""), args.get("timestamp") or None)


def escape_cdata(text: str) -> str:
    """wechatpy writes fields as CDATA without escaping; `]]>` inside would end it early."""
    return text.replace("]]>", "]]]]><![CDATA[>")


def split_text(text: str, limit: int = TEXT_LIMIT_BYTES) -> list[str]:
    """Split `text` into parts of at most `limit` UTF-8 bytes, never inside a character.

    A part ends at the last line break in its second half when there is one, so paragraphs stay
    whole where they can.
    """
    parts: list[str] = []
    rest = text
    while rest:
        if len(rest.encode("utf-8")) <= limit:
            parts.append(rest)
            break
        size, cut = 0, 0
        for i, ch in enumerate(rest):
            size += len(ch.encode("utf-8"))
            if size > limit:
                cut = i
                break
        newline = rest.rfind("\n", 0, cut)
        if newline >= cut // 2:
            cut = newline + 1
        parts.append(rest[:cut])
        rest = rest[cut:]
    return [p for p in parts if p.strip()] or [text]


class SharedTokenClient(WeChatClient):
    """wechatpy's client with the access token kept in Redis and refreshed under a Redis lock.

    Each `/cgi-bin/token` fetch invalidates the previous token (after a short grace), so only one
    process may fetch at a time, and a process that finds a fresh token already stored by another
    uses it instead of fetching again. The token URL honours `WECHAT_API_BASE`.
    """

    def __init__(self, settings: Settings, redis):
        super().__init__(settings.wechat_app_id, settings.wechat_app_secret,
                         session=RedisStorage(redis, prefix="chatgate:wechat"),
                         timeout=settings.wechat_http_timeout, auto_retry=False)
        self.API_BASE_URL = settings.wechat_api_base.rstrip("/") + "/cgi-bin/"
        self._redis = redis

    def fetch_access_token(self, stale: str | None = None):
        """Store a new token unless another process already replaced `stale` (or the missing one)."""
        lock = self._redis.lock(f"chatgate:wechat:{self.appid}:token-lock", timeout=30, blocking_timeout=30)
        with lock:
            current = self.session.get(self.access_token_key)
            if current and current != stale:
                return {"access_token": current}
            res = self._http.get(self.API_BASE_URL + "token", timeout=self.timeout, params={
                "grant_type": "client_credential", "appid": self.appid, "secret": self.secret})
            res.raise_for_status()
            result = res.json()
            if result.get("errcode"):
                raise WeChatClientException(result["errcode"], result.get("errmsg"), client=self)
            expires_in = int(result.get("expires_in", 7200))
            # Expire our copy two minutes early; the old token stays valid for a while after that.
            self.session.set(self.access_token_key, result["access_token"], max(expires_in - 120, 60))
            log.info("fetched a new WeChat access token (expires in %ss)", expires_in)
            return result


class WeChatRefused(PermanentFailure):
    """WeChat refused a customer-service message for a reason retrying will not cure; `errcode` says which."""

    def __init__(self, errcode: int, detail: str):
        super().__init__(detail)
        self.errcode = errcode


KEEP_PENDING = frozenset({45015, 45047, 48001})
"""Refusals after which the answer waits for the user's next message instead of being lost."""


class Mailbox:
    """Answers on their way to WeChat users, shared by every web and worker process through Redis.

    Keys (under `chatgate:wechat:<appid>:`):
      pages:<d>       the answer's pages not yet delivered; LPOP is the atomic claim: whoever pops
                      a page (a held webhook, `继续`, or the worker's push) delivers it, once
      pending:<user>  delivery ids with pages left, oldest first
      ready:<d>       wakes webhooks holding delivery d when its answer is stored
      holding:<d>     set while a webhook holds delivery d (the worker then leaves it the answer)
      tries:<msgid>   how many times WeChat has posted this message
      nopush          the account answered 48001: it has no customer-service API
    """

    def __init__(self, redis, app_id: str, ttl: int):
        self.redis = redis
        self.prefix = f"chatgate:wechat:{app_id}:"
        self.ttl = ttl

    def _k(self, *parts) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    def put(self, user: str, delivery_id: int, pages: list[str]) -> bool:
        """Make an answer available (once: False if a re-run job already put it) and wake holders."""
        if not self.redis.set(self._k("put", delivery_id), 1, nx=True, ex=self.ttl):
            return False
        p = self.redis.pipeline()
        p.rpush(self._k("pages", delivery_id), *pages)
        p.expire(self._k("pages", delivery_id), self.ttl)
        p.rpush(self._k("pending", user), delivery_id)
        p.expire(self._k("pending", user), self.ttl)
        p.lpush(self._k("ready", delivery_id), 1)
        p.expire(self._k("ready", delivery_id), 60)
        p.execute()
        return True

    def take(self, delivery_id: int, count: int = 1) -> tuple[list[str], int]:
        """Claim up to `count` pages of an answer: (the pages, how many are left)."""
        p = self.redis.pipeline()
        p.lpop(self._k("pages", delivery_id), count)
        p.llen(self._k("pages", delivery_id))
        pages, left = p.execute()
        return [x.decode() for x in pages or []], left

    def give_back(self, delivery_id: int, pages: list[str]) -> None:
        """Return claimed pages that could not be delivered, in order, to the front."""
        if pages:
            self.redis.lpush(self._k("pages", delivery_id), *reversed(pages))
            self.redis.expire(self._k("pages", delivery_id), self.ttl)

    def forget(self, user: str, delivery_id: int) -> None:
        self.redis.lrem(self._k("pending", user), 0, delivery_id)
        self.redis.delete(self._k("pages", delivery_id))

    def pending(self, user: str, hold: int | None = None, seconds: float = 0) -> list[int]:
        """Deliveries of this user with pages left, oldest first; with `hold`, also mark that
        delivery as held by a webhook for `seconds` (one round trip for both)."""
        if hold is None:
            return [int(x) for x in self.redis.lrange(self._k("pending", user), 0, -1)]
        p = self.redis.pipeline(transaction=False)
        p.lrange(self._k("pending", user), 0, -1)
        p.set(self._k("holding", hold), 1, px=max(int(seconds * 1000), 1))
        return [int(x) for x in p.execute()[0]]

    def has_pages(self, delivery_id: int) -> bool:
        return bool(self.redis.exists(self._k("pages", delivery_id)))

    def wait_ready(self, delivery_id: int, timeout: float, check_first: bool = True) -> bool:
        """Block (on Redis, not in a sleep loop) until the answer is stored or `timeout` passes.
        (`put` leaves a wake-up token for a minute, so a new question need not check first.)"""
        if check_first and self.has_pages(delivery_id):
            return True
        if timeout <= 0.01:
            return False
        got = self.redis.blpop([self._k("ready", delivery_id)], timeout=timeout)
        if got is None:
            return False
        self.redis.lpush(self._k("ready", delivery_id), 1)  # pass the wake-up on to any other holder
        return True

    def release(self, delivery_id: int) -> None:
        self.redis.delete(self._k("holding", delivery_id))

    def held(self, delivery_id: int) -> bool:
        return bool(self.redis.exists(self._k("holding", delivery_id)))

    def count_try(self, message_key: str) -> int:
        """How many times WeChat has re-posted this message (1, 2)."""
        p = self.redis.pipeline()
        p.incr(self._k("tries", message_key))
        p.expire(self._k("tries", message_key), 120)
        return p.execute()[0]

    def push_refused(self) -> bool:
        return bool(self.redis.exists(self._k("nopush")))

    def refuse_push(self) -> None:
        """Remember (30 days) that this account may not use the customer-service API."""
        self.redis.set(self._k("nopush"), 1, ex=30 * 86400)


def mailbox_for(settings: Settings, redis) -> Mailbox:
    return Mailbox(redis, settings.wechat_app_id or "dev", settings.wechat_pending_ttl)


class WeChatSender:
    """Sends texts through the customer-service API (`message/custom/send`) and delivers answers
    through the mailbox: to a webhook still holding the question, by push, or on the next message."""

    platform = PLATFORM
    max_parts = PUSH_BUDGET

    def __init__(self, settings: Settings, redis):
        self.settings = settings
        self.client = SharedTokenClient(settings, redis)
        self.mailbox = mailbox_for(settings, redis)

    def split(self, text: str) -> list[str]:
        return split_text(text)

    @property
    def pending_ttl(self) -> int:
        """Seconds an answer left 'pending' by `deliver` waits before it is refunded."""
        return self.settings.wechat_pending_ttl

    def forget_pending(self, user: str, delivery_id: int) -> None:
        self.mailbox.forget(user, delivery_id)

    def may_push(self) -> bool:
        mode = self.settings.wechat_reply_mode
        return mode == "push" or (mode == "auto" and not self.mailbox.push_refused())

    def deliver(self, store, d: dict) -> str:
        """Deliver a stored answer exactly once; returns 'delivered' or 'pending'.

        The answer goes into the mailbox first. A webhook holding the question takes it as the
        passive reply; otherwise, where pushing is allowed, the worker pushes the pages (up to the
        per-message budget). Pages nobody took stay pending for `继续` or the user's next message.
        """
        user, delivery_id = d["user_external_id"], d["id"]
        self.mailbox.put(user, delivery_id, split_text(d["answer"], PAGE_BYTES))
        if not self.may_push():
            return "pending"
        deadline = time.monotonic() + HANDOFF_S
        while self.mailbox.held(delivery_id) and time.monotonic() < deadline:
            time.sleep(0.05)  # a held webhook claims a ready answer within milliseconds
        for _ in range(PUSH_BUDGET):
            pages, left = self.mailbox.take(delivery_id)
            if not pages:
                break
            try:
                self.send(user, pages[0])
            except WeChatRefused as exc:
                self.mailbox.give_back(delivery_id, pages)
                if exc.errcode == 48001 and self.settings.wechat_reply_mode == "auto":
                    self.mailbox.refuse_push()
                    log.warning("WeChat 48001: this account cannot push; switching to passive replies")
                if exc.errcode in KEEP_PENDING:
                    log.info("delivery %s kept for the user's next message (%s)", delivery_id, exc)
                    return "pending"
                raise
            except TransientFailure:
                self.mailbox.give_back(delivery_id, pages)
                raise
            store.add_parts_sent(delivery_id, 1)
            if left == 0:
                finish(store, self.mailbox, user, delivery_id)
                return "delivered"
        return "pending" if self.mailbox.has_pages(delivery_id) else "delivered"

    def leave(self, user: str, text: str) -> None:
        """A note for a user we cannot push to: it goes out with their next message's reply."""
        self.mailbox.put(user, -int(time.time() * 1000), [text])

    def send(self, user: str, text: str, *, chat: str = "", message_key: str = "") -> None:
        """Send one text; refresh the token and try once more on 40001/40014/42001."""
        try:
            try:
                token = self.client.access_token
                self.client.message.send_text(user, text)
            except WeChatClientException as exc:
                if exc.errcode not in TOKEN_ERRORS:
                    raise
                log.info("WeChat rejected the access token (%s); refreshing", exc.errcode)
                self.client.fetch_access_token(stale=token)
                self.client.message.send_text(user, text)
        except WeChatClientException as exc:
            detail = f"WeChat error {exc.errcode}: {exc.errmsg}"
            if exc.errcode in PERMANENT_ERRORS:
                raise WeChatRefused(exc.errcode, detail) from None
            raise TransientFailure(detail) from None
        except requests.RequestException as exc:  # connection errors and timeouts
            raise TransientFailure(f"WeChat API unreachable: {type(exc).__name__}") from None


class DevWeChatSender(WeChatSender):
    """Development without an AppID and secret: answers go back only as passive replies (through
    the mailbox, as on an unverified account), and whatever would be pushed is written to the log."""

    def may_push(self) -> bool:
        return False

    def send(self, user: str, text: str, *, chat: str = "", message_key: str = "") -> None:
        log.info("[dev outbox] wechat:%s ← %s", user, text)


def finish(store, mailbox: Mailbox, user: str, delivery_id: int) -> None:
    """The last page of an answer went out: it is delivered."""
    mailbox.forget(user, delivery_id)
    if delivery_id > 0:
        store.mark_delivered(delivery_id)


# -- the webhook ------------------------------------------------------------------------------

blueprint = Blueprint("wechat", __name__)

ACK = "success"
"""WeChat's 'received, no passive reply' answer."""
WECHAT_GIVES_UP_S = 5.5
"""A delivery that must be retried is kept open until WeChat has given up on it."""
DELIVERIES = 3
"""WeChat posts a message at most three times."""
HANDOFF_S = 1.0
"""How long the worker leaves a ready answer to a webhook holding the question before pushing it."""


def _inbound() -> WeChatInbound:
    runtime = current_app.extensions["chatgate"]
    return runtime.platform("WeChat", runtime.settings.wechat_enabled, "WECHAT_TOKEN",
                            lambda: WeChatInbound(runtime.settings))


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
