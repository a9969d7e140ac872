"""The `chatgate` command: run the bot and operate it.

A thin layer over the library: each command loads the settings, opens what it needs, calls one
function and turns a named error into a clear message and a non-zero exit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from config import SettingsError, load_settings


def _settings(**overrides):
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="chatgate")
def main():
    """chatgate: an LLM behind a WeChat Official Account, with free trials and memberships.

    Settings come from the environment and a `.env` file in the current directory; see the README.
    """


# -- running ----------------------------------------------------------------------------------


@main.command()
@click.option("--procfile", default="Procfile", show_default=True, type=click.Path(dir_okay=False),
              help="Procfile to run.")
def up(procfile):
    """Run the whole bot: web and worker from the Procfile, with an embedded Redis if REDIS_URL is unset.

    Stops everything on Ctrl-C or SIGTERM: web and worker first, then the embedded Redis, which keeps
    its data in a `redis/` folder beside the database. Uses honcho, so the output of each process is
    prefixed with its name.
    """
    env = dict(os.environ)
    redis_proc = None
    if not _settings_env_has("REDIS_URL"):
        from bot.embedded_redis import EmbeddedRedis

        data_dir = embedded_redis_dir(_settings_value("CHATGATE_DB", "var/chatgate.db"))
        try:
            redis_proc = EmbeddedRedis(data_dir).start()
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None
        env["REDIS_URL"] = redis_proc.url
        click.echo(f"embedded Redis on {redis_proc.url}")
    os.environ.update(env)
    settings = _settings()
    env.setdefault("PORT", str(settings.port))
    from bot.store import Store

    Store(settings.db_path).close()
    click.echo(f"chatgate ({settings.env}) on http://{settings.bind_host}:{settings.port}  "
               f"database {settings.db_path}  LLM {'demo responder' if settings.demo_llm else settings.model}")
    bin_dir = str(Path(sys.executable).parent)  # the Procfile's commands live beside this Python
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    honcho = shutil.which("honcho", path=bin_dir) or "honcho"
    child = subprocess.Popen([honcho, "start", "-f", procfile], env=env)
    signalled = []

    def stop_honcho(signum, _frame):
        # Ctrl-C reaches honcho too (same process group), a SIGTERM only us; honcho ignores a repeat.
        # Later signals change nothing: Redis is stopped, and saved, only once honcho has exited.
        if not signalled:
            signalled.append(signum)
            child.send_signal(signum)
        else:
            click.echo("chatgate: stopping web and worker, then Redis", err=True)

    signal.signal(signal.SIGTERM, stop_honcho)
    signal.signal(signal.SIGINT, stop_honcho)
    try:
        code = child.wait()
    finally:
        if redis_proc is not None:
            redis_proc.stop()
    sys.exit(code)


def embedded_redis_dir(db_path: str) -> Path:
    """Where `chatgate up` keeps its embedded Redis: beside the database."""
    return Path(db_path).parent / "redis"


def with_running_redis(settings):
    """The settings, with REDIS_URL pointing at the embedded Redis of a running `chatgate up` when
    REDIS_URL is unset (operator commands run beside it)."""
    if settings.redis_url:
        return settings
    import dataclasses

    from bot.embedded_redis import EmbeddedRedis

    url = EmbeddedRedis.running_in(embedded_redis_dir(settings.db_path))
    return dataclasses.replace(settings, redis_url=url) if url else settings


def _settings_env_has(name: str) -> bool:
    return bool(_settings_value(name, ""))


def _settings_value(name: str, default: str) -> str:
    from dotenv import dotenv_values

    if os.environ.get(name):
        return os.environ[name]
    if Path(".env").is_file():
        return dotenv_values(".env").get(name) or default
    return default


@main.command()
@click.option("--burst", is_flag=True, help="Stop when the queue is empty (for tests and scripts).")
@click.option("-n", "--processes", type=int, default=None,
              help="Worker processes (default CHATGATE_WORKERS); each answers one question at a time.")
def worker(burst, processes):
    """Run the RQ worker(s) that answer questions, with RQ's scheduler (retries with back-off) and
    chatgate's reconciler (every CHATGATE_RECONCILE_INTERVAL seconds)."""
    from config.metric_files import prepare
    prepare(_settings(), "worker")  # its folder of metric files, before anything imports prometheus_client
    from rq.serializers import JSONSerializer
    from rq.worker_pool import WorkerPool

    from bot.store import Store
    from config.logs import configure_logging
    from workers import answer  # noqa: F401  imported before RQ forks, so each job starts warm
    from workers.queue import answer_queue, connect
    from workers.worker import ChatgateWorker

    settings = _settings()
    configure_logging(settings)
    Store(settings.db_path).close()
    connection = connect(settings)
    connection.ping()
    queue = answer_queue(settings, connection)
    count = processes or settings.workers
    if count > 1 and not burst:
        pool = WorkerPool([queue], connection=connection, num_workers=count, serializer=JSONSerializer,
                          worker_class=ChatgateWorker)
        pool.start(logging_level=settings.log_level.upper())
    else:
        ChatgateWorker([queue], connection=connection, serializer=JSONSerializer).work(
            burst=burst, with_scheduler=True, logging_level=settings.log_level.upper())


@main.command()
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

    settings = with_running_redis(_settings())
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


