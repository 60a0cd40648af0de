"""PositionManager: the portfolio's books, kept from fills and marked on closed bars.

It owns a ``Ledger`` started with ``portfolio.cash`` in ``portfolio.quote`` and publishes
``portfolio:position_update`` for a symbol

* after every fill on ``exec:order_event`` (whatever the venue), with the order event's
  correlation id, and
* on every closed ``market:kline`` of a symbol whose position is not zero (mark-to-market at the
  close).

A flat symbol costs one dict store per bar (its close is remembered as the mark, so the first
update after a fill is marked at the latest close) and publishes nothing. Fills are booked once
per order and cumulative filled quantity: an event whose ``filled_qty`` does not exceed what was
already booked for its order (a duplicate, a replay) is skipped. Fees are booked in the quote
currency, which is what the paper venue charges.
"""

from __future__ import annotations

from decimal import Decimal

from contracts.execution import OrderEvent, PositionUpdate
from contracts.market import KlineEvent
from contracts.ports import ComponentContext
from contracts.topics import EXEC_ORDER_EVENT, MARKET_KLINE, PORTFOLIO_POSITION
from planes.config import Config
from planes.execution.ledger import ZERO, Ledger


class PositionManager:
    """The portfolio; see the module docstring."""

    name = "position_manager"

    def __init__(self, ctx: ComponentContext) -> None:
        config = ctx.config
        if not isinstance(config, Config):
            msg = "the PositionManager needs planes.config.Config"
            raise TypeError(msg)
        self._bus = ctx.bus
        self.ledger = Ledger(config.portfolio.cash, config.portfolio.quote)
        self._open: set[str] = set()
        self._booked: dict[str, Decimal] = {}
        self.fills = 0
        self.updates = 0

    async def start(self) -> None:
        """Follow fills and closed bars."""
        self._bus.subscribe(EXEC_ORDER_EVENT, self._on_order)
        self._bus.subscribe(MARKET_KLINE, self._on_kline)

    async def stop(self) -> None:
        """Nothing to release: subscriptions end with the plane handle."""

    def _on_order(self, event: OrderEvent) -> None:
        qty, price = event.last_fill_qty, event.last_fill_price
        if not qty or price is None:
            return
        order_id = event.order_id
        if event.filled_qty <= self._booked.get(order_id, ZERO):
            return
        self._booked[order_id] = event.filled_qty
        symbol = event.symbol
        ts = event.exchange_ts if event.exchange_ts is not None else event.meta.ts
        self.ledger.fill(symbol, event.side, qty, price, event.fee, ts=ts, ref=order_id)
        self.fills += 1
        if self.ledger.position(symbol).qty:
            self._open.add(symbol)
        else:
            self._open.discard(symbol)
        self._publish(symbol, event.meta.correlation_id)

    def _on_kline(self, bar: KlineEvent) -> None:
        if not bar.closed:
            return
        symbol = bar.symbol
        self.ledger.mark(symbol, bar.close)
        if symbol in self._open:
            self._publish(symbol, bar.meta.correlation_id)

    def update(self, symbol: str, correlation_id: str | None = None) -> PositionUpdate:
        """The current ``PositionUpdate`` of ``symbol`` (not published)."""
        ledger = self.ledger
        pos, unrealized, equity = ledger.valuation(symbol)
        # Positional: symbol, qty, avg_price, realized, unrealized, mark, equity, cash.
        return PositionUpdate(
            self._bus.meta(correlation_id),
            symbol,
            pos.qty,
            pos.avg_price,
            pos.realized,
            unrealized,
            pos.mark,
            equity,
            ledger.cash,
        )

    def _publish(self, symbol: str, correlation_id: str | None) -> None:
        self.updates += 1
        self._bus.publish(PORTFOLIO_POSITION, self.update(symbol, correlation_id))
