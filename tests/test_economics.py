"""What answers cost and what the bot earns, through the real path: signed WeChat posts into the
Flask app, a real RQ worker, the fake LLM with and without usage in its streams, and the real CLI.

The fake LLM reports `prompt_tokens` = the characters of the messages sent and `completion_tokens`
= the characters of the answer (`echo: <question>`), so the expected numbers are worked out here by
hand from what it was sent.
"""

from __future__ import annotations

import json
import sqlite3
import time
from decimal import Decimal

import pytest
from click.testing import CliRunner

from bot.cli import main
from bot.stats import day_windows
from tests import wechat_sim
from tests.wechat_sim import text_xml

SYSTEM = "You are the test assistant."


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def stats_today(*args) -> dict:
    return json.loads(cli("stats", "--days", 1, "--json", *args).stdout)[-1]


def reply_of(res) -> str:
    assert res.status_code == 200
    return wechat_sim.read_reply(res.get_data(as_text=True))["Content"]


def chars(messages: list[dict]) -> int:
    return sum(len(m["content"]) for m in messages)


def test_usage_is_stored_as_reported_or_estimated_and_marked(post, run_worker, fake_llm, store):
    post(text_xml("o-usage", "hello there", 70001))
    run_worker()
    fake_llm.usage = "never"  # an endpoint that sends no usage in its streams
    post(text_xml("o-usage", "你好世界", 70002))
    run_worker()
    fake_llm.usage = "refuse"  # one that refuses `stream_options` (400): asked again without it
    post(text_xml("o-usage", "ok", 70003))
    run_worker()

    calls = fake_llm.calls
    assert calls[0]["stream_options"] == {"include_usage": True}
    assert "stream_options" not in calls[-1]
    user = store.find_user("wechat", "o-usage")
    reported, estimated, refused = store.deliveries(user["id"])
    assert [d["status"] for d in (reported, estimated, refused)] == ["delivered"] * 3
    assert (reported["model"], reported["prompt_tokens"], reported["completion_tokens"],
            reported["usage_estimated"]) == ("test-model", chars(calls[0]["messages"]), len("echo: hello there"), 0)
    # the estimate: CJK one token a character, others four characters a token (rounded up per text),
    # four tokens a message: system 7+4, "hello there" 3+4, "echo: hello there" 5+4, "你好世界" 4+4
    assert (estimated["prompt_tokens"], estimated["completion_tokens"], estimated["usage_estimated"]) == (35, 2 + 4, 1)
    assert refused["usage_estimated"] == 1 and refused["prompt_tokens"] > 0
    assert reported["answered_at"] >= reported["received_at"]

    today = stats_today()
    assert today["answered"] == 3
    assert today["tokens_in"] == sum(d["prompt_tokens"] for d in (reported, estimated, refused))
    assert today["tokens_out"] == sum(d["completion_tokens"] for d in (reported, estimated, refused))
    assert today["tokens_estimated"] == sum(d["prompt_tokens"] + d["completion_tokens"] for d in (estimated, refused))


def test_cost_comes_from_the_prices_and_a_price_change_applies_to_past_answers(post, run_worker, fake_llm, store,
                                                                             monkeypatch):
    post(text_xml("o-cost", "q1", 70101))
    run_worker()
    tokens_in, tokens_out = len(SYSTEM) + 2, len("echo: q1")

    monkeypatch.setenv("CHATGATE_PRICES", "test-model=2/8,other=100/100")
    today = stats_today()
    expected = (Decimal(tokens_in) * 2 + Decimal(tokens_out) * 8) / 1_000_000
    assert Decimal(today["llm_cost"]) == expected.quantize(Decimal("0.0001"))
    assert today["usage"] == [{"model": "test-model", "answers": 1, "prompt_tokens": tokens_in,
                               "completion_tokens": tokens_out, "estimated_tokens": 0,
                               "cost": str(expected.quantize(Decimal("0.0001")))}]

    monkeypatch.setenv("CHATGATE_PRICES", "*=10000/20000")  # 1 and 2 cents a token, for any model
    today = stats_today()
    assert Decimal(today["llm_cost"]) == Decimal(tokens_in + 2 * tokens_out) / 100
    assert Decimal(today["margin"]) == -Decimal(today["llm_cost"])
    assert Decimal(today["cost_per_active_user"]) == Decimal(today["llm_cost"])

    monkeypatch.setenv("CHATGATE_PRICES", "other=1/1")
    result = CliRunner().invoke(main, ["stats", "--days", "1", "--json"])
    assert json.loads(result.stdout)[-1]["llm_cost"] == "0.0000"
    assert "no price in CHATGATE_PRICES for 'test-model'" in result.stderr


