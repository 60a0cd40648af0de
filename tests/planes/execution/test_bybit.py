"""BybitExecution against a loopback Bybit V5 REST server: idempotent orders through 429s, 5xx
and timeouts, timeout-after-accept, business rejections, backoff bounds, circuit breakers, keys
from the environment, fills by poll(), and an event loop that never blocks."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
from structlog.testing import capture_logs

from contracts.enums import OrderStatus, OrderType, Side
from contracts.execution import OrderEvent, PositionUpdate
from contracts.rights import rights_for
from contracts.risk import ApprovedIntent
from contracts.strategy import Intent
from contracts.system import Alert
from contracts.topics import (
    EXEC_ORDER_EVENT,
    OBSERVABILITY_ALERT,
    PORTFOLIO_POSITION,
    RISK_APPROVED,
    TopicRegistry,
)
from planes.bus import EventBus, PlaneHandle
from planes.clock import RealtimeClock
from planes.config import load_config
from planes.execution.adapter import OrderRequest, client_order_id
from planes.execution.bybit import (
    ACCOUNT,
    ORDERS,
    BybitConfigError,
    BybitError,
    BybitExecution,
    CircuitOpenError,
)
from planes.execution.positions import PositionManager
from planes.runtime import PlaneContext, Runtime, RuntimeStartError
from tests.fakes.bybit_http import (
    CANCEL,
    CREATE,
    HISTORY,
    REALTIME,
    WALLET,
    FakeBybitHTTP,
    Fault,
)
from tests.fakes.bybit_samples import private_sample

pytestmark = pytest.mark.network

S = OrderStatus
KEYS = {"BYBIT_API_KEY": "test-key", "BYBIT_API_SECRET": "test-secret"}
TIMEOUT_S = 0.25
STALL_S = 2.0  # well past the client's timeout; released when the server closes


def D(value: str | int) -> Decimal:  # noqa: N802 - reads like the literal it stands for
    return Decimal(value)


class Bench:
    """BybitExecution (+ a PositionManager) on a real bus, pointed at the fake server."""

    def __init__(
        self,
        server: FakeBybitHTTP,
        *sets: str,
        environ: dict[str, str] | None = None,
        seed: int = 7,
    ) -> None:
        defaults = (
            "storage.enabled=false",  # no storage plane here: no boot recovery to wait for
            "execution.venue=bybit",
            f"execution.bybit.base_url={server.url}",
            f"execution.bybit.timeout_s={TIMEOUT_S}",
            "execution.bybit.backoff_initial_s=0.01",
            "execution.bybit.backoff_max_s=0.04",
            "execution.bybit.max_retries=3",
        )
        self.config = load_config(None, [*defaults, *sets], environ={}, use_default_file=False)
        self.server = server
        self.clock = RealtimeClock()
        self.bus = EventBus(TopicRegistry(), now_ms=self.clock.now_ms)
        self.venue = BybitExecution(
            self.ctx("execution"),
            environ=KEYS if environ is None else environ,
            rng=random.Random(seed),
        )
        self.positions = PositionManager(self.ctx("execution"))
        self.risk = self._handle("risk")
        self.orders: list[OrderEvent] = []
        self.alerts: list[Alert] = []
        self.updates: list[PositionUpdate] = []
        self._ids = itertools.count(1)
        self.bus.subscribe(EXEC_ORDER_EVENT, self.orders.append)
        self.bus.subscribe(OBSERVABILITY_ALERT, self.alerts.append)
        self.bus.subscribe(PORTFOLIO_POSITION, self.updates.append)

    def _handle(self, plane: str) -> PlaneHandle:
        source, rights = rights_for(plane)
        return self.bus.handle(plane, source, rights)

    def ctx(self, plane: str) -> PlaneContext:
        return PlaneContext(
            bus=self._handle(plane),
            clock=self.clock,
            config=self.config,
            settings={},
            exchanges={},
            strategies={},
            notifiers={},
        )

    def approve(
        self,
        side: Side = Side.BUY,
        qty: str = "0.5",
        order_type: OrderType = OrderType.MARKET,
        *,
        limit: str | None = None,
        stop: str | None = None,
        reduce_only: bool = False,
        intent_id: str | None = None,
        scenario_id: str = "sc-1",
    ) -> ApprovedIntent:
        """Publish an approval as the RiskManager would (order id ``scenario:intent``)."""
        intent_id = intent_id or f"i-{next(self._ids)}"
        intent = Intent(
            self.risk.meta(f"corr-{intent_id}"),
            intent_id=intent_id,
            scenario_id=scenario_id,
            strategy="test",
            symbol="BTCUSDT",
            side=side,
            size_hint=D(qty),
            order_type=order_type,
            limit_price=None if limit is None else D(limit),
            stop_price=None if stop is None else D(stop),
            reduce_only=reduce_only,
        )
        approved = ApprovedIntent(
            self.risk.meta(intent.meta.correlation_id), intent, D(qty), f"{scenario_id}:{intent_id}"
        )
        self.risk.publish(RISK_APPROVED, approved)
        return approved

    async def place(self, *args: Any, **kwargs: Any) -> ApprovedIntent:
        """Approve, and wait until the venue has dealt with it."""
        approved = self.approve(*args, **kwargs)
        await self.bus.drain(10)
        return approved

    def of(self, order_id: str) -> list[OrderEvent]:
        return [e for e in self.orders if e.order_id == order_id]

    def statuses(self, order_id: str) -> list[OrderStatus]:
        return [e.status for e in self.of(order_id)]

    def link(self, approved: ApprovedIntent) -> str:
        return client_order_id(approved.intent.scenario_id, approved.intent.intent_id)


@pytest.fixture
def server() -> Iterator[FakeBybitHTTP]:
    with FakeBybitHTTP() as fake:
        yield fake


@pytest.fixture
async def make_bench(server: FakeBybitHTTP) -> AsyncIterator[Any]:
    benches: list[Bench] = []

    async def make(*sets: str, **kwargs: Any) -> Bench:
        bench = Bench(server, *sets, **kwargs)
        benches.append(bench)
        await bench.venue.start()
        await bench.positions.start()
        return bench

    yield make
    for bench in benches:
        await bench.venue.stop()


def ceiling(bench: Bench, attempt: int) -> float:
    cfg = bench.config.execution.bybit
    return min(cfg.backoff_max_s, cfg.backoff_initial_s * 2 ** (attempt - 1))


# -- the happy path -----------------------------------------------------------------------


async def test_an_approval_becomes_one_signed_order_with_a_deterministic_link_id(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench()
    approved = await b.place(Side.BUY, "0.5")
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.ACCEPTED]
    (create,) = server.calls(CREATE)
    link = client_order_id("sc-1", approved.intent.intent_id)
    assert len(link) <= 36
    assert create.params == {
        "category": "linear",
        "symbol": "BTCUSDT",
        "side": "Buy",
        "orderType": "Market",
        "qty": "0.5",
        "orderLinkId": link,
    }
    assert {"x-bapi-api-key", "x-bapi-sign", "x-bapi-timestamp"} <= set(create.headers)
    accepted = b.of(approved.order_id)[-1]
    assert (accepted.venue, accepted.client_order_id, accepted.reason) == ("bybit", link, "")
    assert accepted.meta.correlation_id == f"corr-{approved.intent.intent_id}"
    assert server.order(link)["orderStatus"] == "New"
    assert (b.venue.submitted, b.venue.accepted, b.venue.retries) == (1, 1, 0)


async def test_limit_stop_and_reduce_only_orders_map_to_bybit_parameters(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench()
    await b.place(Side.SELL, "2", OrderType.LIMIT, limit="101.5", reduce_only=True)
    await b.place(Side.BUY, "1", OrderType.STOP, stop="1.2E+2")
    limit, stop = (c.params for c in server.calls(CREATE))
    assert limit["orderType"] == "Limit"
    assert (limit["price"], limit["timeInForce"], limit["reduceOnly"]) == ("101.5", "GTC", True)
    assert stop["orderType"] == "Market"
    assert (stop["triggerPrice"], stop["triggerDirection"]) == ("120", 1)  # no exponent
    assert all(e.status is not S.REJECTED for e in b.orders)


async def test_spot_market_orders_count_base_coin(server: FakeBybitHTTP, make_bench: Any) -> None:
    b = await make_bench("execution.bybit.category=spot")
    await b.place(Side.BUY, "0.01", reduce_only=True)
    (create,) = server.calls(CREATE)
    assert create.params["category"] == "spot"
    assert create.params["marketUnit"] == "baseCoin"
    assert "reduceOnly" not in create.params  # spot has no reduce-only orders


async def test_a_repeated_approval_is_not_sent_again(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench()
    first = b.approve(intent_id="same")
    b.approve(intent_id="same")
    await b.bus.drain(5)
    assert len(server.calls(CREATE)) == 1
    assert b.statuses(first.order_id) == [S.SUBMITTED, S.ACCEPTED]
    assert b.venue.duplicates == 1


async def test_orders_that_cannot_be_sent_are_rejected_locally(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench()
    zero = await b.place(Side.BUY, "0")
    no_price = await b.place(Side.BUY, "1", OrderType.LIMIT)
    assert b.of(zero.order_id)[-1].reason.startswith("invalid_qty: ")
    assert b.of(no_price.order_id)[-1].reason.startswith("missing_price: ")
    assert server.calls(CREATE) == []


# -- retries: exactly one order -------------------------------------------------------------


async def test_429s_are_retried_and_place_exactly_one_order(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench()
    server.script(CREATE, Fault.http(429), Fault.http(429))
    approved = await b.place()
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.ACCEPTED]
    assert len(server.calls(CREATE)) == 3
    assert len(server.orders) == 1
    assert server.calls(REALTIME) == []  # a 429 was not executed: nothing to look up
    assert len(b.venue.backoff_history) == 2
    assert all(d <= ceiling(b, n) for n, d in enumerate(b.venue.backoff_history, 1))


async def test_5xx_are_retried_after_looking_the_order_up(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench()
    server.script(CREATE, Fault.http(502), Fault.http(503))
    approved = await b.place()
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.ACCEPTED]
    assert len(server.calls(CREATE)) == 3
    assert len(server.orders) == 1
    assert len(server.calls(REALTIME)) == 2  # before each retry: is it there already?


async def test_retryable_ret_codes_are_retried(server: FakeBybitHTTP, make_bench: Any) -> None:
    b = await make_bench()
    server.script(
        CREATE,
        Fault.retcode(10006, "Too many visits!"),
        Fault.retcode(10016, "Internal server error."),
        Fault.retcode(10002, "invalid request, please check your server timestamp"),
    )
    approved = await b.place()
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.ACCEPTED]
    assert len(server.calls(CREATE)) == 4
    assert len(server.orders) == 1


async def test_lost_requests_time_out_and_place_exactly_one_order(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench()
    server.script(CREATE, Fault.stall(STALL_S), Fault.stall(STALL_S))
    started = time.monotonic()
    approved = await b.place()
    assert time.monotonic() - started < 2 * TIMEOUT_S + 1.5
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.ACCEPTED]
    assert len(server.calls(CREATE)) == 3
    assert len(server.orders) == 1


async def test_a_timeout_after_accept_is_found_and_not_placed_again(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench()
    server.script(CREATE, Fault.stall_after(STALL_S))  # Bybit takes it; the answer never comes
    approved = await b.place()
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.ACCEPTED]
    assert len(server.calls(CREATE)) == 1
    assert len(server.orders) == 1
    accepted = b.of(approved.order_id)[-1]
    assert accepted.reason.startswith("confirmed: found by orderLinkId after ")
    assert "timed out" in accepted.reason
    assert b.venue.confirmed == 1


async def test_a_duplicate_link_id_on_a_retry_counts_as_accepted(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench()
    server.script(CREATE, Fault.stall_after(STALL_S))
    server.script(REALTIME, Fault.http(503))  # the lookup fails: try to place again
    approved = await b.place()
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.ACCEPTED]
    assert len(server.calls(CREATE)) == 2
    assert len(server.orders) == 1
    reason = b.of(approved.order_id)[-1].reason
    assert reason == "confirmed: OrderLinkedID is duplicate"


async def test_the_legacy_duplicate_message_under_10001_counts_as_accepted(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench()
    server.script(CREATE, Fault.retcode(10001, "OrderLinkedID is duplicate"))
    approved = await b.place()
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.ACCEPTED]
    assert len(server.calls(CREATE)) == 1


async def test_business_rejections_are_not_retried(server: FakeBybitHTTP, make_bench: Any) -> None:
    b = await make_bench()
    server.script(CREATE, Fault.retcode(110007, "Insufficient available balance"))
    approved = await b.place()
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.REJECTED]
    assert b.of(approved.order_id)[-1].reason == (
        "venue_rejected: Insufficient available balance (retCode 110007)"
    )
    assert len(server.calls(CREATE)) == 1
    assert b.venue.backoff_history == []
    assert server.orders == {}


async def test_bybit_parameter_errors_are_rejections_with_its_message(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench()
    server.script(CREATE, Fault.retcode(10001, "Qty invalid"))
    approved = await b.place()
    assert b.of(approved.order_id)[-1].reason == "venue_rejected: Qty invalid (retCode 10001)"
    assert len(server.calls(CREATE)) == 1


async def test_a_bad_signature_is_rejected_not_retried(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench(environ={"BYBIT_API_KEY": "test-key", "BYBIT_API_SECRET": "wrong"})
    approved = await b.place()
    reason = b.of(approved.order_id)[-1].reason
    assert reason.startswith("venue_rejected: error sign!")
    assert len(server.calls(CREATE)) == 1


async def test_exhausted_retries_reject_with_bounded_backoff(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench("execution.bybit.breaker_failures=100")
    server.script(CREATE, *[Fault.http(429)] * 4)
    approved = await b.place()
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.REJECTED]
    assert b.of(approved.order_id)[-1].reason.startswith("venue_unavailable: bybit orders ")
    assert len(server.calls(CREATE)) == 4  # 1 + max_retries
    history = b.venue.backoff_history
    assert len(history) == 3
    assert all(0 <= d <= ceiling(b, n) for n, d in enumerate(history, 1))


async def test_backoff_is_full_jitter_under_a_doubling_ceiling(make_bench: Any) -> None:
    b = await make_bench(
        "execution.bybit.backoff_initial_s=0.0001", "execution.bybit.backoff_max_s=0.0008"
    )
    error = BybitError("x", transient=True)
    for attempt in range(1, 9):
        for _ in range(20):
            await b.venue._backoff(attempt, error)
            assert 0 <= b.venue.backoff_history[-1] <= ceiling(b, attempt)
    assert max(b.venue.backoff_history) <= 0.0008


async def test_a_rate_limit_reset_header_is_waited_out_within_the_cap(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench("execution.bybit.backoff_max_s=0.2")
    reset = {"X-Bapi-Limit-Reset-Timestamp": str(int(time.time() * 1000) + 120)}
    server.script(CREATE, Fault.retcode(10006, "Too many visits!", reset))
    await b.place()
    (delay,) = b.venue.backoff_history
    assert 0.05 <= delay <= 0.2
    far = {"X-Bapi-Limit-Reset-Timestamp": str(int(time.time() * 1000) + 60_000)}
    server.script(CREATE, Fault.http(429, far))
    await b.place()
    assert b.venue.backoff_history[-1] == 0.2  # never past backoff_max_s


# -- unconfirmed orders and poll() ----------------------------------------------------------


async def test_an_order_nobody_can_confirm_stays_submitted_until_poll(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench("execution.bybit.max_retries=1", "execution.bybit.breaker_failures=100")
    server.script(CREATE, Fault.stall_after(STALL_S), Fault.stall(STALL_S))
    server.script(REALTIME, *[Fault.http(503)] * 2)  # both lookups fail
    approved = await b.place()
    assert b.statuses(approved.order_id) == [S.SUBMITTED]
    assert [a.code for a in b.alerts] == ["bybit_order_unconfirmed"]
    assert await b.venue.poll() == 1
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.ACCEPTED]
    assert b.of(approved.order_id)[-1].reason == "confirmed: found by poll()"
    assert len(server.orders) == 1


async def test_poll_rejects_an_unconfirmed_order_bybit_does_not_have(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench("execution.bybit.max_retries=0")
    server.script(CREATE, Fault.stall(STALL_S))
    server.script(REALTIME, Fault.http(503))
    approved = await b.place()
    assert b.statuses(approved.order_id) == [S.SUBMITTED]
    await b.venue.poll()
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.REJECTED]
    assert b.of(approved.order_id)[-1].reason.startswith("venue_unavailable: ")


# A maker rebate makes cumExecFee fall (here below zero): the fill's fee is negative, booked.
@pytest.mark.parametrize("fee", ["0.0168", "-0.0168"], ids=["fee", "maker_rebate"])
async def test_poll_publishes_each_fill_once_and_positions_follow(
    server: FakeBybitHTTP, make_bench: Any, fee: str
) -> None:
    b = await make_bench()
    approved = await b.place(Side.BUY, "0.5")
    link = b.link(approved)
    assert await b.venue.poll() == 0
    server.fill(link, "0.2", "100", "0.011")
    assert await b.venue.poll() == 1
    server.fill(link, "0.3", "102", fee)
    assert await b.venue.poll() == 1
    assert await b.venue.poll() == 0
    part, full = b.of(approved.order_id)[2:]
    assert (part.status, part.last_fill_qty, part.last_fill_price) == (
        S.PARTIALLY_FILLED,
        D("0.2"),
        D(100),
    )
    assert (part.fee, part.filled_qty) == (D("0.011"), D("0.2"))
    assert (full.status, full.last_fill_qty, full.last_fill_price) == (S.FILLED, D("0.3"), D(102))
    assert (full.fee, full.filled_qty, full.avg_fill_price) == (D(fee), D("0.5"), D("101.2"))
    assert full.exchange_ts is not None
    ledger = b.positions.ledger
    assert ledger.position("BTCUSDT").qty == D("0.5")
    assert ledger.fees == D("0.011") + D(fee)
    assert ledger.cash == ledger.starting_cash - D("50.6") - ledger.fees
    assert len(b.updates) == 2


async def test_poll_reports_an_order_bybit_cancelled(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench()
    approved = await b.place(Side.BUY, "1", OrderType.LIMIT, limit="90")
    server.fill(b.link(approved), "0.4", "90", "0.01")
    server.set_status(b.link(approved), "Cancelled", cancelType="CancelByAdmin")
    await b.venue.poll()
    assert b.statuses(approved.order_id)[2:] == [S.PARTIALLY_FILLED, S.CANCELLED]
    assert b.of(approved.order_id)[-1].reason == "venue_cancelled: CancelByAdmin"
    assert len(server.calls(HISTORY)) == 0  # realtime by orderLinkId already had it


async def test_cancel_publishes_the_fills_before_it_then_cancelled(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench()
    approved = await b.place(Side.SELL, "1", OrderType.LIMIT, limit="110")
    server.fill(b.link(approved), "0.25", "110")
    assert await b.venue.cancel(approved.order_id) is True
    assert b.statuses(approved.order_id) == [
        S.SUBMITTED,
        S.ACCEPTED,
        S.PARTIALLY_FILLED,
        S.CANCELLED,
    ]
    assert b.of(approved.order_id)[-1].reason == "requested: cancelled on request"
    assert server.order(b.link(approved))["orderStatus"] == "Cancelled"
    assert await b.venue.cancel(approved.order_id) is False
    assert len(server.calls(CANCEL)) == 1


async def test_cancel_of_an_order_filled_meanwhile_reports_the_fill(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench()
    approved = await b.place(Side.BUY, "1", OrderType.LIMIT, limit="100")
    server.fill(b.link(approved), "1", "100")
    assert await b.venue.cancel(approved.order_id) is False
    assert b.statuses(approved.order_id)[-1] is S.FILLED


async def test_a_private_ws_order_record_feeds_fills(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench()
    approved = await b.place(Side.SELL, "1")
    record = private_sample("order")["data"][0]
    record.update(
        orderLinkId=b.link(approved),
        orderStatus="Filled",
        cumExecQty="1",
        cumExecValue="75",
        cumExecFee="0.358635",
        feeCurrency="",
        updatedTime="1672364262457",
    )
    assert b.venue.apply_order_update(record) is True
    fill = b.of(approved.order_id)[-1]
    assert (fill.status, fill.last_fill_qty, fill.last_fill_price) == (S.FILLED, D(1), D(75))
    assert (fill.fee, fill.exchange_ts) == (D("0.358635"), 1672364262457)
    assert b.venue.apply_order_update(record) is False  # finished and forgotten
    assert b.venue.apply_order_update({**record, "orderLinkId": "manual"}) is False


# -- queries -------------------------------------------------------------------------------


async def test_positions_wallet_and_open_orders(server: FakeBybitHTTP, make_bench: Any) -> None:
    b = await make_bench()
    server.positions = [
        {"symbol": "BTCUSDT", "side": "Sell", "size": "0.3", "avgPrice": "100",
         "markPrice": "99", "unrealisedPnl": "0.3"},
        {"symbol": "ETHUSDT", "side": "", "size": "0", "avgPrice": "0",
         "markPrice": "10", "unrealisedPnl": "0"},
    ]  # fmt: skip
    server.wallet = [
        {"accountType": "UNIFIED", "totalEquity": "1500",
         "coin": [{"coin": "USDT", "walletBalance": "1000.5", "equity": "1001.25"}]},
    ]  # fmt: skip
    (pos,) = await b.venue.positions()
    assert (pos.symbol, pos.qty, pos.avg_price, pos.mark_price) == ("BTCUSDT", D("-0.3"), 100, 99)
    wallet = await b.venue.wallet()
    assert (wallet.asset, wallet.cash, wallet.equity) == ("USDT", D("1000.5"), D("1001.25"))
    mine = await b.place(Side.BUY, "1", OrderType.LIMIT, limit="95")
    server.fill(b.link(mine), "0.5", "95")
    manual = dict(server.order(b.link(mine)), orderId="m-1", orderLinkId="", qty="2")
    server.orders["m-1"] = {**manual, "cumExecQty": "0", "cumExecValue": "0"}
    events = await b.venue.open_orders()
    by_id = {e.order_id: e for e in events}
    assert by_id[mine.order_id].status is S.PARTIALLY_FILLED
    assert by_id[mine.order_id].filled_qty == D("0.5")
    assert by_id["m-1"].qty == 2
    assert by_id["m-1"].order_type is OrderType.LIMIT
    assert b.statuses(mine.order_id) == [S.SUBMITTED, S.ACCEPTED]  # queries publish nothing


# -- circuit breakers ----------------------------------------------------------------------


async def test_the_breaker_opens_fails_fast_alerts_once_and_half_opens(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench(
        "execution.bybit.max_retries=0",
        "execution.bybit.breaker_failures=3",
        "execution.bybit.breaker_reset_s=0.3",
    )
    server.wallet = [{"coin": [{"coin": "USDT", "walletBalance": "5", "equity": "5"}]}]
    server.script(WALLET, *[Fault.http(503)] * 3)
    for _ in range(3):
        with pytest.raises(BybitError, match="HTTP 503"):
            await b.venue.wallet()
    assert b.venue.breaker(ACCOUNT).state == "open"
    assert [a.code for a in b.alerts] == ["bybit_breaker_open"]
    assert b.alerts[0].labels == {"venue": "bybit", "group": "account"}
    started = time.monotonic()
    for _ in range(5):
        with pytest.raises(CircuitOpenError, match="account circuit breaker is open"):
            await b.venue.wallet()
    assert time.monotonic() - started < 0.1  # fail fast
    assert len(server.calls(WALLET)) == 3  # nothing reached Bybit
    assert len(b.alerts) == 1
    assert b.venue.breaker(ORDERS).state == "closed"  # the other group is unaffected
    await asyncio.sleep(0.3)
    assert b.venue.breaker(ACCOUNT).state == "half_open"
    assert (await b.venue.wallet()).cash == 5
    assert b.venue.breaker(ACCOUNT).state == "closed"
    assert len(b.alerts) == 1


async def test_half_open_lets_one_call_through_and_a_failed_trial_reopens(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench(
        "execution.bybit.max_retries=0",
        "execution.bybit.breaker_failures=1",
        "execution.bybit.breaker_reset_s=0.2",
    )
    server.script(WALLET, Fault.http(500))
    with pytest.raises(BybitError):
        await b.venue.wallet()
    await asyncio.sleep(0.2)
    server.script(WALLET, Fault.http(500))
    with pytest.raises(BybitError, match="HTTP 500"):
        await b.venue.wallet()  # the trial fails: open again, no second alert
    assert b.venue.breaker(ACCOUNT).state == "open"
    with pytest.raises(CircuitOpenError):
        await b.venue.wallet()
    await asyncio.sleep(0.2)
    server.script(WALLET, Fault.delay(0.2))
    trial, other = await asyncio.gather(b.venue.wallet(), b.venue.wallet(), return_exceptions=True)
    assert not isinstance(trial, BaseException)
    assert isinstance(other, CircuitOpenError)  # only one call while half-open
    assert len(server.calls(WALLET)) == 3
    assert b.venue.breaker(ACCOUNT).state == "closed"
    assert [a.code for a in b.alerts] == ["bybit_breaker_open"]


async def test_an_open_orders_breaker_rejects_orders_without_sending_them(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench(
        "execution.bybit.max_retries=5",
        "execution.bybit.breaker_failures=2",
        "execution.bybit.breaker_reset_s=30",
    )
    server.script(CREATE, Fault.http(429), Fault.http(429))
    first = await b.place()
    assert b.of(first.order_id)[-1].reason.startswith("circuit_open: bybit orders circuit")
    assert len(server.calls(CREATE)) == 2  # the breaker stopped the retries
    second = await b.place()
    assert b.statuses(second.order_id) == [S.SUBMITTED, S.REJECTED]
    assert b.of(second.order_id)[-1].reason.startswith("circuit_open: ")
    assert len(server.calls(CREATE)) == 2
    assert [a.code for a in b.alerts] == ["bybit_breaker_open"]
    assert b.alerts[0].labels["group"] == "orders"


async def test_business_rejections_do_not_trip_the_breaker(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench("execution.bybit.breaker_failures=2")
    server.script(CREATE, *[Fault.retcode(110007, "Insufficient available balance")] * 3)
    for _ in range(3):
        await b.place()
    assert len(server.calls(CREATE)) == 3
    assert b.venue.breaker(ORDERS).state == "closed"
    assert b.alerts == []


# -- keys and start-up ---------------------------------------------------------------------


async def test_missing_keys_fail_start_up_naming_the_variable(server: FakeBybitHTTP) -> None:
    with pytest.raises(BybitConfigError, match="environment variable BYBIT_API_KEY "):
        Bench(server, environ={})
    with pytest.raises(BybitConfigError, match="environment variable BYBIT_API_SECRET "):
        Bench(server, environ={"BYBIT_API_KEY": "k", "BYBIT_API_SECRET": "  "})
    with pytest.raises(BybitConfigError, match="environment variable MY_KEY "):
        Bench(server, "execution.bybit.api_key_env=MY_KEY", environ=KEYS)


async def test_missing_keys_fail_the_runtime_but_only_for_the_bybit_venue(
    server: FakeBybitHTTP, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PLANES_TEST_NO_SUCH_KEY", raising=False)
    sets = [
        "plugins.entry_points=false",
        f"execution.bybit.base_url={server.url}",
        "execution.bybit.api_key_env=PLANES_TEST_NO_SUCH_KEY",
    ]
    builtin = [("planes.execution", "planes.execution.plugin")]
    paper = load_config(None, sets, environ={}, use_default_file=False)
    Runtime(paper, builtin=builtin).assemble()  # paper venue: keys are not needed
    bybit = load_config(None, [*sets, "execution.venue=bybit"], environ={}, use_default_file=False)
    with pytest.raises(RuntimeStartError, match="PLANES_TEST_NO_SUCH_KEY") as failure:
        Runtime(bybit, builtin=builtin).assemble()
    assert "bybit_execution" in str(failure.value)


async def test_another_venue_leaves_it_idle(server: FakeBybitHTTP) -> None:
    bench = Bench(server, "execution.venue=paper", environ={})
    await bench.venue.start()
    bench.approve()
    await bench.bus.drain(5)
    assert bench.orders == []
    assert server.requests == []
    await bench.venue.stop()


async def test_secrets_never_reach_the_logs(server: FakeBybitHTTP, make_bench: Any) -> None:
    secrets = {"BYBIT_API_KEY": "key-5f3a9c", "BYBIT_API_SECRET": "secret-77b1e0"}
    server.api_key, server.api_secret = secrets.values()
    with capture_logs() as logs:
        b = await make_bench("execution.bybit.max_retries=1", environ=secrets)
        server.script(CREATE, Fault.stall(STALL_S), Fault.http(503))
        server.script(REALTIME, Fault.http(503))
        await b.place()
        await b.place()
    assert logs
    text = repr(logs)
    assert "key-5f3a9c" not in text
    assert "secret-77b1e0" not in text


# -- the event loop ------------------------------------------------------------------------


async def test_a_slow_request_never_blocks_the_event_loop(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench("execution.bybit.timeout_s=2")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    server.script(CREATE, Fault.delay(0.4))
    started = time.monotonic()
    approved = await b.place()
    elapsed = time.monotonic() - started
    task.cancel()
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.ACCEPTED]
    assert elapsed >= 0.4
    assert ticks >= 15  # about 40 when nothing blocks; 0 if the request ran on the loop


async def test_submit_called_directly_reports_through_events(
    server: FakeBybitHTTP, make_bench: Any
) -> None:
    b = await make_bench()
    req = OrderRequest(
        order_id="o-1",
        client_order_id=client_order_id("direct", "o-1"),
        symbol="BTCUSDT",
        side=Side.SELL,
        order_type=OrderType.MARKET,
        qty=D("0.1"),
    )
    await b.venue.submit(req)
    assert b.statuses("o-1") == [S.SUBMITTED, S.ACCEPTED]
    assert server.order(req.client_order_id)["side"] == "Sell"


async def test_a_crash_while_placing_leaves_the_order_unconfirmed_not_raised(
    server: FakeBybitHTTP, make_bench: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = await make_bench()

    async def broken(*_: Any) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(b.venue, "_place", broken)
    approved = await b.place()
    assert b.statuses(approved.order_id) == [S.SUBMITTED]
    assert [a.code for a in b.alerts] == ["bybit_order_unconfirmed"]
    monkeypatch.undo()
    await b.venue.poll()  # Bybit never got it
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.REJECTED]
