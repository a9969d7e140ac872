"""Running chatgate: `up` (web + worker, with an embedded Redis), `worker`, `feishu-connect`, and
`reconcile` (one pass of the reconciler now).

The processes refuse to start while production is not ready (every gap in the settings). Commands
that run beside a `chatgate up` with REDIS_URL unset find its embedded Redis (`with_running_redis`).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable

import click

from bot.cli.common import DATABASE_ONLY, require
from bot.cli.common import load_checked as _settings
from bot.embedded_redis import embedded_redis_dir

MAX_PROCESSES = 512
"""Most worker processes `chatgate worker -n` starts."""


@click.command()
@click.option("--procfile", default="Procfile", show_default=True, type=click.Path(dir_okay=False),
              help="Procfile to run.")
def up(procfile):
    """Run the whole bot: the Procfile's web and worker (and feishu, if enabled), with an embedded Redis
    if REDIS_URL is unset, each line's output prefixed with its name.

    If any part dies, the others are stopped in order and it exits 1 (for systemd's Restart=on-failure).
    On SIGTERM or Ctrl-C: web stops taking posts, the worker finishes the answers in flight (within
    CHATGATE_STOP_GRACE seconds), then the embedded Redis saves and stops; exit 0. A busy PORT is
    refused before anything starts.
    """
    from bot.supervisor import StartRefused, Supervisor

    try:
        code = Supervisor(procfile).run()
    except StartRefused as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


def with_running_redis(settings):
    """The settings, with REDIS_URL pointing at the embedded Redis of a running `chatgate up` when
    REDIS_URL is unset (operator commands run beside it)."""
    if settings.redis_url:
        return settings
    import dataclasses

    from bot.embedded_redis import EmbeddedRedis

    url = EmbeddedRedis.running_in(embedded_redis_dir(settings.db_path))
    return dataclasses.replace(settings, redis_url=url) if url else settings


def redis_settings(need: Iterable[str] = ("REDIS_URL",)):
    """The settings of a command that uses Redis: REDIS_URL, or else the embedded Redis of a running
    `chatgate up`; a clear error when there is neither, or a gap in the variables `need`."""
    settings = with_running_redis(_settings(need=DATABASE_ONLY))
    if not settings.redis_url:
        raise click.ClickException(f"no Redis: REDIS_URL is unset and no `chatgate up` runs with its embedded Redis in "
                                   f"{embedded_redis_dir(settings.db_path)}")
    return require(settings, need)


@click.command()
@click.option("--burst", is_flag=True, help="Stop when the queue is empty (for tests and scripts).")
@click.option("-n", "--processes", type=click.IntRange(1, MAX_PROCESSES), default=None,
              help="Worker processes (default CHATGATE_WORKERS); each answers up to CHATGATE_WORKER_CONCURRENCY "
                   "questions at once.")
def worker(burst, processes):
    """Run the worker process(es) that answer questions: each runs up to CHATGATE_WORKER_CONCURRENCY
    answers at once on gevent, with RQ's scheduler (retries with back-off) and chatgate's reconciler
    (every CHATGATE_RECONCILE_INTERVAL seconds). On SIGTERM or Ctrl-C the answers in flight finish
    (within CHATGATE_STOP_GRACE); a second signal gives them back to the queue at once."""
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        raise click.ClickException("the worker must start as `chatgate worker`, which runs it on gevent")
    from config.metric_files import prepare

    settings = _settings()
    prepare(settings, "worker")  # its folder of metric files, before anything imports prometheus_client
    from rq.serializers import JSONSerializer
    from rq.worker_pool import WorkerPool

    from bot.store import Store
    from config.logs import configure_logging
    from workers.pool import GeventWorker
    from workers.queue import answer_queue, connect

    configure_logging(settings)
    if logging.getLogger().level >= logging.INFO:  # one line per LLM call, beside chatgate's own per answer
        for name in ("httpx", "httpx2"):
            logging.getLogger(name).setLevel(logging.WARNING)
    Store(settings.db_path).close()
    connection = connect(settings)
    connection.ping()
    queue = answer_queue(settings, connection)
    count = processes or settings.workers
    if count > 1 and not burst:
        pool = WorkerPool([queue], connection=connection, num_workers=count, serializer=JSONSerializer,
                          worker_class=GeventWorker)
        pool.start(logging_level=settings.log_level.upper())
    else:
        GeventWorker([queue], connection=connection, serializer=JSONSerializer).work(
            burst=burst, with_scheduler=True, logging_level=settings.log_level.upper())


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def reconcile(as_json):
    """Run one pass of the reconciler now and say what it did.

    It re-queues questions whose job was lost (Redis restarted or wiped), restarts tries whose worker
    died, gives up questions whose tries are spent (refunded, the user told), retries pushes that
    failed and expires answers nobody fetched. `chatgate worker` runs it on its own schedule; this is
    for the operator after an outage, or for a cron job where no worker runs it. Needs Redis.
    """
    from config.logs import configure_logging
    from workers.answer import Context
    from workers.reconcile import reconcile as one_pass

    settings = redis_settings(need=("REDIS_URL", "OPENAI_API_KEY"))  # its Context builds the LLM client too
    configure_logging(settings)
    try:
        ctx = Context(settings)
        ctx.redis.ping()
    except Exception as exc:
        raise click.ClickException(f"cannot reach Redis: {exc}") from None
    try:
        counts = {k: v for k, v in one_pass(ctx).items() if v}
    finally:
        ctx.close()
    if as_json:
        click.echo(json.dumps(counts, indent=2))
    elif counts:
        for what, n in sorted(counts.items()):
            click.echo(f"{what:32} {n}")
    else:
        click.echo("nothing to reconcile")


@click.command("feishu-connect")
def feishu_connect():
    """Receive Feishu/Lark events over lark-oapi's long connection (no public URL needed).

    Feeds the same dispatcher and admission path as the /feishu webhook, so dedupe and quotas behave
    the same; answers still come from `chatgate worker`. Runs until stopped.
    """
    from config.metric_files import prepare

    settings = require(with_running_redis(_settings(need=DATABASE_ONLY)), None)  # every gap, as a process
    prepare(settings, "feishu")  # its folder of metric files, before anything imports prometheus_client
    from config.logs import configure_logging
    from handlers.feishu.connect import connect_forever

    if not (settings.feishu_app_id and settings.feishu_app_secret):
        raise click.ClickException("FEISHU_APP_ID and FEISHU_APP_SECRET are needed for the long connection")
    configure_logging(settings)
    connect_forever(settings)


COMMANDS = (up, worker, reconcile, feishu_connect)
"""The commands of this module, added to the `chatgate` group by `bot/cli/__init__.py`."""
