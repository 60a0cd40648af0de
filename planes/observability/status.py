"""StatusReporter: logs a status line with the event counts every ``status_interval_s``.

The counts are the bus's own (``published()``: every plane handle counts what it publishes) since
the reporter started, so it needs no handler called for every event.

The interval is wall time in every mode, so a backtest at full speed logs as calmly as a live run.

It keeps watching while the runtime is paused (monitoring never pauses), logs every alert and
every lifecycle change, and is throttled by design: one line per interval, never one per tick.
The line shows the trading flow too: intents, approvals, rejections by reason code, order events
by status, positions and equity.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal

import structlog

from contracts.control import ControlState
from contracts.execution import OrderEvent, PositionUpdate
from contracts.market import TickerEvent
from contracts.ports import ComponentContext
from contracts.risk import RejectedIntent
from contracts.system import Alert
from contracts.topics import (
    CONTROL_STATE,
    ERROR_EVENT,
    EXEC_ORDER_EVENT,
    MARKET_TICKER,
    OBSERVABILITY_ALERT,
    PORTFOLIO_POSITION,
    RISK_APPROVED,
    RISK_REJECTED,
    STRATEGY_INTENT,
)
from planes.config import Config

log = structlog.get_logger("planes.observability")


class StatusReporter:
    """See the module docstring."""

    name = "status"

    def __init__(self, ctx: ComponentContext) -> None:
        config = ctx.config
        if not isinstance(config, Config):
            msg = "the StatusReporter needs planes.config.Config"
            raise TypeError(msg)
        self._bus = ctx.bus
        self._interval = config.observability.status_interval_s
        self._counted_from: Mapping[str, int] = {}
        self._prices: dict[str, Decimal] = {}
        self.rejections: Counter[str] = Counter()
        self.orders: Counter[str] = Counter()
        self._positions: dict[str, PositionUpdate] = {}
        self._last_position: PositionUpdate | None = None
        self.state: ControlState | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe and start the periodic status line."""
        bus = self._bus
        self._counted_from = bus.published()
        bus.subscribe(MARKET_TICKER, self._on_ticker)
        bus.subscribe(CONTROL_STATE, self._on_state)
        bus.subscribe(OBSERVABILITY_ALERT, self._on_alert)
        bus.subscribe(RISK_REJECTED, self._on_rejected)
        bus.subscribe(EXEC_ORDER_EVENT, self._on_order)
        bus.subscribe(PORTFOLIO_POSITION, self._on_position)
        if self._interval > 0:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="status")

    async def stop(self) -> None:
        """Stop the status line and log a last one."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.report("final")

    @property
    def counts(self) -> Counter[str]:
        """Events per topic since the reporter started."""
        since = self._counted_from
        counts = Counter(
            {name: n - since.get(name, 0) for name, n in self._bus.published().items()}
        )
        return +counts  # drops topics with nothing new

    @property
    def prices(self) -> dict[str, str]:
        """The last ticker price per symbol."""
        return {symbol: str(price) for symbol, price in self._prices.items()}

    @property
    def positions(self) -> dict[str, str]:
        """The last position quantity per symbol."""
        return {symbol: str(update.qty) for symbol, update in self._positions.items()}

    @property
    def equity(self) -> str | None:
        """The equity of the last position update."""
        last = self._last_position
        return None if last is None else str(last.equity)

    def _on_ticker(self, ticker: TickerEvent) -> None:
        self._prices[ticker.symbol] = ticker.last_price

    def _on_state(self, state: ControlState) -> None:
        self.state = state

    def _on_rejected(self, rejected: RejectedIntent) -> None:
        self.rejections[rejected.reason_code] += 1

    def _on_order(self, order: OrderEvent) -> None:
        self.orders[order.status] += 1  # a StrEnum: equal to (and hashed as) its value

    def _on_position(self, update: PositionUpdate) -> None:
        # Kept as they come (formatted only when a line is logged): one update per bar.
        self._positions[update.symbol] = self._last_position = update

    def _on_alert(self, alert: Alert) -> None:
        log.warning(
            "observability.alert",
            severity=alert.severity.value,
            code=alert.code,
            message=alert.message,
            **dict(alert.labels),
        )

    async def _loop(self) -> None:
        last_total = 0
        while True:
            # Wall time on purpose: a backtest replays hours of data a second, and the
            # operator wants one line per interval of *their* time, not per data interval.
            await asyncio.sleep(self._interval)
            total = sum(self.counts.values())
            self.report("periodic", rate=(total - last_total) / self._interval)
            last_total = total

    def report(self, kind: str, rate: float | None = None) -> None:
        """Log one status line."""
        state = self.state
        counts = self.counts
        log.info(
            "runtime.status",
            kind=kind,
            lifecycle=state.lifecycle.value if state else None,
            paused=state.paused if state else None,
            events=sum(counts.values()),
            events_per_s=None if rate is None else round(rate, 1),
            tickers=counts.get(MARKET_TICKER.name, 0),
            errors=counts.get(ERROR_EVENT.name, 0),
            prices=dict(sorted(self.prices.items())),
            intents=counts.get(STRATEGY_INTENT.name, 0),
            approved=counts.get(RISK_APPROVED.name, 0),
            rejected=dict(sorted(self.rejections.items())),
            orders={str(status): n for status, n in sorted(self.orders.items())},
            positions=dict(sorted(self.positions.items())),
            equity=self.equity,
        )
