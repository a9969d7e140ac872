"""The RQ queue: connecting to Redis and enqueueing the jobs of deliveries (and the look-ups of afdian
orders), with JSON-only arguments."""

from __future__ import annotations

import re
import time

import redis
from rq import Queue, Retry, worker_registration
from rq.serializers import JSONSerializer

from config import Settings

ANSWER_JOB = "workers.answer.answer_job"
ORDER_JOB = "workers.orders.check_order_job"
ORDER_JOB_TIMEOUT_S = 60
"""An order look-up is one HTTP call with a 10 s timeout, then one short transaction."""
MAX_REDIS_CONNECTIONS = 1100
"""Per process: gunicorn's worker_connections (1000) held posts, and some to spare."""
FAILED_TTL = 7 * 24 * 3600
"""How long a job that could not be done stays in RQ's failed registry for `chatgate jobs`."""


def connect(settings: Settings) -> redis.Redis:
    """A Redis client with timeouts, from REDIS_URL."""
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set (`chatgate up` starts an embedded Redis)")
    # A WeChat post held for its answer keeps one connection in a blocking wait; allow as many as
    # a web process holds posts (gunicorn's worker_connections), not redis-py's default of 100.
    return redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5,
                                health_check_interval=30, max_connections=MAX_REDIS_CONNECTIONS)


def answer_queue(settings: Settings, connection: redis.Redis) -> Queue:
    """The queue answer jobs go through; JSON-serialised so only plain facts can be enqueued."""
    return Queue(settings.queue_name, connection=connection, serializer=JSONSerializer)


def first_job_id(platform: str, message_key: str) -> str:
    """`<platform>-<message key>`, limited to the characters RQ allows in ids."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{platform}-{message_key}")[:120]


def enqueue_answer(queue: Queue, settings: Settings, facts: dict, *, job_id: str | None = None):
    """Queue the job of one delivery (answer it, or send what it has ready) with retries on the
    configured back-off, in one round trip to Redis. `facts` has delivery_id, platform, user and
    message_key; the job id is `<platform>-<message key>` unless given (a re-queue names its own)."""
    delays = list(settings.retry_delays)
    with queue.connection.pipeline() as pipe:
        job = queue.enqueue(
            ANSWER_JOB, facts,
            job_id=job_id or first_job_id(facts["platform"], facts["message_key"]),
            job_timeout=settings.job_timeout,
            retry=Retry(max=len(delays), interval=delays) if delays else None,
            result_ttl=3600,
            failure_ttl=FAILED_TTL,
            pipeline=pipe,
        )
        pipe.execute()
    return job


def enqueue_order_check(queue: Queue, out_trade_no: str, *, claimed: dict | None = None,
                        now: float | None = None):
    """Queue the look-up of an afdian order (`workers/orders.py`), with `claimed`, the webhook body's
    own account of it. Each look-up has its own job id: RQ runs a re-used id twice anyway, and
    settling an order is idempotent."""
    now = time.time() if now is None else now
    job_id = f"afdian-{re.sub(r'[^A-Za-z0-9_-]', '_', out_trade_no)[:64]}-{int(now * 1000) % 10**12}"
    return queue.enqueue(ORDER_JOB, {"out_trade_no": out_trade_no, "claimed": claimed or {}}, job_id=job_id,
                         job_timeout=ORDER_JOB_TIMEOUT_S, result_ttl=3600, failure_ttl=FAILED_TTL)


def live_workers(queue: Queue) -> int:
    """How many RQ workers listen on `queue` and are alive (their heartbeat key has not expired: a
    worker that died without saying so still counts until it does, a minute or two)."""
    keys = worker_registration.get_keys(queue=queue)
    if not keys:
        return 0
    with queue.connection.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.exists(key)
        return sum(1 for alive in pipe.execute() if alive)
