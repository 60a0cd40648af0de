"""PaperExecution on crafted bars: fill models, touch, stops, partial fills, fees, slippage,
reduce-only, the order lifecycle, and correlation ids."""

from __future__ import annotations

import re
from decimal import Decimal

import attrs
import pytest
from structlog.testing import capture_logs

from contracts.enums import OrderStatus, OrderType, Side
from contracts.market import TickerEvent
from contracts.topics import MARKET_KLINE, MARKET_TICKER
from planes.clock import RealtimeClock
from planes.execution import paper as paper_module
from planes.execution.adapter import OrderRequest, client_order_id
from planes.execution.paper import PaperExecution
from tests.planes.execution.harness import Bench, D

S = OrderStatus
FEES_OFF = ("execution.fee_bps_taker=0", "execution.fee_bps_maker=0")


async def bench(*sets: str) -> Bench:
    return await Bench(*sets).start()


# -- market orders -------------------------------------------------------------------------


async def test_next_open_fills_at_the_open_of_the_next_bar() -> None:
    b = await bench()
    b.bar(100, 101, 99, 100)
    approved = b.approve(Side.BUY, "0.5")
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.ACCEPTED]
    nxt = b.bar(102, 104, 101, 103)
    (fill,) = b.fills()
    assert fill.status is S.FILLED
    assert (fill.last_fill_qty, fill.last_fill_price) == (D("0.5"), D(102))
    assert (fill.filled_qty, fill.avg_fill_price, fill.qty) == (D("0.5"), D(102), D("0.5"))
    assert fill.exchange_ts == nxt.start_ts
    assert fill.fee == D("0.5") * D(102) * D("0.00055")  # taker 5.5 bps
    assert fill.fee_asset == "USDT"
    assert fill.venue == "paper"
    b.bar(90, 91, 89, 90)
    assert len(b.fills()) == 1  # filled once


async def test_close_fills_at_the_close_of_the_bar_the_order_arrived_on() -> None:
    b = await bench("execution.fill=close")
    arrival = b.bar(100, 101, 99, "100.5")
    approved = b.approve(Side.SELL, 2)
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.ACCEPTED, S.FILLED]
    (fill,) = b.fills()
    assert fill.last_fill_price == D("100.5")
    assert fill.exchange_ts == arrival.end_ts


async def test_close_without_a_bar_yet_waits_for_the_next_close() -> None:
    b = await bench("execution.fill=close")
    b.approve(Side.BUY, 1)
    assert b.fills() == []
    first = b.bar(100, 101, 99, 99)
    (fill,) = b.fills()
    assert (fill.last_fill_price, fill.exchange_ts) == (D(99), first.end_ts)


async def test_next_open_without_a_bar_yet_fills_at_the_first_bar() -> None:
    b = await bench()
    b.approve(Side.BUY, 1)
    b.bar(100, 101, 99, 99)
    assert [f.last_fill_price for f in b.fills()] == [D(100)]


async def test_bars_of_other_symbols_intervals_or_the_past_do_not_fill() -> None:
    b = await bench()
    b.bar(100, 101, 99, 100)
    b.approve(Side.BUY, 1)
    b.bar(50, 51, 49, 50, symbol="ETHUSDT")
    b.bar(70, 71, 69, 70, interval="5")  # not the symbol's interval
    b.bar(80, 81, 79, 80, closed=False)  # still forming
    assert b.fills() == []
    b.bar(101, 102, 100, 101)
    assert [f.last_fill_price for f in b.fills()] == [D(101)]


async def test_a_stale_bar_is_ignored() -> None:
    b = await bench()
    first = b.bar(100, 101, 99, 100)
    b.bar(100, 101, 99, 100)
    b.approve(Side.BUY, 1)
    b.market.publish(MARKET_KLINE, first)  # a replay of the first bar arrives late
    assert b.fills() == []


# -- limit and stop orders -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "limit", "bar", "price"),
    [
        (Side.BUY, "99", (100, 101, "98.5", 100), D(99)),  # touched inside the bar
        (Side.BUY, "99", (98, 99, 97, 98), D(98)),  # opens through the limit: the open
        (Side.BUY, "99", (99, 100, 99, 100), D(99)),  # touches exactly
        (Side.SELL, "101", (100, "101.5", 99, 100), D(101)),
        (Side.SELL, "101", (103, 104, 102, 103), D(103)),
    ],
)
async def test_limit_orders_fill_at_touch_with_the_maker_fee(
    side: Side, limit: str, bar: tuple[int | str, ...], price: Decimal
) -> None:
    b = await bench("execution.slippage_bps=50")  # limits never slip
    b.bar(100, 100, 100, 100)
    b.approve(side, 2, OrderType.LIMIT, limit=limit)
    b.bar(*bar)
    (fill,) = b.fills()
    assert fill.last_fill_price == price
    assert fill.fee == 2 * price * D("0.0002")  # maker 2 bps
    assert fill.price == D(limit)
    assert fill.order_type is OrderType.LIMIT


