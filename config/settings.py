"""One typed, validated settings object, built from the environment and a `.env` file.

Every variable chatgate reads is declared once in `VARIABLES` below, with its type, default and the
line the README's configuration table shows (a test keeps the two in step). The web app, the worker
and the CLI all call `load_settings()` (in `config/checks.py`, with what is malformed and what
production refuses); a bad value fails at start-up with `SettingsError`, naming the variable and
what is wrong. In production, missing or placeholder secrets are refused.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from config.afdian import BUY_TEXT, parse_plans, plans_text
from config.values import (  # the parsers of the values
    MAX_FREE_TRIAL,
    MAX_WELCOME_DAYS,
    RATE_UNITS,
    _at_least_one,
    _at_most,
    _between,
    _bool,
    _currency,
    _delays,
    _log_format,
    _money,
    _positive_int,
    _prices,
    _rates,
    _reply_mode,
    _reply_wait,
    _seconds,
    _text,
    _timezone,
    _whole_seconds,
    _words,
)

PRODUCTION = "production"
DEVELOPMENT = "development"


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names the variable."""


@dataclass(frozen=True)
class Var:
    """One environment variable: its name, type, default and README description."""

    name: str
    attr: str
    kind: Callable[[str], Any]
    default: Any
    doc: str
    secret: bool = False


def _env(raw: str) -> str:
    value = raw.strip().lower()
    if value not in (PRODUCTION, DEVELOPMENT):
        raise ValueError(f"expected {PRODUCTION} or {DEVELOPMENT}")
    return value



