#!/usr/bin/env python3
"""Take the README's screenshot of the browser simulator (`docs/simulator.png`), with the browser the
tests use (Debian's `chromium` and `chromium-driver`; CJK text needs `fonts-noto-cjk`):

    .venv/bin/python scripts/simulator_screenshot.py [OUT.png]

It starts the Procfile's web and worker as `python3 dev.py up` would (development, the demo responder,
the simulator's stand-in WeChat account) on an embedded Redis and a SQLite file in a temporary
directory, plays a short WeChat scene in the page — follow, a typed question, a spoken one, `我的`, a
code made in the side panel — and saves the window.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from selenium.webdriver.common.by import By  # noqa: E402

from tests.browser import Page, chromium  # noqa: E402
from tests.live import LiveBot  # noqa: E402

OUT = ROOT / "docs" / "simulator.png"
DROP = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "WECHAT_APP_ID", "WECHAT_APP_SECRET", "WECHAT_AES_KEY",
        "WECHAT_API_BASE", "FEISHU_APP_ID", "FEISHU_APP_SECRET")


def scene(page: Page) -> None:
    """What the screenshot shows."""
    page.choose("wechat", "plain")  # the page made a first user
    page.d.find_element(By.ID, "follow").click()
    page.bot_says("Welcome")
    page.say("用一句话介绍你自己")
    page.bot_says("用一句话介绍你自己")
    page.d.find_element(By.ID, "voice").click()
    page.say("明天北京会下雨吗")
    page.bot_says("明天北京会下雨吗")
    page.d.find_element(By.ID, "voice").click()
    page.say("我的")
    page.bot_says("剩余")
    page.d.find_element(By.ID, "create-code").click()
    page.wait(lambda d: d.find_element(By.ID, "code").text.strip(), 10, "no code was shown")
    time.sleep(2.5)  # the panel's next refresh shows the ledger rows


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    with tempfile.TemporaryDirectory(prefix="chatgate-screenshot-") as tmp:
        env = {k: v for k, v in os.environ.items() if k not in DROP}
        env.update(CHATGATE_ENV="development", CHATGATE_DB=str(Path(tmp) / "chatgate.db"),
                   CHATGATE_SIMULATOR_SECRET=secrets.token_hex(32), WECHAT_TOKEN=secrets.token_hex(16),
                   WEB_CONCURRENCY="2", CHATGATE_WORKERS="2", CHATGATE_LOG_LEVEL="WARNING")
        bot = LiveBot(Path(tmp), env)
        driver = None
        try:
            url = bot.start()
            driver = chromium(1180, 800)
            scene(Page(driver, url))
            out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out))
        finally:
            if driver is not None:
                driver.quit()
            bot.stop()
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
