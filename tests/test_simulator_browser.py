"""The simulator page (`/simulator`, development only) in a real headless Chromium, on the Procfile's real
web and worker processes in development mode: no platform credentials, no LLM key (the demo responder
answers), so the page's server side signs and posts to the real webhooks and plays the platform API the
workers push to. Debian's `chromium` and `chromium-driver`, driven by Selenium; `python3 dev.py test`
installs them when missing (as root), and these tests fail, saying so, when they are not there.
"""

from __future__ import annotations

import time

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.browser import ANSWER_S, BrowserMissing, Page, chromium


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module; each test opens the page afresh. Missing: the test fails."""
    try:
        driver = chromium()
    except BrowserMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    yield driver
    driver.quit()


@pytest.fixture
def dev_bot(live, monkeypatch):
    """Start web and worker as `python3 dev.py up` does: development with a simulator secret, no platform
    credentials but a WeChat token, no LLM key. `safe=True` keeps the test's WECHAT_AES_KEY (safe mode)."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CHATGATE_MODEL", "WECHAT_APP_ID", "WECHAT_APP_SECRET",
                 "WECHAT_API_BASE"):
        monkeypatch.delenv(name, raising=False)

    def start(safe: bool = False, **settings):
        if not safe:
            monkeypatch.delenv("WECHAT_AES_KEY", raising=False)
        return live(CHATGATE_ENV="development", CHATGATE_SIMULATOR_SECRET="s" * 32, **settings)
    return start


def test_the_page_loads_and_offers_both_platforms(dev_bot, browser):
    page = Page(browser, dev_bot())
    assert browser.title == "chatgate simulator"
    modes = {o.get_attribute("value"): o.is_enabled() for o in Select(browser.find_element(By.ID, "mode")).options}
    assert modes == {"plain": True, "safe": False}  # no WECHAT_AES_KEY: the account is in plain mode
    page.choose("feishu", "group")
    assert browser.find_element(By.ID, "mention").is_displayed()
    modes = [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "mode")).options]
    assert modes == ["direct", "group"]


def test_a_wechat_question_is_answered_in_the_page(dev_bot, browser):
    page = Page(browser, dev_bot(safe=True))
    page.choose("wechat", "safe")
    page.new_user()
    page.say("用一句话介绍你自己")
    answer = page.bot_says("用一句话介绍你自己")
    assert "demo" in answer
    page.wait(lambda d: page.panel("trial-left").startswith("9 / 10"), 10, "the panel did not count the answer")


def test_a_trial_runs_out_and_a_code_made_in_the_panel_restores_answers(dev_bot, browser):
    page = Page(browser, dev_bot(CHATGATE_FREE_TRIAL="1"))
    page.choose("wechat", "plain")
    page.new_user()
    page.say("first question")
    page.bot_says("first question")
    page.say("second question")
    page.bot_says("free answers are used up")
    assert not any("second question" in t and "demo" in t for t in page.bot_texts())

    browser.find_element(By.ID, "create-code").click()
    code = page.wait(lambda d: d.find_element(By.ID, "code").text.strip(), 10, "no code was shown")
    browser.find_element(By.ID, "send-code").click()
    page.bot_says("Code redeemed")
    page.wait(lambda d: page.panel("member-until") not in ("", "–", "none 未开通"), 10,
              "the panel shows no membership after the code")
    assert "redeem" in page.panel("ledger").lower(), page.panel("ledger")

    page.say("third question")
    answer = page.bot_says("third question")
    assert "demo" in answer
    assert code not in answer


def test_a_feishu_group_message_needs_the_mention(dev_bot, browser):
    page = Page(browser, dev_bot())
    page.choose("feishu", "group")
    page.new_user()
    mention = browser.find_element(By.ID, "mention")
    if mention.is_selected():
        mention.click()
    page.say("anyone there without a mention")
    page.user_message_recorded("anyone there without a mention")
    time.sleep(4)  # the demo answers in well under a second: a reply would be here by now
    assert page.bot_texts() == [], page.chat_text()

    mention.click()
    page.say("now with the mention")
    final = "#messages li.bot .card:not(.streaming)"
    card = page.wait(lambda d: next((t for t in page.texts(final) if "now with the mention" in t), None),
                     ANSWER_S, "no final card answered the mentioned message")
    assert "demo" in card
