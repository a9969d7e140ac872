"""afdian (爱发电) orders end to end: afdian's webhook posted into the Flask app → the order noted in
SQLite → a real RQ worker looks it up with the signed `query-order` API at a local fake of afdian
(which checks every signature) → the membership granted once, and the user told by the WeChat
customer-service API (a fake too). Forged and tampered webhooks grant nothing and are logged.
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from redis import Redis
from rq import Queue

from bot import payments, texts
from tests import wechat_sim
from tests.wechat_sim import text_xml

OPENID = "oBuyer_afdian_0001"
DAY = 86400


def bind_code_of(reply: str) -> str:
    """The bind code a `购买` reply's link carries as custom_order_id."""
    link = re.search(r"https://\S+", reply).group(0)
    return parse_qs(urlsplit(link).query)["custom_order_id"][0]


def purchases(store, user) -> list[dict]:
    return [r for r in store.ledger(user["id"]) if r["kind"] == "purchase"]


def test_buy_replies_with_the_link_carrying_a_stable_bind_code(pay, store, redis_url, fake_llm):
    first = pay.say(OPENID, "购买")
    code = bind_code_of(first)
    assert first.startswith("开通会员请点击：https://afdian.com/order/create?plan_id=plan_month&product_type=0&custom_order_id=")
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{8}", code)
    assert payments.shown(code) in first and "兑换 订单号" in first
    assert bind_code_of(pay.say(OPENID, "/BUY")) == code  # the same code every time
    assert bind_code_of(pay.say("oOther_afdian", "购买")) != code
    user = store.find_user("wechat", OPENID)
    assert user["trial_used"] == 0 and user["bind_code"] == code
    assert Queue("chatgate", connection=Redis.from_url(redis_url)).count == 0 and fake_llm.calls == []
    assert "购买 / buy" in pay.say(OPENID, "帮助")


def test_buy_without_a_link_says_purchases_are_not_open(env, post, monkeypatch):
    reply = wechat_sim.read_reply(post(text_xml(OPENID, "购买", 8_000_000_000_000_001)).get_data(as_text=True))
    assert reply["Content"] == texts.BUY_UNAVAILABLE


def test_a_paid_order_carrying_the_bind_code_is_granted_once_and_the_user_told(
        pay, run_worker, fake_afdian, fake_wechat, store, worker_log):
    code = bind_code_of(pay.say(OPENID, "购买"))
    order = fake_afdian.add_order(custom_order_id=code)
    for _ in range(3):  # afdian may post an order more than once
        res = pay.webhook(fake_afdian.webhook(order))
        assert res.status_code == 200 and res.get_json()["ec"] == 200
    run_worker()
    assert pay.webhook(fake_afdian.webhook(order)).get_json()["ec"] == 200  # after it was settled
    run_worker()
    user = store.find_user("wechat", OPENID)
    [row] = purchases(store, user)
    assert (row["actor"], row["days"]) == ("afdian", 30)
    assert order["out_trade_no"] in row["note"] and "19.90" in row["note"]
    assert abs(user["member_until"] - (time.time() + 30 * DAY)) < 60
    saved = store.order(order["out_trade_no"])
    assert (saved["status"], saved["amount_cents"], saved["days"]) == ("granted", 1990, 30)
    assert saved["user_id"] == user["id"]
    assert saved["paid_at"] and saved["bind_code"] == code and saved["buyer"] == order["user_id"]
    assert "private-" not in saved["raw"] and "address_phone" not in saved["raw"]
    assert fake_afdian.refused == 0 and fake_afdian.queries == [order["out_trade_no"]]  # repeats: no look-up
    [(to, notice)] = fake_wechat.sent
    assert to == OPENID
    assert notice.startswith(f"已收到爱发电订单 {order['out_trade_no']} 的付款（19.90 元）：会员增加 30 天")
    assert f"afdian order {order['out_trade_no']}: 19.90 paid, 30 days granted to u{user['id']}" in worker_log()


