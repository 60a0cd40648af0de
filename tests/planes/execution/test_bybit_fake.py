"""The loopback Bybit REST fake answers like Bybit: record shapes, authentication, faults."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.request
from typing import Any

import pytest

from tests.fakes.bybit_http import CREATE, ORDER_FIELDS, REALTIME, FakeBybitHTTP, Fault
from tests.fakes.bybit_samples import private_sample

pytestmark = pytest.mark.network


def call(
    fake: FakeBybitHTTP,
    method: str,
    path: str,
    payload: str = "",
    *,
    sign: bool = True,
    skew: int = 0,
) -> tuple[int, dict[str, Any]]:
    url = f"{fake.url}{path}" + (f"?{payload}" if method == "GET" and payload else "")
    ts = str(int(time.time() * 1000) + skew)
    headers = {"Content-Type": "application/json"}
    if sign:
        signed = f"{ts}{fake.api_key}5000{payload}".encode()
        headers |= {
            "X-BAPI-API-KEY": fake.api_key,
            "X-BAPI-TIMESTAMP": ts,
            "X-BAPI-RECV-WINDOW": "5000",
            "X-BAPI-SIGN": hmac.new(fake.api_secret.encode(), signed, hashlib.sha256).hexdigest(),
        }
    body = payload.encode() if method == "POST" else None
    request = urllib.request.Request(url, data=body, headers=headers, method=method)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, {}


def test_order_records_have_the_fields_of_bybit_order_records() -> None:
    sample = private_sample("order")["data"][0]
    assert tuple(sample) == ORDER_FIELDS


def test_it_checks_headers_signature_and_timestamp() -> None:
    with FakeBybitHTTP() as fake:
        assert call(fake, "GET", REALTIME, "category=linear", sign=False)[1]["retCode"] == 10003
        assert call(fake, "GET", REALTIME, "category=linear", skew=-60_000)[1]["retCode"] == 10002
        fake.api_secret = "other"  # noqa: S105 - a fixture value
        status, answer = call(fake, "GET", REALTIME, "category=linear")
        assert (status, answer["retCode"]) == (200, 0)  # signed with the current secret


def test_create_duplicate_and_scripted_faults() -> None:
    order = json.dumps(
        {"category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market",
         "qty": "1", "orderLinkId": "pb-1"}
    )  # fmt: skip
    with FakeBybitHTTP() as fake:
        fake.script(CREATE, Fault.http(429), Fault.retcode(110007, "Insufficient"))
        assert call(fake, "POST", CREATE, order)[0] == 429
        assert call(fake, "POST", CREATE, order)[1]["retCode"] == 110007
        status, answer = call(fake, "POST", CREATE, order)
        assert (status, answer["retCode"], answer["retMsg"]) == (200, 0, "OK")
        assert set(answer) == {"retCode", "retMsg", "result", "retExtInfo", "time"}
        assert call(fake, "POST", CREATE, order)[1]["retCode"] == 110072
        assert len(fake.orders) == 1
        assert [r.fault for r in fake.calls(CREATE)] == ["http", "retcode", "", ""]
        listed = call(fake, "GET", REALTIME, "category=linear&orderLinkId=pb-1")[1]
        (record,) = listed["result"]["list"]
        assert tuple(record) == ORDER_FIELDS
        assert (record["orderStatus"], record["qty"]) == ("New", "1")
