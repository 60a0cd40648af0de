"""The RiskManager beside the real paper venue and PositionManager on one bus.

What only shows with the venue's own books: a spot buy that pays its fee in the base coin holds
less than it bought, and a halted reduction must never open the other side.
"""

from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal

from contracts.control import ControlState
from contracts.enums import Lifecycle, OrderStatus, Side
from contracts.execution import OrderEvent
from contracts.market import KlineEvent
from contracts.rights import rights_for
from contracts.risk import ApprovedIntent, RejectedIntent
from contracts.strategy import Intent
from contracts.topics import (
    CONTROL_STATE,
    EXEC_ORDER_EVENT,
    MARKET_KLINE,
    RISK_APPROVED,
    RISK_REJECTED,
    STRATEGY_INTENT,
)
from planes.bus import EventBus
from planes.clock import HistoricalClock
from planes.config import load_config
from planes.execution.paper import PaperExecution
from planes.execution.positions import PositionManager
from planes.risk.manager import RiskManager
from planes.runtime import PlaneContext

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
BAR_MS = 60_000


class Desk:
    """Risk, paper venue and portfolio on one bus under the historical clock."""

    def __init__(self, *sets: str) -> None:
        config = load_config(
            None, ['market.symbols=["BTCUSDT"]', *sets], environ={}, use_default_file=False
        )
        self.clock = HistoricalClock(T0)
        self.bus = EventBus(now_ms=self.clock.now_ms)

        def ctx(plane: str) -> PlaneContext:
            handle = self.bus.handle(plane, *rights_for(plane))
            return PlaneContext(handle, self.clock, config, {}, {}, {}, {})

        self.risk = RiskManager(ctx("risk"))
        self.paper = PaperExecution(ctx("execution"))
        self.portfolio = PositionManager(ctx("execution"))
        for component in (self.risk, self.paper, self.portfolio):
            asyncio.run(component.start())
        self.market = self.bus.handle("market", *rights_for("market"))
        self.strategy = self.bus.handle("strategy", *rights_for("strategy"))
        control = self.bus.handle("control", *rights_for("control"))
        control.publish(
            CONTROL_STATE, ControlState(control.meta(), Lifecycle.RUNNING, paused=False)
        )
        self.verdicts: list[ApprovedIntent | RejectedIntent] = []
        self.orders: list[OrderEvent] = []
        self.bus.subscribe(RISK_APPROVED, self.verdicts.append)
        self.bus.subscribe(RISK_REJECTED, self.verdicts.append)
        self.bus.subscribe(EXEC_ORDER_EVENT, self.orders.append)
        self._ids = itertools.count(1)
        self._next = T0

    def bar(self, o: int, h: int, low: int, c: int) -> None:
        start, self._next = self._next, self._next + BAR_MS
        self.clock.advance_to(start + BAR_MS - 1)
        d = Decimal
        bar = KlineEvent(
            self.market.meta(), "test", "BTCUSDT", "1", start, start + BAR_MS - 1,
            d(o), d(h), d(low), d(c), d(1000), True,
        )  # fmt: skip
        self.market.publish(MARKET_KLINE, bar)

    def intent(self, side: Side, size: str) -> ApprovedIntent | RejectedIntent:
        iid = f"i{next(self._ids)}"
        before = len(self.verdicts)
        intent = Intent(
            self.strategy.meta(f"c-{iid}"), intent_id=iid, scenario_id="sc", strategy="t",
            symbol="BTCUSDT", side=side, size_hint=Decimal(size),
        )  # fmt: skip
        self.strategy.publish(STRATEGY_INTENT, intent)
        (verdict,) = self.verdicts[before:]
        return verdict

    def positions(self) -> tuple[Decimal, Decimal, Decimal]:
        """The portfolio's, the venue's and the RiskManager's idea of the BTCUSDT position."""
        symbol = "BTCUSDT"
        return (
            self.portfolio.ledger.position(symbol).qty,
            self.paper.book.position(symbol).qty,
            self.risk.position(symbol),
        )


HELD = Decimal("0.99945")
"""A buy of 1 at 5.5 bps taker, the fee taken in BTC."""


def test_a_buy_paying_its_fee_in_the_base_coin_leaves_risk_the_position_actually_held() -> None:
    desk = Desk("execution.spot_buy_fee_in_base=true", "risk.default_max_position=5")
    desk.bar(100, 101, 99, 100)
    assert isinstance(desk.intent(Side.BUY, "1"), ApprovedIntent)
    desk.bar(100, 101, 99, 100)  # filled at this open
    assert desk.positions() == (HELD, HELD, HELD)
    desk.bar(100, 101, 99, 100)  # a mark: nothing left in flight
    assert desk.positions() == (HELD, HELD, HELD)


def test_a_halted_exit_larger_than_the_position_closes_it_and_never_opens_a_short() -> None:
    desk = Desk(
        "execution.spot_buy_fee_in_base=true",
        "risk.default_max_position=5",
        "risk.daily_loss_limit=5",
    )
    desk.bar(100, 101, 99, 100)
    desk.intent(Side.BUY, "1")
    desk.bar(100, 101, 99, 100)
    desk.bar(90, 91, 89, 90)  # a loss of about 10: the kill switch trips
    assert desk.risk.daily_halt
    exit_ = desk.intent(Side.SELL, "1")  # a plain sell: only its reducing part may pass
    assert isinstance(exit_, ApprovedIntent)
    assert exit_.intent.reduce_only  # approved as reduce-only, so the venue clips it too
    assert exit_.qty == HELD
    desk.bar(90, 91, 89, 90)
    assert desk.positions() == (0, 0, 0)
    assert desk.orders[-1].status is OrderStatus.FILLED
