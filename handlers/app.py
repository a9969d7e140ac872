"""The Flask app factory: `create_app()` wires settings, the store, Redis and the platform routes.

gunicorn serves `handlers.app:create_app()`; tests build the app with overrides
(`create_app(db_path=..., redis_url=...)`). The webhook's work per message is: verify, decrypt,
parse, admit in SQLite, enqueue; slow work (LLM, outbound HTTP) belongs to the worker.
"""

from __future__ import annotations

import logging
import threading

from flask import Flask, Response, abort

from bot.errors import ChatgateError
from bot.gate import decide, job_facts
from bot.store import Store
from config import Settings, load_settings
from config.logs import configure_logging
from workers.queue import answer_queue, connect, enqueue_answer, enqueue_notice

log = logging.getLogger("chatgate.web")

MAX_BODY_BYTES = 64 * 1024
"""WeChat and Feishu bodies are a few KB; anything larger is refused before parsing (413)."""


class QueueUnavailable(ChatgateError):
    """Redis refused the job; the admission was undone and the platform should retry (503)."""


def _thread_local():
    """A thread-local that stays per OS thread under gevent (whose patched `threading.local` is per
    greenlet: that would open a SQLite connection per request). SQLite calls never yield to gevent,
    so greenlets of one thread can share one connection."""
    try:
        from gevent import monkey

        if monkey.is_module_patched("threading"):
            return monkey.get_original("threading", "local")()
    except ImportError:
        pass
    return threading.local()


class Runtime:
    """The per-process pieces the views share: settings, a store per thread, Redis and the queue."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._local = _thread_local()
        self._platforms: dict = {}
        self.redis = connect(settings)
        self.queue = answer_queue(settings, self.redis)
        Store(settings.db_path).close()  # create the file and apply migrations once, up front

    def platform(self, name: str, enabled: bool, missing: str, build):
        """The per-process object of one platform's webhook, built on first use; 503 naming the
        settings to set while the platform is not configured."""
        if not enabled:
            abort(503, f"{name} is not configured (set {missing})")
        if name not in self._platforms:
            self._platforms[name] = build()
        return self._platforms[name]

    @property
    def store(self) -> Store:
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = Store(self.settings.db_path, migrate=False)
        return store

    def admit_and_enqueue(self, msg):
        """Admission, then the job; if the queue is down the admission is undone and
        `QueueUnavailable` raised, so the platform's retry is admitted afresh (the web app answers
        503, which makes WeChat and Feishu try again)."""
        decision = decide(self.store, msg, self.settings)
        a = decision.admission
        if decision.enqueue:
            try:
                enqueue_answer(self.queue, self.settings, job_facts(msg, a))
            except Exception as exc:
                self.store.revert_admission(a.delivery_id, f"queue unavailable: {type(exc).__name__}")
                log.error("%s msg=%s user=u%s: queue unavailable (%s); admission undone",
                          msg.platform, msg.message_key, a.user_id, exc)
                raise QueueUnavailable(str(exc)) from None
        log.info("%s msg=%s user=u%s kind=%s outcome=%s trial_left=%s", msg.platform, msg.message_key,
                 a.user_id, msg.kind, a.outcome, a.trial_left)
        return decision

    def enqueue_notice(self, msg, text: str) -> None:
        """Send an immediate reply (trial over, text only, a command's answer) through the worker,
        for platforms that cannot reply inside the webhook's response (Feishu)."""
        enqueue_notice(self.queue, {"platform": msg.platform, "user": msg.user, "chat": msg.chat,
                                    "message_key": msg.message_key, "text": text})


def create_app(settings: Settings | None = None, **overrides) -> Flask:
    """Build the web app. `overrides` are settings attributes, for tests."""
    settings = settings or load_settings(**overrides)
    configure_logging(settings)
    app = Flask("chatgate")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    runtime = Runtime(settings)
    app.extensions["chatgate"] = runtime

    from handlers import feishu, wechat
    app.register_blueprint(wechat.blueprint)
    app.register_blueprint(feishu.blueprint)

    @app.get("/healthz")
    def healthz():
        runtime.redis.ping()
        runtime.store.count("users")
        return {"ok": True}

    @app.errorhandler(QueueUnavailable)
    def queue_unavailable(exc):
        return Response("503 the queue is unavailable; please retry\n", status=503, mimetype="text/plain")

    @app.errorhandler(403)
    @app.errorhandler(400)
    @app.errorhandler(413)
    @app.errorhandler(503)
    def plain_error(exc):
        return Response(f"{exc.code} {exc.description}\n", status=exc.code, mimetype="text/plain")

    return app