VARIABLES: tuple[Var, ...] = (
    Var("CHATGATE_ENV", "env", _env, PRODUCTION,
        "`production` (default) or `development`. Production refuses missing or placeholder secrets "
        "and never uses the demo responder."),
    Var("CHATGATE_DB", "db_path", str, "var/chatgate.db",
        "SQLite file (created owner-only, mode 600)."),
    Var("REDIS_URL", "redis_url", str, "",
        "Redis for the queue, tokens and locks, e.g. `redis://127.0.0.1:6379/0`. Required in production; "
        "`chatgate up` starts an embedded Redis on a private unix socket when it is unset.", secret=True),
    Var("OPENAI_API_KEY", "openai_api_key", str, "",
        "Key for the OpenAI-compatible endpoint (any non-placeholder value for servers without keys, "
        "such as Ollama). Unset in development: an offline demo responder answers, and says so.",
        secret=True),
    Var("OPENAI_BASE_URL", "openai_base_url", str, "",
        "OpenAI-compatible endpoint (OpenAI, DeepSeek, Qwen/DashScope, Ollama, vLLM…); unset: OpenAI."),
    Var("CHATGATE_MODEL", "model", str, "gpt-4o-mini", "Model name sent to the endpoint."),
    Var("CHATGATE_SYSTEM_PROMPT", "system_prompt", _text,
        "You are a helpful assistant. Answer concisely; plain text only, no Markdown.",
        "System prompt put before every conversation."),
    Var("CHATGATE_LLM_TIMEOUT", "llm_timeout", _seconds, 60.0,
        "Wall-clock limit for one LLM answer, in seconds (the job timeout is this plus 30)."),
    Var("CHATGATE_HISTORY_TURNS", "history_turns", _positive_int, 6,
        "How many earlier question/answer pairs of the user go with a question."),
    Var("CHATGATE_HISTORY_CHARS", "history_chars", _positive_int, 4000,
        "Upper bound on the characters of history sent (oldest turns are dropped first)."),
    Var("CHATGATE_RETRY_DELAYS", "retry_delays", _delays, (10, 30, 60),
        "Seconds between tries of a failed answer (an LLM error or a killed worker); one retry per number."),
    Var("CHATGATE_RECONCILE_INTERVAL", "reconcile_interval", _seconds, 30.0,
        "Seconds between passes of the reconciler (run by `chatgate worker`), which re-queues questions "
        "whose job was lost, restarts tries whose worker died, retries failed pushes and expires "
        "answers nobody fetched."),
    Var("CHATGATE_FREE_TRIAL", "free_trial", _at_most(MAX_FREE_TRIAL), 10,
        "Free answers for each new user (at most 1,000,000)."),
    Var("CHATGATE_WELCOME_TEXT", "welcome_text", _text,
        "Welcome! Ask me anything. You have {free_trial} free answers.",
        "Reply to a new follower; `{free_trial}` is replaced by the trial size."),
    Var("CHATGATE_TRIAL_OVER_TEXT", "trial_over_text", _text,
        "Your {free_trial} free answers are used up. Become a member to keep asking.",
        "Reply when the trial is used up and the user is not a member; put your purchase link here."),
    Var("CHATGATE_WELCOME_DAYS", "welcome_days", _at_most(MAX_WELCOME_DAYS), 0,
        "Days of membership a new user gets at first contact (on top of the trial); 0 for none, at most 36500."),
    Var("CHATGATE_PRICES", "prices", _prices, (),
        "LLM prices per million tokens, input/output, in `CHATGATE_CURRENCY`, per model: "
        "`deepseek-chat=2/8,gpt-4o-mini=1.1/4.4`; `*` prices every model not listed. Costs are worked "
        "out from the stored tokens when asked, so a change applies to past answers too; an unpriced "
        "model costs 0 (and `chatgate stats` names it)."),
    Var("CHATGATE_CURRENCY", "currency", _currency, "CNY",
        "Currency of prices, code prices, budgets and the figures of `chatgate stats`."),
    Var("CHATGATE_DAILY_BUDGET", "daily_budget", _money, None,
        "Daily LLM budget in `CHATGATE_CURRENCY` (today in `CHATGATE_TIMEZONE`; unset: none). Once "
        "today's cost reaches it, questions of users on the free trial get `CHATGATE_BUSY_TEXT`, not "
        "charged; members are still answered."),
    Var("CHATGATE_DAILY_HARD_CAP", "daily_hard_cap", _money, None,
        "Daily LLM cost past which nobody is answered, members neither (unset: none); at least the budget."),
    Var("CHATGATE_BUSY_TEXT", "busy_text", _text,
        "今天提问的人太多了，请明天再来（本条未计次数）。\nWe are too busy today; please come back tomorrow. "
        "This message was not counted.",
        "Reply to a question refused for the daily budget or hard cap."),
    Var("CHATGATE_USER_RATE", "user_rate", _rates, (),
        "Questions one user may ask, e.g. `6/minute` or `6/minute,30/hour` (unset: no limit). Past it a "
        "question gets `CHATGATE_RATE_TEXT`, not charged; commands and `继续` are never limited."),
    Var("CHATGATE_RATE_TEXT", "rate_text", _text,
        "提问太快了，请稍等片刻再问（本条未计次数）。\nYou are asking too fast (at most {rate}); please wait a "
        "moment. This message was not counted.",
        "Reply to a question past `CHATGATE_USER_RATE`; `{rate}` is replaced by the limit."),
    Var("CHATGATE_MEMBER_DAILY_LIMIT", "member_daily_limit", _positive_int, 0,
        "Questions a member may ask per day (0: no limit); past it `CHATGATE_MEMBER_LIMIT_TEXT`."),
    Var("CHATGATE_MEMBER_LIMIT_TEXT", "member_limit_text", _text,
        "今天的提问次数已达上限（{limit} 次），请明天再来。\nYou have asked {limit} questions today, the daily "
        "limit; please come back tomorrow.",
        "Reply to a member's question past `CHATGATE_MEMBER_DAILY_LIMIT`; `{limit}` is replaced by it."),
    Var("CHATGATE_REMIND_DAYS", "remind_days", _at_most(MAX_WELCOME_DAYS), 3,
        "Days before a membership ends when the user's next reply carries `CHATGATE_REMIND_TEXT`, once "
        "per expiry (an extension re-arms it); 0: never."),
    Var("CHATGATE_REMIND_TEXT", "remind_text", _text,
        "提醒：你的会员将于 {until} 到期（还剩 {days} 天），续费请发送“{renew}”。\nReminder: your membership "
        "ends on {until} ({days} days left); send {renew} to renew.",
        "The expiry reminder; `{until}` is the expiry, `{days}` the days left, `{renew}` the words of the "
        "renew command (the redeem words)."),
    Var("CHATGATE_TIMEZONE", "timezone", _timezone, "Asia/Shanghai",
        "Time zone of the dates users and the operator see (membership expiry, `chatgate stats` days)."),
    Var("CHATGATE_COMMAND_ME", "command_me", _words, ("我的", "me"),
        "Words (comma-separated) that make the bot reply with the user's id, free answers left and "
        "membership expiry. A message must be exactly one of them; otherwise it is a question."),
    Var("CHATGATE_COMMAND_RESET", "command_reset", _words, ("重置", "reset"),
        "Words that start a new conversation (earlier turns no longer go to the model)."),
    Var("CHATGATE_COMMAND_REDEEM", "command_redeem", _words, ("兑换", "兑换码", "redeem"),
        "Words that, followed by a code (`兑换 ABCD-EFGH-JKMN-PQRS`), redeem a membership code (a message "
        "that is only a code, as printed, redeems it too)."),
    Var("CHATGATE_COMMAND_HELP", "command_help", _words, ("帮助", "help"),
        "Words that make the bot list its commands."),
    Var("CHATGATE_COMMAND_BUY", "command_buy", _words, ("购买", "buy"),
        "Words that make the bot reply with the purchase link (`AFDIAN_LINK`) carrying the user's bind code."),
    Var("CHATGATE_BUY_TEXT", "buy_text", _text, BUY_TEXT,
        "Reply to the buy command: `{link}` is `AFDIAN_LINK` carrying the user's bind code as the order's "
        "`custom_order_id`, `{code}` the bind code, `{redeem}` the first redeem word."),
    Var("AFDIAN_USER_ID", "afdian_user_id", str, "",
        "Your user_id from afdian's developer page (爱发电 开发者后台); with `AFDIAN_TOKEN` it turns on "
        "`POST /pay/afdian`, the order webhook."),
    Var("AFDIAN_TOKEN", "afdian_token", str, "", "The API token from the same page; signs every order look-up.",
        secret=True),
    Var("AFDIAN_API_BASE", "afdian_api_base", str, "https://afdian.com",
        "afdian API origin; tests point it at a local fake."),
    Var("AFDIAN_PLANS", "afdian_plans", parse_plans, (),
        "What each afdian plan (or SKU) gives: `plan_id=days` or `plan_id=days@price`, comma-separated. A plan "
        "bought for several months gives days × months; with a price, an order must have paid at least price × "
        "months. Paid orders of other plans grant nothing."),
    Var("AFDIAN_LINK", "afdian_link", str, "",
        "The purchase link the buy command sends: your page `https://afdian.com/a/<you>` or a plan's "
        "`https://afdian.com/order/create?plan_id=…&product_type=0`; unset, the buy command says purchases "
        "are not open."),
    Var("WECHAT_TOKEN", "wechat_token", str, "",
        "Token from the official account's server settings (3–32 letters and digits).", secret=True),
    Var("WECHAT_APP_ID", "wechat_app_id", str, "", "AppID of the official account."),
    Var("WECHAT_APP_SECRET", "wechat_app_secret", str, "", "AppSecret of the official account.",
        secret=True),
    Var("WECHAT_AES_KEY", "wechat_aes_key", str, "",
        "EncodingAESKey (43 characters). When set, only encrypted (safe or compatible mode) posts are "
        "accepted and passive replies are encrypted.", secret=True),
    Var("WECHAT_API_BASE", "wechat_api_base", str, "https://api.weixin.qq.com",
        "WeChat API origin; tests point it at a local fake."),
    Var("WECHAT_REPLY_MODE", "wechat_reply_mode", _reply_mode, "auto",
        "How answers reach WeChat users: `push` (customer-service API; verified accounts), `passive` "
        "(only inside the webhook's reply: unverified subscription accounts), or `auto` (default: "
        "passive when the answer is ready in time, else push; passive for good after a 48001)."),
    Var("WECHAT_REPLY_WAIT", "wechat_reply_wait", _reply_wait, 4.5,
        "Seconds each WeChat post waits for its answer before WeChat's 5 s cut-off (0: never wait)."),
    Var("WECHAT_CONTINUE_WORD", "wechat_continue_word", str, "继续",
        "The word a user sends to fetch a pending answer or its next page."),
    Var("WECHAT_PENDING_TEXT", "wechat_pending_text", _text,
        "正在思考，请稍后回复“{continue}”获取回答。(Still thinking: send {continue} in a moment to get the answer.)",
        "Sent when the answer is not ready after WeChat's last retry and it cannot be pushed."),
    Var("WECHAT_MORE_TEXT", "wechat_more_text", _text, "（回复“{continue}”查看更多 / send {continue} for more）",
        "Appended when more of an answer is waiting."),
    Var("WECHAT_PENDING_TTL", "wechat_pending_ttl", _positive_int, 172800,
        "Seconds an undelivered answer waits to be fetched; unfetched, it is refunded."),
    Var("WECHAT_HTTP_TIMEOUT", "wechat_http_timeout", _seconds, 10.0,
        "Timeout in seconds for each call to the WeChat API."),
    Var("CHATGATE_WECHAT_TYPING", "wechat_typing", _bool, True,
        "Show WeChat users the typing state (对方正在输入…) while a slow answer is written, on accounts "
        "that push (not `passive`, nor after a 48001); `off` to never ask for it."),
    Var("FEISHU_APP_ID", "feishu_app_id", str, "", "App ID of the Feishu/Lark custom app (cli_…)."),
    Var("FEISHU_APP_SECRET", "feishu_app_secret", str, "", "App Secret of the Feishu/Lark app.", secret=True),
    Var("FEISHU_VERIFICATION_TOKEN", "feishu_verification_token", str, "",
        "Verification Token from the app's Events and Callbacks page; checked on every event.", secret=True),
    Var("FEISHU_ENCRYPT_KEY", "feishu_encrypt_key", str, "",
        "Encrypt Key from the same page (optional): when set, events arrive encrypted and signed, and "
        "unsigned ones are refused.", secret=True),
    Var("FEISHU_API_BASE", "feishu_api_base", str, "https://open.feishu.cn",
        "Feishu API origin; `https://open.larksuite.com` for Lark; tests point it at a local fake."),
    Var("CHATGATE_FEISHU_STREAM", "feishu_stream", _bool, True,
        "Stream Feishu answers into a card as the model writes them (CardKit: the app needs the "
        "`cardkit:card:write` permission; without it answers go out as text, and that is remembered for a "
        "day). `off`: one text reply when the answer is done."),
    Var("CHATGATE_SHOW_THINKING", "show_thinking", _bool, False,
        "Show a reasoning model's thinking in a collapsed panel above the answer in Feishu cards. Off by "
        "default; the thinking is never sent to WeChat, stored, or sent back as history."),
    Var("CHATGATE_SIMULATOR_SECRET", "simulator_secret", str, "",
        "Development only (refused in production): turns on the browser simulator at `/simulator` and the "
        "stand-in credentials it signs with, derived from this secret, for each platform whose own are unset "
        "(their API calls then go to the simulator). `python3 dev.py up` writes a random one.", secret=True),
    Var("PORT", "port", int, 8000, "Port of the web process (gunicorn)."),
    Var("CHATGATE_HOST", "host", str, "",
        "Address the web process binds; default `0.0.0.0` in production (the webhook must be "
        "reachable, usually behind an HTTPS proxy), `127.0.0.1` in development."),
    Var("WEB_CONCURRENCY", "web_concurrency", _positive_int, 0,
        "gunicorn worker processes; default cores + 1."),
    Var("CHATGATE_WORKERS", "workers", _at_least_one, 2,
        "Worker processes started by `chatgate worker`; each answers up to CHATGATE_WORKER_CONCURRENCY "
        "questions at once. One process uses at most one CPU core."),
    Var("CHATGATE_WORKER_CONCURRENCY", "worker_concurrency", _between(1, 10_000), 250,
        "Answers one worker process works on at once (each an RQ job in a greenlet); it takes a job off "
        "the queue only when one of these is free."),
    Var("CHATGATE_LLM_CONCURRENCY", "llm_concurrency", _positive_int, 0,
        "Most LLM calls in flight at once across all worker processes (a Redis semaphore); set it to your "
        "provider's concurrent-request limit. 0 (default): no cap beyond the workers' concurrency."),
    Var("CHATGATE_STOP_GRACE", "stop_grace", _seconds, 30.0,
        "Seconds `chatgate up` gives web and worker to stop on SIGTERM or Ctrl-C (held posts answered, "
        "answers in flight finished) before it kills what is left; Redis then saves and stops."),
    Var("CHATGATE_QUEUE", "queue_name", str, "chatgate", "RQ queue name."),
    Var("CHATGATE_LOG_LEVEL", "log_level", str, "INFO",
        "Log level (DEBUG, INFO, WARNING…). At every level, secrets and the platforms' access tokens are "
        "shown as `[redacted]`, in the SDKs' lines too."),
    Var("CHATGATE_LOG_FORMAT", "log_format", _log_format, "text",
        "`text` (default): one readable line per event; `json`: one JSON object per line (time, level, "
        "logger, message, and the message's platform, key, delivery, user, outcome and timings), for a "
        "log collector. gunicorn's and RQ's lines follow it too."),
    Var("CHATGATE_METRICS_TOKEN", "metrics_token", str, "",
        "Bearer token for `/metrics`. Unset: `/metrics` answers loopback clients only (not requests that "
        "came through a proxy); set: it answers anyone sending `Authorization: Bearer <token>`.",
        secret=True),
    Var("CHATGATE_REPLAY_WINDOW", "replay_window", _whole_seconds, 300,
        "Seconds a signed WeChat or Feishu request stays valid either side of this server's clock (keep "
        "it NTP-synced); older or later timestamps are refused (403), and in WeChat plaintext mode a "
        "signed query is bound to its first body for that long."),
)

