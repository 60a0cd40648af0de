"""A RiskManager on a bare EventBus, with the planes around it played by the test.

``Rig`` owns a historical clock the test advances, plane handles for control, market, strategy
and execution, and a small ledger that plays the executor and the portfolio: ``fill`` publishes
``exec:order_event`` and then the ``portfolio:position_update`` that reflects it, in the order
the real portfolio (which reacts to order events) produces them.
"""

from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal
from typing import Any

import attrs

from contracts.control import ControlState
from contracts.enums import Lifecycle, OrderStatus, OrderType, Side
from contracts.execution import OrderEvent, PositionUpdate
from contracts.market import KlineEvent, TickerEvent
from contracts.rights import rights_for
from contracts.risk import ApprovedIntent, RejectedIntent
from contracts.strategy import Intent
from contracts.system import Alert, ErrorEvent
from contracts.topics import (
    CONTROL_STATE,
    ERROR_EVENT,
    EXEC_ORDER_EVENT,
    MARKET_KLINE,
    MARKET_TICKER,
    OBSERVABILITY_ALERT,
    PORTFOLIO_POSITION,
    RISK_APPROVED,
    RISK_REJECTED,
    STRATEGY_INTENT,
)
from planes.bus import EventBus
from planes.clock import HistoricalClock
from planes.config import Config, load_config
from planes.risk.manager import RiskManager
from planes.runtime import PlaneContext

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DAY_MS = 86_400_000
BASE = ('market.symbols=["BTCUSDT", "ETHUSDT"]',)

Verdict = ApprovedIntent | RejectedIntent


