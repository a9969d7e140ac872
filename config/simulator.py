"""Stand-in platform credentials for the browser simulator (`handlers/simulator/`), in development only.

With CHATGATE_SIMULATOR_SECRET set and CHATGATE_ENV=development, each platform whose own credentials are
unset gets the simulator's: a fixed app id, and a token, app secret and (Feishu) Encrypt Key derived
from the secret (HMAC-SHA256), so the web process, the worker and the simulator, which all read the
same settings, agree without any of them being written down; and the platform's API origin points at
the simulator in the web process itself (`http://127.0.0.1:PORT/simulator/wechat-api` for wechatpy;
`http://127.0.0.1:PORT` for lark-oapi, which takes only an origin, so the simulated Feishu API answers
at `/open-apis/...` there), so what the workers push arrives in the page. A platform with real credentials is
left alone (its webhook still takes the simulator's posts, signed with its own token). Production
never gets any of this: CHATGATE_SIMULATOR_SECRET is refused there (`config/checks.py`).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace

from config.settings import Settings

WECHAT_APP_ID = "wxsimulator0000000"
"""The simulated official account's AppID (18 characters, as WeChat's are)."""
FEISHU_APP_ID = "cli_simulator00000"
"""The simulated Feishu app's App ID."""
WECHAT_API_PATH = "/simulator/wechat-api"
"""Where the simulated WeChat API lives in the web process (`/cgi-bin/...` below it)."""
FEISHU_API_PATH = ""
"""Where the simulated Feishu API lives in the web process: at its root (`/open-apis/...`), as lark-oapi
accepts only an origin as its domain."""


def derived(secret: str, name: str, length: int = 32) -> str:
    """A stand-in credential: hex letters and digits, the same in every process with the same secret."""
    return hmac.new(secret.encode(), f"chatgate-simulator:{name}".encode(), hashlib.sha256).hexdigest()[:length]


def web_origin(settings: Settings) -> str:
    """This machine's web process as its own clients reach it (loopback when it binds every address)."""
    host = settings.bind_host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def with_simulator(s: Settings) -> Settings:
    """`s` with the simulator's credentials for every platform that has none (see the module docstring)."""
    if not s.simulator:
        return s
    changes: dict = {}
    simulated: list[str] = []
    origin = web_origin(s)
    if not s.wechat_app_id and not s.wechat_app_secret:
        changes.update(wechat_app_id=WECHAT_APP_ID, wechat_app_secret=derived(s.simulator_secret, "wechat-secret"),
                       wechat_api_base=origin + WECHAT_API_PATH)
        if not s.wechat_token:
            changes["wechat_token"] = derived(s.simulator_secret, "wechat-token")
        simulated.append("wechat")
    if not s.feishu_app_id:
        changes.update(feishu_app_id=FEISHU_APP_ID, feishu_app_secret=derived(s.simulator_secret, "feishu-secret"),
                       feishu_verification_token=derived(s.simulator_secret, "feishu-token"),
                       feishu_encrypt_key=s.feishu_encrypt_key or derived(s.simulator_secret, "feishu-encrypt"),
                       feishu_api_base=origin + FEISHU_API_PATH)
        simulated.append("feishu")
    return replace(s, **changes, simulated=tuple(simulated))