@pytest.mark.parametrize(
    ("side", "limit", "bar"),
    [(Side.BUY, "99", (100, 101, "99.01", 100)), (Side.SELL, "101", (100, "100.99", 99, 100))],
)
async def test_an_untouched_limit_keeps_working(
    side: Side, limit: str, bar: tuple[int | str, ...]
) -> None:
    b = await bench()
    b.bar(100, 100, 100, 100)
    approved = b.approve(side, 1, OrderType.LIMIT, limit=limit)
    for _ in range(3):
        b.bar(*bar)
    assert b.fills() == []
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.ACCEPTED]
    open_orders = await b.paper.open_orders()
    assert [o.order_id for o in open_orders] == [approved.order_id]
    b.bar(99, 102, 98, 100)
    assert b.statuses(approved.order_id)[-1] is S.FILLED


@pytest.mark.parametrize(
    ("side", "stop", "bar", "price"),
    [
        (Side.BUY, "102", (100, 103, 99, 101), D(102)),  # triggered inside the bar
        (Side.BUY, "102", (104, 105, 103, 104), D(104)),  # gaps through: the open
        (Side.SELL, "98", (100, 101, 97, 99), D(98)),
        (Side.SELL, "98", (95, 96, 94, 95), D(95)),
    ],
)
async def test_stop_orders_trigger_and_fill_at_the_stop_or_a_worse_open(
    side: Side, stop: str, bar: tuple[int | str, ...], price: Decimal
) -> None:
    b = await bench()
    b.bar(100, 100, 100, 100)
    b.approve(side, 1, OrderType.STOP, stop=stop)
    b.bar(100, "101.9", "98.1", 100)  # not triggered
    assert b.fills() == []
    b.bar(*bar)
    (fill,) = b.fills()
    assert fill.last_fill_price == price
    assert fill.fee == price * D("0.00055")  # taker


async def test_a_triggered_stop_fills_its_rest_like_a_market_order() -> None:
    b = await bench("execution.max_volume_share=0.5")
    b.bar(100, 100, 100, 100)
    b.approve(Side.BUY, 3, OrderType.STOP, stop="102")
    b.bar(100, 103, 99, 101, volume=2)  # triggers, fills 1 at the stop
    b.bar(95, 96, 94, 95, volume=2)  # below the stop: as a market order it still fills
    b.bar(97, 98, 96, 97, volume=4)
    assert [(f.last_fill_qty, f.last_fill_price) for f in b.fills()] == [
        (D(1), D(102)),
        (D(1), D(95)),
        (D(1), D(97)),
    ]
    assert [f.status for f in b.fills()] == [S.PARTIALLY_FILLED, S.PARTIALLY_FILLED, S.FILLED]


# -- partial fills, fees, slippage ---------------------------------------------------------


async def test_partial_fills_across_bars_up_to_the_volume_share() -> None:
    b = await bench("execution.max_volume_share=0.25", *FEES_OFF)
    b.bar(100, 100, 100, 100)
    approved = b.approve(Side.BUY, 5)
    b.bar(100, 101, 99, 100, volume=8)  # 2
    b.bar(110, 111, 109, 110, volume=0)  # nothing to trade against
    b.bar(104, 105, 103, 104, volume=8)  # 2
    b.bar(107, 108, 106, 107, volume=40)  # the last 1
    assert b.statuses(approved.order_id) == [
        S.SUBMITTED,
        S.ACCEPTED,
        S.PARTIALLY_FILLED,
        S.PARTIALLY_FILLED,
        S.FILLED,
    ]
    fills = b.fills()
    assert [f.last_fill_qty for f in fills] == [D(2), D(2), D(1)]
    assert [f.filled_qty for f in fills] == [D(2), D(4), D(5)]
    assert fills[-1].avg_fill_price == (2 * 100 + 2 * 104 + 107) / D(5)
    assert b.positions.ledger.position("BTCUSDT").qty == D(5)


