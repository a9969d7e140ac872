"""Redemption codes: their shape and normal form, single use under a race, and the rate limit."""

from __future__ import annotations

import threading
import time

import pytest

from bot import codes
from bot.errors import CodeInvalid, RedeemLimited
from bot.models import TEXT, IncomingMessage


def person(store, openid: str) -> int:
    store.admit(IncomingMessage("wechat", openid, f"{openid}-first", TEXT, "hi"), free_trial=10, charge=True)
    return store.find_user("wechat", openid)["id"]


def make(store, n=1, days=30, batch="t") -> list[str]:
    made = [codes.generate() for _ in range(n)]
    store.create_codes([codes.code_hash(c) for c in made], batch=batch, days=days, actor="test")
    return made


def test_codes_are_16_unambiguous_symbols_in_four_groups():
    made = {codes.generate() for _ in range(5000)}
    assert len(made) == 5000
    for code in made:
        groups = code.split("-")
        assert [len(g) for g in groups] == [4, 4, 4, 4]
        assert set("".join(groups)) <= set(codes.ALPHABET)
    symbols = set("".join(made).replace("-", ""))
    assert not set("ILOU") & symbols
    assert symbols == set(codes.ALPHABET)  # every symbol is used: 32 × 16 = 80 bits
    assert len(codes.ALPHABET) ** codes.LENGTH >= 2 ** 80


@pytest.mark.parametrize("typed", ["7K2Q-M9XD-4TBR-PH3W", "7k2q m9xd 4tbr ph3w", "7K2QM9XD4TBRPH3W",
                                   " 7k2q-m9xd-4tbr-ph3w\n", "7K2Q—M9XD—4TBR—PH3W",
                                   "７Ｋ２Ｑ－Ｍ９ＸＤ－４ＴＢＲ－ＰＨ３Ｗ"])
def test_what_people_type_normalises_to_the_same_code(typed):
    assert codes.code_hash(typed) == codes.code_hash("7K2Q-M9XD-4TBR-PH3W")


def test_letters_that_look_like_digits_read_as_digits():
    assert codes.code_hash("O1LI-0000-0000-0000") == codes.code_hash("0111-0000-0000-0000")


@pytest.mark.parametrize("typed", ["", "ABCD", "7K2Q-M9XD-4TBR-PH3", "7K2Q-M9XD-4TBR-PH3WX", "UUUU-0000-0000-0000",
                                   "7K2Q-M9XD-4TBR-PH3!"])
def test_malformed_codes_are_invalid(typed):
    assert not codes.well_formed(typed)
    with pytest.raises(CodeInvalid):
        codes.code_hash(typed)


def test_the_store_keeps_a_hash_not_the_code(store):
    [code] = make(store)
    row = store.code(codes.code_hash(code))
    assert row["hash"] != code and len(row["hash"]) == 64
    assert code not in str(row)


def test_two_users_racing_for_one_code_exactly_one_wins(env, store):
    from bot.store import Store

    [code] = make(store, days=30)
    users = [person(store, f"racer{i}") for i in range(8)]
    barrier = threading.Barrier(len(users))
    results: dict[int, object] = {}

    def race(user_id):
        s = Store(env["CHATGATE_DB"], migrate=False)
        try:
            barrier.wait()
            results[user_id] = codes.redeem(s, user_id, code)
        except Exception as exc:
            results[user_id] = exc
        finally:
            s.close()

    threads = [threading.Thread(target=race, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [u for u, r in results.items() if isinstance(r, tuple)]
    assert len(winners) == 1, results
    assert all(isinstance(r, CodeInvalid) for u, r in results.items() if u != winners[0])
    assert store.code(codes.code_hash(code))["used_by"] == winners[0]
    members = [u for u in users if store.user(u)["member_until"]]
    assert members == winners
    assert sum(1 for u in users for r in store.ledger(u) if r["kind"] == "redeem") == 1


def test_one_user_redeeming_many_codes_at_once_gets_every_day(env, store):
    from bot.store import Store

    made = make(store, n=6, days=10)
    user = person(store, "collector")
    barrier = threading.Barrier(len(made))
    errors = []

    def redeem(code):
        s = Store(env["CHATGATE_DB"], migrate=False)
        try:
            barrier.wait()
            codes.redeem(s, user, code)
        except Exception as exc:
            errors.append(exc)
        finally:
            s.close()

    before = time.time()
    threads = [threading.Thread(target=redeem, args=(c,)) for c in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.user(user)["member_until"] >= before + 60 * 86400


def test_the_rate_limit_is_five_wrong_codes_per_hour_and_then_lifts(store):
    user = person(store, "guesser")
    [good] = make(store)
    now = time.time()
    for i in range(codes.MAX_FAILURES):
        with pytest.raises(CodeInvalid):
            store.redeem(user, codes.code_hash(codes.generate()), max_failures=5, window_s=3600, now=now + i)
    with pytest.raises(RedeemLimited):
        store.redeem(user, codes.code_hash(good), max_failures=5, window_s=3600, now=now + 10)
    assert store.code(codes.code_hash(good))["used_by"] is None
    assert store.count("redeem_failures") == 5  # a refused attempt is not one more failure
    with pytest.raises(RedeemLimited):
        store.redeem(user, codes.code_hash(good), max_failures=5, window_s=3600, now=now + 3599)
    days, until = store.redeem(user, codes.code_hash(good), max_failures=5, window_s=3600, now=now + 3601)
    assert days == 30 and until == pytest.approx(now + 3601 + 30 * 86400)


def test_a_disabled_batch_cannot_be_redeemed(store):
    made = make(store, n=2, batch="leaked")
    user = person(store, "late")
    assert store.disable_codes(batch="leaked") == 2
    with pytest.raises(CodeInvalid):
        codes.redeem(store, user, made[0])
    assert store.user(user)["member_until"] is None


def test_redemption_extends_an_active_membership(store):
    user = person(store, "loyal")
    until = store.grant(user, 10, actor="test")
    [code] = make(store, days=30)
    days, new_until = codes.redeem(store, user, code)
    assert new_until == pytest.approx(until + 30 * 86400)
    row = store.ledger(user)[-1]
    assert (row["kind"], row["days"], row["actor"], row["member_until"]) == ("redeem", 30, "code:t", new_until)


def test_the_ledger_still_refuses_changes(store):
    import sqlite3

    user = person(store, "audited")
    store.grant(user, 1, actor="test")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.conn.execute("UPDATE ledger SET days = 100")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.conn.execute("DELETE FROM ledger")
