"""afdian orders no bind code named: kept unclaimed, then claimed by the user sending the order number
(`兑换 <order number>`), or given by the operator (`chatgate orders bind`); never granted twice, even
when claims and the webhook's look-up race. And the same on Feishu, where the notice is a reply."""

from __future__ import annotations

import json
import threading
import time

import pytest
from click.testing import CliRunner

from bot import texts
from bot.cli import main
from tests import feishu_sim as fs
from tests.test_afdian import OPENID, bind_code_of, purchases

OTHER = "oOther_afdian_0002"


@pytest.fixture
def unclaimed(pay, run_worker, fake_afdian, store):
    """A paid order with no bind code, its webhook handled: kept unclaimed."""
    order = fake_afdian.add_order(remark="thanks!")
    pay.webhook(fake_afdian.webhook(order))
    run_worker()
    assert store.order(order["out_trade_no"])["status"] == "unclaimed"
    return order["out_trade_no"]


def test_an_unclaimed_order_is_claimed_once_by_its_number(pay, unclaimed, store, fake_wechat, worker_log):
    assert store.orders(status="unclaimed")[0]["paid_at"]  # revenue, though bound to nobody
    reply = pay.say(OPENID, f"兑换 {unclaimed}")
    assert reply.startswith(f"已收到爱发电订单 {unclaimed} 的付款（19.90 元）：会员增加 30 天")
    user = store.find_user("wechat", OPENID)
    [row] = purchases(store, user)
    assert row["actor"] == "afdian" and "claimed in chat" in row["note"]
    assert pay.say(OTHER, f"兑换 {unclaimed}") == texts.ORDER_INVALID
    assert pay.say(OPENID, f"兑换{unclaimed}").startswith(f"订单 {unclaimed} 已经开通到你的账号")
    assert len(purchases(store, store.find_user("wechat", OPENID))) == 1
    assert purchases(store, store.find_user("wechat", OTHER)) == []
    assert f"afdian order {unclaimed}, granted to u{user['id']}, was claimed by u" in worker_log()
    assert fake_wechat.sent == []  # the reply said it


def test_a_number_chatgate_never_saw_is_looked_up_and_granted(pay, run_worker, fake_afdian, fake_wechat, store):
    order = fake_afdian.add_order(plan_id="plan_year", total_amount="168.00")  # its webhook was lost
    assert pay.say(OPENID, f"兑换 {order['out_trade_no']}") == texts.ORDER_CHECKING.format(order=order["out_trade_no"])
    run_worker()
    user = store.find_user("wechat", OPENID)
    assert [r["days"] for r in purchases(store, user)] == [365]
    assert store.order(order["out_trade_no"])["bound_by"] == "claimed in chat"
    [(to, notice)] = fake_wechat.sent
    assert to == OPENID and "会员增加 365 天" in notice


def test_wrong_numbers_are_refused_told_and_rate_limited(pay, run_worker, fake_afdian, fake_wechat, store):
    numbers = [f"20261124000000000000000{i:04d}" for i in range(6)]
    for number in numbers[:5]:
        assert pay.say(OPENID, f"兑换 {number}") == texts.ORDER_CHECKING.format(order=number)
    assert pay.say(OPENID, f"兑换 {numbers[5]}") == texts.REDEEM_LIMITED
    run_worker()
    assert sorted(fake_afdian.queries) == numbers[:5]  # the sixth was not even looked up
    assert [store.order(n)["status"] for n in numbers[:5]] == ["refused"] * 5 and store.order(numbers[5]) is None
    assert sorted(text for _, text in fake_wechat.sent) == sorted(texts.ORDER_NOT_GRANTED.format(order=n)
                                                                  for n in numbers[:5])
    assert store.find_user("wechat", OPENID)["member_until"] is None
    assert pay.say(OPENID, "兑换 ABCD-EFGH-JKMN-PQRS") == texts.REDEEM_LIMITED  # codes share the limit


