"""The synthetic source: deterministic per seed and symbol, well-formed bars, a bounded stream."""

from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal
from typing import Any

import pytest

from contracts.market import (
    END_OF_DATA,
    KlineEvent,
    MarketDisconnected,
    MarketErrorEvent,
    TickerEvent,
)
from contracts.meta import Payload
from contracts.rights import rights_for
from contracts.topics import MARKET_TICKER, Topic
from planes.bus import EventBus
from planes.clock import HistoricalClock
from planes.config import SyntheticSection, load_config
from planes.market.synthetic import REGIMES, SymbolPath, SyntheticSource
from planes.runtime import PlaneContext, Runtime

BASE = (
    "runtime.mode=backtest",
    "observability.status_interval_s=0",
    "plugins.entry_points=false",
    "market.synthetic.bar_s=60",
    "market.synthetic.tick_ms=10000",  # six ticks per 60 s bar keeps the runs short
)

Events = list[tuple[str, Payload]]


async def run_backtest(*sets: str) -> Events:
    """Run a backtest runtime to its end of data and return every event it published."""
    config = load_config(None, [*BASE, *sets], environ={}, use_default_file=False)
    runtime = Runtime(config)
    runtime.assemble()
    events: Events = []

    def tap(topic: Topic[Any], payload: Payload) -> None:
        events.append((topic.name, payload))

    runtime.bus.subscribe_all(tap)
    await asyncio.wait_for(runtime.run(), 10)
    return events


def market_data(events: Events, symbol: str | None = None) -> list[Payload]:
    return [
        payload
        for name, payload in events
        if name in ("market:ticker", "market:kline")
        and (symbol is None or getattr(payload, "symbol", None) == symbol)
    ]


def klines(events: Events, symbol: str) -> list[KlineEvent]:
    return [p for p in market_data(events, symbol) if isinstance(p, KlineEvent)]


async def test_same_seed_same_tickers_and_klines() -> None:
    first = await run_backtest("market.synthetic.max_bars=20", "market.synthetic.seed=11")
    second = await run_backtest("market.synthetic.max_bars=20", "market.synthetic.seed=11")
    data = market_data(first)
    assert len(data) > 200
    assert data == market_data(second)  # equal payloads, meta (source, data-time ts) included


async def test_another_seed_gives_another_path() -> None:
    one = await run_backtest("market.synthetic.max_bars=5", "market.synthetic.seed=1")
    two = await run_backtest("market.synthetic.max_bars=5", "market.synthetic.seed=2")
    prices_one = [p.last_price for p in market_data(one) if isinstance(p, TickerEvent)]
    prices_two = [p.last_price for p in market_data(two) if isinstance(p, TickerEvent)]
    assert len(prices_one) == len(prices_two)
    assert prices_one != prices_two


async def test_a_symbols_path_does_not_depend_on_the_other_symbols() -> None:
    both = await run_backtest(
        "market.synthetic.max_bars=10", 'market.symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"]'
    )
    alone = await run_backtest("market.synthetic.max_bars=10", 'market.symbols=["ETHUSDT"]')
    eth = market_data(alone, "ETHUSDT")
    assert eth
    assert market_data(both, "ETHUSDT") == eth
    assert market_data(alone, "BTCUSDT") == []


async def test_klines_are_closed_aligned_and_consistent() -> None:
    bars = 12
    events = await run_backtest(f"market.synthetic.max_bars={bars}", "market.synthetic.bar_s=60")
    bar_ms = 60_000
    for symbol in ("BTCUSDT", "ETHUSDT"):
        series = klines(events, symbol)
        assert len(series) == bars
        for kline in series:
            assert kline.closed is True
            assert kline.exchange == "synthetic"
            assert kline.interval == "60s"
            assert kline.start_ts % bar_ms == 0
            assert kline.end_ts == kline.start_ts + bar_ms - 1
            for value in (kline.open, kline.high, kline.low, kline.close, kline.volume):
                assert isinstance(value, Decimal)
            assert kline.low <= min(kline.open, kline.close)
            assert max(kline.open, kline.close) <= kline.high
            assert kline.volume > 0
            assert kline.meta.ts > kline.end_ts  # published once the bar is over
        starts = [k.start_ts for k in series]
        assert starts == list(range(starts[0], starts[0] + bars * bar_ms, bar_ms))


