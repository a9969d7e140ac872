"""Debian's Chromium, headless, driven by Selenium through Debian's chromedriver (never a downloaded
browser or driver: this machine, like CI, reaches package registries only), and the simulator page as
a user sees it. Used by tests/test_simulator_browser.py and scripts/simulator_screenshot.py.
"""

from __future__ import annotations

import shutil

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

PACKAGES = "chromium chromium-driver"
"""The Debian packages this needs; `python3 dev.py test` installs them when it runs as root."""
ANSWER_S = 30
"""How long a test waits for an answer: WeChat's retry rhythm alone may take 15 s before a push shows."""


class BrowserMissing(RuntimeError):
    """Chromium or its chromedriver is not installed."""


def chromium(width: int = 1200, height: int = 860) -> webdriver.Chrome:
    """A headless Chromium of `width` × `height` CSS pixels."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        missing = " and ".join(name for name, path in (("chromium", binary), ("chromedriver", driver)) if not path)
        raise BrowserMissing(f"{missing} not found: the browser tests need Debian's {PACKAGES} "
                             f"(apt-get install -y --no-install-recommends {PACKAGES}; "
                             "python3 dev.py test does it when run as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                "--disable-extensions", "--lang=en-US", "--hide-scrollbars", f"--window-size={width},{height}"):
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    inner = browser.execute_script("return [window.innerWidth, window.innerHeight]")
    browser.set_window_size(2 * width - inner[0], 2 * height - inner[1])  # the page gets width × height
    return browser


class Page:
    """The simulator page as a user sees it: what the tests click, type and read."""

    def __init__(self, driver, url: str):
        self.d = driver
        driver.get(url + "/simulator")
        self.wait(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1", 15,
                  "the page did not load its config")

    def wait(self, condition, timeout: float, what: str):
        """`condition(driver)`'s first truthy value within `timeout` s; else fail saying `what`, with the chat."""
        try:
            return WebDriverWait(self.d, timeout, poll_frequency=0.2).until(condition)
        except TimeoutException:
            raise AssertionError(f"{what}; the chat shows:\n{self.chat_text()}") from None

    def choose(self, platform: str, mode: str) -> None:
        """Pick the platform (`wechat`, `feishu`) and its mode in the top bar."""
        self.d.find_element(By.ID, f"platform-{platform}").click()
        Select(self.d.find_element(By.ID, "mode")).select_by_value(mode)

    def user(self) -> str:
        """The chosen user's id."""
        return Select(self.d.find_element(By.ID, "user")).first_selected_option.get_attribute("value")

    def new_user(self) -> str:
        """Make a new user with the top bar's button; their id once the page chose them."""
        before = self.user()
        self.d.find_element(By.ID, "new-user").click()
        return self.wait(lambda d: self.user() != before and self.user(), 10, "no new user was made")

    def say(self, text: str) -> None:
        """Type `text` and send it."""
        box = self.d.find_element(By.ID, "text")
        box.clear()
        box.send_keys(text)
        self.d.find_element(By.ID, "send").click()

    def texts(self, selector: str) -> list[str]:
        """The text of every element `selector` finds, read in one go (the page redraws as messages come)."""
        return self.d.execute_script("return [...document.querySelectorAll(arguments[0])].map(e => e.innerText)",
                                     selector)

    def bot_texts(self) -> list[str]:
        """The text of every bot message shown, oldest first."""
        return self.texts("#messages li.bot")

    def chat_text(self) -> str:
        """Everything the chat shows."""
        return self.d.find_element(By.ID, "messages").text

    def bot_says(self, fragment: str, timeout: float = ANSWER_S) -> str:
        """Wait for a bot message containing `fragment`; its text."""
        found = self.wait(lambda d: next((t for t in self.bot_texts() if fragment in t), None), timeout,
                          f"no bot message with {fragment!r} within {timeout} s")
        return found

    def user_message_recorded(self, fragment: str, timeout: float = ANSWER_S) -> None:
        """Wait until the user's message is in the conversation the server keeps (no longer pending)."""
        self.wait(lambda d: any(fragment in t for t in self.texts("#messages li.user:not(.pending)")),
                  timeout, f"the message {fragment!r} never reached the conversation")

    def panel(self, id_: str) -> str:
        """The text of the side panel's element `id_`."""
        return self.d.find_element(By.ID, id_).text
