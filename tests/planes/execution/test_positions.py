"""PositionManager: updates after fills and on closed bars while not flat, from one ledger."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import attrs
from hypothesis import given
from hypothesis import strategies as st

from contracts.enums import OrderStatus, OrderType, Side
from contracts.execution import OrderEvent, PositionUpdate
from contracts.rights import rights_for
from contracts.topics import EXEC_ORDER_EVENT
from tests.planes.execution.harness import Bench, D

SYMBOLS = ("BTCUSDT", "ETHUSDT")


async def bench(*sets: str) -> Bench:
    return await Bench(*sets).start()


async def test_nothing_is_published_per_bar_while_flat() -> None:
    b = await bench()
    for _ in range(5):
        b.bar(100, 101, 99, 100)
    assert b.updates == []
    assert b.positions.updates == 0


async def test_a_fill_publishes_the_position_marked_at_the_latest_close() -> None:
    b = await bench("execution.fee_bps_taker=10")
    b.bar(100, 100, 100, 100)
    b.approve(Side.BUY, 2, correlation_id="c-1")
    b.bar(100, 103, 99, 102)  # fills at the open, 100; the close, 102, is the mark
    (update,) = b.updates
    fee = D("0.2")
    assert update == PositionUpdate(
        update.meta,
        symbol="BTCUSDT",
        qty=D(2),
        avg_price=D(100),
        realized_pnl=D(0),
        unrealized_pnl=D(4),
        mark_price=D(102),
        equity=D(10_000) - fee + 4,
        cash=D(10_000) - 200 - fee,
    )
    assert update.meta.correlation_id == "c-1"
    assert update.meta.source.value == "trading"


async def test_closed_bars_mark_open_positions_until_flat() -> None:
    b = await bench("execution.fee_bps_taker=0")
    b.bar(100, 100, 100, 100)
    b.approve(Side.SELL, 1)
    b.bar(100, 100, 100, 100)  # fill: short 1 at 100
    b.bar(90, 90, 90, 90)  # mark
    b.bar(95, 95, 95, 95, closed=False)  # not a close: no mark
    b.bar(80, 80, 80, 80, symbol="ETHUSDT")  # another symbol, flat: nothing
    b.approve(Side.BUY, 1)
    b.bar(85, 85, 85, 85)  # mark, then the covering fill at 85
    b.bar(70, 70, 70, 70)  # flat again: nothing
    assert [(u.qty, u.mark_price, u.unrealized_pnl, u.realized_pnl) for u in b.updates] == [
        (D(-1), D(100), D(0), D(0)),
        (D(-1), D(90), D(10), D(0)),
        (D(-1), D(85), D(15), D(0)),
        (D(0), D(85), D(0), D(15)),
    ]
    assert b.updates[-1].equity == D(10_015)
    assert b.updates[-1].avg_price == 0


async def test_fills_from_any_venue_are_booked_once() -> None:
    b = await bench()
    source, rights = rights_for("execution")
    venue = b.bus.handle("execution", source, rights)
    event = OrderEvent(
        venue.meta("c-x"),
        order_id="o-1",
        client_order_id="pb-x",
        venue="bybit",
        symbol="ETHUSDT",
        side=Side.BUY,
        order_type=OrderType.MARKET,
        status=OrderStatus.PARTIALLY_FILLED,
        qty=D(3),
        filled_qty=D(1),
        last_fill_qty=D(1),
        last_fill_price=D(2000),
        fee=D("1.1"),
        fee_asset="USDT",
    )
    venue.publish(EXEC_ORDER_EVENT, event)
    venue.publish(EXEC_ORDER_EVENT, event)  # delivered twice
    done = attrs.evolve(
        event, status=OrderStatus.FILLED, filled_qty=D(3), last_fill_qty=D(2), fee=D("2.2")
    )
    venue.publish(EXEC_ORDER_EVENT, done)
    venue.publish(EXEC_ORDER_EVENT, attrs.evolve(event, status=OrderStatus.ACCEPTED))
    assert [u.qty for u in b.updates] == [D(1), D(3)]
    ledger = b.positions.ledger
    assert ledger.fees == D("3.3")
    assert ledger.cash == D(10_000) - 6000 - D("3.3")


@attrs.frozen
class Bar:
    symbol: str
    open: Decimal
    close: Decimal
    volume: Decimal


@attrs.frozen
class Order:
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType
    offset: Decimal
    reduce_only: bool


prices = st.integers(50, 150).map(Decimal)
bars = st.builds(Bar, st.sampled_from(SYMBOLS), prices, prices, st.integers(0, 8).map(Decimal))
orders = st.builds(
    Order,
    st.sampled_from(SYMBOLS),
    st.sampled_from(Side),
    st.integers(1, 30).map(lambda n: Decimal(n).scaleb(-1)),
    st.sampled_from(OrderType),
    st.integers(-5, 5).map(Decimal),
    st.sampled_from((False, False, False, True)),
)


def run(steps: list[Bar | Order]) -> Bench:
    b = Bench("execution.max_volume_share=0.5", "execution.slippage_bps=3")
    asyncio.run(b.start())
    for step in steps:
        if isinstance(step, Bar):
            high, low = max(step.open, step.close) + 2, min(step.open, step.close) - 2
            b.bar(step.open, high, low, step.close, step.volume, symbol=step.symbol)
        else:
            bars = b.bars.get(step.symbol)
            ref = bars[-1].close if bars else Decimal(100)
            level = str(ref + step.offset)
            b.approve(
                step.side,
                str(step.qty),
                step.order_type,
                limit=level if step.order_type is OrderType.LIMIT else None,
                stop=level if step.order_type is OrderType.STOP else None,
                symbol=step.symbol,
                reduce_only=step.reduce_only,
            )
    return b


@given(st.lists(st.one_of(bars, orders), min_size=6, max_size=40))
def test_every_update_agrees_with_the_ledger_and_the_venues_own_books(
    steps: list[Bar | Order],
) -> None:
    b = run(steps)
    ledger = b.positions.ledger
    latest: dict[str, PositionUpdate] = {}
    for update in b.updates:
        latest[update.symbol] = update
        value = sum((u.qty * u.mark_price for u in latest.values()), Decimal(0))
        assert update.equity == update.cash + value
    if b.updates:
        assert b.updates[-1].equity == ledger.equity()
        assert b.updates[-1].cash == ledger.cash
    start = D(10_000)
    assert ledger.equity() - start == ledger.realized + ledger.unrealized() - ledger.fees
    fills = b.fills()
    assert ledger.fees == sum((f.fee for f in fills), Decimal(0))
    assert all(f.fee >= 0 for f in b.orders)
    # The venue keeps its own books from the same fills: they agree with the portfolio's.
    venue = b.paper.book
    assert venue.cash == ledger.cash
    for symbol in SYMBOLS:
        assert venue.position(symbol).qty == ledger.position(symbol).qty
        assert venue.position(symbol).cost == ledger.position(symbol).cost
    # Fills never exceed an order's quantity, and a filled order's fills add up to it.
    for order_id in {f.order_id for f in fills}:
        events = b.of(order_id)
        total = sum((e.last_fill_qty or 0 for e in events), Decimal(0))
        assert total == events[-1].filled_qty <= events[-1].qty
        if events[-1].status is OrderStatus.FILLED:
            assert total == events[-1].qty
