"""PositionManager: the portfolio's books, kept from fills and marked on closed bars.

It owns a ``Ledger`` started with ``portfolio.cash`` in ``portfolio.quote`` and publishes
``portfolio:position_update`` for a symbol

* after every fill on ``exec:order_event`` (whatever the venue), with the order event's
  correlation id, and
* on every closed ``market:kline`` of a symbol whose position is not zero (mark-to-market at the
  close).

A flat symbol costs one dict store per bar and publishes nothing: its close is remembered
outside the books, and a fill that opens a position from flat is marked at that latest close
(at the fill price when no close came since the start). Every other mark comes from a closed bar
of an open position and is published, so the books change only with a fill or a published mark.
Fills are booked once per order and cumulative filled quantity: an event whose ``filled_qty``
does not exceed what was already booked for its order (a duplicate, a replay) is skipped. The
booked quantities of the latest ``BOOKED_KEPT`` orders to fill are kept (the oldest go first), so
the state does not grow with the whole trading history; a fill repeated after that many other
orders filled would be booked again.

Fees are booked by the event's ``fee_asset`` (``planes.execution.ledger`` has the details): in
the quote currency (or empty: older journals) from cash; in the symbol's base asset (Bybit spot
buys) by reducing the quantity received, valued in quote at the fill price; in any other asset
(BNB, MNT, ...) not converted, but kept per asset in the ledger's ``unvalued_fees``. A negative
fee (a maker rebate) is booked the same way with its sign: cash, the position or the unvalued
total gains what a fee would take. The first
such fee per asset in a run is logged (``portfolio.unvalued_fee``) and raised as a warning
``observability:alert`` (code ``unvalued_fee``): the equity leaves it out.

Recovery (``contracts.ports.Stateful``, key ``execution.portfolio``): the state is the ledger's
export plus the quantity booked per order and the fill count. It is rebuilt from
``exec:order_event`` (booked exactly as live) and from its own ``portfolio:position_update``
(whose ``mark_price`` is the mark the books held, read from its ``PositionView``: the update
itself is not decoded), so no bar needs replaying. ``recovered()`` publishes the position of
every symbol the books hold, flat ones too, so the RiskManager and the strategies learn the open
positions, and every follower of ``portfolio:position_update`` (the Bybit venue's drift check,
the status line) the recovered cash and equity even when nothing is open; it books nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Final

import structlog

from contracts.enums import Severity
from contracts.execution import FeeKind, OrderEvent, PositionUpdate, PositionView
from contracts.market import KlineEvent
from contracts.ports import ComponentContext
from contracts.system import Alert
from contracts.topics import (
    EXEC_ORDER_EVENT,
    MARKET_KLINE,
    OBSERVABILITY_ALERT,
    PORTFOLIO_POSITION,
)
from planes.config import Config
from planes.execution.adapter import remember
from planes.execution.ledger import ZERO, Ledger

log = structlog.get_logger("planes.execution.positions")

STATE_KEY: Final = "execution.portfolio"
BOOKED_KEPT = 10_000
"""How many orders, the latest filled last, keep their booked quantity against a fill seen twice."""


class PositionManager:
    """The portfolio; see the module docstring."""

    name = "position_manager"
    state_key = STATE_KEY
    state_topics = frozenset((EXEC_ORDER_EVENT.name, PORTFOLIO_POSITION.name))
    replay_views: Mapping[str, type] = {PORTFOLIO_POSITION.name: PositionView}

    def __init__(self, ctx: ComponentContext) -> None:
        config = ctx.config
        if not isinstance(config, Config):
            msg = "the PositionManager needs planes.config.Config"
            raise TypeError(msg)
        self._bus = ctx.bus
        self.ledger = Ledger(config.portfolio.cash, config.portfolio.quote)
        self._open: set[str] = set()
        self._booked: dict[str, Decimal] = {}
        self._closes: dict[str, Decimal] = {}
        """The latest close of every symbol: market data, not state (never exported)."""
        self.fills = 0
        self.updates = 0
        self._unvalued_seen: set[str] = set()
        """Assets whose unvalued fees were already reported in this run."""

    async def start(self) -> None:
        """Follow fills and closed bars."""
        self._bus.subscribe(EXEC_ORDER_EVENT, self._on_order)
        self._bus.subscribe(MARKET_KLINE, self._on_kline)

    async def stop(self) -> None:
        """Nothing to release: subscriptions end with the plane handle."""

    def _on_order(self, event: OrderEvent) -> None:
        if self._book(event):
            self._publish(event.symbol, event.meta.correlation_id)
            if event.fee and event.fee_asset.upper() not in self._unvalued_seen:
                self._report_unvalued(event)

    def _book(self, event: OrderEvent) -> bool:
        """Book the fill ``event`` reports, once; True when it moved the books."""
        qty, price = event.last_fill_qty, event.last_fill_price
        if not qty or price is None:
            return False
        order_id = event.order_id
        if event.filled_qty <= self._booked.get(order_id, ZERO):
            return False
        symbol = event.symbol
        ledger = self.ledger
        if symbol not in self._open:
            ledger.mark(symbol, self._closes.get(symbol, price))
        ts = event.exchange_ts if event.exchange_ts is not None else event.meta.ts
        ledger.fill(
            symbol,
            event.side,
            qty,
            price,
            event.fee,
            fee_asset=event.fee_asset,
            ts=ts,
            ref=order_id,
        )
        remember(self._booked, order_id, event.filled_qty, BOOKED_KEPT)  # once the ledger took it
        self.fills += 1
        if ledger.position(symbol).qty:
            self._open.add(symbol)
        else:
            self._open.discard(symbol)
        return True

    def _report_unvalued(self, event: OrderEvent) -> None:
        """Log and alert the first fee of a run in an asset the ledger cannot value."""
        if self.ledger.fee_kind(event.symbol, event.fee_asset) is not FeeKind.OTHER:
            return
        asset = event.fee_asset.upper()
        self._unvalued_seen.add(asset)
        total = self.ledger.unvalued_fees[asset]
        log.warning(
            "portfolio.unvalued_fee",
            asset=asset,
            fee=str(event.fee),
            total=str(total),
            order_id=event.order_id,
        )
        paid = f"paid its fee of {event.fee}" if event.fee > 0 else f"got a rebate of {-event.fee}"
        message = (
            f"a fill of {event.symbol} ({event.order_id}) {paid} in {asset}, "
            f"which the {self.ledger.quote} books cannot value: kept apart (unvalued_fees "
            f"{asset} = {total}), left out of equity; reported once per asset and run"
        )
        bus = self._bus
        labels = {"asset": asset, "symbol": event.symbol}
        alert = Alert(
            bus.meta(event.meta.correlation_id), Severity.WARNING, "unvalued_fee", message, labels
        )
        bus.publish(OBSERVABILITY_ALERT, alert)

    def _on_kline(self, bar: KlineEvent) -> None:
        if not bar.closed:
            return
        symbol, close = bar.symbol, bar.close
        self._closes[symbol] = close
        if symbol in self._open:
            self.ledger.mark(symbol, close)
            self.updates += 1  # _publish, inlined: one update a bar while a position is open
            self._bus.publish(PORTFOLIO_POSITION, self.update(symbol, bar.meta.correlation_id))

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

    # -- Stateful ------------------------------------------------------------------------

    def export_state(self) -> dict[str, Any]:
        """The ledger, the quantity booked per order and the fill count (JSON-able)."""
        return {
            "ledger": self.ledger.export(),
            "booked": {order_id: str(qty) for order_id, qty in self._booked.items()},
            "fills": self.fills,
        }

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Replace the books with exported ones."""
        ledger = Ledger.restore(state["ledger"])
        booked = state["booked"]
        kept = list(booked)[-BOOKED_KEPT:]
        self._booked = {str(order_id): Decimal(str(booked[order_id])) for order_id in kept}
        self.fills = int(state["fills"])
        self.ledger = ledger
        self._open = {pos.symbol for pos in ledger.open_positions()}

    def replay_event(self, topic: str, payload: Any) -> None:
        """Book a journaled fill as ``exec:order_event`` would; take a journaled update's mark."""
        if topic == EXEC_ORDER_EVENT.name and isinstance(payload, OrderEvent):
            self._book(payload)
        elif topic == PORTFOLIO_POSITION.name and isinstance(payload, PositionUpdate):
            self.ledger.mark(payload.symbol, payload.mark_price)

    def replay_view(self, topic: str, view: Any, load: Callable[[], Any]) -> None:
        """Take a journaled update's mark from its view, as ``replay_event`` takes it."""
        if topic == PORTFOLIO_POSITION.name and isinstance(view, PositionView):
            self.ledger.mark(view.symbol, view.mark_price)

    def recovered(self) -> None:
        """Publish every position the books hold, flat ones too (an announcement: no booking).

        A flat one carries the recovered cash and equity: with nothing open, it is the only
        word of them a follower of the topic gets before the next fill.
        """
        for pos in list(self.ledger.positions()):
            self._publish(pos.symbol, None)
