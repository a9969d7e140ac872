"""gunicorn settings for the web process, derived from chatgate's settings (PORT, CHATGATE_HOST,
WEB_CONCURRENCY). Loading them here means a bad or missing setting stops gunicorn at start-up.

Sync workers: the webhook does milliseconds of local work per request (verify, decrypt, SQLite,
enqueue) and never waits on the network, so one request per process at a time keeps latency flat;
2 × cores + 1 processes keep both cores busy while one waits on a disk or Redis round trip.
"""

import multiprocessing

from config import load_settings

_settings = load_settings()

bind = [f"{_settings.bind_host}:{_settings.port}"]
workers = _settings.web_concurrency or multiprocessing.cpu_count() * 2 + 1
worker_class = "sync"
preload_app = True
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()
proc_name = "chatgate-web"