def test_an_account_that_cannot_push_tells_the_buyer_with_their_next_reply(afdian_env, monkeypatch, run_worker,
                                                                           fake_afdian, fake_wechat, store):
    monkeypatch.setenv("WECHAT_REPLY_MODE", "passive")  # an unverified account: no customer-service pushes
    from handlers.app import create_app

    client = create_app().test_client()

    def say(text: str, msg_id: int) -> str:
        signed = wechat_sim.sign_encrypted(text_xml(OPENID, text, msg_id))
        return wechat_sim.read_reply(client.post(signed.path, data=signed.body, content_type="text/xml")
                                     .get_data(as_text=True))["Content"]
    order = fake_afdian.add_order(custom_order_id=bind_code_of(say("购买", 8_200_000_000_000_001)))
    client.post("/pay/afdian", json=fake_afdian.webhook(order))
    run_worker()
    assert fake_wechat.sent == [] and store.find_user("wechat", OPENID)["member_until"] > time.time()
    reply = say("我的", 8_200_000_000_000_002)
    assert reply.index("会员增加 30 天") < reply.index(f"wechat:{OPENID}")  # the notice first, then the answer
    assert "会员增加 30 天" not in say("我的", 8_200_000_000_000_003)  # once


def test_the_remark_binds_an_order_and_months_multiply_the_days(pay, run_worker, fake_afdian, store):
    code = bind_code_of(pay.say(OPENID, "购买"))
    spoken = f"{code[:4].lower()} {code[4:].lower()}"  # as a buyer might type it
    order = fake_afdian.add_order(remark=f"我的绑定码：{spoken}，谢谢", month=3, total_amount="59.70")
    pay.webhook(fake_afdian.webhook(order))
    run_worker()
    user = store.find_user("wechat", OPENID)
    assert [r["days"] for r in purchases(store, user)] == [90]
    assert store.order(order["out_trade_no"])["amount_cents"] == 5970


def test_a_sku_of_goods_gives_its_days_times_its_count(pay, run_worker, fake_afdian, store):
    code = bind_code_of(pay.say(OPENID, "购买"))
    order = fake_afdian.add_order(custom_order_id=code, plan_id="shop_item", product_type=1, total_amount="6.00",
                                  sku_detail=[{"sku_id": "sku_week", "count": 2, "name": "7 days"}])
    pay.webhook(fake_afdian.webhook(order))
    run_worker()
    assert [r["days"] for r in purchases(store, store.find_user("wechat", OPENID))] == [14]


FORGERIES = {
    "unknown at afdian": (None, {}, "afdian does not know this order"),
    "unpaid": ({"status": 1}, {"status": 2}, "not paid"),
    "another plan": ({"plan_id": "plan_for_something_else"}, {"plan_id": "plan_month"}, "is not in AFDIAN_PLANS"),
    "too little paid": ({"total_amount": "0.01", "show_amount": "0.01"}, {"total_amount": "19.90"},
                        "paid 0.01, less than the 19.90"),
    "nothing paid": ({"total_amount": "0.00"}, {}, "is not more than 0"),
    "an amount of their choosing": ({"plan_id": "", "total_amount": "5.00"}, {"plan_id": "plan_year"},
                                    "is not in AFDIAN_PLANS"),
}


@pytest.mark.parametrize("case", FORGERIES, ids=list(FORGERIES))
def test_a_forged_or_unworthy_order_grants_nothing_and_is_logged(pay, run_worker, fake_afdian, fake_wechat, store,
                                                                 worker_log, case):
    at_afdian, in_body, reason = FORGERIES[case]
    code = bind_code_of(pay.say(OPENID, "购买"))
    if at_afdian is None:  # a number afdian never issued, with a body made up to look paid
        order = {"out_trade_no": "202611249999000011112222333", "plan_id": "plan_year", "total_amount": "168.00",
                 "status": 2, "custom_order_id": code, "month": 1}
    else:
        order = fake_afdian.add_order(custom_order_id=code, **at_afdian)
    assert pay.webhook(fake_afdian.webhook(order, **in_body)).get_json()["ec"] == 200
    run_worker()
    user = store.find_user("wechat", OPENID)
    assert purchases(store, user) == [] and user["member_until"] is None
    saved = store.order(order["out_trade_no"])
    assert saved["status"] == "refused" and reason in saved["reason"] and saved["user_id"] is None
    assert fake_wechat.sent == []
    log = worker_log()
    assert f"WARNING chatgate.payments afdian order {order['out_trade_no']} refused: " in log
    if in_body or at_afdian is None:
        assert "the webhook's body differs from afdian's record" in log
    assert fake_afdian.token not in log


