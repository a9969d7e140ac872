"""Logging for the web app, the worker and the CLI: one format, and no secret in any line.

`configure_logging(settings)` sets the level and the format and installs redaction. Redaction is a
log record factory (`logging.setLogRecordFactory`), so it covers every record of every logger in
the process (ours, urllib3's, httpx's, openai's, RQ's, gunicorn's), whatever handler and formatter
later write it, and processes forked afterwards (gunicorn workers, the worker pool's processes) inherit it.
Each record is rendered once, when it is created: the message after `%` formatting, the traceback
(stored as `exc_text`, which formatters reuse instead of rendering it again) and `stack_info`.
Then every credential in them becomes `[redacted]`:

- each configured secret, by value (`secrets_of`), and
- credentials known by their shape, whoever issued them: `access_token=…`, `secret=…` and other
  `…token=`/`…secret=`/`access_key=`/`ticket=` parameters (Feishu's long connection logs its URL
  with the last two at INFO), `Bearer …`, JSON or repr fields such as `"tenant_access_token": "…"`
  or `'Authorization': '…'`, and the password in `redis://user:pass@host`.

Names, methods, hosts, paths and statuses stay, so DEBUG lines still say which call was made:
    "GET /cgi-bin/token?grant_type=client_credential&appid=wx…&secret=[redacted] HTTP/1.1" 200 47

Two formats (CHATGATE_LOG_FORMAT): `text`, one readable line per record (`FORMAT`), and `json`, one
JSON object per line (`JsonFormatter`): time, level, logger, pid, message, and the structured fields
a log call passes with `extra=` (platform, message_key, delivery_id, user_id, outcome, timings in ms…),
each redacted again when the line is written, since `extra` reaches the record after the factory ran.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from urllib.parse import parse_qs, quote, quote_plus, unquote, urlsplit

from config.settings import VARIABLES, Settings

MARK = "[redacted]"
"""What a secret is replaced with."""

MIN_SECRET_LENGTH = 8
"""Configured values shorter than this are not redacted by value: a short one (a WECHAT_TOKEN may
have 3 characters) would also blank out ordinary words in every line. The secrets the platforms issue
are far longer (AppSecret 32, EncodingAESKey 43, API keys 40+); a WECHAT_TOKEN only signs locally
and is never sent; a short Redis password travels inside a URL, where its shape gives it away."""

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_NAME = r"(?i:token|secret|password|passwd|(?:access|api|secret|encrypt|aes)[_-]?key|ticket|authorization)"
_SHAPES = (
    rf"(?P<param>{_NAME}=)[^\s&\"'<>#;,)]+",  # access_token=… secret=… in URLs and key=value text
    rf"(?P<field>{_NAME}[\"']\s*[:,]\s*b?[\"'])[^\"']+",  # JSON, dict reprs, (b'name', b'value') headers
    r"(?P<scheme>\b[Bb]earer\s+)[\w.~+/=-]+",  # Authorization headers
    r"(?P<userinfo>://[^\s:/@]*:)[^\s/]+(?=@)",  # redis://user:pass@host
)
_SHAPE = re.compile("|".join(_SHAPES))
# Unmatched groups are empty in the template, so each shape keeps its prefix and loses the secret.
_TEMPLATE = r"\g<param>\g<field>\g<scheme>\g<userinfo>" + MARK
_CLUES = ("token", "secret", "passw", "key", "ticket", "authorization", "bearer", "://")
"""Lower-case text that every shape contains. Python's regex engine tries each alternative at each
position of a line (tens of µs for a short one); a search for a few literals in the lower-cased line
takes about 1 µs, so the full patterns run only on the rare lines that may hold a secret."""


class _Rules:
    """The compiled patterns for one set of configured secrets."""

    def __init__(self, secrets: Iterable[str]):
        values = {v for s in secrets if len(s) >= MIN_SECRET_LENGTH for v in (s, quote(s, safe=""), quote_plus(s))}
        values = sorted(values, key=len, reverse=True)  # a longer secret wins over one it contains
        self.clues = re.compile("|".join(re.escape(c) for c in {*_CLUES, *(v.lower() for v in values)}))
        self.values = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def redact(self, text: str) -> str:
        if not text or not self.clues.search(text.lower()):
            return text
        if self.values:  # first, so that no shape can stop part-way through a known secret
            text = self.values.sub(MARK, text)
        return _SHAPE.sub(_TEMPLATE, text)


_rules = _Rules(())


def redact(text: str) -> str:
    """`text` with every configured secret and every credential-shaped part replaced by `MARK`."""
    return _rules.redact(text)


def secrets_of(settings: Settings) -> list[str]:
    """The configured secret values: every secret setting, and of REDIS_URL only its password
    (`redis://user:password@host`, or `unix:///path?password=…` as redis-py also reads it)."""
    values = [getattr(settings, var.attr) for var in VARIABLES if var.secret and var.name != "REDIS_URL"]
    url = urlsplit(settings.redis_url)
    for password in [url.password or "", *parse_qs(url.query).get("password", [])]:
        values += [password, unquote(password)]  # as written in the URL, and as sent to Redis
    return [v for v in values if v]


_formatter = logging.Formatter()


def _scrub(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # arguments that do not fit the format: keep both, cleaned, rather than fail later
        message = f"{record.msg!r} % {record.args!r}"
    record.msg, record.args = redact(message), ()
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(_formatter.formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def install_redaction(secrets: Iterable[str] = ()) -> None:
    """Redact `secrets` (and credential-shaped text) from every log record made from now on in this
    process and its forks. Calling it again replaces the secrets; the factory is installed once."""
    global _rules
    _rules = _Rules(secrets)
    base = logging.getLogRecordFactory()
    if getattr(base, "redacts", False):
        return

    def factory(*args, **kwargs):
        record = base(*args, **kwargs)
        _scrub(record)
        return record

    factory.redacts = True
    logging.setLogRecordFactory(factory)


_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
"""The attributes every record has; whatever else a record carries came through `extra=`."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: `time` (UTC, ISO 8601), `level`, `logger`, `pid`,
    `message`, the record's `extra=` fields, and `exc`/`stack` when there is a traceback. Every
    string in it is redacted, the extra fields included."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                line.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(_clean(line), ensure_ascii=False)


def _clean(value):
    """A value JSON can hold, with every string in it redacted."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {redact(str(key)): _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(item) for item in value]
    return redact(str(value))


def formatter_for(settings: Settings) -> logging.Formatter:
    """The formatter of CHATGATE_LOG_FORMAT."""
    return JsonFormatter() if settings.log_format == "json" else logging.Formatter(FORMAT)


def adopt(name: str) -> None:
    """Send a library logger that writes through a handler of its own (lark-oapi's `Lark` prints to
    stdout in its own format, and also passes each line on to the root) through the root's handler
    only: one format, one line per record."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True


def configure_logging(settings: Settings) -> None:
    """One log format and level for web, worker and CLI, with every secret redacted from every line.

    The root logger gets one stderr handler in CHATGATE_LOG_FORMAT (unless the process already has
    one, as under pytest); RQ then adds none of its own. In `json`, Python's warnings are logged too,
    so that nothing else writes free text into the stream."""
    install_redaction(secrets_of(settings))
    handler = logging.StreamHandler()
    handler.setFormatter(formatter_for(settings))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    if settings.log_format == "json":
        logging.captureWarnings(True)