async def test_the_default_share_caps_a_fill_at_the_bars_volume() -> None:
    b = await bench()
    b.bar(100, 100, 100, 100)
    b.approve(Side.BUY, 3)
    b.bar(100, 100, 100, 100, volume=2)
    b.bar(100, 100, 100, 100, volume=2)
    assert [f.last_fill_qty for f in b.fills()] == [D(2), D(1)]


@pytest.mark.parametrize(
    ("maker_bps", "limit_fee"), [("1", "0.0402"), ("-2.5", "-0.1005")], ids=["fee", "rebate"]
)
async def test_fees_are_taker_for_market_and_maker_for_limit_in_bps_of_notional(
    maker_bps: str, limit_fee: str
) -> None:
    b = await bench("execution.fee_bps_taker=10", f"execution.fee_bps_maker={maker_bps}")
    b.bar(200, 200, 200, 200)
    b.approve(Side.BUY, 2)
    b.approve(Side.SELL, 2, OrderType.LIMIT, limit="201")
    b.bar(200, 202, 199, 201)
    market, limit = b.fills()
    assert market.fee == D("0.4")  # 2 * 200 * 10 bps: a taker always pays
    assert limit.fee == D(limit_fee)  # 2 * 201 * the maker bps (negative: a rebate)
    ledger = b.positions.ledger
    assert ledger.fees == market.fee + limit.fee
    assert ledger.cash == D(10_000) - 400 - market.fee + 402 - limit.fee  # a rebate is cash in
    assert ledger.equity() == D(10_000) + 2 - ledger.fees
    assert b.paper.book.balances == ledger.balances  # the venue's own books agree


async def test_a_maker_rebate_on_a_spot_buy_is_paid_in_the_base_coin() -> None:
    b = await bench("execution.spot_buy_fee_in_base=true", "execution.fee_bps_maker=-1")
    b.bar(100, 100, 100, 100)
    b.approve(Side.BUY, 2, OrderType.LIMIT, limit="100")
    b.bar(100, 101, 99, 100)
    (buy,) = b.fills()
    assert (buy.fee, buy.fee_asset) == (D("-0.0002"), "BTC")
    assert b.positions.ledger.position("BTCUSDT").qty == D("2.0002")


@pytest.mark.parametrize(("side", "price"), [(Side.BUY, D("100.1")), (Side.SELL, D("99.9"))])
async def test_fixed_slippage_moves_the_price_against_the_trader(
    side: Side, price: Decimal
) -> None:
    b = await bench("execution.slippage_bps=10")
    b.bar(100, 100, 100, 100)
    b.approve(side, 1)
    b.bar(100, 101, 99, 100)
    (fill,) = b.fills()
    assert fill.last_fill_price == price
    assert fill.fee == price * D("0.00055")


async def test_volume_slippage_grows_with_the_share_of_the_bar_taken() -> None:
    b = await bench("execution.slippage=volume", "execution.slippage_bps=2")
    b.bar(100, 100, 100, 100)
    b.approve(Side.BUY, 1)  # 10 % of the bar: 20 bps
    b.approve(Side.SELL, "0.5")  # 5 %: 10 bps
    b.bar(100, 101, 99, 100, volume=10)
    assert [f.last_fill_price for f in b.fills()] == [D("100.2"), D("99.9")]


async def test_volume_slippage_rounds_against_the_trader() -> None:
    b = await bench("execution.slippage=volume", "execution.slippage_bps=1")
    b.bar(100, 100, 100, 100)
    b.approve(Side.BUY, 1)
    b.bar("100.01", 101, 99, 100, volume=3)  # 33.3.. bps of 100.01
    (fill,) = b.fills()
    assert fill.last_fill_price == D("100.343367")


async def test_a_sell_slips_at_most_to_the_smallest_price_step_and_is_booked() -> None:
    # 5 bps per 1 % of a bar of volume 10, selling 250 (the share allows 25 bars' volume):
    # 12,500 bps, a price of -25 unbounded. It fills at the smallest step above 0 instead.
    b = await bench(
        "execution.slippage=volume", "execution.slippage_bps=5", "execution.max_volume_share=25"
    )
    b.bar(100, 101, 99, 100, volume=10)
    sold = b.approve(Side.SELL, 250)
    b.bar(100, 101, 99, 100, volume=10)
    (fill,) = b.fills()
    assert (fill.status, fill.last_fill_qty) == (OrderStatus.FILLED, 250)
    assert fill.last_fill_price == D("0.0001")
    assert b.paper.book.position("BTCUSDT").qty == -250
    assert sold.order_id not in [e.order_id for e in await b.paper.open_orders()]