def test_a_priced_code_is_revenue_on_the_day_it_is_redeemed_and_paid_orders_on_the_day_paid(
        post, run_worker, store, env, monkeypatch):
    monkeypatch.setenv("CHATGATE_PRICES", "*=10000/10000")
    made = cli("codes", "create", "--days", 30, "--count", 2, "--price", "19.9", "--batch", "shop").stdout.split()
    gift = cli("codes", "create", "--days", 7, "--batch", "gift").stdout.strip()  # given away: no revenue
    assert "19.90" in cli("codes", "list").stdout
    assert [b["price_cents"] for b in store.code_batches()] == [1990, None]

    assert "30" in reply_of(post(text_xml("o-buyer", f"兑换 {made[0]}", 70201)))
    assert "7" in reply_of(post(text_xml("o-gift", f"兑换 {gift}", 70202)))
    post(text_xml("o-buyer", "q", 70203))
    run_worker()
    today = stats_today()
    assert (today["redeemed"], today["revenue"], today["conversions"]) == (2, "19.90", 2)
    cost = (Decimal(len(SYSTEM) + 1 + len("echo: q")) / 100)
    assert Decimal(today["llm_cost"]) == cost and Decimal(today["margin"]) == Decimal("19.90") - cost

    # afdian orders: paid ones (granted, or unclaimed yet) are revenue on the day paid; refused ones are not
    now = time.time()
    with sqlite3.connect(env["CHATGATE_DB"]) as db:
        db.executemany("INSERT INTO orders (out_trade_no, amount_cents, paid_at, status, created_at, updated_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)", [
                           ("o1", 3000, now, "granted", now, now), ("o2", 500, now, "unclaimed", now, now),
                           ("o3", 9900, now, "refused", now, now), ("o4", 700, now - 3 * 86400, "granted", now, now)])
    assert stats_today()["revenue"] == str(Decimal("19.90") + Decimal("35.00"))
    by_day = {r["day"]: r for r in json.loads(cli("stats", "--days", 4, "--json").stdout)}
    assert by_day[day_windows(4, store_tz())[0][0]]["revenue"] == "7.00"


def store_tz():
    from config import load_settings

    return load_settings().tz


def test_stats_by_user_lists_the_costliest_and_user_shows_tokens_and_cost(post, run_worker, store, monkeypatch):
    monkeypatch.setenv("CHATGATE_PRICES", "test-model=10000/10000")
    post(text_xml("o-small", "hi", 70301))
    post(text_xml("o-big", "a much longer question, to cost more", 70302))
    post(text_xml("o-big", "and another one", 70303))
    run_worker()
    big = store.find_user("wechat", "o-big")
    store.grant(big["id"], 30, actor="test")

    rows = json.loads(cli("stats", "--by", "user", "--days", 3, "--json").stdout)
    assert [r["ref"] for r in rows] == ["wechat:o-big", "wechat:o-small"]
    assert [(r["answers"], r["member"]) for r in rows] == [(2, True), (1, False)]
    small = rows[1]
    assert (small["tokens_in"], small["tokens_out"]) == (len(SYSTEM) + 2, len("echo: hi"))
    assert Decimal(small["cost"]) == Decimal(small["tokens_in"] + small["tokens_out"]) / 100
    assert [r["ref"] for r in json.loads(cli("stats", "--by", "user", "--limit", 1, "--json").stdout)] == [
        "wechat:o-big"]
    table = cli("stats", "--by", "user").stdout
    assert "wechat:o-big" in table and "costliest" in table

    shown = json.loads(cli("user", "wechat:o-small", "--json").stdout)["usage"]
    assert (shown["answers"], shown["tokens_in"], shown["cost"], shown["currency"]) == (
        1, small["tokens_in"], small["cost"], "CNY")
    text = cli("user", "wechat:o-small").stdout
    assert f"{small['tokens_in']} tokens in" in text and f"cost {small['cost']} CNY" in text


def test_the_days_table_shows_people_and_money(post, run_worker, monkeypatch):
    monkeypatch.setenv("CHATGATE_PRICES", "test-model=10000/10000")
    monkeypatch.setenv("CHATGATE_CURRENCY", "USD")
    post(text_xml("o-table", "q", 70401))
    run_worker()
    out = cli("stats", "--days", 2).stdout
    assert "people and questions" in out and "money (USD)" in out and "converted" in out and "margin" in out


@pytest.mark.parametrize("price", ["-1", "abc", "1.234", "99999999"])
def test_a_code_price_must_be_an_amount_to_the_cent(store, price):
    result = CliRunner().invoke(main, ["codes", "create", "--days", "1", "--price", price])
    assert result.exit_code == 2 and "--price" in result.output