class Rig:
    """The RiskManager under test and everything it listens to.

    ``sets`` are config overrides; a ``config`` already loaded replaces them (property tests
    that build many rigs load it once).
    """

    def __init__(
        self,
        *sets: str,
        start_ms: int = T0,
        running: bool = True,
        config: Config | None = None,
    ) -> None:
        self.config = config or load_config(
            None, [*BASE, *sets], environ={}, use_default_file=False
        )
        self.clock = HistoricalClock(start_ms)
        self.bus = EventBus(now_ms=self.clock.now_ms)
        handle = self.bus.handle("risk", *rights_for("risk"))
        self.risk = RiskManager(PlaneContext(handle, self.clock, self.config, {}, {}, {}, {}))
        asyncio.run(self.risk.start())
        self.control = self.bus.handle("control", *rights_for("control"))
        self.market = self.bus.handle("market", *rights_for("market"))
        self.strategy = self.bus.handle("strategy", *rights_for("strategy"))
        self.execution = self.bus.handle("execution", *rights_for("execution"))
        self.verdicts: list[Verdict] = []
        self.alerts: list[Alert] = []
        self.errors: list[ErrorEvent] = []
        self.bus.subscribe(RISK_APPROVED, self.verdicts.append)
        self.bus.subscribe(RISK_REJECTED, self.verdicts.append)
        self.bus.subscribe(OBSERVABILITY_ALERT, self.alerts.append)
        self.bus.subscribe(ERROR_EVENT, self.errors.append)
        self._ids = itertools.count(1)
        # The ledger of the played portfolio.
        self.cash = self.config.portfolio.cash
        self.qty: dict[str, Decimal] = {}
        self.avg: dict[str, Decimal] = {}
        self.realized: dict[str, Decimal] = {}
        self.prices: dict[str, Decimal] = {}
        self.filled: dict[str, Decimal] = {}
        if running:
            self.state(Lifecycle.RUNNING)

    # -- time, control, market ------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        self.clock.advance_to(self.clock.now_ms() + round(seconds * 1000))

    def state(self, lifecycle: Lifecycle, *, paused: bool = False) -> None:
        self.control.publish(
            CONTROL_STATE, ControlState(self.control.meta(), lifecycle, paused=paused)
        )

    def tick(self, symbol: str, price: Decimal | int | str) -> None:
        """A ticker stamped now; the played portfolio marks its position to it."""
        value = Decimal(price)
        self.prices[symbol] = value
        now = self.clock.now_ms()
        self.market.publish(
            MARKET_TICKER, TickerEvent(self.market.meta(), "test", symbol, value, now)
        )

    def kline(self, symbol: str, close: Decimal | int | str) -> None:
        value = Decimal(close)
        self.prices[symbol] = value
        now = self.clock.now_ms()
        bar = KlineEvent(
            self.market.meta(),
            "test",
            symbol,
            "1",
            now - 60_000,
            now - 1,
            value,
            value,
            value,
            value,
            Decimal(1),
            closed=True,
        )
        self.market.publish(MARKET_KLINE, bar)

    # -- strategy -------------------------------------------------------------------------

    def intent(
        self,
        side: Side,
        size: Decimal | int | str | None = None,
        *,
        symbol: str = "BTCUSDT",
        target: Decimal | str | None = None,
        reduce_only: bool = False,
        intent_id: str | None = None,
        scenario: str = "sc",
    ) -> Verdict:
        """Publish an intent and return its one verdict."""
        before = len(self.verdicts)
        iid = intent_id or f"i{next(self._ids)}"
        intent = Intent(
            self.strategy.meta(f"corr-{iid}"),
            intent_id=iid,
            scenario_id=scenario,
            strategy="test",
            symbol=symbol,
            side=side,
            size_hint=None if size is None else Decimal(size),
            target_exposure=None if target is None else Decimal(target),
            reduce_only=reduce_only,
        )
        self.strategy.publish(STRATEGY_INTENT, intent)
        new = self.verdicts[before:]
        assert len(new) == 1, f"intent {iid} got {len(new)} verdicts"
        judged = new[0].intent
        # A halt approves a reducing intent as reduce-only: the same intent, that flag set.
        assert judged is intent or judged == attrs.evolve(intent, reduce_only=True)
        return new[0]

    def buy(self, size: Decimal | int | str | None = None, **kw: Any) -> Verdict:
        return self.intent(Side.BUY, size, **kw)

    def sell(self, size: Decimal | int | str | None = None, **kw: Any) -> Verdict:
        return self.intent(Side.SELL, size, **kw)

    # -- execution and portfolio ------------------------------------------------------------

    def equity(self) -> Decimal:
        value = self.cash
        for symbol, qty in self.qty.items():
            value += qty * self.prices.get(symbol, self.avg.get(symbol, Decimal(0)))
        return value

    def order_event(
        self,
        approved: ApprovedIntent,
        status: OrderStatus,
        *,
        fill: Decimal | None = None,
        price: Decimal | None = None,
    ) -> None:
        intent = approved.intent
        filled = self.filled.get(approved.order_id, Decimal(0)) + (fill or 0)
        self.filled[approved.order_id] = filled
        event = OrderEvent(
            self.execution.meta(intent.meta.correlation_id),
            order_id=f"venue-{approved.order_id}",
            client_order_id=approved.order_id,
            venue="test",
            symbol=intent.symbol,
            side=intent.side,
            order_type=OrderType.MARKET,
            status=status,
            qty=approved.qty,
            filled_qty=filled,
            last_fill_qty=fill,
            last_fill_price=price,
            intent_id=intent.intent_id,
            scenario_id=intent.scenario_id,
        )
        self.execution.publish(EXEC_ORDER_EVENT, event)

    def fill(
        self,
        approved: ApprovedIntent,
        qty: Decimal | int | str | None = None,
        price: Decimal | int | str | None = None,
    ) -> None:
        """Fill ``qty`` (default: the rest) of an approved order, then publish the position."""
        symbol = approved.intent.symbol
        done = self.filled.get(approved.order_id, Decimal(0))
        amount = approved.qty - done if qty is None else Decimal(qty)
        at = self.prices[symbol] if price is None else Decimal(price)
        status = (
            OrderStatus.FILLED if done + amount >= approved.qty else OrderStatus.PARTIALLY_FILLED
        )
        self.order_event(approved, status, fill=amount, price=at)
        signed = amount if approved.intent.side is Side.BUY else -amount
        self.trade(symbol, signed, at)

    def trade(self, symbol: str, signed: Decimal, price: Decimal) -> None:
        """Book a fill of ``signed`` quantity in the played ledger and publish the position."""
        old = self.qty.get(symbol, Decimal(0))
        avg = self.avg.get(symbol, Decimal(0))
        new = old + signed
        self.cash -= signed * price
        if old and (old > 0) is not (signed > 0):  # reducing (maybe flipping)
            closed = min(abs(signed), abs(old))
            pnl = (price - avg) * closed if old > 0 else (avg - price) * closed
            self.realized[symbol] = self.realized.get(symbol, Decimal(0)) + pnl
            if new and (new > 0) is not (old > 0):
                avg = price
        elif new:
            avg = (avg * old + price * signed) / new
        self.qty[symbol] = new
        self.avg[symbol] = avg if new else Decimal(0)
        self.prices.setdefault(symbol, price)
        self.position(symbol)

    def position(self, symbol: str, *, equity: Decimal | int | str | None = None) -> None:
        """Publish the played portfolio's position of ``symbol`` (``equity`` overrides)."""
        qty = self.qty.get(symbol, Decimal(0))
        avg = self.avg.get(symbol, Decimal(0))
        mark = self.prices.get(symbol, avg)
        update = PositionUpdate(
            self.execution.meta(),
            symbol=symbol,
            qty=qty,
            avg_price=avg,
            realized_pnl=self.realized.get(symbol, Decimal(0)),
            unrealized_pnl=(mark - avg) * qty,
            mark_price=mark,
            equity=self.equity() if equity is None else Decimal(equity),
            cash=self.cash,
        )
        self.execution.publish(PORTFOLIO_POSITION, update)

    def hold(self, symbol: str, qty: Decimal | int | str, price: Decimal | int | str) -> None:
        """Start from a position (as if recovered): mark data fresh and publish it."""
        self.tick(symbol, price)
        self.trade(symbol, Decimal(qty), Decimal(price))
