"""BybitExecution against bad wire input from the loopback Bybit V5 REST server: order records
whose figures cannot be booked (no price, an overfill, a garbage cumulative quantity), trades
past the order's quantity, answers that are JSON but not Bybit's envelope (no retCode, a retCode
that is not an integer, not an object, a listing without its ``list``) and a wallet balance that
is not a number. Each is refused naming what was wrong, changes nothing, and the next good
record is booked."""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any, cast

import pytest
from structlog.testing import capture_logs

from contracts.enums import OrderStatus, OrderType, Side
from contracts.execution import OrderEvent
from planes.execution.bybit import ACCOUNT, BybitError
from planes.execution.bybit_private import BadRecordError, check_order, parse_execution
from tests.fakes.bybit_http import CREATE, REALTIME, WALLET, FakeBybitHTTP, Fault
from tests.fakes.bybit_samples import private_sample
from tests.planes.execution.test_bybit import STALL_S, Bench

pytestmark = pytest.mark.network

S = OrderStatus


def D(value: str | int) -> Decimal:  # noqa: N802 - reads like the literal it stands for
    return Decimal(value)


class RawFake(FakeBybitHTTP):
    """The fake server, able to answer a path with any JSON value instead of its envelope."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._raw: dict[str, deque[tuple[object, bool]]] = {}

    def answer(self, path: str, body: object, *, serve: bool = False) -> None:
        """Answer the next request to ``path`` with ``body``; ``serve``: do the request too."""
        self._raw.setdefault(path, deque()).append((body, serve))

    def _serve(self, method: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
        queue = self._raw.get(path)
        if not queue:
            return super()._serve(method, path, params)
        body, serve = queue.popleft()
        if serve:
            super()._serve(method, path, params)
        return cast("dict[str, Any]", body)  # any JSON value: the handler only dumps it


@pytest.fixture
def server() -> Iterator[RawFake]:
    with RawFake() as fake:
        yield fake


@pytest.fixture
async def make_bench(server: RawFake) -> AsyncIterator[Any]:
    benches: list[Bench] = []

    async def make(*sets: str) -> Bench:
        bench = Bench(server, *sets)
        benches.append(bench)
        await bench.venue.start()
        await bench.positions.start()
        return bench

    yield make
    for bench in benches:
        await bench.venue.stop()


def fills(b: Bench, order_id: str) -> list[OrderEvent]:
    return [e for e in b.of(order_id) if e.last_fill_qty]


def refusals(b: Bench) -> list[str]:
    return [a.message for a in b.alerts if a.code == "bybit_record_refused"]


def ws_order(link: str, **fields: str) -> dict[str, Any]:
    record = dict(private_sample("order")["data"][0])
    record.update(orderLinkId=link, symbol="BTCUSDT", category="linear", **fields)
    return record


def ws_trade(link: str, **fields: str) -> dict[str, Any]:
    record = dict(private_sample("execution")["data"][0])
    record.update(orderLinkId=link, symbol="BTCUSDT", **fields)
    return record


# -- 1. a fill with no price ---------------------------------------------------------------


BAD_PRICES = [
    pytest.param({"cumExecValue": "", "avgPrice": "-100"}, "avgPrice is negative", id="neg_avg"),
    pytest.param({"cumExecValue": "0", "avgPrice": ""}, "no positive cumExecValue", id="zero"),
    pytest.param({"cumExecValue": "", "avgPrice": ""}, "no positive cumExecValue", id="none"),
]


@pytest.mark.parametrize(("figures", "problem"), BAD_PRICES)
async def test_a_rest_fill_with_no_price_is_refused_and_the_next_good_record_booked(
    server: RawFake, make_bench: Any, figures: dict[str, str], problem: str
) -> None:
    b = await make_bench()
    approved = await b.place(Side.BUY, "1")
    link = b.link(approved)
    server.set_status(link, "PartiallyFilled", cumExecQty="0.5", leavesQty="0.5", **figures)
    with capture_logs() as logs:
        assert await b.venue.poll() == 0
    (refused,) = [e for e in logs if e["event"] == "bybit.record_refused"]
    assert problem in refused["problem"]
    assert len(refusals(b)) == 1
    assert problem in refusals(b)[0]
    assert b.venue._orders_by_id[approved.order_id].filled == 0  # nothing moved
    server.set_status(link, "PartiallyFilled", cumExecValue="50", avgPrice="100")
    assert await b.venue.poll() == 1
    await b.bus.drain(5)
    (fill,) = fills(b, approved.order_id)
    assert (fill.last_fill_qty, fill.last_fill_price) == (D("0.5"), D(100))
    assert b.positions.ledger.position("BTCUSDT").qty == D("0.5")


@pytest.mark.parametrize(("figures", "problem"), BAD_PRICES)
async def test_a_ws_fill_with_no_price_is_refused_by_the_wire_check_and_by_the_venue(
    make_bench: Any, figures: dict[str, str], problem: str
) -> None:
    b = await make_bench()
    approved = await b.place(Side.BUY, "1")
    record = ws_order(
        b.link(approved), qty="1", orderStatus="PartiallyFilled", cumExecQty="0.5", **figures
    )
    with pytest.raises(BadRecordError, match=problem):
        check_order(record)
    assert b.venue.apply_order_update(record)  # unchecked, as a REST record: the venue checks
    await b.bus.drain(5)
    assert fills(b, approved.order_id) == []
    assert len(refusals(b)) == 1
    b.venue.apply_order_update(check_order({**record, "cumExecValue": "50", "avgPrice": "100"}))
    await b.bus.drain(5)
    assert [e.last_fill_price for e in fills(b, approved.order_id)] == [D(100)]
    assert b.positions.ledger.position("BTCUSDT").qty == D("0.5")


# -- 2. overfills --------------------------------------------------------------------------


async def test_an_order_record_filled_past_the_order_qty_is_refused_and_alerted(
    server: RawFake, make_bench: Any
) -> None:
    b = await make_bench()
    approved = await b.place(Side.BUY, "1")
    link = b.link(approved)
    server.set_status(link, "Filled", cumExecQty="5", cumExecValue="500", avgPrice="100")
    await b.venue.poll()
    await b.bus.drain(5)
    assert fills(b, approved.order_id) == []
    assert b.positions.ledger.position("BTCUSDT").qty == 0
    (message,) = refusals(b)
    assert "cumExecQty 5 is more than the order's qty 1: an overfill" in message
    server.set_status(link, "Filled", cumExecQty="1", cumExecValue="100", avgPrice="100")
    await b.venue.poll()
    await b.bus.drain(5)
    assert b.statuses(approved.order_id)[-1] is S.FILLED
    assert b.positions.ledger.position("BTCUSDT").qty == 1


@pytest.mark.parametrize(
    ("order_qty", "problem"),
    [
        ("5", "orderQty 5 is not the order's qty 1"),
        ("", "execQty 5 is more than the order's qty 1: an overfill"),
    ],
    ids=["order_qty", "exec_qty"],
)
async def test_a_trade_past_the_order_qty_is_refused_and_alerted(
    make_bench: Any, order_qty: str, problem: str
) -> None:
    b = await make_bench()
    approved = await b.place(Side.BUY, "1")
    link = b.link(approved)
    bad = ws_trade(
        link, execId="x-1", execQty="5", orderQty=order_qty, leavesQty="0", execPrice="100"
    )
    trade = parse_execution(bad)
    assert trade is not None
    assert not b.venue.apply_execution(trade)
    (message,) = refusals(b)
    assert problem in message
    good = parse_execution({**bad, "execQty": "1", "orderQty": "1"})  # same execId: not seen
    assert good is not None
    assert b.venue.apply_execution(good)
    await b.bus.drain(5)
    assert b.positions.ledger.position("BTCUSDT").qty == 1


# -- 3. a retCode that is not an integer ---------------------------------------------------


async def test_a_retcode_that_is_not_an_integer_fails_the_trial_and_frees_the_breaker(
    server: RawFake, make_bench: Any
) -> None:
    b = await make_bench(
        "execution.bybit.max_retries=0",
        "execution.bybit.breaker_failures=1",
        "execution.bybit.breaker_reset_s=0.1",
    )
    server.script(WALLET, Fault.http(503))
    with pytest.raises(BybitError):
        await b.venue.wallet()
    await asyncio.sleep(0.12)
    server.answer(WALLET, {"retCode": "abc", "retMsg": "weird", "result": {}})
    with pytest.raises(BybitError, match="retCode 'abc' is not an integer"):
        await b.venue.wallet()  # the half-open trial
    assert b.venue.breaker(ACCOUNT).state == "open"
    await asyncio.sleep(0.12)
    await b.venue.wallet()  # the next trial goes through and closes it
    assert b.venue.breaker(ACCOUNT).state == "closed"


# -- 4. a 200 without retCode 0 is not an accepted order -----------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"retcode": 0, "result": {"orderId": "x"}},
        {"retCode": 0, "result": {}},
        {"retCode": 0, "result": {"orderId": "x", "orderLinkId": "pb-someone-else"}},
    ],
    ids=["empty", "lowercase", "no_order_id", "other_link_id"],
)
@pytest.mark.parametrize("on_bybit", [False, True], ids=["not_placed", "placed"])
async def test_a_place_answer_without_retcode_0_and_our_order_is_looked_up(
    server: RawFake, make_bench: Any, body: dict[str, Any], on_bybit: bool
) -> None:
    b = await make_bench("execution.bybit.max_retries=0")
    server.answer(CREATE, body, serve=on_bybit)
    approved = await b.place()
    last = b.of(approved.order_id)[-1]
    assert len(server.orders) == int(on_bybit)
    if on_bybit:
        assert b.statuses(approved.order_id) == [S.SUBMITTED, S.ACCEPTED]
        assert last.reason.startswith("confirmed: found by orderLinkId after ")
        assert "unreadable answer" in last.reason
    else:
        assert b.statuses(approved.order_id) == [S.SUBMITTED, S.REJECTED]
        assert last.reason.startswith("venue_unavailable: ")
        assert "unreadable answer" in last.reason


# -- 5. a lookup without a list is not "not found" -----------------------------------------


async def test_a_lookup_answer_without_a_list_leaves_the_order_unconfirmed_not_rejected(
    server: RawFake, make_bench: Any
) -> None:
    b = await make_bench("execution.bybit.max_retries=0")
    server.script(CREATE, Fault.stall_after(STALL_S))  # a timeout after accept
    server.answer(REALTIME, {"retCode": 0, "retMsg": "OK", "result": {"rows": []}})
    approved = await b.place()
    assert b.statuses(approved.order_id) == [S.SUBMITTED]
    assert [a.code for a in b.alerts] == ["bybit_order_unconfirmed"]
    server.fill(b.link(approved), "0.5", "100")
    await b.venue.poll()
    await b.bus.drain(5)
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.ACCEPTED, S.FILLED]
    assert b.positions.ledger.position("BTCUSDT").qty == D("0.5")


async def test_a_listing_without_a_list_is_an_error_not_an_empty_listing(
    server: RawFake, make_bench: Any
) -> None:
    b = await make_bench("execution.bybit.max_retries=0")
    server.answer(REALTIME, {"retCode": 0, "retMsg": "OK", "result": {}})
    with pytest.raises(BybitError, match="result has no list"):
        await b.venue.open_orders()
    server.answer(REALTIME, {"retCode": 0, "retMsg": "OK", "result": {"list": ["x"]}})
    with pytest.raises(BybitError, match=re.escape("list[0] is not an object")):
        await b.venue.open_orders()
    assert await b.venue.open_orders() == []  # the next good answer


# -- 6. a cancelled record with a garbage cumulative quantity ------------------------------


@pytest.mark.parametrize("cum", ["abc", None], ids=["garbage", "missing"])
async def test_a_cancel_record_without_a_valid_cumexecqty_is_refused(
    server: RawFake, make_bench: Any, cum: str | None
) -> None:
    b = await make_bench()
    approved = await b.place(Side.BUY, "1", OrderType.LIMIT, limit="90")
    link = b.link(approved)
    server.fill(link, "0.4", "90", "0.01")
    if cum is None:
        server.set_status(link, "PartiallyFilledCanceled")
        with server._lock:
            del next(r for r in server.orders.values() if r["orderLinkId"] == link)["cumExecQty"]
    else:
        server.set_status(link, "PartiallyFilledCanceled", cumExecQty=cum)
    await b.venue.poll()
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.ACCEPTED]
    (message,) = refusals(b)
    assert "cumExecQty" in message
    server.set_status(link, "PartiallyFilledCanceled", cumExecQty="0.4")
    await b.venue.poll()
    await b.bus.drain(5)
    assert b.statuses(approved.order_id)[2:] == [S.PARTIALLY_FILLED, S.CANCELLED]
    assert b.positions.ledger.position("BTCUSDT").qty == D("0.4")


def test_the_wire_check_wants_cumexecqty_on_fill_and_cancel_records() -> None:
    record = ws_order("pb-x", orderStatus="PartiallyFilledCanceled")
    del record["cumExecQty"]
    with pytest.raises(BadRecordError, match="cumExecQty missing on a PartiallyFilledCanceled"):
        check_order(record)
    assert check_order({**record, "orderStatus": "New"})  # nothing filled to say


# -- 7. a wallet balance that is not a number ----------------------------------------------


@pytest.mark.parametrize("balance", ["", "abc"], ids=["empty", "garbage"])
async def test_a_bad_rest_wallet_balance_is_refused_and_is_no_drift_baseline(
    server: RawFake, make_bench: Any, balance: str
) -> None:
    b = await make_bench()
    coin = {"coin": "USDT", "walletBalance": balance}
    server.wallet = [{"accountType": "UNIFIED", "coin": [coin]}]
    with pytest.raises(BadRecordError, match=f"USDT walletBalance is not a number: '{balance}'"):
        await b.venue.wallet()
    with capture_logs() as logs:
        await b.venue.resync()
    events = [e["event"] for e in logs]
    assert "bybit.wallet_baseline_failed" in events
    assert "drift.wallet_baseline" not in events
    assert len(refusals(b)) == 2


# -- 8. JSON that is not an object ---------------------------------------------------------


@pytest.mark.parametrize("body", [[], None, "ok"], ids=["list", "null", "string"])
async def test_an_answer_that_is_not_an_object_is_unreadable_transient_and_ambiguous(
    server: RawFake, make_bench: Any, body: object
) -> None:
    b = await make_bench("execution.bybit.max_retries=0")
    server.answer(CREATE, body, serve=True)
    approved = await b.place()  # ambiguous: looked up, found
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.ACCEPTED]
    assert "unreadable answer" in b.of(approved.order_id)[-1].reason
    server.answer(REALTIME, body)
    with pytest.raises(BybitError, match="unreadable answer") as raised:
        await b.venue.poll()
    assert (raised.value.transient, raised.value.ambiguous) == (True, True)
