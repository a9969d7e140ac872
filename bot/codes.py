"""Redemption codes: made with `secrets`, shown once, stored only as a hash, used once.

A code is 16 symbols of Crockford's base32 (digits and capitals without I, L, O and U: 80 random
bits), grouped `XXXX-XXXX-XXXX-XXXX`. What users type is normalised first: full-width characters
(Chinese input methods) become ASCII, case, spaces and dashes do not matter, and I/L read as 1 and
O as 0, as Crockford's decoding says. The store keeps sha256(normalised code) only, so a copy of
the database does not hand out memberships; with 80 bits a hash cannot be guessed back either.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata

from bot.errors import CodeInvalid

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
"""Crockford's base32: no I, L, O or U, so nothing reads as another symbol."""
LENGTH = 16
"""Symbols per code: 16 × 5 bits = 80 bits from `secrets`."""
GROUP = 4
"""Symbols between dashes when a code is shown."""
MAX_FAILURES = 5
"""Wrong codes a user may send within `FAILURE_WINDOW_S` before redemption is refused for a while."""
FAILURE_WINDOW_S = 3600
"""The rate limit's sliding window, in seconds."""

_SEPARATORS = re.compile(r"[\s\-_‐‑‒–—―−.]+")
_CONFUSABLE = str.maketrans({"I": "1", "L": "1", "O": "0"})
_PRINTED = re.compile(r"[0-9A-Za-z]{4}(?:-[0-9A-Za-z]{4}){3}")
_BATCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")


def generate() -> str:
    """One new code, grouped for reading: `7K2Q-M9XD-4TBR-PH3W`."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return "-".join(raw[i:i + GROUP] for i in range(0, LENGTH, GROUP))


def normalise(text: str) -> str:
    """What the user typed → the code's canonical symbols (may still be malformed)."""
    text = unicodedata.normalize("NFKC", text)
    return _SEPARATORS.sub("", text).upper().translate(_CONFUSABLE)


def well_formed(text: str) -> bool:
    """True when `text` normalises to 16 symbols of the alphabet."""
    code = normalise(text)
    return len(code) == LENGTH and all(ch in ALPHABET for ch in code)


def printed_form(text: str) -> bool:
    """True when `text` is a code as we print it (four groups of four, dashes between)."""
    return bool(_PRINTED.fullmatch(unicodedata.normalize("NFKC", text.strip()))) and well_formed(text)


def code_hash(text: str) -> str:
    """The stored form of a code: sha256 of its normalised symbols, hex. `CodeInvalid` if malformed."""
    if not well_formed(text):
        raise CodeInvalid("not a code")
    return hashlib.sha256(normalise(text).encode()).hexdigest()


def check_batch(name: str) -> str:
    """A batch name: 1–40 letters, digits, `_`, `.` or `-`, starting with a letter or digit."""
    if not _BATCH.fullmatch(name):
        raise ValueError("a batch name is 1-40 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return name


def create(store, *, days: int, count: int, batch: str, actor: str, note: str = "",
           price_cents: int | None = None) -> list[str]:
    """Make `count` new codes of `days` each in batch `batch` and store their hashes; returns the codes
    (shown only now). `ValueError` for a bad batch name, days, count or price; `BatchExists` if taken."""
    check_batch(batch)
    made = [generate() for _ in range(count)]
    store.create_codes([code_hash(c) for c in made], batch=batch, days=days, actor=actor, note=note,
                       price_cents=price_cents)
    return made


def redeem(store, user_id: int, text: str) -> tuple[int, float]:
    """Redeem what the user typed; returns (days added, new expiry).

    Raises `CodeInvalid` (malformed, unknown, used or disabled: the same to the user) or
    `RedeemLimited`. A malformed code is not counted as a failure: it cannot be a guess at a real one.
    """
    return store.redeem(user_id, code_hash(text), max_failures=MAX_FAILURES, window_s=FAILURE_WINDOW_S)