def test_two_users_claiming_one_order_at_once_get_it_once(pay, fake_afdian, run_worker, store):
    for openid in (OPENID, OTHER):
        pay.say(openid, "我的")
    numbers = []
    for _ in range(4):
        order = fake_afdian.add_order()
        pay.webhook(fake_afdian.webhook(order))
        numbers.append(order["out_trade_no"])
    run_worker()
    for number in numbers:
        barrier, replies = threading.Barrier(2), {}

        def claim(openid, number=number, barrier=barrier, replies=replies):
            barrier.wait()
            replies[openid] = pay.say(openid, f"兑换 {number}")
        threads = [threading.Thread(target=claim, args=(o,)) for o in (OPENID, OTHER)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(r == texts.ORDER_INVALID for r in replies.values()) == [False, True]
    grants = purchases(store, store.find_user("wechat", OPENID)) + purchases(store, store.find_user("wechat", OTHER))
    assert len(grants) == 4 and {store.order(n)["status"] for n in numbers} == {"granted"}


def test_a_claim_while_the_webhook_s_look_up_runs_is_granted_once(pay, fake_afdian, run_worker, store, fake_wechat):
    pay.say(OPENID, "我的")
    order = fake_afdian.add_order()
    fake_afdian.delay(0.8)  # afdian answers slowly: the claim lands while the job waits for it
    pay.webhook(fake_afdian.webhook(order))
    replies = []

    def claim_during_lookup():
        deadline = time.monotonic() + 10
        while not fake_afdian.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        replies.append(pay.say(OPENID, f"兑换 {order['out_trade_no']}"))
    thread = threading.Thread(target=claim_during_lookup)
    thread.start()
    run_worker()
    thread.join()
    run_worker()  # the claim's own look-up: finds the order settled
    assert replies == [texts.ORDER_CHECKING.format(order=order["out_trade_no"])]
    assert len(purchases(store, store.find_user("wechat", OPENID))) == 1
    assert fake_afdian.queries == [order["out_trade_no"]] * 2
    assert [to for to, _ in fake_wechat.sent] == [OPENID]


def test_the_operator_binds_an_unclaimed_order_and_lists_orders(pay, unclaimed, store, reconcile, run_worker,
                                                                fake_wechat):
    pay.say(OTHER, "我的")
    pay.say(OPENID, "我的")
    runner = CliRunner()
    res = runner.invoke(main, ["orders", "bind", unclaimed, f"wechat:{OTHER}"])
    assert res.exit_code == 0, res.output
    assert f"order {unclaimed}: granted: 19.90 paid, 30 days to wechat:{OTHER}, member until" in res.output
    [row] = purchases(store, store.find_user("wechat", OTHER))
    assert row["actor"] == "afdian" and "bound by cli:" in row["note"]
    again = runner.invoke(main, ["orders", "bind", unclaimed, f"wechat:{OPENID}"])
    assert again.exit_code == 1 and f"was granted to wechat:{OTHER} already" in again.output
    reconcile(seconds=120)  # the notice page is pushed by the reconciler's job
    run_worker()
    assert [to for to, _ in fake_wechat.sent] == [OTHER]
    listed = json.loads(runner.invoke(main, ["orders", "--status", "granted", "--json"]).output)
    assert [(o["out_trade_no"], o["user_ref"], o["afdian"]["remark"]) for o in listed] == [
        (unclaimed, f"wechat:{OTHER}", "thanks!")]
    assert unclaimed in runner.invoke(main, ["orders"]).output
    assert json.loads(runner.invoke(main, ["orders", "--status", "refused", "--json"]).output) == []


def test_the_operator_binds_an_order_whose_webhook_was_lost(pay, fake_afdian, store):
    pay.say(OTHER, "我的")
    order = fake_afdian.add_order()
    res = CliRunner().invoke(main, ["orders", "bind", order["out_trade_no"], f"wechat:{OTHER}"])
    assert res.exit_code == 0, res.output
    assert len(purchases(store, store.find_user("wechat", OTHER))) == 1
    unknown = CliRunner().invoke(main, ["orders", "bind", "202611249999999999999999999", f"wechat:{OTHER}"])
    assert unknown.exit_code == 1 and "refused: afdian does not know this order" in unknown.output


def test_orders_check_settles_an_order_now(pay, fake_afdian, store):
    code = bind_code_of(pay.say(OPENID, "购买"))
    order = fake_afdian.add_order(custom_order_id=code)
    res = CliRunner().invoke(main, ["orders", "check", order["out_trade_no"]])
    assert res.exit_code == 0, res.output
    assert f"granted: 19.90 paid, 30 days to wechat:{OPENID}" in res.output
    res = CliRunner().invoke(main, ["orders", "check", order["out_trade_no"]])
    assert f"order {order['out_trade_no']}: granted" in res.output
    assert len(purchases(store, store.find_user("wechat", OPENID))) == 1


def test_on_feishu_the_link_and_the_grant_are_replies(afdian_env, feishu, run_worker, fake_feishu, fake_afdian,
                                                      store):
    buy = fs.message_event(text="购买", sender="ou_buyer_1", chat_id="oc_p2p_buyer")
    assert feishu(buy).status_code == 200
    feishu(fs.message_event(text="我的", sender="ou_buyer_1", chat_id="oc_p2p_buyer"))
    run_worker()
    link_reply = next(text for mid, text, _ in fake_feishu.replies if mid == buy["event"]["message"]["message_id"])
    order = fake_afdian.add_order(custom_order_id=bind_code_of(link_reply))
    assert feishu.client.post("/pay/afdian", json=fake_afdian.webhook(order)).get_json()["ec"] == 200
    run_worker()
    mid, notice, _ = fake_feishu.replies[-1]
    assert mid == buy["event"]["message"]["message_id"]  # the reply goes under the 购买 message
    assert "会员增加 30 天" in notice
    assert len(purchases(store, store.find_user("feishu", "ou_buyer_1"))) == 1
