"""WeChat out: the customer-service API that pushes pages (`message/custom/send`) and shows the
typing state while an answer is written (`message/custom/typing`, see `typing_state.py`), with the
access token shared by every process through Redis and refreshed under a Redis lock, so no process
invalidates another's token."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis
import requests
from requests.adapters import HTTPAdapter
from wechatpy.client import WeChatClient
from wechatpy.exceptions import WeChatClientException
from wechatpy.session.redisstorage import RedisStorage

from bot.errors import PermanentFailure, TransientFailure
from bot.paging import split_text
from config import Settings, metrics
from handlers.senders import NO_PROGRESS, PlainSender, Progress
from handlers.wechat import typing_state
from handlers.wechat.inbound import PLATFORM
from workers.marks import Mark

log = logging.getLogger("chatgate.wechat")
T = TypeVar("T")

TEXT_LIMIT_BYTES = 2000
"""WeChat caps a text message at about 2048 UTF-8 bytes; keep a margin."""
PAGE_BYTES = TEXT_LIMIT_BYTES - 160
"""An answer's page leaves room for the 'send 继续 for more' hint."""
PUSH_BUDGET = 5
"""Customer-service messages allowed per user message (45047 past that)."""
TOKEN_REREAD_S = 5.0
"""How long a process uses what it read from Redis (the access token, the account's no-push mark) before
reading it again."""
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
        self._refreshing = threading.Lock()  # a gevent lock in the worker: one refresh per process at a time
        self._cached: tuple[str | None, float] = (None, 0.0)
        # A connection kept for each answer a worker sends at once (requests keeps 10 by default).
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(10, settings.worker_concurrency))
        self._http.mount("https://", adapter)
        self._http.mount("http://", adapter)
        # What requests reads from the environment on every request (proxies, a CA bundle), read once.
        self._http.proxies.update(requests.utils.get_environ_proxies(self.API_BASE_URL))
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            self._http.verify = bundle
        self._http.trust_env = False

    @property
    def access_token(self) -> str:
        """The shared token, read from Redis at most every `TOKEN_REREAD_S` (a send reads it twice;
        a token replaced by another process stays valid for minutes)."""
        token, until = self._cached
        if token and time.monotonic() < until:
            return token
        token = super().access_token
        self._cached = (token, time.monotonic() + TOKEN_REREAD_S)
        return token

    def fetch_access_token(self, stale: str | None = None):
        """Store a new token unless another process (or job) already replaced `stale` (or the missing one)."""
        self._cached = (None, 0.0)
        with self._refreshing:  # the other jobs of this process wait here, then find the new token
            current = self.session.get(self.access_token_key)
            if current and current != stale:
                return {"access_token": current}
            return self._fetch_locked(stale)

    def _fetch_locked(self, stale: str | None):
        lock = self._redis.lock(f"chatgate:wechat:{self.appid}:token-lock", timeout=30, blocking_timeout=30,
                                sleep=0.02)
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


class WeChatSender(PlainSender):
    """Pushes pages through the customer-service API, on accounts allowed to push (see `may_push`).

    Every refusal leaves the page waiting: it still goes out in the passive reply to the user's next
    message (or `继续`). A 48001 in `auto` mode means the account has no customer-service API: it
    is remembered (Redis, 30 days) and answers go out as passive replies only. While an answer is
    written, the user is shown the typing state (`progress`).
    """

    platform = PLATFORM
    push_budget = PUSH_BUDGET

    def __init__(self, settings: Settings, redis):
        self.settings = settings
        self.redis = redis
        self.keep_s = settings.wechat_pending_ttl
        self.client = SharedTokenClient(settings, redis)
        self._nopush = Mark(redis, f"chatgate:wechat:{settings.wechat_app_id or 'dev'}:nopush", 30 * 86400,
                            reread_s=TOKEN_REREAD_S)

    def paginate(self, answer: str) -> list[str]:
        return split_text(answer, PAGE_BYTES)

    def with_more_hint(self, text: str) -> str:
        return text + "\n\n" + self.settings.wechat_more_text.replace("{continue}", self.settings.wechat_continue_word)

    def may_push(self) -> bool:
        mode = self.settings.wechat_reply_mode
        if mode == "passive":
            return False
        if mode == "push":
            return True
        return not self._nopush.is_set()  # Redis unavailable: try, at worst WeChat says 48001 again

    def waits_after(self, exc: PermanentFailure) -> bool:
        """After any refusal the page waits for a passive reply; 48001 switches `auto` to passive."""
        if isinstance(exc, WeChatRefused) and exc.errcode == 48001:
            self.cannot_push()
        return True

    def cannot_push(self) -> None:
        """WeChat said 48001 (no customer-service API): in `auto` mode, remember it (Redis, 30 days) and
        answer by passive replies only from now on."""
        if self.settings.wechat_reply_mode != "auto":
            return
        log.warning("WeChat 48001: this account cannot push; switching to passive replies")
        self._nopush.set()

    def progress(self, d: dict, store) -> Progress:
        """WeChat's typing state while delivery `d` is answered, on an account that may push (see
        `handlers/wechat/typing_state.py`); nothing when `CHATGATE_WECHAT_TYPING` is off."""
        if not self.settings.wechat_typing or not self.may_push():
            return NO_PROGRESS
        return typing_state.keep(self, d["user_external_id"], d["received_at"])

    def with_token(self, call: Callable[[], T]) -> T:
        """Make one API call; on 40001/40014/42001 refresh the shared token and make it once more."""
        token = self.client.access_token
        try:
            return call()
        except WeChatClientException as exc:
            if exc.errcode not in TOKEN_ERRORS:
                raise
            metrics.api_error(PLATFORM, exc.errcode)
            log.info("WeChat rejected the access token (%s); refreshing", exc.errcode,
                     extra={"platform": PLATFORM, "code": exc.errcode, "outcome": "token refreshed"})
            self.client.fetch_access_token(stale=token)
            return call()

    def typing(self, user: str) -> None:
        """Show `user` the typing state (for 15 s, or until a message reaches them). Raises what the
        call raises (`WeChatClientException`, `requests.RequestException`, `redis.RedisError`)."""
        self.with_token(lambda: self.client.post("message/custom/typing",
                                                 data={"touser": user, "command": "Typing"}))

    def send(self, user: str, text: str, *, chat: str = "", message_key: str = "", idem: str = "") -> None:
        """Send one text; refresh the token and try once more on 40001/40014/42001."""
        try:
            self.with_token(lambda: self.client.message.send_text(user, text))
        except WeChatClientException as exc:
            metrics.api_error(PLATFORM, exc.errcode)
            detail = f"WeChat error {exc.errcode}: {exc.errmsg}"
            if exc.errcode in PERMANENT_ERRORS:
                raise WeChatRefused(exc.errcode, detail) from None
            raise TransientFailure(detail) from None
        except requests.RequestException as exc:  # connection errors and timeouts
            metrics.api_error(PLATFORM, "network")
            raise TransientFailure(f"WeChat API unreachable: {type(exc).__name__}") from None
        except redis.RedisError as exc:  # the shared access token lives in Redis
            raise TransientFailure(f"the access token store is unavailable: {type(exc).__name__}") from None


class DevWeChatSender(WeChatSender):
    """Development without an AppID and secret: answers go back only as passive replies (as on an
    unverified account), and whatever would be pushed is written to the log."""

    def may_push(self) -> bool:
        return False

    def send(self, user: str, text: str, *, chat: str = "", message_key: str = "", idem: str = "") -> None:
        log.info("[dev outbox] wechat:%s ← %s", user, text)