@main.command("feishu-connect")
def feishu_connect():
    """Receive Feishu/Lark events over lark-oapi's long connection (no public URL needed).

    Feeds the same dispatcher and admission path as the /feishu webhook, so dedupe and quotas behave
    the same; answers still come from `chatgate worker`. Runs until stopped.
    """
    from config.metric_files import prepare
    prepare(_settings(), "feishu")  # its folder of metric files, before anything imports prometheus_client
    from config.logs import configure_logging
    from handlers.feishu.connect import connect_forever

    settings = _settings()
    if not (settings.feishu_app_id and settings.feishu_app_secret):
        raise click.ClickException("FEISHU_APP_ID and FEISHU_APP_SECRET are needed for the long connection")
    configure_logging(settings)
    connect_forever(settings)


@main.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_config(as_json):
    """Check the settings and print them, secrets shown only as set or unset."""
    settings = _settings()
    values = settings.redacted()
    if as_json:
        click.echo(json.dumps(values, indent=2))
        return
    for name, value in values.items():
        click.echo(f"{name:24} {value}")


@main.group()
def db():
    """The SQLite database."""


@db.command("migrate")
def db_migrate():
    """Apply pending schema migrations (start-up does this too)."""
    from bot.store import Store

    settings = _settings()
    store = Store(settings.db_path, migrate=False)
    applied = store.migrate()
    click.echo(f"applied {', '.join(applied)}" if applied else "the database is up to date")


@db.command("backup")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
def db_backup(file, force):
    """Copy the database to FILE (mode 600) while the bot runs: one consistent snapshot.

    Uses SQLite's online backup API, so web and worker processes keep writing meanwhile. The copy is
    a complete database on its own; restore by stopping chatgate and putting it in place of CHATGATE_DB.
    """
    from bot.store import Store

    settings = _settings()
    target = Path(file)
    if target.exists() and not force:
        raise click.ClickException(f"{file} exists (use --force to overwrite it)")
    if target.resolve() == Path(settings.db_path).resolve():
        raise click.ClickException("FILE is the database itself")
    store = Store(settings.db_path)
    try:
        copy = store.backup(target)
    finally:
        store.close()
    if copy["check"] != "ok":
        raise click.ClickException(f"the copy in {file} does not check out: {copy['check']}")
    click.echo(f"backed up {settings.db_path} to {file}: {target.stat().st_size // 1024} KiB, "
               f"{copy['users']} users, {copy['ledger']} ledger rows, integrity ok")


# -- trying it out ----------------------------------------------------------------------------


@main.command()
@click.argument("text")
@click.option("--user", default="o-dev-user", show_default=True, help="openid the message comes from.")
@click.option("--url", default=None, help="Webhook URL (default http://127.0.0.1:$PORT/wechat).")
def ask(text, user, url):
    """Send TEXT to the running webhook as a signed (and, in safe mode, encrypted) WeChat message.

    For trying the bot without a real official account: a reply that is ready within the webhook's
    wait (WECHAT_REPLY_WAIT) is printed; anything pushed later goes to WeChat or, in development
    without an AppID, to the worker's log (the dev outbox).
    """
    import hashlib
    import random

    import requests
    import xmltodict
    from wechatpy.crypto import WeChatCrypto

    settings = _settings()
    if not settings.wechat_token:
        raise click.ClickException("WECHAT_TOKEN is not set")
    url = url or f"http://127.0.0.1:{settings.port}/wechat"
    timestamp, nonce = str(int(time.time())), str(random.randrange(10**9))
    msg_id = str(random.randrange(10**15, 10**16))
    xml = (f"<xml><ToUserName><![CDATA[gh_dev]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>"
           f"<CreateTime>{timestamp}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
           f"<Content><![CDATA[{text}]]></Content><MsgId>{msg_id}</MsgId></xml>")
    signature = hashlib.sha1("".join(sorted([settings.wechat_token, timestamp, nonce])).encode()).hexdigest()
    params = {"signature": signature, "timestamp": timestamp, "nonce": nonce, "openid": user}
    crypto = None
    if settings.wechat_aes_key:
        crypto = WeChatCrypto(settings.wechat_token, settings.wechat_aes_key, settings.wechat_app_id)
        enc = crypto.encrypt_message(xml, nonce, timestamp)
        from wechatpy.utils import to_text

        fields = xmltodict.parse(to_text(enc))["xml"]
        params.update(encrypt_type="aes", msg_signature=fields["MsgSignature"])
        xml = (f"<xml><ToUserName><![CDATA[gh_dev]]></ToUserName>"
               f"<Encrypt><![CDATA[{fields['Encrypt']}]]></Encrypt></xml>")
    try:
        res = requests.post(url, params=params, data=xml.encode(), timeout=10)
    except requests.RequestException as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from None
    body = res.text
    if crypto is not None and res.ok and body.startswith("<xml>"):
        body = crypto.decrypt_message(body, *_reply_signature(body))
    if res.ok and body.startswith("<xml>"):  # a passive reply: show what the user would read
        body = "reply:\n" + xmltodict.parse(body)["xml"].get("Content", "")
    click.echo(f"→ MsgId {msg_id}: HTTP {res.status_code} {body}")


def _reply_signature(body: str):
    import xmltodict

    fields = xmltodict.parse(body)["xml"]
    return fields["MsgSignature"], fields["TimeStamp"], fields["Nonce"]


import bot.cli_operate  # noqa: E402, F401  registers the operator's commands (users, grant, codes, stats, jobs…)
