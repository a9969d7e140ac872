"""`/metrics`: every process's metrics in Prometheus' text format, for loopback or a bearer token.

Access: with CHATGATE_METRICS_TOKEN set, only a request carrying `Authorization: Bearer <token>`
(compared in constant time) from anywhere, else 401. Unset, only a client on loopback whose request
did not come through a proxy (no `X-Forwarded-For`, `X-Real-IP` or `Forwarded`: the proxy itself
connects from loopback), else 403.

What it serves: the metrics of `config/metrics.py` added up over every process's files (multiprocess
mode, `config/metric_files.py`), or this process's own when that mode is off; and, read from Redis at
scrape time with a one-second timeout:

    chatgate_queue_jobs{state}   jobs queued (waiting for a worker), scheduled (retries waiting
                                 for their time), started (being answered) and failed (kept for
                                 `chatgate jobs`) on CHATGATE_QUEUE
    chatgate_workers             RQ workers alive on the queue
    chatgate_redis_up            1 when Redis answered the scrape, else 0 (and no queue figures)
"""

from __future__ import annotations

import hmac
import ipaddress

from flask import Blueprint, Response, current_app, request
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from config import metric_files
from workers.queue import live_workers

blueprint = Blueprint("metrics", __name__)

PROXY_HEADERS = ("X-Forwarded-For", "X-Real-IP", "Forwarded")


@blueprint.get("/metrics")
def metrics():
    """The metrics, to loopback clients or bearers of CHATGATE_METRICS_TOKEN."""
    runtime = current_app.extensions["chatgate"]
    refusal = _refusal(runtime.settings.metrics_token)
    if refusal is not None:
        return refusal
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ProcessMetrics())
    registry.register(_QueueMetrics(runtime))
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))  # text, or OpenMetrics if asked
    return Response(encode(registry), content_type=content_type)


def _refusal(token: str) -> Response | None:
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
        return Response("401 /metrics needs Authorization: Bearer <CHATGATE_METRICS_TOKEN>\n", status=401,
                        mimetype="text/plain", headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    if direct_from_loopback():
        return None
    return Response("403 /metrics answers loopback clients only; set CHATGATE_METRICS_TOKEN to scrape it "
                    "from elsewhere\n", status=403, mimetype="text/plain")


def direct_from_loopback() -> bool:
    """The request comes from a client on this machine and not through a proxy (no `X-Forwarded-For`,
    `X-Real-IP` or `Forwarded`: a proxy on this machine connects from loopback too). Also the
    simulator's access rule (`handlers/simulator/`)."""
    try:
        loopback = ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False
    return loopback and not any(name in request.headers for name in PROXY_HEADERS)


class _ProcessMetrics:
    """The recorded metrics: every process's files merged, or this process's registry."""

    def collect(self):
        if metric_files.own_dir() is None:
            yield from REGISTRY.collect()
            return
        with metric_files.locked():
            yield from MultiProcessCollector.merge(metric_files.files(), accumulate=True)


class _QueueMetrics:
    """Queue depth and live workers, read from Redis now."""

    def __init__(self, runtime):
        self.queue = runtime.quick_queue

    def collect(self):
        up = GaugeMetricFamily("chatgate_redis_up", "1 when Redis answered this scrape.")
        try:
            connection = self.queue.connection
            with connection.pipeline(transaction=False) as pipe:
                pipe.llen(self.queue.key)
                for registry in (self.queue.scheduled_job_registry, self.queue.started_job_registry,
                                 self.queue.failed_job_registry):
                    pipe.zcard(registry.key)
                queued, scheduled, started, failed = pipe.execute()
            workers = live_workers(self.queue)
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("chatgate_queue_jobs", "Jobs on the answer queue, by state.", labels=["state"])
        for state, n in (("queued", queued), ("scheduled", scheduled), ("started", started), ("failed", failed)):
            jobs.add_metric([state], n)
        yield jobs
        yield GaugeMetricFamily("chatgate_workers", "RQ workers alive on the answer queue.", value=workers)