# -- reduce-only ---------------------------------------------------------------------------


async def test_reduce_only_is_rejected_when_it_would_open_or_add() -> None:
    b = await bench()
    b.bar(100, 100, 100, 100)
    flat = b.approve(Side.SELL, 1, reduce_only=True)
    assert b.statuses(flat.order_id) == [S.SUBMITTED, S.REJECTED]
    assert b.of(flat.order_id)[-1].reason.startswith("reduce_only: ")
    b.approve(Side.BUY, 1)
    b.bar(100, 100, 100, 100)
    adding = b.approve(Side.BUY, 1, reduce_only=True)
    assert b.statuses(adding.order_id) == [S.SUBMITTED, S.REJECTED]


async def test_reduce_only_is_clipped_to_the_position() -> None:
    b = await bench()
    b.bar(100, 100, 100, 100)
    b.approve(Side.BUY, "1.5")
    b.bar(100, 100, 100, 100)
    exit_ = b.approve(Side.SELL, 4, reduce_only=True)
    accepted = b.of(exit_.order_id)[1]
    assert accepted.status is S.ACCEPTED
    assert accepted.qty == D("1.5")
    assert accepted.reason == "reduce_only: qty clipped from 4 to 1.5"
    b.bar(100, 100, 100, 100)
    assert b.statuses(exit_.order_id)[-1] is S.FILLED
    assert b.positions.ledger.position("BTCUSDT").qty == 0
    assert (await b.paper.positions()) == []


async def test_reduce_only_is_cancelled_when_the_position_is_gone_at_fill_time() -> None:
    b = await bench()
    b.bar(100, 100, 100, 100)
    b.approve(Side.BUY, 1)
    b.bar(100, 100, 100, 100)
    b.approve(Side.SELL, 1)  # fills first on the next bar
    late = b.approve(Side.SELL, 1, reduce_only=True)
    b.bar(100, 100, 100, 100)
    assert b.statuses(late.order_id) == [S.SUBMITTED, S.ACCEPTED, S.CANCELLED]
    assert b.of(late.order_id)[-1].reason.startswith("reduce_only: ")
    assert b.positions.ledger.position("BTCUSDT").qty == 0


async def test_reduce_only_stops_at_flat_when_the_position_shrank_before_it_filled() -> None:
    b = await bench()
    b.bar(100, 100, 100, 100)
    b.approve(Side.BUY, 2)
    b.bar(100, 100, 100, 100)
    b.approve(Side.SELL, "1.5")  # accepted first, so it fills first
    reduce = b.approve(Side.SELL, 2, reduce_only=True)
    b.bar(100, 100, 100, 100)
    events = b.of(reduce.order_id)
    assert [e.status for e in events] == [
        S.SUBMITTED,
        S.ACCEPTED,
        S.PARTIALLY_FILLED,
        S.CANCELLED,
    ]
    assert events[2].last_fill_qty == D("0.5")
    assert events[3].reason.startswith("reduce_only: ")
    assert events[3].filled_qty == D("0.5")
    assert b.positions.ledger.position("BTCUSDT").qty == 0


# -- lifecycle, ids, correlation -----------------------------------------------------------


@pytest.mark.parametrize(
    ("order_type", "qty", "reason"),
    [
        (OrderType.LIMIT, "1", "missing_price: "),
        (OrderType.STOP, "1", "missing_price: "),
        (OrderType.MARKET, "0", "invalid_qty: "),
    ],
)
async def test_invalid_orders_are_rejected_with_a_reason_code(
    order_type: OrderType, qty: str, reason: str
) -> None:
    b = await bench()
    approved = b.approve(Side.BUY, qty, order_type)
    events = b.of(approved.order_id)
    assert [e.status for e in events] == [S.SUBMITTED, S.REJECTED]
    assert events[-1].reason.startswith(reason)
    b.bar(100, 100, 100, 100)
    assert b.fills() == []


