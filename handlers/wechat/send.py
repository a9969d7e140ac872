"""WeChat out: the customer-service API (`message/custom/send`) that carries answers back, with the
access token shared by every process through Redis and refreshed under a Redis lock, so no process
invalidates another's token."""

from __future__ import annotations

import logging
import time

import requests
from wechatpy.client import WeChatClient
from wechatpy.exceptions import WeChatClientException
from wechatpy.session.redisstorage import RedisStorage

from bot.errors import PermanentFailure, TransientFailure
from bot.paging import split_text
from config import Settings
from handlers.wechat.inbound import PLATFORM

log = logging.getLogger("chatgate.wechat")

TEXT_LIMIT_BYTES = 2000
"""WeChat caps a text message at about 2048 UTF-8 bytes; keep a margin."""
PAGE_BYTES = TEXT_LIMIT_BYTES - 160
"""An answer's page leaves room for the 'send 继续 for more' hint."""
PUSH_BUDGET = 5
"""Customer-service messages allowed per user message (45047 past that)."""
HANDOFF_S = 1.0
"""How long the worker leaves a ready answer to a webhook holding the question before pushing it."""
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
        return split_text(text, TEXT_LIMIT_BYTES)

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
