"""The StatusReporter: counts from the bus since it started, last prices, positions, equity."""

from __future__ import annotations

from decimal import Decimal

from structlog.testing import capture_logs

from contracts.execution import PositionUpdate
from contracts.market import TickerEvent
from contracts.meta import EventMeta, Source
from contracts.rights import rights_for
from contracts.topics import MARKET_TICKER, PORTFOLIO_POSITION
from planes.bus import EventBus
from planes.clock import HistoricalClock
from planes.config import load_config
from planes.observability.status import StatusReporter
from planes.runtime import PlaneContext


def ticker(price: str) -> TickerEvent:
    return TickerEvent(EventMeta(Source.MARKET, 1), "x", "BTCUSDT", Decimal(price), 1)


def position(symbol: str, qty: str, equity: str) -> PositionUpdate:
    d = Decimal
    return PositionUpdate(
        EventMeta(Source.TRADING, 1), symbol, d(qty), d(1), d(0), d(0), d(1), d(equity), d(0)
    )


async def test_the_status_line_counts_from_the_start_and_shows_the_latest_values() -> None:
    bus = EventBus()
    config = load_config(
        None, ["observability.status_interval_s=0"], environ={}, use_default_file=False
    )
    ctx = PlaneContext(
        bus.handle("observability", *rights_for("observability")),
        HistoricalClock(),
        config,
        {},
        {},
        {},
        {},
    )
    reporter = StatusReporter(ctx)
    # Published as the planes do, through their handles (the bus counts what handles publish).
    market = bus.handle("market", *rights_for("market"))
    portfolio = bus.handle("execution", *rights_for("execution"))
    market.publish(MARKET_TICKER, ticker("1"))  # before the start: not counted, not seen
    await reporter.start()
    assert reporter.counts == {}
    for price in ("2", "3"):
        market.publish(MARKET_TICKER, ticker(price))
    portfolio.publish(PORTFOLIO_POSITION, position("BTCUSDT", "1", "100"))
    portfolio.publish(PORTFOLIO_POSITION, position("ETHUSDT", "-2", "99.5"))
    assert reporter.counts == {MARKET_TICKER.name: 2, PORTFOLIO_POSITION.name: 2}
    assert reporter.prices == {"BTCUSDT": "3"}
    assert reporter.positions == {"BTCUSDT": "1", "ETHUSDT": "-2"}
    assert reporter.equity == "99.5"
    with capture_logs() as logs:
        await reporter.stop()
    (line,) = [entry for entry in logs if entry["event"] == "runtime.status"]
    assert (line["kind"], line["events"], line["tickers"]) == ("final", 4, 2)
    assert (line["prices"], line["equity"]) == ({"BTCUSDT": "3"}, "99.5")