async def test_events_carry_ids_and_the_intents_correlation_id() -> None:
    b = await bench("execution.max_volume_share=0.5")
    b.bar(100, 100, 100, 100)
    approved = b.approve(Side.BUY, 2, intent_id="i-42", scenario_id="sma", correlation_id="c-9")
    b.bar(100, 100, 100, 100, volume=2)
    b.bar(100, 100, 100, 100, volume=2)
    events = b.of("sma:i-42")
    assert [e.status for e in events] == [
        S.SUBMITTED,
        S.ACCEPTED,
        S.PARTIALLY_FILLED,
        S.FILLED,
    ]
    expected_client = client_order_id("sma", "i-42")
    assert re.fullmatch(r"pb-[0-9a-f]{33}", expected_client)
    for event in events:
        assert event.meta.correlation_id == "c-9"
        assert event.meta.source.value == "trading"
        assert event.client_order_id == expected_client
        assert (event.intent_id, event.scenario_id) == ("i-42", "sma")
        assert (event.symbol, event.side, event.qty) == ("BTCUSDT", Side.BUY, D(2))
    assert {u.meta.correlation_id for u in b.updates if u.meta.correlation_id} == {"c-9"}
    assert approved.order_id == "sma:i-42"


def test_client_order_ids_are_deterministic_and_distinct() -> None:
    assert client_order_id("a", "b") == client_order_id("a", "b")
    assert client_order_id("a", "b") != client_order_id("b", "a")
    assert client_order_id("a:b", "c") != client_order_id("a", "b:c")
    assert len(client_order_id("x" * 200, "y" * 200)) == 36


async def test_a_second_approval_of_the_same_intent_is_not_a_second_order() -> None:
    b = await bench()
    b.bar(100, 100, 100, 100)
    b.approve(Side.BUY, 1, intent_id="same")
    b.approve(Side.BUY, 1, intent_id="same")
    b.bar(100, 100, 100, 100)
    assert b.statuses("sc-1:same") == [S.SUBMITTED, S.ACCEPTED, S.FILLED]
    assert b.paper.duplicates == 1
    assert b.positions.ledger.position("BTCUSDT").qty == D(1)


async def test_cancel_open_orders_and_shutdown() -> None:
    b = await bench("execution.cancel_on_stop=true")
    b.bar(100, 100, 100, 100)
    one = b.approve(Side.BUY, 1, OrderType.LIMIT, limit="90")
    two = b.approve(Side.SELL, 1, OrderType.LIMIT, limit="110")
    assert [o.order_id for o in await b.paper.open_orders()] == [one.order_id, two.order_id]
    assert await b.paper.cancel(one.order_id) is True
    assert await b.paper.cancel(one.order_id) is False
    assert b.statuses(one.order_id)[-1] is S.CANCELLED
    assert b.of(one.order_id)[-1].reason.startswith("requested: ")
    b.bar(85, 86, 84, 85)  # would have filled the cancelled buy
    assert b.fills() == []
    await b.paper.stop()
    assert b.statuses(two.order_id) == [S.SUBMITTED, S.ACCEPTED, S.CANCELLED]
    assert b.of(two.order_id)[-1].reason.startswith("shutdown: ")
    assert await b.paper.open_orders() == []


async def test_a_graceful_stop_keeps_working_orders_by_default() -> None:
    b = await bench()
    b.bar(100, 100, 100, 100)
    one = b.approve(Side.BUY, 1, OrderType.LIMIT, limit="90")
    two = b.approve(Side.SELL, 1, OrderType.STOP, stop="95")
    before = b.paper.export_state()
    with capture_logs() as logs:
        await b.paper.stop()
    assert [e.status for e in b.orders] == [S.SUBMITTED, S.ACCEPTED] * 2  # no cancellation
    assert [o.order_id for o in await b.paper.open_orders()] == [one.order_id, two.order_id]
    assert b.paper.export_state() == before  # what the shutdown snapshot holds
    assert b.paper.cancelled == 0
    assert [(e["event"], e["working"]) for e in logs] == [("paper.orders_kept", 2)]


async def test_spot_buy_fees_in_the_base_coin() -> None:
    b = await bench("execution.spot_buy_fee_in_base=true", "execution.fee_bps_taker=10")
    b.bar(100, 100, 100, 100)
    b.approve(Side.BUY, 2)
    b.bar(100, 101, 99, 100)
    (buy,) = b.fills()
    assert (buy.fee, buy.fee_asset) == (D("0.002"), "BTC")  # 10 bps of the 2 BTC bought
    assert b.paper.book.position("BTCUSDT").qty == D("1.998")
    ledger = b.positions.ledger
    assert (ledger.position("BTCUSDT").qty, ledger.cash) == (D("1.998"), D(9_800))
    assert ledger.fees == D("0.2")  # 0.002 BTC at 100
    b.approve(Side.SELL, "1.998", OrderType.LIMIT, limit="110")  # maker fee: 2 bps, in USDT
    b.bar(110, 111, 109, 110)
    sell = b.fills()[-1]
    assert (sell.fee, sell.fee_asset) == (D("1.998") * 110 * D("0.0002"), "USDT")
    assert ledger.position("BTCUSDT").qty == 0
    assert ledger.equity() == D(10_000) + D("1.998") * 10 - D("0.2") - sell.fee
    assert b.paper.book.balances == ledger.balances  # the venue's own books agree


