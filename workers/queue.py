"""The RQ queue: connecting to Redis and enqueueing answer jobs with JSON-only arguments."""

from __future__ import annotations

import re

import redis
from rq import Callback, Queue, Retry
from rq.serializers import JSONSerializer

from config import Settings

ANSWER_JOB = "workers.answer.answer_job"
NOTICE_JOB = "workers.answer.notice_job"
EXPIRE_JOB = "workers.answer.expire_pending"
NOTICE_RETRIES = (5, 30, 120)
FAILURE_CALLBACK = "workers.answer.answer_failed"
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


def job_id(platform: str, message_key: str) -> str:
    """`<platform>-<message key>`, limited to the characters RQ allows in ids."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{platform}-{message_key}")[:120]


def enqueue_answer(queue: Queue, settings: Settings, facts: dict):
    """Queue one answer job with retries on the configured back-off and a final-failure callback,
    in one round trip to Redis."""
    delays = list(settings.retry_delays)
    with queue.connection.pipeline() as pipe:
        job = queue.enqueue(
            ANSWER_JOB, facts,
            job_id=job_id(facts["platform"], facts["message_key"]),
            job_timeout=settings.job_timeout,
            retry=Retry(max=len(delays), interval=delays) if delays else None,
            on_failure=Callback(FAILURE_CALLBACK, timeout=60),
            result_ttl=3600,
            failure_ttl=FAILED_TTL,
            pipeline=pipe,
        )
        pipe.execute()
    return job


def enqueue_notice(queue: Queue, facts: dict):
    """Queue a short platform message (not an LLM answer): `facts` has platform, user, chat,
    message_key and text. Retried on failure; nothing to refund."""
    return queue.enqueue(
        NOTICE_JOB, facts,
        job_id=job_id("notice-" + facts["platform"], facts["message_key"]),
        job_timeout=60,
        retry=Retry(max=len(NOTICE_RETRIES), interval=list(NOTICE_RETRIES)),
        result_ttl=600,
        failure_ttl=FAILED_TTL,
    )