def test_a_tampered_body_cannot_redirect_a_real_order(pay, run_worker, fake_afdian, store):
    """A forger who learns someone's order number posts it with their own bind code: afdian's record,
    which carries the buyer's code, decides."""
    buyer_code = bind_code_of(pay.say(OPENID, "购买"))
    thief_code = bind_code_of(pay.say("oThief_afdian", "购买"))
    order = fake_afdian.add_order(custom_order_id=buyer_code)
    pay.webhook(fake_afdian.webhook(order, custom_order_id=thief_code, remark=thief_code))
    run_worker()
    assert len(purchases(store, store.find_user("wechat", OPENID))) == 1
    assert purchases(store, store.find_user("wechat", "oThief_afdian")) == []


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"ec":200}', b'{"data":{"type":"order","order":{}}}',
                                  b'{"data":{"type":"order","order":{"out_trade_no":"12 34"}}}'])
def test_a_malformed_webhook_is_refused_with_400(pay, body, store):
    res = pay.client.post("/pay/afdian", data=body, content_type="application/json")
    assert res.status_code == 400
    assert store.orders() == []


def test_another_kind_of_event_is_acknowledged_and_ignored(pay, store):
    res = pay.webhook({"ec": 200, "em": "ok", "data": {"type": "ping"}})
    assert res.status_code == 200 and res.get_json()["ec"] == 200
    assert store.orders() == []


def test_without_afdian_settings_the_webhook_is_not_there(client, fake_afdian):
    res = client.post("/pay/afdian", json=fake_afdian.webhook({"out_trade_no": "202611240000000000000000001"}))
    assert res.status_code == 503 and b"AFDIAN_USER_ID and AFDIAN_TOKEN" in res.data


def test_a_wrong_token_is_refused_by_afdian_and_the_order_waits_until_it_is_right(
        pay, run_worker, reconcile, fake_afdian, store, monkeypatch, worker_log):
    code = bind_code_of(pay.say(OPENID, "购买"))
    order = fake_afdian.add_order(custom_order_id=code)
    monkeypatch.setenv("AFDIAN_TOKEN", "a-token-afdian-never-issued")  # the worker reads its settings
    pay.webhook(fake_afdian.webhook(order))
    run_worker()
    saved = store.order(order["out_trade_no"])
    assert saved["status"] == "pending" and "400005" in saved["reason"] and saved["checks"] == 1
    assert saved["due_at"] > time.time() and fake_afdian.refused == 1
    assert "a-token-afdian-never-issued" not in worker_log()
    monkeypatch.setenv("AFDIAN_TOKEN", fake_afdian.token)
    assert reconcile(seconds=3600)["orders looked up again"] == 1
    run_worker()
    assert store.order(order["out_trade_no"])["status"] == "granted"
    assert len(purchases(store, store.find_user("wechat", OPENID))) == 1


def test_a_job_lost_with_redis_is_found_by_the_reconciler(pay, run_worker, reconcile, fake_afdian, store, redis_url):
    code = bind_code_of(pay.say(OPENID, "购买"))
    order = fake_afdian.add_order(custom_order_id=code)
    pay.webhook(fake_afdian.webhook(order))
    Redis.from_url(redis_url).flushall()  # Redis lost everything, the look-up job included
    run_worker()
    assert store.order(order["out_trade_no"])["status"] == "pending" and fake_afdian.queries == []
    assert reconcile(seconds=1)["orders looked up again"] == 0  # not due yet: its job may still run
    assert reconcile(seconds=300)["orders looked up again"] == 1
    run_worker()
    assert store.order(order["out_trade_no"])["status"] == "granted"


def test_afdian_down_for_a_while_delays_the_grant_but_loses_nothing(pay, run_worker, reconcile, fake_afdian, store):
    code = bind_code_of(pay.say(OPENID, "购买"))
    order = fake_afdian.add_order(custom_order_id=code)
    fake_afdian.fail(times=2)
    pay.webhook(fake_afdian.webhook(order))
    run_worker()
    first = store.order(order["out_trade_no"])
    assert first["status"] == "pending" and "HTTP 502" in first["reason"]
    reconcile(seconds=3600)
    run_worker()
    second = store.order(order["out_trade_no"])
    assert second["status"] == "pending" and second["checks"] == 2 and second["due_at"] - first["due_at"] > 60
    reconcile(seconds=7200)
    run_worker()
    assert store.order(order["out_trade_no"])["status"] == "granted"
    assert len(purchases(store, store.find_user("wechat", OPENID))) == 1
