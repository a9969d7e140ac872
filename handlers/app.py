"""The Flask app factory: `create_app()` wires settings, the store, Redis, the platform routes (and
afdian's order webhook, handlers/afdian/) and the operator's (`/healthz`, `/readyz`:
handlers/health.py; `/metrics`: handlers/metrics.py).

gunicorn serves `handlers.app:create_app()`; tests build the app with overrides
(`create_app(db_path=..., redis_url=...)`). The webhook's work per message is: verify, decrypt,
parse, admit in SQLite, enqueue; slow work (LLM, outbound HTTP) belongs to the worker.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from flask import Flask, Response, abort

from bot.gate import decide, job_facts
from bot.store import Store
from config import Settings, load_settings, metrics
from config.logs import configure_logging
from handlers import health
from handlers import metrics as metrics_view
from handlers.health import CHECK_TIMEOUT_S
from handlers.outbound import sender_for
from workers.queue import answer_queue, connect, enqueue_answer, enqueue_order_check
from workers.wakeups import Wakeups

log = logging.getLogger("chatgate.web")

MAX_BODY_BYTES = 64 * 1024
"""WeChat and Feishu bodies are a few KB; anything larger is refused before parsing (413)."""


def _under_gevent() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("threading")


def _thread_local():
    """A thread-local that stays per OS thread under gevent (whose patched `threading.local` is per
    greenlet: that would open a SQLite connection per request). A store call yields to gevent only
    while it waits for the write lock, before its transaction begins, so greenlets of one thread can
    share one connection."""
    if _under_gevent():
        from gevent import monkey

        return monkey.get_original("threading", "local")()
    return threading.local()


class Runtime:
    """The per-process pieces the views share: settings, a store per thread, Redis and the queue."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._local = _thread_local()
        self._platforms: dict = {}
        self._senders: dict = {}
        self.redis = connect(settings)
        self.queue = answer_queue(settings, self.redis)
        # For /readyz and /metrics: a Redis that does not answer within a second is not ready.
        self.quick_redis = redis.Redis.from_url(settings.redis_url, socket_timeout=CHECK_TIMEOUT_S,
                                                socket_connect_timeout=CHECK_TIMEOUT_S)
        self.quick_queue = answer_queue(settings, self.quick_redis)
        self.wakeups = Wakeups(self.redis)
        Store(settings.db_path).close()  # create the file and apply migrations once, up front

    def platform(self, name: str, enabled: bool, missing: str, build):
        """The per-process object of one platform's webhook, built on first use; 503 naming the
        settings to set while the platform is not configured."""
        if not enabled:
            abort(503, f"{name} is not configured (set {missing})")
        if name not in self._platforms:
            self._platforms[name] = build()
        return self._platforms[name]

    def sender(self, platform: str):
        """The platform's sender (its push policy: may this account push now?), built once."""
        if platform not in self._senders:
            self._senders[platform] = sender_for(platform, self.settings, self.redis)
        return self._senders[platform]

    @property
    def store(self) -> Store:
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = Store(self.settings.db_path, migrate=False, cooperative=_under_gevent())
        return store

    def accept(self, msg, *, fetch: bool = False):
        """Admission, then the job. Once admitted, a question stays admitted: if Redis refuses the
        job, the store still holds the delivery and the reconciler queues it when Redis is back."""
        started = time.monotonic()
        decision = decide(self.store, msg, self.settings, fetch=fetch)
        a = decision.admission
        if decision.enqueue:
            self.enqueue(msg, a)
        if decision.check_order:
            self.check_order(decision.check_order, a.user_id)
        metrics.admitted(msg.platform, a.outcome, a.reason, a.remind_until is not None)
        log.info("%s msg=%s user=u%s kind=%s outcome=%s trial_left=%s%s", msg.platform, msg.message_key,
                 a.user_id, msg.kind, a.outcome + (f" reason={a.reason}" if a.reason else ""), a.trial_left,
                 f" post={a.post}" if a.post > 1 else "",
                 extra={"platform": msg.platform, "message_key": msg.message_key, "delivery_id": a.delivery_id,
                        "user_id": a.user_id, "kind": msg.kind, "outcome": a.outcome, "trial_left": a.trial_left,
                        **({"reason": a.reason} if a.reason else {}),
                        "post": a.post, "admit_ms": round((time.monotonic() - started) * 1000, 1)})
        return decision

    def enqueue(self, msg, admission) -> None:
        """Queue the delivery's job; a Redis failure is logged and left to the reconciler."""
        try:
            enqueue_answer(self.queue, self.settings, job_facts(msg, admission))
        except Exception as exc:
            log.error("%s msg=%s delivery=%s: the queue is unavailable (%s); the reconciler will queue it",
                      msg.platform, msg.message_key, admission.delivery_id, type(exc).__name__,
                      extra={"platform": msg.platform, "message_key": msg.message_key,
                             "delivery_id": admission.delivery_id, "user_id": admission.user_id,
                             "outcome": "not queued"})

    def check_order(self, out_trade_no: str, user_id: int) -> None:
        """Queue the look-up of an afdian order a user claimed by number; if Redis refuses, the order is
        pending in the store and the reconciler queues it."""
        try:
            enqueue_order_check(self.queue, out_trade_no)
        except Exception as exc:
            log.error("afdian order %s claimed by u%s: the queue is unavailable (%s); the reconciler will look it "
                      "up", out_trade_no, user_id, type(exc).__name__,
                      extra={"out_trade_no": out_trade_no, "user_id": user_id, "outcome": "not queued"})

    def push_notice(self, msg, admission, text: str) -> None:
        """An immediate reply on a platform that cannot answer inside the webhook's response (Feishu):
        a notice page of the delivery, pushed by its job (or, if that is lost, by the reconciler)."""
        self.store.add_notice(admission.delivery_id, text, push_in=self.settings.recheck_s)
        self.enqueue(msg, admission)


def create_app(settings: Settings | None = None, **overrides) -> Flask:
    """Build the web app. `overrides` are settings attributes, for tests."""
    settings = settings or load_settings(**overrides)
    configure_logging(settings)
    app = Flask("chatgate")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    runtime = Runtime(settings)
    app.extensions["chatgate"] = runtime

    from handlers import feishu, wechat
    from handlers.afdian import webhook as afdian
    app.register_blueprint(wechat.blueprint)
    app.register_blueprint(feishu.blueprint)
    app.register_blueprint(afdian.blueprint)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(metrics_view.blueprint)
    if settings.simulator:  # development only: the browser simulator (never in production)
        from handlers import simulator
        app.register_blueprint(simulator.blueprint)
        app.register_blueprint(simulator.feishu_blueprint)

    if settings.feishu_enabled:  # lark-oapi takes seconds to import: not in the first event's 3 s
        feishu.webhook.warm_up(runtime)

    @app.errorhandler(403)
    @app.errorhandler(400)
    @app.errorhandler(413)
    @app.errorhandler(503)
    def plain_error(exc):
        return Response(f"{exc.code} {exc.description}\n", status=exc.code, mimetype="text/plain")

    return app