PLACEHOLDERS = frozenset({
    "changeme", "change-me", "change_me", "replace-me", "replaceme", "placeholder", "secret", "token",
    "password", "xxx", "xxxx", "todo", "example", "test", "your-token", "your_token", "yourtoken",
    "your-key", "your_key", "sk-xxx", "sk-...", "...", "none", "null",
})


def is_placeholder(value: str) -> bool:
    """True for empty values and the obvious stand-ins people leave in example files."""
    v = value.strip().lower()
    return (not v or v in PLACEHOLDERS or v.startswith(("<", "your", "replace", "change"))
            or set(v) <= set("x.*-_"))


@dataclass(frozen=True)
class Settings:
    """The validated configuration. Build it with `load_settings()`."""

    env: str = PRODUCTION
    db_path: str = "var/chatgate.db"
    redis_url: str = ""
    openai_api_key: str = field(default="", repr=False)
    openai_base_url: str = ""
    model: str = "gpt-4o-mini"
    system_prompt: str = ""
    llm_timeout: float = 60.0
    history_turns: int = 6
    history_chars: int = 4000
    retry_delays: tuple[int, ...] = (10, 30, 60)
    reconcile_interval: float = 30.0
    free_trial: int = 10
    welcome_text: str = ""
    trial_over_text: str = ""
    welcome_days: int = 0
    prices: tuple[tuple[str, Decimal, Decimal], ...] = ()
    currency: str = "CNY"
    daily_budget: Decimal | None = None
    daily_hard_cap: Decimal | None = None
    busy_text: str = ""
    user_rate: tuple[tuple[int, int], ...] = ()
    rate_text: str = ""
    member_daily_limit: int = 0
    member_limit_text: str = ""
    remind_days: int = 3
    remind_text: str = ""
    timezone: str = "Asia/Shanghai"
    command_me: tuple[str, ...] = ("我的", "me")
    command_reset: tuple[str, ...] = ("重置", "reset")
    command_redeem: tuple[str, ...] = ("兑换", "兑换码", "redeem")
    command_help: tuple[str, ...] = ("帮助", "help")
    command_buy: tuple[str, ...] = ("购买", "buy")
    buy_text: str = BUY_TEXT
    afdian_user_id: str = ""
    afdian_token: str = field(default="", repr=False)
    afdian_api_base: str = "https://afdian.com"
    afdian_plans: tuple[tuple[str, int, int | None], ...] = ()
    afdian_link: str = ""
    wechat_token: str = field(default="", repr=False)
    wechat_app_id: str = ""
    wechat_app_secret: str = field(default="", repr=False)
    wechat_aes_key: str = field(default="", repr=False)
    wechat_api_base: str = "https://api.weixin.qq.com"
    wechat_reply_mode: str = "auto"
    wechat_reply_wait: float = 4.5
    wechat_continue_word: str = "继续"
    wechat_pending_text: str = ""
    wechat_more_text: str = ""
    wechat_pending_ttl: int = 172800
    wechat_http_timeout: float = 10.0
    wechat_typing: bool = True
    feishu_app_id: str = ""
    feishu_app_secret: str = field(default="", repr=False)
    feishu_verification_token: str = field(default="", repr=False)
    feishu_encrypt_key: str = field(default="", repr=False)
    feishu_api_base: str = "https://open.feishu.cn"
    feishu_stream: bool = True
    show_thinking: bool = False
    simulator_secret: str = field(default="", repr=False)
    simulated: tuple[str, ...] = ()
    """The platforms (wechat, feishu) whose credentials are the simulator's stand-ins (not a variable:
    filled in by `config/simulator.py` in development)."""
    port: int = 8000
    host: str = ""
    web_concurrency: int = 0
    workers: int = 2
    worker_concurrency: int = 250
    llm_concurrency: int = 0
    stop_grace: float = 30.0
    queue_name: str = "chatgate"
    log_level: str = "INFO"
    log_format: str = "text"
    metrics_token: str = field(default="", repr=False)
    replay_window: int = 300

    @property
    def production(self) -> bool:
        return self.env == PRODUCTION

    @property
    def bind_host(self) -> str:
        return self.host or ("0.0.0.0" if self.production else "127.0.0.1")

    @property
    def wechat_enabled(self) -> bool:
        """The WeChat webhook answers only once its token is set."""
        return bool(self.wechat_token)

    @property
    def feishu_enabled(self) -> bool:
        """The Feishu webhook answers once the app and its verification token are set."""
        return bool(self.feishu_app_id and self.feishu_verification_token)

    @property
    def afdian_enabled(self) -> bool:
        """The afdian order webhook answers, and orders are looked up, once the user id and token are set."""
        return bool(self.afdian_user_id and self.afdian_token)

    @property
    def wechat_can_send(self) -> bool:
        return bool(self.wechat_app_id and self.wechat_app_secret)

    @property
    def simulator(self) -> bool:
        """The browser simulator is on: development with CHATGATE_SIMULATOR_SECRET set."""
        return not self.production and bool(self.simulator_secret)

    @property
    def demo_llm(self) -> bool:
        """Development without a key: the offline demo responder stands in."""
        return not self.production and not self.openai_api_key

    @property
    def job_timeout(self) -> int:
        return int(self.llm_timeout) + 30

    @property
    def recheck_s(self) -> float:
        """How long the reconciler leaves a delivery alone before it looks again: a queued one (is its
        job still in Redis?), one whose push failed (push again), a try given back for a retry."""
        return 2 * self.reconcile_interval

    @property
    def max_tries(self) -> int:
        """Tries an answer gets: the first and one per retry delay."""
        return 1 + len(self.retry_delays)

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        """The time zone dates are shown in."""
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def command_words(self) -> dict[str, tuple[str, ...]]:
        """Each in-chat command's name and the words that call it."""
        return {"me": self.command_me, "reset": self.command_reset, "redeem": self.command_redeem,
                "help": self.command_help, "buy": self.command_buy}

    def text(self, name: str) -> str:
        """A user-facing text with `{free_trial}` and `{welcome_days}` filled in."""
        return (getattr(self, name).replace("{free_trial}", str(self.free_trial))
                .replace("{welcome_days}", str(self.welcome_days)))

    def redacted(self) -> dict[str, str]:
        """Every setting as the operator may see it: secrets shown only as set / unset."""
        out = {}
        for var in VARIABLES:
            value = getattr(self, var.attr)
            if var.secret:
                out[var.name] = "(set)" if value else "(unset)"
            else:
                out[var.name] = _shown(var.name, value)
        return out


def _shown(name: str, value) -> str:
    """A setting's value as it would be written in `.env`."""
    if value is None:
        return ""
    if name == "AFDIAN_PLANS":
        return plans_text(value)
    if name == "CHATGATE_PRICES":
        return ",".join(f"{model}={p_in}/{p_out}" for model, p_in, p_out in value)
    if name == "CHATGATE_USER_RATE":
        units = {seconds: unit for unit, seconds in RATE_UNITS.items()}
        return ",".join(f"{count}/{units[seconds]}" for count, seconds in value)
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value).replace("\n", "\\n")  # a text's line break as `.env` writes it: one line per setting