def test_reports_stay_quick_on_a_large_database(store, env, monkeypatch):
    """50,000 users, 300,000 deliveries, their ledger: the figures of 30 days and the costliest users
    within a few seconds (the indexes of migration 0005 at work)."""
    monkeypatch.setenv("CHATGATE_PRICES", "m1=2/8,m2=1/2")
    now = time.time()
    n_users, per_user = 50_000, 6
    with store.write() as c:
        c.executemany("INSERT INTO users (id, platform, external_id, created_at, last_seen_at, trial_limit, "
                      "trial_used, member_until, trial_exhausted_at) VALUES (?, 'wechat', ?, ?, ?, 10, ?, ?, ?)",
                      [(i, f"o{i}", now - (i % 60) * 86400, now, i % 11 if i % 11 < 10 else 10,
                        now + 86400 * (i % 40 - 20) if i % 5 == 0 else None,
                        now - (i % 30) * 86400 if i % 11 == 10 else None) for i in range(1, n_users + 1)])
        c.executemany("INSERT INTO deliveries (platform, message_key, user_id, kind, received_at, status, charge, "
                      "model, prompt_tokens, completion_tokens, usage_estimated, answered_at) "
                      "VALUES ('wechat', ?, ?, 'text', ?, 'delivered', 'trial', ?, ?, ?, ?, ?)",
                      [(f"k{i}-{j}", i, now - ((i + j) % 45) * 86400, f"m{1 + j % 2}", 500 + j, 200 + i % 97,
                        j % 3 == 0, now - ((i + j) % 45) * 86400 + 5)
                       for i in range(1, n_users + 1) for j in range(per_user)])
        c.executemany("INSERT INTO ledger (user_id, at, kind, answers, days, member_until, actor) "
                      "VALUES (?, ?, ?, ?, ?, ?, 'system')",
                      [(i, now - (i % 60) * 86400, "trial_start", 10, None, None) for i in range(1, n_users + 1)]
                      + [(i, now - (i % 30) * 86400 + 60, "member_grant", 0, 30, now + 86400 * (i % 40 - 20))
                         for i in range(1, n_users + 1, 5)])
        c.executemany("INSERT INTO codes (hash, batch, days, created_at, created_by, used_by, used_at, price_cents) "
                      "VALUES (?, 'b', 30, ?, 'test', ?, ?, 1990)",
                      [(f"h{i}", now - 90 * 86400, i, now - (i % 30) * 86400) for i in range(1, n_users + 1, 7)])

    started = time.monotonic()
    rows = json.loads(cli("stats", "--days", 30, "--json").stdout)
    by_days = time.monotonic() - started
    started = time.monotonic()
    ranked = json.loads(cli("stats", "--by", "user", "--days", 30, "--json").stdout)
    by_user = time.monotonic() - started
    assert len(rows) == 30 and sum(r["answered"] for r in rows) > 100_000
    assert sum(r["conversions"] for r in rows) == n_users // 5 and rows[-1]["members"] > 0
    assert Decimal(rows[-1]["revenue"]) > 0 and len(ranked) == 20
    assert by_days < 8 and by_user < 8, (by_days, by_user)


def test_migration_0005_keeps_the_meaning_of_earlier_rows(tmp_path):
    """A database from before usage and guardrails (rows as the earlier admission wrote them): its
    refusals were all for a used-up trial, and a user whose trial is used up ran out when their last
    trial answer was reserved."""
    from sqlite_utils import Database

    from bot.store import Store, migrations

    path = tmp_path / "old.db"
    old = Database(path)
    migrations.apply(old, stop_before="0005_usage_cost_revenue")
    old.execute("INSERT INTO users (id, platform, external_id, created_at, last_seen_at, trial_limit, trial_used) "
                "VALUES (1, 'wechat', 'o-old', 1000, 1002, 2, 2), (2, 'wechat', 'o-new', 1000, 1000, 2, 1)")
    old.execute("INSERT INTO deliveries (id, platform, message_key, user_id, kind, received_at, status, charge) "
                "VALUES (1, 'wechat', 'k1', 1, 'text', 1000, 'delivered', 'trial'), "
                "(2, 'wechat', 'k2', 1, 'text', 1001, 'delivered', 'trial'), "
                "(3, 'wechat', 'k3', 1, 'text', 1002, 'refused', 'none')")
    old.execute("INSERT INTO ledger (user_id, at, kind, answers, delivery_id, actor) VALUES "
                "(1, 1000, 'trial_use', -1, 1, 'system'), (1, 1001, 'trial_use', -1, 2, 'system'), "
                "(2, 1000, 'trial_use', -1, NULL, 'system')")
    old.conn.commit()
    old.close()

    store = Store(path)
    assert [store.user(i)["trial_exhausted_at"] for i in (1, 2)] == [1001.0, None]
    assert [d["refusal"] for d in store.deliveries(1)] == [None, None, "trial_over"]
    store.close()
