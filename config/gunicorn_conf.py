"""gunicorn settings for the web process, derived from chatgate's settings (PORT, CHATGATE_HOST,
WEB_CONCURRENCY). Loading them here means a bad or missing setting stops gunicorn at start-up.

gevent workers: a WeChat post may be held for up to 4.5 s waiting for its answer (a blocking wait
on Redis), and on launch night thousands of them can be waiting at once. A held request costs a
greenlet, not a process or a thread, so each worker holds up to `worker_connections` of them while
it keeps admitting new messages in the same milliseconds as before. The CPU work per message is
short and never yields inside a SQLite transaction, so one store connection per process is safe.
cores + 1 processes keep the cores busy; more would only add SQLite write-lock waits, which under
gevent stall every request of the waiting process.

Metrics: the master owns the web's folder of metric files (`config/metric_files.py`), set up here
before any worker imports prometheus_client; a worker that exits has its live gauges dropped
(`child_exit`). With CHATGATE_LOG_FORMAT=json, gunicorn's own lines are JSON too (`JsonLogger`).
"""

import multiprocessing
import resource

from gunicorn.glogging import Logger

from config import load_settings, metric_files
from config.logs import formatter_for, install_redaction, secrets_of

_settings = load_settings()
install_redaction(secrets_of(_settings))  # the master's own log lines too; each worker sets up the rest
metric_files.prepare(_settings, "web")

# Each held post needs a client socket and a Redis connection: lift the open-files limit to the hard one.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft < 8192:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard if _hard == resource.RLIM_INFINITY else min(_hard, 65536),
                                                _hard))

bind = [f"{_settings.bind_host}:{_settings.port}"]
workers = _settings.web_concurrency or multiprocessing.cpu_count() + 1
worker_class = "gevent"
worker_connections = 1000
preload_app = False  # gevent patches the standard library when each worker starts; import the app after
timeout = 30
graceful_timeout = 20
keepalive = 0  # close after each response: new connections spread evenly over the workers
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()
proc_name = "chatgate-web"
# No control socket (gunicorn >= 25.1 opens one by default at $XDG_RUNTIME_DIR/gunicorn.ctl or
# ~/.gunicorn/gunicorn.ctl: one path shared by every gunicorn of the user, so a second instance or
# another app takes it over). Nothing here uses `gunicornc`; stop and reload with signals. An older
# gunicorn ignores names it does not know, and pyproject.toml asks for 25.1 or newer anyway.
control_socket_disable = True


class JsonLogger(Logger):
    """gunicorn's logger with its handlers writing in CHATGATE_LOG_FORMAT."""

    def setup(self, cfg):
        super().setup(cfg)
        for handler in (*self.error_log.handlers, *self.access_log.handlers):
            handler.setFormatter(formatter_for(_settings))


if _settings.log_format == "json":
    logger_class = JsonLogger


def child_exit(server, worker):
    """A worker exited: the posts it held no longer count as held."""
    metric_files.process_dead(worker.pid)
