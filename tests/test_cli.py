"""The operator's CLI through click's CliRunner on a real SQLite file (the `env` fixture), and, for
the races, as separate `chatgate` processes."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bot.models import TEXT, IncomingMessage
from bot.stats import COLUMNS, FUNNEL, day_windows
from tests.cli_run import cli, ok
from tests.wechat_sim import text_xml

DAY = 86400
OPENID = "oUser_cli_0001"
CHATGATE = str(Path(sys.executable).parent / "chatgate")




def person(store, openid=OPENID, *, free_trial=10, key=None, text="hello", now=None):
    """A user who wrote once (a real admission, as the webhook does it)."""
    msg = IncomingMessage("wechat", openid, key or f"{openid}-{time.time_ns()}", TEXT, text)
    store.admit(msg, free_trial=free_trial, charge=True, now=now)
    return store.find_user("wechat", openid)


# -- references and errors -------------------------------------------------------------------------


@pytest.mark.parametrize("args", [("grant", "wechat:nobody", "--days", 3), ("revoke", "42"), ("user", "u42"),
                                  ("trial", "feishu:ou_nobody", "--add", 1)])
def test_an_unknown_user_is_a_clear_error(store, args):
    result = cli(*args)
    assert result.exit_code == 1
    assert "Error: no user" in result.output


def test_a_malformed_reference_says_what_a_reference_is(store):
    result = cli("grant", "oUser_without_platform", "--days", 3)
    assert result.exit_code == 1
    assert "wechat:<openid>" in result.output


@pytest.mark.parametrize("args", [("grant", OPENID, "--days", 0), ("grant", OPENID), ("trial", OPENID, "--add", -2),
                                  ("grant-all", "--days", "x"), ("codes", "create", "--days", 0)])
def test_bad_arguments_are_usage_errors(store, args):
    assert cli(*args).exit_code == 2


@pytest.mark.parametrize("ref", [f"wechat:{OPENID}", "1", "u1"])
def test_every_form_of_reference_finds_the_user(store, ref):
    person(store)
    assert json.loads(ok("user", ref, "--json").output)["user"]["ref"] == f"wechat:{OPENID}"


# -- grant, revoke, trial --------------------------------------------------------------------------


def test_grant_starts_now_for_a_new_member_and_extends_an_active_one(store):
    user = person(store)
    before = time.time()
    out = ok("grant", f"wechat:{OPENID}", "--days", 30, "--note", "paid order 1001").output
    assert "+30 days, member until" in out
    first = store.user(user["id"])["member_until"]
    assert before + 30 * DAY <= first <= time.time() + 30 * DAY
    ok("grant", user["id"], "--days", 5)
    assert store.user(user["id"])["member_until"] == pytest.approx(first + 5 * DAY)
    rows = store.ledger(user["id"])[-2:]
    assert [(r["kind"], r["days"]) for r in rows] == [("member_grant", 30), ("member_grant", 5)]
    assert rows[0]["note"] == "paid order 1001" and rows[0]["actor"].startswith("cli")
    assert rows[1]["member_until"] == store.user(user["id"])["member_until"]


def test_a_lapsed_membership_restarts_from_now(store):
    user = person(store)
    store.grant(user["id"], 10, actor="test", now=time.time() - 40 * DAY)  # ended 30 days ago
    before = time.time()
    ok("grant", f"wechat:{OPENID}", "--days", 7)
    assert store.user(user["id"])["member_until"] >= before + 7 * DAY


def test_revoke_ends_a_membership_now_and_a_member_is_then_charged_again(store):
    user = person(store)
    ok("grant", f"wechat:{OPENID}", "--days", 30)
    assert "membership ended" in ok("revoke", f"wechat:{OPENID}", "--note", "refund").output
    assert store.user(user["id"])["member_until"] <= time.time()
    assert store.ledger(user["id"])[-1]["kind"] == "member_revoke"
    assert "nothing to revoke" in ok("revoke", f"wechat:{OPENID}").output
    assert [r["kind"] for r in store.ledger(user["id"])].count("member_revoke") == 1
    msg = IncomingMessage("wechat", OPENID, "after-revoke", TEXT, "q")
    assert store.admit(msg, free_trial=10, charge=True).outcome == "trial"


def test_trial_add_lets_an_exhausted_user_ask_again(store):
    user = person(store, free_trial=1)
    assert store.admit(IncomingMessage("wechat", OPENID, "k2", TEXT, "q"), free_trial=1,
                       charge=True).outcome == "exhausted"
    out = ok("trial", f"wechat:{OPENID}", "--add", 5).output
    assert "+5 free answers, 5 left (trial size 6)" in out
    assert store.admit(IncomingMessage("wechat", OPENID, "k3", TEXT, "q"), free_trial=1,
                       charge=True).outcome == "trial"
    assert [(r["kind"], r["answers"]) for r in store.ledger(user["id"])] == [
        ("trial_start", 1), ("trial_use", -1), ("trial_grant", 5), ("trial_use", -1)]


def test_user_shows_the_ledger_that_explains_the_balance(store):
    person(store)
    ok("grant", f"wechat:{OPENID}", "--days", 30, "--note", "order 77")
    out = ok("user", f"wechat:{OPENID}").output
    assert f"wechat:{OPENID} (id 1)" in out
    assert "9 left (1 of 10 used)" in out
    for word in ("trial_start", "trial_use", "member_grant", "order 77", "+30"):
        assert word in out


def test_users_lists_newest_first_and_filters_members(store):
    for i in range(3):
        person(store, f"o{i}")
    ok("grant", "wechat:o1", "--days", 3)
    listed = json.loads(ok("users", "--json").output)
    assert [u["ref"] for u in listed] == ["wechat:o2", "wechat:o1", "wechat:o0"]
    assert [u["ref"] for u in json.loads(ok("users", "--members", "--json").output)] == ["wechat:o1"]
    assert [u["ref"] for u in json.loads(ok("users", "--limit", 1, "--json").output)] == ["wechat:o2"]
    assert "wechat:o1" in ok("users").output


# -- races: every grant counts ---------------------------------------------------------------------


def test_grants_racing_in_separate_processes_all_count(env, store):
    user = person(store)
    before = time.time()
    procs = [subprocess.Popen([CHATGATE, "grant", f"wechat:{OPENID}", "--days", "30"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=os.environ.copy()) for _ in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    until = store.user(user["id"])["member_until"]
    assert before + 120 * DAY <= until <= time.time() + 120 * DAY
    assert [r["days"] for r in store.ledger(user["id"]) if r["kind"] == "member_grant"] == [30] * 4


def test_grants_racing_in_threads_all_count(env, store):
    from bot.store import Store

    user = person(store)
    barrier = threading.Barrier(8)
    errors = []

    def grant_many():
        s = Store(env["CHATGATE_DB"], migrate=False)
        try:
            barrier.wait()
            for _ in range(5):
                s.grant(user["id"], 30, actor="race")
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            s.close()

    before = time.time()
    threads = [threading.Thread(target=grant_many) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    until = store.user(user["id"])["member_until"]
    assert before + 40 * 30 * DAY <= until <= time.time() + 40 * 30 * DAY
    expiries = [r["member_until"] for r in store.ledger(user["id"]) if r["kind"] == "member_grant"]
    assert expiries == sorted(expiries) and len(set(expiries)) == 40  # each grant built on the one before


# -- grant-all -------------------------------------------------------------------------------------


@pytest.fixture
def crowd(store):
    """250 users, two of whom unsubscribed, one an active member."""
    for i in range(250):
        person(store, f"o{i:03}")
    for i in (7, 8):
        store.admit(IncomingMessage("wechat", f"o{i:03}", f"unsub-{i}", "unsubscribe"), free_trial=10, charge=False)
    store.grant(store.find_user("wechat", "o100")["id"], 10, actor="test")
    return store


def test_grant_all_asks_first_and_stops_on_no(crowd):
    result = cli("grant-all", "--days", 3, input="n\n")
    assert result.exit_code == 1
    assert "Give 3 days of membership to 248 subscribed users?" in result.output
    assert len(crowd.users(members_only=True)) == 1  # only the member from before


def test_grant_all_grants_everyone_subscribed_in_batches(crowd):
    result = ok("grant-all", "--days", 3, "--note", "holiday", "--batch-size", 100, input="y\n")
    assert "granted 3 days to 248 subscribed users" in result.output
    members = crowd.users(members_only=True)
    assert len(members) == 248
    assert {"wechat:o007", "wechat:o008"}.isdisjoint(f"wechat:{u['external_id']}" for u in members)
    o100 = crowd.find_user("wechat", "o100")
    assert o100["member_until"] > time.time() + 12.9 * DAY  # extended from its own expiry
    grants = [r for u in members for r in crowd.ledger(u["id"]) if r["kind"] == "member_grant" and r["days"] == 3]
    assert len(grants) == 248 and {r["note"] for r in grants} == {"holiday"}


def test_grant_all_members_only_with_yes(crowd):
    result = ok("grant-all", "--days", 30, "--members-only", "--yes")
    assert "granted 30 days to 1 active members" in result.output
    assert len(crowd.users(members_only=True)) == 1


# -- codes -----------------------------------------------------------------------------------------

CODE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}$")


def test_codes_create_prints_codes_once_and_stores_only_hashes(env, store):
    result = ok("codes", "create", "--days", 30, "--count", 20, "--batch", "spring", "--note", "shop")
    made = result.stdout.split()
    assert len(made) == 20 == len(set(made)) and all(CODE.match(c) for c in made)
    assert "batch spring: 20 code(s) of 30 days" in result.stderr
    raw = Path(env["CHATGATE_DB"]).read_bytes() + Path(env["CHATGATE_DB"] + "-wal").read_bytes()
    for c in made:
        assert c.encode() not in raw and c.replace("-", "").encode() not in raw
    [batch] = json.loads(ok("codes", "list", "--json").output)
    assert (batch["batch"], batch["days"], batch["codes"], batch["used"], batch["available"]) == (
        "spring", 30, 20, 0, 20)
    assert cli("codes", "create", "--days", 1, "--batch", "spring").exit_code == 1  # a name is used once


def test_codes_check_and_disable(store):
    made = ok("codes", "create", "--days", 7, "--count", 3, "--batch", "b1").stdout.split()
    user = person(store)
    from bot import codes

    codes.redeem(store, user["id"], made[0])
    assert f"used by wechat:{OPENID}" in ok("codes", "check", made[0].lower()).output
    assert "not used" in ok("codes", "check", made[1]).output
    assert cli("codes", "check", "AAAA-AAAA-AAAA-AAAA").exit_code == 1
    assert "disabled 1 code(s)" in ok("codes", "disable", made[1]).output
    assert "disabled" in ok("codes", "check", made[1]).output
    assert "disabled 1 code(s)" in ok("codes", "disable", "--batch", "b1").output  # the used one stays used
    assert cli("codes", "disable", "--batch", "nope").exit_code == 1
    assert cli("codes", "disable").exit_code == 2
    [batch] = json.loads(ok("codes", "list", "--json").output)
    assert (batch["used"], batch["disabled"], batch["available"]) == (1, 2, 0)


# -- stats -----------------------------------------------------------------------------------------


def test_stats_counts_each_day(post, run_worker, fake_llm, store, env):
    from config import load_settings

    tz = load_settings().tz
    windows = day_windows(4, tz)
    (_, d0, _), (_, d1, _), (_, d2, _), (today, *_) = windows
    # three days ago: one user, a member for one day; two days ago: another, whose membership lasts
    old = person(store, "o-old", now=d0 + 3600)
    store.grant(old["id"], 1, actor="test", now=d0 + 3600)
    mid = person(store, "o-mid", now=d1 + 3600)
    store.grant(mid["id"], 30, actor="test", now=d1 + 3600)
    # today: answered questions, a refused one, a failed one, a redeemed code, a revoked member
    post(text_xml("o-today", "one", 50001))
    post(text_xml("o-today", "two", 50002))
    run_worker()
    fake_llm.fail(503, times=None)
    post(text_xml("o-fail", "three", 50003))
    run_worker()
    person(store, "o-broke", free_trial=0)
    code = ok("codes", "create", "--days", 5).stdout.strip()
    from bot import codes

    codes.redeem(store, store.find_user("wechat", "o-today")["id"], code)
    ok("grant", "wechat:o-fail", "--days", 3)
    ok("revoke", "wechat:o-fail")

    rows = json.loads(ok("stats", "--days", 4, "--json").stdout)
    assert [r["day"] for r in rows] == [w[0] for w in windows]
    by_day = {r["day"]: r for r in rows}
    assert {k: by_day[windows[0][0]][k] for k in ("new_users", "members")} == {"new_users": 1, "members": 1}
    assert by_day[windows[1][0]]["members"] == 1  # the first one's day ran out, the second's runs on
    def figures(day):
        return {k: by_day[day][k] for k in ("day", *COLUMNS, *FUNNEL)}
    assert figures(windows[2][0]) == {"day": windows[2][0], "new_users": 0, "active_users": 0, "answered": 0,
                                      "refused": 0, "failed": 0, "redeemed": 0, "members": 1, "trial_exhausted": 0,
                                      "conversions": 0}
    # the code and the grant after the trial started are conversions (a grant the moment a user
    # arrived, like the first two, is not)
    assert figures(today) == {"day": today, "new_users": 3, "active_users": 3, "answered": 2, "refused": 1,
                              "failed": 1, "redeemed": 1, "members": 2, "trial_exhausted": 0, "conversions": 2}
    table = ok("stats", "--days", 2).output
    assert today in table and "answered" in table


# -- failed jobs -----------------------------------------------------------------------------------


def test_failed_jobs_are_listed_and_a_retry_answers_free_of_charge(post, run_worker, fake_llm, fake_wechat, store):
    fake_llm.fail(503, times=None)
    post(text_xml(OPENID, "are you there?", 60001))
    run_worker()
    assert len(fake_wechat.sent) == 1 and "not used" in fake_wechat.sent[0][1]
    [job] = json.loads(ok("jobs", "failed", "--json").output)
    user = store.find_user("wechat", OPENID)
    assert (job["id"], job["function"], job["user"]) == ("wechat-60001", "answer_job", f"wechat:{OPENID}")
    assert job["delivery_id"] == store.deliveries(user["id"])[0]["id"]
    assert "503" in job["error"] or "Failure" in job["error"]
    assert "wechat-60001" in ok("jobs", "failed").output

    assert cli("jobs", "retry", "wechat-nope").exit_code == 1
    assert cli("jobs", "retry").exit_code == 2
    fake_llm.reset()  # the LLM is back
    assert "requeued wechat-60001" in ok("jobs", "retry", "--all").output
    run_worker()
    assert fake_wechat.sent[1] == (OPENID, "echo: are you there?")
    assert store.deliveries(user["id"])[0]["status"] == "delivered"
    assert store.find_user("wechat", OPENID)["trial_used"] == 0  # refunded when it failed, not charged again
    assert ok("jobs", "failed").output.strip() == "no failed jobs"


def test_jobs_without_redis_is_a_clear_error(env, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "unix:///nonexistent/redis.sock")
    result = cli("jobs", "failed")
    assert result.exit_code == 1 and "cannot reach Redis" in result.output


# -- backup ----------------------------------------------------------------------------------------


def test_db_backup_is_a_consistent_private_copy_while_writes_go_on(env, store, tmp_path):
    from bot.store import Store

    for i in range(50):
        person(store, f"o{i}")
    stop = threading.Event()

    def keep_writing():
        s = Store(env["CHATGATE_DB"], migrate=False)
        i = 0
        while not stop.is_set():
            person(s, f"busy{i % 40}")  # new users and trial uses, each one transaction
            i += 1
        s.close()

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        copies = [tmp_path / f"copy{i}.db" for i in range(3)]
        for copy in copies:
            assert "integrity ok" in ok("db", "backup", copy).output
    finally:
        stop.set()
        writer.join()
    for copy in copies:
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        assert not Path(str(copy) + "-wal").exists()
        conn = sqlite3.connect(copy)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        used, uses = conn.execute("SELECT (SELECT SUM(trial_used) FROM users), "
                                  "(SELECT COUNT(*) FROM ledger WHERE kind = 'trial_use')").fetchone()
        assert used == uses  # every charge with its ledger row: no half transaction in the copy
        conn.close()
    assert cli("db", "backup", copies[0]).exit_code == 1  # exists
    ok("db", "backup", copies[0], "--force")


def test_users_filter_by_platform_and_search_and_sort_by_activity(store):
    person(store, "oAlpha", now=time.time() - 300)
    person(store, "oBeta", now=time.time() - 200)
    store.admit(IncomingMessage("feishu", "ou_gamma", "f-1", TEXT, "hi"), free_trial=10, charge=True)
    person(store, "oAlpha")  # Alpha writes again: the most recently active
    refs = lambda *args: [u["ref"] for u in json.loads(ok("users", "--json", *args).output)]  # noqa: E731
    assert refs("--platform", "feishu") == ["feishu:ou_gamma"]
    assert refs("--search", "Bet") == ["wechat:oBeta"]
    assert refs("--platform", "wechat", "--sort", "active") == ["wechat:oAlpha", "wechat:oBeta"]
    assert refs("--platform", "wechat") == ["wechat:oBeta", "wechat:oAlpha"]


def test_grant_all_active_since_leaves_out_users_quiet_since_then(store):
    person(store, "oOld", now=time.time() - 40 * DAY)
    person(store, "oRecent")
    since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 7 * DAY))
    result = ok("grant-all", "--days", 5, "--active-since", since, "--yes")
    assert "granted 5 days to 1 subscribed users active since" in result.output
    assert [u["external_id"] for u in store.users(members_only=True)] == ["oRecent"]


def test_codes_create_writes_an_owner_only_csv_and_refuses_to_overwrite(store, tmp_path):
    import csv
    import os
    import stat

    path = tmp_path / "codes.csv"
    result = ok("codes", "create", "--days", 30, "--count", 3, "--batch", "shop1", "--csv", path)
    printed = result.stdout.split()
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [r["code"] for r in rows] == printed and {r["days"] for r in rows} == {"30"}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = cli("codes", "create", "--days", 30, "--csv", path)
    assert again.exit_code == 2 and "exists" in again.output
