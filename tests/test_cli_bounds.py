"""Bounds on operator input (`bot/limits.py`): every number and reference the CLI takes is refused
with a one-line error when out of range, the library refuses it too, and a membership stored
before the bounds (an expiry beyond the calendar) breaks neither `我的` nor `users` nor `user`."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from bot import codes, limits, members, texts
from bot.errors import MembershipTooLong, UnknownUser
from bot.models import TEXT, IncomingMessage
from tests import wechat_sim
from tests.cli_run import cli, ok
from tests.wechat_sim import text_xml

DAY = 86400
OPENID = "oUser_bounds_01"
HUGE = "99999999999999999999"  # beyond SQLite's integers




def refused(code: int, *args) -> str:
    """The command fails with `code` and a one-line error (no traceback)."""
    result = cli(*args)
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("Error:")]
    return line


def person(store, openid=OPENID):
    msg = IncomingMessage("wechat", openid, f"{openid}-{time.time_ns()}", TEXT, "hello")
    store.admit(msg, free_trial=10, charge=True)
    return store.find_user("wechat", openid)


# -- the CLI refuses numbers out of range (usage errors, exit 2) -----------------------------------


@pytest.mark.parametrize("args", [
    ("grant", f"wechat:{OPENID}", "--days", 36501), ("grant", f"wechat:{OPENID}", "--days", 3000000),
    ("grant", f"wechat:{OPENID}", "--days", HUGE), ("trial", f"wechat:{OPENID}", "--add", 1000001),
    ("trial", f"wechat:{OPENID}", "--add", HUGE), ("grant-all", "--days", 36501, "--yes"),
    ("grant-all", "--days", 1, "--batch-size", HUGE, "--yes"), ("codes", "create", "--days", 36501),
    ("codes", "create", "--days", 30, "--count", 100001), ("users", "--limit", HUGE), ("stats", "--days", HUGE),
    ("worker", "-n", 0), ("worker", "-n", HUGE)], ids=lambda a: " ".join(map(str, a)))
def test_numbers_out_of_range_are_usage_errors(store, args):
    person(store)
    line = refused(2, *args)
    assert "range" in line
    user = store.find_user("wechat", OPENID)
    assert (user["member_until"], user["trial_limit"]) == (None, 10)
    assert store.code_batches() == []


def test_the_largest_numbers_allowed_work(store):
    user = person(store)
    out = ok("grant", f"wechat:{OPENID}", "--days", 36500).output
    assert "+36500 days" in out
    assert "1000010" in ok("trial", f"wechat:{OPENID}", "--add", 1000000).output
    assert len(ok("codes", "create", "--days", 36500).stdout.split()) == 1
    assert store.user(user["id"])["member_until"] > time.time() + 36499 * DAY


@pytest.mark.parametrize("args", [("user", f"u{HUGE}"), ("user", HUGE), ("grant", HUGE, "--days", 1),
                                  ("revoke", f"u{HUGE}"), ("trial", HUGE, "--add", 1), ("user", "u0")])
def test_a_user_id_beyond_sqlite_names_nobody(store, args):
    assert refused(1, *args).startswith("Error: no user")


# -- the library refuses them too ------------------------------------------------------------------


@pytest.mark.parametrize("days", [0, -1, 36501, 3000000, 10**20, True, 1.5])
def test_the_store_refuses_days_out_of_range(store, days):
    user = person(store)
    with pytest.raises(ValueError, match="days"):
        store.grant(user["id"], days, actor="test")
    with pytest.raises(ValueError, match="days"):
        list(store.grant_all(days, actor="test"))
    with pytest.raises(ValueError, match="days"):
        store.create_codes([codes.code_hash(codes.generate())], batch="b", days=days, actor="test")
    assert store.user(user["id"])["member_until"] is None and store.code_batches() == []


@pytest.mark.parametrize("answers", [0, 1000001, 10**30])
def test_the_store_refuses_trial_additions_out_of_range(store, answers):
    user = person(store)
    with pytest.raises(ValueError, match="answers"):
        store.add_trial(user["id"], answers, actor="test")
    assert store.user(user["id"])["trial_limit"] == 10


def test_resolve_takes_a_huge_number_for_nobody(store):
    with pytest.raises(UnknownUser, match="no user"):
        members.resolve(store, f"u{HUGE}")


def test_no_membership_runs_past_the_ceiling(store):
    user = person(store)
    grants = 0
    with pytest.raises(MembershipTooLong):
        while True:
            store.grant(user["id"], limits.MAX_DAYS, actor="test")
            grants += 1
    until = store.user(user["id"])["member_until"]
    assert until <= limits.MAX_EXPIRY < until + limits.MAX_DAYS * DAY
    assert grants == int((limits.MAX_EXPIRY - time.time()) // (limits.MAX_DAYS * DAY))
    assert len([r for r in store.ledger(user["id"]) if r["kind"] == "member_grant"]) == grants  # no row for the refusal
    line = refused(1, "grant", f"wechat:{OPENID}", "--days", 36500)
    assert "past 3000-01-01" in line
    assert store.user(user["id"])["member_until"] == until


def test_a_code_that_would_pass_the_ceiling_is_not_used(store, post):
    user = person(store)
    while store.user(user["id"])["member_until"] is None or (
            store.user(user["id"])["member_until"] + limits.MAX_DAYS * DAY <= limits.MAX_EXPIRY):
        store.grant(user["id"], limits.MAX_DAYS, actor="test")
    [code] = ok("codes", "create", "--days", 36500, "--batch", "long").stdout.split()
    res = post(text_xml(OPENID, f"兑换 {code}", 71001))
    assert wechat_sim.read_reply(res.get_data(as_text=True))["Content"] == texts.MEMBERSHIP_TOO_LONG
    assert "not used" in ok("codes", "check", code).output
    assert store.count("redeem_failures") == 0  # not a wrong code: no step towards the rate limit


# -- a row written before the bounds: an expiry beyond the calendar --------------------------------


@pytest.fixture
def legacy(env, store):
    """A user whose expiry `chatgate grant --days 3000000` wrote before days were bounded: the
    users row and its ledger row, written directly (the one case where a test writes the database)."""
    user = person(store)
    until = time.time() + 3_000_000 * DAY  # year 10,000 and beyond
    conn = sqlite3.connect(env["CHATGATE_DB"])
    with conn:
        conn.execute("UPDATE users SET member_until = ? WHERE id = ?", (until, user["id"]))
        conn.execute("INSERT INTO ledger (user_id, at, kind, days, member_until, actor, note) "
                     "VALUES (?, ?, 'member_grant', 3000000, ?, 'cli:old', 'before the bound')",
                     (user["id"], time.time(), until))
    conn.close()
    return store.user(user["id"])


def test_me_shows_a_legacy_expiry_at_the_calendars_edge(legacy, post):
    res = post(text_xml(OPENID, "我的", 72001))
    assert res.status_code == 200
    content = wechat_sim.read_reply(res.get_data(as_text=True))["Content"]
    assert texts.MEMBER_ACTIVE.format(until="9999-12-31 23:59") in content


def test_users_and_user_show_a_legacy_expiry(legacy):
    out = ok("users").output
    assert f"wechat:{OPENID}" in out and "9999-12-31 23:59" in out and "beyond the calendar" in out
    [listed] = json.loads(ok("users", "--json").output)
    assert listed["member_until"] == legacy["member_until"] and listed["member"] is True
    shown = ok("user", f"wechat:{OPENID}").output
    assert "until 9999-12-31 23:59 (stored" in shown and "before the bound" in shown
    assert json.loads(ok("user", "u1", "--json").output)["ledger"][-1]["days"] == 3000000
    ok("stats")


def test_a_legacy_expiry_cannot_grow(legacy, store):
    assert "past 3000-01-01" in refused(1, "grant", f"wechat:{OPENID}", "--days", 1)
    other = person(store, "oUser_bounds_02")
    assert "granted 5 days to 1 subscribed users" in ok("grant-all", "--days", 5, "--yes").output
    assert store.user(legacy["id"])["member_until"] == legacy["member_until"]
    assert store.user(other["id"])["member_until"] > time.time() + 4.9 * DAY
    assert "membership ended" in ok("revoke", f"wechat:{OPENID}").output  # and it can still be ended
