"""A bench for the execution plane: its two components on a real bus, fed by hand.

``Bench`` publishes crafted closed bars (as the market plane) and approvals (as the risk plane)
and records what the execution plane publishes.
"""

from __future__ import annotations

import itertools
from decimal import Decimal

from contracts.enums import OrderStatus, OrderType, Side
from contracts.execution import OrderEvent, PositionUpdate
from contracts.market import KlineEvent
from contracts.rights import rights_for
from contracts.risk import ApprovedIntent
from contracts.strategy import Intent
from contracts.topics import (
    EXEC_ORDER_EVENT,
    MARKET_KLINE,
    PORTFOLIO_POSITION,
    RISK_APPROVED,
    TopicRegistry,
)
from planes.bus import EventBus, PlaneHandle
from planes.clock import HistoricalClock
from planes.config import load_config
from planes.execution.paper import PaperExecution
from planes.execution.positions import PositionManager
from planes.runtime import PlaneContext

BAR_MS = 60_000
SYMBOL = "BTCUSDT"


Num = str | int | Decimal


def D(value: Num) -> Decimal:  # noqa: N802 - reads like the literal it stands for
    return Decimal(value)


class Bench:
    """PaperExecution + PositionManager on one bus, the clock at the last bar's end."""

    def __init__(self, *sets: str) -> None:
        self.config = load_config(None, list(sets), environ={}, use_default_file=False)
        self.clock = HistoricalClock(0)
        self.bus = EventBus(TopicRegistry(), now_ms=self.clock.now_ms)
        self.paper = PaperExecution(self.ctx("execution"))
        self.positions = PositionManager(self.ctx("execution"))
        self.market = self._handle("market")
        self.risk = self._handle("risk")
        self.orders: list[OrderEvent] = []
        self.updates: list[PositionUpdate] = []
        self.bars: dict[str, list[KlineEvent]] = {}
        self._ids = itertools.count(1)
        self.bus.subscribe(EXEC_ORDER_EVENT, self.orders.append)
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

    async def start(self) -> Bench:
        await self.paper.start()
        await self.positions.start()
        return self

    def bar(
        self,
        open_: Num,
        high: Num,
        low: Num,
        close: Num,
        volume: Num = 1000,
        *,
        symbol: str = SYMBOL,
        interval: str = "1",
        closed: bool = True,
    ) -> KlineEvent:
        """Publish the next closed bar of ``symbol`` (one minute after its previous one)."""
        bars = self.bars.setdefault(symbol, [])
        start = bars[-1].start_ts + BAR_MS if bars else BAR_MS
        self.clock.advance_to(max(self.clock.now_ms(), start + BAR_MS))
        bar = KlineEvent(
            self.market.meta(),
            exchange="test",
            symbol=symbol,
            interval=interval,
            start_ts=start,
            end_ts=start + BAR_MS - 1,
            open=D(open_),
            high=D(high),
            low=D(low),
            close=D(close),
            volume=D(volume),
            closed=closed,
        )
        if closed:
            bars.append(bar)
        self.market.publish(MARKET_KLINE, bar)
        return bar

    def approve(
        self,
        side: Side,
        qty: str | int,
        order_type: OrderType = OrderType.MARKET,
        *,
        limit: str | None = None,
        stop: str | None = None,
        reduce_only: bool = False,
        symbol: str = SYMBOL,
        intent_id: str | None = None,
        scenario_id: str = "sc-1",
        correlation_id: str | None = None,
    ) -> ApprovedIntent:
        """Publish an approval as the RiskManager would (order id ``scenario:intent``)."""
        intent_id = intent_id or f"i-{next(self._ids)}"
        intent = Intent(
            self.risk.meta(correlation_id or f"corr-{intent_id}"),
            intent_id=intent_id,
            scenario_id=scenario_id,
            strategy="test",
            symbol=symbol,
            side=side,
            size_hint=D(qty),
            order_type=order_type,
            limit_price=None if limit is None else D(limit),
            stop_price=None if stop is None else D(stop),
            reduce_only=reduce_only,
        )
        approved = ApprovedIntent(
            self.risk.meta(intent.meta.correlation_id),
            intent,
            D(qty),
            f"{scenario_id}:{intent_id}",
        )
        self.risk.publish(RISK_APPROVED, approved)
        return approved

    def of(self, order_id: str) -> list[OrderEvent]:
        return [e for e in self.orders if e.order_id == order_id]

    def statuses(self, order_id: str) -> list[OrderStatus]:
        return [e.status for e in self.of(order_id)]

    def fills(self, order_id: str | None = None) -> list[OrderEvent]:
        return [
            e
            for e in self.orders
            if e.last_fill_qty and (order_id is None or e.order_id == order_id)
        ]
