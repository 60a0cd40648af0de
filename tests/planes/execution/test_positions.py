"""PositionManager: updates after fills and on closed bars while not flat, from one ledger."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from contracts.converter import CONVERTER
from contracts.enums import OrderStatus, OrderType, Side
from contracts.execution import OrderEvent, PositionUpdate
from contracts.rights import rights_for
from contracts.system import Alert
from contracts.topics import EXEC_ORDER_EVENT, OBSERVABILITY_ALERT
from planes.bus import PlaneHandle
from planes.execution import positions as positions_module
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


def venue_of(b: Bench) -> PlaneHandle:
    source, rights = rights_for("execution")
    return b.bus.handle("execution", source, rights)


def bybit_fill(
    venue: PlaneHandle,
    order_id: str,
    side: Side,
    qty: str,
    price: str,
    *,
    fee: str,
    fee_asset: str,
    symbol: str = "BTCUSDT",
) -> OrderEvent:
    """One whole fill of a market order, as the Bybit venue reports it."""
    return OrderEvent(
        venue.meta(f"c-{order_id}"),
        order_id=order_id,
        client_order_id=f"pb-{order_id}",
        venue="bybit",
        symbol=symbol,
        side=side,
        order_type=OrderType.MARKET,
        status=OrderStatus.FILLED,
        qty=D(qty),
        filled_qty=D(qty),
        last_fill_qty=D(qty),
        last_fill_price=D(price),
        fee=D(fee),
        fee_asset=fee_asset,
    )


async def test_a_spot_buy_fee_in_the_base_coin_shrinks_the_position() -> None:
    b = await bench()
    venue = venue_of(b)
    venue.publish(
        EXEC_ORDER_EVENT,
        bybit_fill(venue, "o-1", Side.BUY, "1", "100", fee="0.001", fee_asset="BTC"),
    )
    (update,) = b.updates
    assert (update.qty, update.avg_price, update.cash) == (D("0.999"), D(100), D(9_900))
    assert update.equity == D(10_000) - D("0.1")  # the fee: 0.001 BTC at 100
    assert b.positions.ledger.fees == D("0.1")
    sell = bybit_fill(venue, "o-2", Side.SELL, "0.999", "100", fee="0.0999", fee_asset="USDT")
    venue.publish(EXEC_ORDER_EVENT, sell)
    assert b.updates[-1].qty == 0
    assert b.updates[-1].equity == D(10_000) - D("0.1") - D("0.0999")


async def test_an_old_event_without_a_fee_asset_pays_in_quote() -> None:
    b = await bench()
    venue = venue_of(b)
    venue.publish(
        EXEC_ORDER_EVENT, bybit_fill(venue, "o-1", Side.BUY, "1", "100", fee="0.5", fee_asset="")
    )
    assert (b.updates[-1].qty, b.updates[-1].cash) == (D(1), D(10_000) - 100 - D("0.5"))


async def test_rebates_are_booked_with_their_sign_and_an_unvalued_one_is_alerted_as_such() -> None:
    b = await bench()
    alerts: list[Alert] = []
    b.bus.subscribe(OBSERVABILITY_ALERT, alerts.append)
    venue = venue_of(b)
    buy = bybit_fill(venue, "o-1", Side.BUY, "1", "100", fee="-0.02", fee_asset="USDT")
    venue.publish(EXEC_ORDER_EVENT, buy)
    assert b.updates[-1].cash == D(10_000) - 100 + D("0.02")
    sell = bybit_fill(venue, "o-2", Side.SELL, "1", "100", fee="-0.3", fee_asset="MNT")
    venue.publish(EXEC_ORDER_EVENT, sell)
    ledger = b.positions.ledger
    assert (ledger.fees, ledger.unvalued_fees) == (D("-0.02"), {"MNT": D("-0.3")})
    assert b.updates[-1].equity == D(10_000) + D("0.02")
    (alert,) = alerts
    assert "got a rebate of 0.3 in MNT" in alert.message


async def test_a_fee_in_another_coin_is_kept_apart_and_alerted_once_per_coin() -> None:
    b = await bench()
    alerts: list[Alert] = []
    b.bus.subscribe(OBSERVABILITY_ALERT, alerts.append)
    venue = venue_of(b)
    with capture_logs() as logs:
        for n, asset in enumerate(("BNB", "BNB", "MNT", "USDT", "BTC")):
            fill = bybit_fill(venue, f"o-{n}", Side.BUY, "1", "100", fee="0.01", fee_asset=asset)
            venue.publish(EXEC_ORDER_EVENT, fill)
    ledger = b.positions.ledger
    assert ledger.unvalued_fees == {"BNB": D("0.02"), "MNT": D("0.01")}
    assert ledger.fees == D("0.01") + D("1")  # the USDT fee, and 0.01 BTC at 100
    assert ledger.position("BTCUSDT").qty == D(5) - D("0.01")
    assert ledger.cash == D(10_000) - 500 - D("0.01")
    assert [(a.code, a.severity.value, a.labels["asset"]) for a in alerts] == [
        ("unvalued_fee", "warning", "BNB"),
        ("unvalued_fee", "warning", "MNT"),
    ]
    assert "left out of equity" in alerts[0].message
    assert alerts[0].meta.correlation_id == "c-o-0"
    warned = [e for e in logs if e["event"] == "portfolio.unvalued_fee"]
    assert [(e["asset"], e["total"]) for e in warned] == [("BNB", "0.01"), ("MNT", "0.01")]
    exported = b.positions.export_state()
    assert exported["ledger"]["unvalued_fees"] == {"BNB": "0.02", "MNT": "0.01"}
    # A restart rebuilds the same books from the snapshot, or from the journaled events alone.
    again = Bench()
    again.positions.restore_state(json.loads(json.dumps(exported)))
    assert again.positions.export_state() == exported
    replayed = Bench()
    for event in (e for e in b.orders if e.last_fill_qty):
        decoded = CONVERTER.loads(CONVERTER.dumps(event), OrderEvent)
        replayed.positions.replay_event(EXEC_ORDER_EVENT.name, decoded)
    assert replayed.positions.export_state() == exported


OLD_STATE = {
    "ledger": {
        "quote": "USDT",
        "starting_cash": "10000",
        "cash": "9799.9",
        "fees": "0.1",
        "realized": "0",
        "entries": 2,
        "balances": {"cash": "9799.9", "capital": "-10000", "asset:BTCUSDT": "200", "fees": "0.1"},
        "positions": {
            "BTCUSDT": {
                "qty": "2",
                "cost": "200",
                "avg_price": "100",
                "realized": "0",
                "fees": "0.1",
                "mark": "102",
            }
        },
    },
    "booked": {"sc-1:i-1": "2"},
    "fills": 1,
}
"""``execution.portfolio`` as a snapshot written before fee assets counted held it."""


async def test_a_snapshot_from_before_fee_assets_restores_and_books_on() -> None:
    b = await bench()
    b.positions.restore_state(OLD_STATE)
    assert b.positions.ledger.position("BTCUSDT").qty == 2
    venue = venue_of(b)
    venue.publish(
        EXEC_ORDER_EVENT,
        bybit_fill(venue, "o-9", Side.BUY, "1", "100", fee="0.001", fee_asset="BTC"),
    )
    assert b.positions.ledger.position("BTCUSDT").qty == D("2.999")
    assert b.positions.ledger.fees == D("0.2")
    state = b.positions.export_state()
    assert state["ledger"]["unvalued_fees"] == {}
    assert state["booked"] == {"sc-1:i-1": "2", "o-9": "1"}


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


def run(steps: list[Bar | Order], *sets: str) -> Bench:
    b = Bench("execution.max_volume_share=0.5", "execution.slippage_bps=3", *sets)
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


@given(st.lists(st.one_of(bars, orders), min_size=6, max_size=40), st.booleans())
def test_every_update_agrees_with_the_ledger_and_the_venues_own_books(
    steps: list[Bar | Order], base_fees: bool
) -> None:
    b = run(steps, f"execution.spot_buy_fee_in_base={str(base_fees).lower()}")
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
    # A buy's fee in the base coin is valued at its fill price; every other fee is in quote.
    values = [f.fee * (f.last_fill_price or 0) if f.fee_asset != "USDT" else f.fee for f in fills]
    assert ledger.fees == sum(values, Decimal(0))
    assert all(f.fee >= 0 for f in b.orders)
    bases = {f.fee_asset for f in fills if f.fee_asset != "USDT"}
    assert bases <= ({"BTC", "ETH"} if base_fees else set())
    assert all(f.side is Side.BUY for f in fills if f.fee_asset in bases)
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


async def test_booked_quantities_are_kept_for_the_latest_orders_to_fill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Bounded, so the portfolio's snapshot does not grow with every order ever filled.
    monkeypatch.setattr(positions_module, "BOOKED_KEPT", 2)
    b = await bench()
    venue = venue_of(b)
    for order_id in ("o-1", "o-2", "o-3"):
        venue.publish(
            EXEC_ORDER_EVENT,
            bybit_fill(venue, order_id, Side.BUY, "1", "100", fee="0", fee_asset=""),
        )
    assert list(b.positions.export_state()["booked"]) == ["o-2", "o-3"]
    again = bybit_fill(venue, "o-2", Side.BUY, "1", "100", fee="0", fee_asset="")
    venue.publish(EXEC_ORDER_EVENT, again)  # remembered: not booked twice
    assert b.positions.ledger.position("BTCUSDT").qty == 3
    state = b.positions.export_state()
    restored = await bench()
    restored.positions.restore_state({**state, "booked": {"a": "1", "b": "2", "c": "3"}})
    assert restored.positions.export_state()["booked"] == {"b": "2", "c": "3"}
