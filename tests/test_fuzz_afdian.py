"""Hostile bodies at afdian's order webhook (unsigned: anyone can post): never a 5xx, never an error
logged, nothing stored or queued for a 400, and `{"ec":200}` for every body afdian could send."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import hostile
from tests.fuzzing import FUZZ, Watch


def _post(pay, body: bytes):
    return pay.client.post("/pay/afdian", data=body, content_type="application/json")


@FUZZ
@given(rnd=st.randoms(use_true_random=False))
def test_hostile_order_webhooks(pay, store, redis_url, caplog, rnd):
    watch = Watch(store, redis_url, caplog)
    body = hostile.to_json(hostile.afdian_order(rnd))
    before = watch.snapshot()
    res = _post(pay, body)
    watch.check(res, before, {200, 400, 413}, body[:500].decode(errors="replace"))
    if res.status_code == 200:
        assert res.get_json()["ec"] == 200


@FUZZ
@given(value=st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=300),
                       st.lists(st.integers(), max_size=3),
                       st.dictionaries(st.text(max_size=5), st.none(), max_size=2)),
       name=st.sampled_from(["out_trade_no", "total_amount", "plan_id", "status", "month", "custom_order_id",
                             "remark"]))
def test_any_order_field(pay, store, redis_url, caplog, value, name):
    watch = Watch(store, redis_url, caplog)
    order = {"out_trade_no": "202611301234567890123", "plan_id": "plan_month", "total_amount": "19.90", name: value}
    body = hostile.to_json({"ec": 200, "data": {"type": "order", "order": order}})
    before = watch.snapshot()
    res = _post(pay, body)
    watch.check(res, before, {200, 400}, body[:500].decode())


@pytest.mark.parametrize("body", [
    b"[" * 5000 + b"]" * 5000,
    b'{"data": ' * 3000 + b"1" + b"}" * 3000,
    json.dumps({"ec": 200, "data": {"type": "order", "order": {"out_trade_no": "1" * 65}}}).encode(),
    json.dumps({"ec": 200, "data": {"type": "order", "order": {"out_trade_no": 12345}}}).encode(),
    json.dumps({"ec": 200, "data": {"type": "order", "order": {"out_trade_no": "1", "remark": "x" * 257}}}).encode(),
    json.dumps({"ec": 200, "data": {"type": "order", "order": {"out_trade_no": "1", "month": 2**63}}}).encode(),
    json.dumps({"ec": 200, "data": {"type": "order", "order": ["out_trade_no"]}}).encode(),
    b"\xff\xfe not utf-8",
], ids=["deep-array", "deep-object", "number-65", "number-not-string", "remark-257", "month-huge", "order-list",
        "not-utf8"])
def test_wrong_bodies_are_400_and_store_nothing(pay, store, redis_url, caplog, body):
    watch = Watch(store, redis_url, caplog)
    before = watch.snapshot()
    watch.check(_post(pay, body), before, {400}, body[:200].decode(errors="replace"))