async def test_tickers_are_full_and_consistent() -> None:
    events = await run_backtest("market.synthetic.max_bars=3")
    tickers = [p for p in market_data(events) if isinstance(p, TickerEvent)]
    assert {t.symbol for t in tickers} == {"BTCUSDT", "ETHUSDT"}
    for ticker in tickers:
        assert ticker.exchange_ts % 10_000 == 0
        assert ticker.meta.ts == ticker.exchange_ts  # stamped with data time
        assert ticker.bid_price is not None
        assert ticker.ask_price is not None
        assert ticker.bid_price <= ticker.last_price <= ticker.ask_price
        assert ticker.low_24h is not None
        assert ticker.high_24h is not None
        assert ticker.low_24h <= ticker.last_price <= ticker.high_24h
        assert isinstance(ticker.volume_24h, Decimal)
    first = {t.symbol: t.last_price for t in reversed(tickers)}  # the earliest one wins
    assert abs(first["BTCUSDT"] - 60_000) < 600  # starts near the configured start price
    assert abs(first["ETHUSDT"] - 3_000) < 30


async def test_exactly_max_bars_then_end_of_data() -> None:
    events = await run_backtest("market.synthetic.max_bars=4")
    ends = [
        i
        for i, (_, p) in enumerate(events)
        if isinstance(p, MarketDisconnected) and p.reason == END_OF_DATA
    ]
    assert len(ends) == 1
    end = ends[0]
    assert events[end][1].meta.source.value == "market"
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert len(klines(events, symbol)) == 4
    assert market_data(events[end:]) == []  # nothing streams after the end
    assert not any(isinstance(p, MarketDisconnected) for _, p in events[:end])


async def test_unsupported_channel_is_reported_and_the_rest_still_streams() -> None:
    events = await run_backtest(
        "market.synthetic.max_bars=2", 'market.channels=["tickers", "orderbook.50"]'
    )
    errors = [p for _, p in events if isinstance(p, MarketErrorEvent)]
    assert len(errors) == 1
    assert errors[0].code == "unsupported_channel"
    assert errors[0].topic == "orderbook.50"
    assert errors[0].source == "synthetic"
    assert [p for p in market_data(events) if isinstance(p, TickerEvent)]
    assert not [p for p in market_data(events) if isinstance(p, KlineEvent)]


def test_regimes_change_over_a_long_run() -> None:
    # Hourly bars keep the 24 h ticker window small (a one-minute one re-scans 1440 bars a bar).
    hour_ms = 3_600_000
    config = SyntheticSection(tick_ms=hour_ms, bar_s=3_600, regime_mean_bars=50)
    path = SymbolPath("BTCUSDT", 7, Decimal(60_000), config)
    seen = [path.regime]
    for i in range(5_001):
        path.step(i * hour_ms)  # one tick per bar: every step closes the bar before it
        seen.append(path.regime)
    assert path.bars_closed == 5_000
    switches = sum(1 for a, b in itertools.pairwise(seen) if a is not b)
    assert 40 <= switches <= 200  # about 5000 / 50
    assert {r.name for r in seen} == {r.name for r in REGIMES}
    assert path.price > 0


@pytest.mark.parametrize("tick_ms", [20])
async def test_paced_by_the_realtime_clock(tick_ms: int) -> None:
    config = load_config(
        None,
        [
            "runtime.mode=paper",
            "observability.status_interval_s=0",
            "plugins.entry_points=false",
            f"market.synthetic.tick_ms={tick_ms}",
            'market.symbols=["BTCUSDT"]',
        ],
        environ={},
        use_default_file=False,
    )
    runtime = Runtime(config)
    runtime.assemble()
    tickers: list[TickerEvent] = []
    runtime.bus.subscribe(MARKET_TICKER, tickers.append)
    await runtime.run(0.3)
    # Live pacing: about 15 ticks in 0.3 s, never the thousands a full-speed run would make.
    assert 1 <= len(tickers) <= 0.3 * 1000 / tick_ms + 3
    for ticker in tickers:
        assert ticker.exchange_ts % tick_ms == 0
        assert abs(ticker.meta.ts - ticker.exchange_ts) < 1_000  # wall time, not data time


def _generator_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "synthetic-source"]


async def test_source_alone_connects_and_disconnects_idempotently() -> None:
    config = load_config(None, BASE, environ={}, use_default_file=False)
    clock = HistoricalClock(start_ms=0)
    bus = EventBus(now_ms=clock.now_ms)
    handle = bus.handle("market", *rights_for("market"))
    ctx = PlaneContext(handle, clock, config, {}, {}, {}, {})
    source = SyntheticSource(ctx)
    tickers: list[TickerEvent] = []
    bus.subscribe(MARKET_TICKER, tickers.append)
    await source.subscribe(["BTCUSDT"], [])  # no channels: the configured ones
    assert source.channels == {"tickers", "kline"}
    await source.connect()
    await source.connect()
    assert len(_generator_tasks()) == 1
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(tickers) >= 3
    assert [t.exchange_ts for t in tickers] == [t.meta.ts for t in tickers]
    await source.disconnect()
    await source.disconnect()
    assert _generator_tasks() == []
    streamed = len(tickers)
    await asyncio.sleep(0)
    assert len(tickers) == streamed