async def test_spot_buy_fees_stay_in_quote_for_a_symbol_without_the_quote_suffix() -> None:
    b = await bench("execution.spot_buy_fee_in_base=true", "execution.fee_bps_taker=10")
    b.bar(100, 100, 100, 100, symbol="BTCPERP")
    b.approve(Side.BUY, 1, symbol="BTCPERP")
    b.bar(100, 100, 100, 100, symbol="BTCPERP")
    (fill,) = b.fills()
    assert (fill.fee, fill.fee_asset) == (D("0.1"), "USDT")


async def test_submit_through_the_adapter_port() -> None:
    b = await bench()
    b.bar(100, 100, 100, 100)
    request = OrderRequest(
        order_id="manual-1",
        client_order_id=client_order_id("ops", "manual-1"),
        symbol="BTCUSDT",
        side=Side.SELL,
        order_type=OrderType.MARKET,
        qty=D(2),
    )
    await b.paper.submit(request)
    b.bar(120, 121, 119, 120)
    assert b.statuses("manual-1") == [S.SUBMITTED, S.ACCEPTED, S.FILLED]
    b.bar(110, 111, 109, 110)
    (position,) = await b.paper.positions()
    assert (position.qty, position.avg_price, position.mark_price) == (D(-2), D(120), D(110))
    assert position.unrealized_pnl == D(20)
    wallet = await b.paper.wallet()
    fee = 2 * D(120) * D("0.00055")
    assert wallet.asset == "USDT"
    assert wallet.cash == D(10_000) + 240 - fee
    assert wallet.equity == D(10_000) + 20 - fee


async def test_another_venue_leaves_the_paper_venue_idle() -> None:
    b = await bench("execution.venue=bybit")
    b.bar(100, 100, 100, 100)
    b.approve(Side.BUY, 1)
    b.bar(100, 100, 100, 100)
    assert b.orders == []
    assert b.paper.active is False


async def test_live_paper_marks_its_book_with_tickers() -> None:
    b = Bench()
    paper = PaperExecution(attrs.evolve(b.ctx("execution"), clock=RealtimeClock()))
    await paper.start()
    b.bar(100, 100, 100, 100)
    paper.place(OrderRequest("o-1", "pb-1", "BTCUSDT", Side.BUY, OrderType.MARKET, D(1)))
    b.bar(100, 100, 100, 100)
    assert (await paper.wallet()).equity == D(10_000) - D("0.055")
    ticker = TickerEvent(
        b.market.meta(), "test", "BTCUSDT", last_price=D(105), exchange_ts=b.clock.now_ms()
    )
    b.market.publish(MARKET_TICKER, ticker)
    (position,) = await paper.positions()
    assert (position.mark_price, position.unrealized_pnl) == (D(105), D(5))
    assert (await paper.wallet()).equity == D(10_005) - D("0.055")
    assert b.paper.book.position("BTCUSDT").mark == 0  # the backtest venue follows no tickers


async def test_the_duplicate_check_remembers_the_latest_client_ids_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Bounded, so the venue's snapshot does not grow with every order ever placed.
    monkeypatch.setattr(paper_module, "CLIENT_IDS_KEPT", 2)
    b = await bench()
    b.bar(100, 100, 100, 100)
    for intent in ("i-1", "i-2", "i-3"):
        b.approve(Side.BUY, 1, intent_id=intent)
    kept = b.paper.export_state()["client_order_ids"]
    assert kept == [client_order_id("sc-1", "i-2"), client_order_id("sc-1", "i-3")]  # oldest first
    b.approve(Side.BUY, 1, intent_id="i-3")  # still remembered: a duplicate
    assert b.paper.duplicates == 1
    restored = await bench()
    restored.paper.restore_state({**b.paper.export_state(), "client_order_ids": ["a", "b", "c"]})
    assert restored.paper.export_state()["client_order_ids"] == ["b", "c"]
