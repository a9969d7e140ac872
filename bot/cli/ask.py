"""`chatgate ask`: try the bot without a real official account, by posting to the running webhook
exactly as WeChat does (signed, and encrypted when WECHAT_AES_KEY is set)."""

from __future__ import annotations

import time

import click

from bot.cli.common import load_checked


@click.command()
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

    from handlers.wechat.inbound import escape_cdata

    settings = load_checked(need=("WECHAT_TOKEN", "WECHAT_AES_KEY"))  # what signing and encrypting use
    if not settings.wechat_token:
        raise click.ClickException("WECHAT_TOKEN is not set")
    url = url or f"http://127.0.0.1:{settings.port}/wechat"
    timestamp, nonce = str(int(time.time())), str(random.randrange(10**9))
    msg_id = str(random.randrange(10**15, 10**16))
    xml = (f"<xml><ToUserName><![CDATA[gh_dev]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>"
           f"<CreateTime>{timestamp}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
           f"<Content><![CDATA[{escape_cdata(text)}]]></Content><MsgId>{msg_id}</MsgId></xml>")
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


COMMANDS = (ask,)
"""The commands of this module, added to the `chatgate` group by `bot/cli/__init__.py`."""
