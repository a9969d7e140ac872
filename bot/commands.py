"""In-chat commands: `我的`/`me`, `重置`/`reset`, `兑换 CODE`/`redeem CODE`, `帮助`/`help`, `购买`/`buy`.

A message is a command only when, trimmed, it is exactly one of the command words (configurable, see
`CHATGATE_COMMAND_*`; in any case, full-width or not, with an optional leading `/` and trailing `。`
or `!`); the redeem words may be followed by a code, or by an afdian order number (see
`bot/payments.py`). Anything else, even a message that contains a command word or ends in a question
mark, is a question. Commands are recorded deliveries, never charged and never queued: `run` returns
the reply the platform delivers at once (and, for an order number, the order to look up).
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass

from bot import codes, members, payments, texts
from bot.errors import CodeInvalid, MembershipTooLong, RedeemLimited
from bot.models import Admission
from config import Settings

_CODE_ARGUMENT = re.compile(r"[\s:]*([0-9A-Za-z][0-9A-Za-z\s\-_‐‑‒–—―−]*)")
"""What may follow a redeem word (after NFKC): letters, digits, spaces and dashes."""
_END_PUNCTUATION = ".。!"
"""Trailing punctuation a command may carry (voice transcripts end in `。`; NFKC made `！` a `!`)."""


@dataclass(frozen=True)
class Command:
    """A parsed command: its name (`me`, `reset`, `redeem`, `help`, `buy`) and argument (the code)."""

    name: str
    argument: str = ""


@dataclass(frozen=True)
class Reply:
    """What a command answers: the text, and an afdian order to look up now (a claim by number)."""

    text: str
    check_order: str | None = None


def parse(text: str, settings: Settings) -> Command | None:
    """The command `text` is, or None for a question.

    Besides the command words, a message that is nothing but a code in its printed form
    (`ABCD-EFGH-JKMN-PQRS`) is taken for a redemption: people paste the code alone.
    """
    message = unicodedata.normalize("NFKC", text).strip()  # full-width input becomes ASCII
    if message.startswith("/"):
        message = message[1:].strip()
    message = message.rstrip(_END_PUNCTUATION).strip()
    folded = message.casefold()
    for name, words in settings.command_words.items():
        for word in words:
            if folded == _fold(word):
                return Command(name)
    for word in settings.command_redeem:
        word = unicodedata.normalize("NFKC", word)
        head, rest = message[:len(word)], message[len(word):]
        if head.casefold() != word.casefold():
            continue
        glued = word[-1].isascii() and word[-1].isalnum() and rest[:1].isascii() and rest[:1].isalnum()
        m = _CODE_ARGUMENT.fullmatch(rest)
        if m and not glued:  # `兑换ABCD…` carries a code; `redeemed` is a word of its own
            return Command("redeem", m.group(1).strip())
    if codes.printed_form(message):
        return Command("redeem", message)
    return None


def _fold(word: str) -> str:
    return unicodedata.normalize("NFKC", word).casefold()


def is_word(text: str, word: str) -> bool:
    """True when `text` is just `word`: in any case, full- or half-width, with spaces around and
    trailing punctuation (a voice transcript of `继续` reads `继续。`)."""
    def bare(value: str) -> str:
        folded = _fold(value).strip()
        while folded and (unicodedata.category(folded[-1]).startswith("P") or folded[-1].isspace()):
            folded = folded[:-1]
        return folded.strip()
    return bool(word) and bare(text) == bare(word)


def run(store, command: Command, admission: Admission, settings: Settings) -> Reply:
    """Carry out a command for the admitted user and return the reply."""
    if command.name == "me":
        return Reply(me(store.user(admission.user_id), settings))
    if command.name == "reset":
        return Reply(texts.RESET)  # recording the command was the reset: history starts after it
    if command.name == "buy":
        return Reply(payments.buy_reply(store, admission.user_id, settings))
    if command.name == "redeem":
        number = payments.order_number(command.argument) if settings.afdian_enabled else None
        if number:
            text, look_up = payments.claim(store, admission.user_id, number, settings)
            return Reply(text, number if look_up else None)
        return Reply(redeem(store, admission.user_id, command.argument, settings))
    return Reply(help_text(settings))


def me(user: dict, settings: Settings, now: float | None = None) -> str:
    """The user's reference, free answers left and membership."""
    now = time.time() if now is None else now
    until = members.local_time(user["member_until"], settings.tz)
    if members.is_member(user, now):
        status = texts.MEMBER_ACTIVE.format(until=until)
    elif user["member_until"] is not None:
        status = texts.MEMBER_ENDED.format(until=until)
    else:
        status = texts.MEMBER_NONE
    return texts.ME.format(ref=members.ref(user), trial_left=members.trial_left(user),
                           trial_limit=user["trial_limit"], membership=status)


def redeem(store, user_id: int, argument: str, settings: Settings) -> str:
    """Redeem a code and say what happened, in the same words whether a bad code exists or not."""
    if not argument:
        return texts.REDEEM_USAGE.format(word=settings.command_redeem[0])
    try:
        days, until = codes.redeem(store, user_id, argument)
    except CodeInvalid:
        return texts.CODE_INVALID
    except RedeemLimited:
        return texts.REDEEM_LIMITED
    except MembershipTooLong:
        return texts.MEMBERSHIP_TOO_LONG
    return texts.REDEEMED.format(days=days, until=members.local_time(until, settings.tz))


def help_text(settings: Settings) -> str:
    """The list of commands, with the words this bot is configured with."""
    return texts.HELP.format(**{name: " / ".join(words) for name, words in settings.command_words.items()})
