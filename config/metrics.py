"""Every metric chatgate keeps, defined once (Prometheus names, units and `_total` conventions).

They are recorded at the edges (the webhook handlers, the senders, the worker's jobs and reconciler),
never inside `bot/`. In the web, worker and Feishu processes prometheus-client runs in multiprocess
mode (`config/metric_files.py` sets its folder before this module is first imported), so `/metrics`
adds up every gunicorn worker and worker process; elsewhere (tests, one-off CLI commands) each
process counts on its own. The gauges read at scrape time (queue depth, live workers, Redis up) are
in `handlers/metrics.py`.

    chatgate_messages_total{platform,outcome}         messages admitted: trial, member, exhausted (the
                                                      trial is used up: refused), busy and limited (refused
                                                      by a guardrail), command (incl. 继续), recorded
                                                      (events, media)
    chatgate_refused_total{platform,reason}           questions refused, not charged, by reason: trial_over,
                                                      budget, hard_cap, flood, member_daily (bot/guard.py)
    chatgate_spend_limits_reached_total{limit}        the day's LLM cost reached the budget or hard_cap
                                                      (once per day and limit; a WARNING line too)
    chatgate_reminders_total{platform}                expiry reminders carried by a reply
    chatgate_redeliveries_total{platform}             a platform's re-post of a message already admitted
    chatgate_pages_sent_total{platform,path,kind}     pages that went out (kind answer or notice) by
                                                      path: passive_reply, fetch (继续), push (WeChat's
                                                      customer-service API), feishu_reply
    chatgate_refunds_total{platform,reason}           trial answers given back: failed, expired
    chatgate_llm_requests_total{outcome}              LLM answers: ok, transient (retried), permanent;
                                                      rate_limited: a 429 waited out within the try
    chatgate_llm_first_token_seconds                  time to the first streamed token
    chatgate_llm_answer_seconds                       time to the whole answer
    chatgate_llm_tokens_total{kind}                   prompt and completion tokens, as the endpoint reports
    chatgate_platform_api_errors_total{platform,code} WeChat errcodes (40001, 45015, 45047, 48001, 40164…),
                                                      Feishu codes, and `network` for no answer at all
    chatgate_feishu_cards_total{event}                Feishu answers streamed into cards: created, update
                                                      (a visible update), update_failed, closed (final text
                                                      in), dropped (went out as text instead), refused
                                                      (CardKit refused: text replies for a day)
    chatgate_feishu_card_first_update_seconds         from the model's first token to the card's first
                                                      visible update
    chatgate_reconciler_actions_total{action}         what the reconciler did (its log line's words)
    chatgate_wechat_held_posts                        WeChat posts waiting for their answer right now
    chatgate_wechat_typing_total{result}              WeChat typing states asked for while an answer is
                                                      written: sent, refused (an errcode, e.g. 45081),
                                                      failed (HTTP error, no answer, token store down)
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter("chatgate_messages", "Messages admitted, by platform and admission outcome.",
                   ["platform", "outcome"])
REFUSED = Counter("chatgate_refused", "Questions refused without a charge, by reason.", ["platform", "reason"])
SPEND_LIMITS = Counter("chatgate_spend_limits_reached", "Times the day's LLM cost reached a limit (budget, hard_cap).",
                       ["limit"])
REMINDERS = Counter("chatgate_reminders", "Expiry reminders carried by a reply.", ["platform"])
REDELIVERIES = Counter("chatgate_redeliveries", "Platform re-posts of a message already admitted.", ["platform"])
PAGES_SENT = Counter("chatgate_pages_sent", "Pages (answer or notice) that went out, by path.",
                     ["platform", "path", "kind"])
REFUNDS = Counter("chatgate_refunds", "Trial answers given back, by reason (failed, expired).", ["platform", "reason"])
LLM_REQUESTS = Counter("chatgate_llm_requests", "LLM answers asked for, by outcome (ok, transient, permanent; "
                       "rate_limited: a 429 waited out within the try).", ["outcome"])
LLM_FIRST_TOKEN = Histogram("chatgate_llm_first_token_seconds", "Seconds from the request to the first token.",
                            buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60))
LLM_ANSWER = Histogram("chatgate_llm_answer_seconds", "Seconds from the request to the whole answer.",
                       buckets=(0.5, 1, 2, 3, 5, 8, 13, 21, 34, 55, 90, 150))
LLM_TOKENS = Counter("chatgate_llm_tokens", "Tokens the LLM endpoint reported using (prompt, completion).", ["kind"])
API_ERRORS = Counter("chatgate_platform_api_errors", "Errors the platforms' APIs answered, by code.",
                     ["platform", "code"])
FEISHU_CARDS = Counter("chatgate_feishu_cards", "Feishu answers streamed into cards, by event (created, update, "
                       "update_failed, closed, dropped, refused).", ["event"])
CARD_FIRST_UPDATE = Histogram("chatgate_feishu_card_first_update_seconds",
                              "Seconds from the model's first token to the card's first visible update.",
                              buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10))
RECONCILER = Counter("chatgate_reconciler_actions", "Deliveries and pages the reconciler acted on, by action.",
                     ["action"])
WECHAT_TYPING = Counter("chatgate_wechat_typing", "WeChat typing states asked for, by result (sent; refused: "
                        "WeChat answered an errcode; failed: an HTTP error, no answer, the token store down).",
                        ["result"])
HELD_POSTS = Gauge("chatgate_wechat_held_posts", "WeChat posts held open waiting for their answer.",
                   multiprocess_mode="livesum")

PUSH_PATHS = {"wechat": "push", "feishu": "feishu_reply"}
"""The path name of a pushed page, by platform."""


def admitted(platform: str, outcome: str, reason: str = "", reminder: bool = False) -> None:
    """One message through admission: a re-delivery, or a new message and its outcome (with the
    reason of a refusal, and whether its reply carries an expiry reminder)."""
    if outcome == "duplicate":
        REDELIVERIES.labels(platform).inc()
        return
    MESSAGES.labels(platform, outcome).inc()
    if reason:
        REFUSED.labels(platform, reason).inc()
    if reminder:
        REMINDERS.labels(platform).inc()


def pages_sent(platform: str, path: str, pages: list[dict]) -> None:
    """Pages (rows with a `kind`) that went out by `path`."""
    for page in pages:
        PAGES_SENT.labels(platform, path, page.get("kind", "answer")).inc()


def pushed(platform: str, page: dict) -> None:
    """One page pushed through the platform's API."""
    pages_sent(platform, PUSH_PATHS.get(platform, "push"), [page])


def refunded(platform: str, reason: str) -> None:
    """A trial answer given back (`failed` or `expired`)."""
    REFUNDS.labels(platform, reason).inc()


def api_error(platform: str, code: object) -> None:
    """A platform API call that answered an error code (or `network` when it did not answer)."""
    API_ERRORS.labels(platform, str(code)).inc()


def wechat_typing(result: str) -> None:
    """One ask for WeChat's typing state: `sent`, `refused` or `failed`."""
    WECHAT_TYPING.labels(result).inc()


def reconciled(counts: Mapping[str, int]) -> None:
    """The actions of one reconciler pass."""
    for action, n in counts.items():
        if n:
            RECONCILER.labels(action).inc(n)
