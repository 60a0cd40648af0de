"""A deterministic synthetic market: seeded price paths whose regimes change drift and volatility.

Each symbol follows a geometric Brownian motion with its own ``random.Random`` seeded from
``(market.synthetic.seed, symbol)``, so a symbol's path does not depend on which other symbols
are streamed. Every bar the symbol may switch regime (mean regime length
``regime_mean_bars``). Ticks come every ``tick_ms`` of clock time; bars of ``bar_s`` seconds are
aligned to the epoch like an exchange's and published closed at the first tick past their end.

The source paces itself with the runtime clock: under the real-time clock it streams live, under
the historical clock it runs at full speed. ``max_bars`` bounds the stream; the end is announced
as ``market:disconnected`` with reason ``end_of_data``.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from collections.abc import Sequence
from decimal import Decimal

import attrs
import structlog

from contracts.market import (
    END_OF_DATA,
    KlineEvent,
    MarketDisconnected,
    MarketErrorEvent,
    TickerEvent,
)
from contracts.meta import EventMeta
from contracts.ports import ComponentContext
from contracts.topics import MARKET_DISCONNECTED, MARKET_ERROR, MARKET_KLINE, MARKET_TICKER
from planes.config import Config, SyntheticSection
from planes.tasks import cancel_and_wait

log = structlog.get_logger("planes.market.synthetic")

EXCHANGE = "synthetic"
CHANNELS = frozenset({"tickers", "kline"})
_MS_PER_YEAR = 365 * 24 * 3600 * 1000
_DAY_MS = 24 * 3600 * 1000
_DEFAULT_START = Decimal(100)


@attrs.frozen
class Regime:
    """Annualized drift and volatility of a market phase."""

    name: str
    drift: float
    volatility: float


REGIMES: tuple[Regime, ...] = (
    Regime("bull", 0.9, 0.45),
    Regime("bear", -0.9, 0.60),
    Regime("range", 0.0, 0.25),
    Regime("storm", 0.0, 1.30),
)


def _price_decimals(price: float) -> int:
    return max(2, min(8, 6 - math.floor(math.log10(max(price, 1e-8)))))


@attrs.define
class _Bar:
    start: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal = Decimal(0)
    turnover: Decimal = Decimal(0)


class SymbolPath:
    """The price path of one symbol: call ``step(ts)`` once per tick."""

    def __init__(self, symbol: str, seed: int, start_price: Decimal, config: SyntheticSection):
        self.symbol = symbol
        self.rng = random.Random(f"{seed}:{symbol}")  # noqa: S311 - simulation, not crypto
        self.price = float(start_price)
        self.regime = self.rng.choice(REGIMES)
        self.bar: _Bar | None = None
        self.bars_closed = 0
        # The closed bars of the last 24 h, with running sums and monotonic deques for the
        # rolling high and low, so closing a bar is O(1) amortized, not O(bars per day).
        self.history: deque[_Bar] = deque()
        self._highs: deque[_Bar] = deque()
        self._lows: deque[_Bar] = deque()
        self._hist_volume = Decimal(0)
        self._hist_turnover = Decimal(0)
        self._config = config
        self._bar_ms = config.bar_s * 1000
        self._dt = config.tick_ms / _MS_PER_YEAR
        self._half_spread = config.spread_bps / 20_000

    def step(self, ts: int) -> tuple[_Bar | None, Decimal, Decimal]:
        """Advance one tick at ``ts``; return the bar this tick closed (if any), price, qty."""
        rng = self.rng
        sigma = self.regime.volatility
        shock = (self.regime.drift - sigma * sigma / 2) * self._dt
        shock += sigma * math.sqrt(self._dt) * rng.gauss(0.0, 1.0)
        self.price *= math.exp(shock)
        price = self._round(self.price)
        qty = Decimal(f"{rng.expovariate(self.price / 500.0):.4f}")
        closed: _Bar | None = None
        bar_start = ts - ts % self._bar_ms
        bar = self.bar
        if bar is not None and bar.start != bar_start:
            closed = bar
            self._close(bar)
            bar = None
        if bar is None:
            bar = self.bar = _Bar(bar_start, price, price, price, price)
        bar.high = max(bar.high, price)
        bar.low = min(bar.low, price)
        bar.close = price
        bar.volume += qty
        bar.turnover += (qty * price).quantize(Decimal("0.0001"))
        return closed, price, qty

    def _round(self, price: float) -> Decimal:
        return Decimal(f"{price:.{_price_decimals(price)}f}")

    def _close(self, bar: _Bar) -> None:
        self.bars_closed += 1
        history, highs, lows = self.history, self._highs, self._lows
        history.append(bar)
        self._hist_volume += bar.volume
        self._hist_turnover += bar.turnover
        while highs and highs[-1].high <= bar.high:
            highs.pop()
        highs.append(bar)
        while lows and lows[-1].low >= bar.low:
            lows.pop()
        lows.append(bar)
        horizon = bar.start - _DAY_MS
        while history[0].start <= horizon:
            old = history.popleft()
            self._hist_volume -= old.volume
            self._hist_turnover -= old.turnover
        while highs[0].start <= horizon:
            highs.popleft()
        while lows[0].start <= horizon:
            lows.popleft()
        if self.rng.random() < 1.0 / self._config.regime_mean_bars:
            self.regime = self.rng.choice([r for r in REGIMES if r is not self.regime])

    def ticker(self, meta: EventMeta, ts: int, price: Decimal) -> TickerEvent:
        """The full ticker for the current state."""
        bar = self.bar
        assert bar is not None  # noqa: S101 - step() ran first
        high = max(self._highs[0].high, bar.high) if self.history else bar.high
        low = min(self._lows[0].low, bar.low) if self.history else bar.low
        open_24h = self.history[0].open if self.history else bar.open
        spread = Decimal(f"{self.price * self._half_spread:.{_price_decimals(self.price)}f}")
        return TickerEvent(
            meta,
            exchange=EXCHANGE,
            symbol=self.symbol,
            last_price=price,
            exchange_ts=ts,
            bid_price=price - spread,
            ask_price=price + spread,
            bid_size=Decimal(f"{self.rng.expovariate(self.price / 2000.0):.4f}"),
            ask_size=Decimal(f"{self.rng.expovariate(self.price / 2000.0):.4f}"),
            high_24h=high,
            low_24h=low,
            volume_24h=self._hist_volume + bar.volume,
            turnover_24h=self._hist_turnover + bar.turnover,
            price_24h_pcnt=((price - open_24h) / open_24h).quantize(Decimal("0.000001")),
        )


class SyntheticSource:
    """The ``synthetic`` market source (see the module docstring)."""

    name = "synthetic"

    def __init__(self, ctx: ComponentContext) -> None:
        config = ctx.config
        if not isinstance(config, Config):
            msg = "the synthetic source needs planes.config.Config"
            raise TypeError(msg)
        self._bus = ctx.bus
        self._clock = ctx.clock
        self._config = config.market.synthetic
        self._default_channels = config.market.channels or ("tickers", "kline")
        self.endpoint = f"synthetic://seed={self._config.seed}"
        self.paths: dict[str, SymbolPath] = {}
        self.channels: set[str] = set()
        self.published = 0
        self._task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        """Start streaming (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="synthetic-source"
            )

    async def disconnect(self) -> None:
        """Stop streaming and wait for the generator task to end (idempotent)."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def subscribe(self, symbols: Sequence[str], channels: Sequence[str]) -> None:
        """Stream ``symbols``; unsupported channels are reported as ``market:error``."""
        wanted = tuple(channels) or self._default_channels
        for channel in wanted:
            if channel in CHANNELS:
                self.channels.add(channel)
            else:
                bus = self._bus
                bus.publish(
                    MARKET_ERROR,
                    MarketErrorEvent(
                        bus.meta(),
                        self.name,
                        "unsupported_channel",
                        f"the synthetic source streams {sorted(CHANNELS)}, not {channel!r}",
                        topic=channel,
                    ),
                )
        starts = self._config.start_prices
        for symbol in symbols:
            if symbol not in self.paths:
                start = starts.get(symbol, _DEFAULT_START)
                self.paths[symbol] = SymbolPath(symbol, self._config.seed, start, self._config)

    async def _run(self) -> None:
        clock, bus, config = self._clock, self._bus, self._config
        tick_ms = config.tick_ms
        now = clock.now_ms()
        ts = now - now % tick_ms + (tick_ms if clock.is_realtime else 0)
        limit = config.max_bars
        while True:
            await clock.pace(ts)
            for symbol in sorted(self.paths):
                self._emit(self.paths[symbol], ts)
            if limit and self.paths and all(p.bars_closed >= limit for p in self.paths.values()):
                log.info("synthetic.end_of_data", bars=limit, events=self.published)
                bus.publish(
                    MARKET_DISCONNECTED,
                    MarketDisconnected(bus.meta(), self.name, END_OF_DATA, will_reconnect=False),
                )
                return
            if not clock.is_realtime:
                await asyncio.sleep(0)  # full speed: still let async handlers and requests run
            ts += tick_ms

    def _emit(self, path: SymbolPath, ts: int) -> None:
        limit = self._config.max_bars
        if limit and path.bars_closed >= limit:
            return
        bus = self._bus
        closed, price, _ = path.step(ts)
        if closed is not None and "kline" in self.channels:
            bar_ms = self._config.bar_s * 1000
            bus.publish(
                MARKET_KLINE,
                KlineEvent(
                    bus.meta(),
                    exchange=EXCHANGE,
                    symbol=path.symbol,
                    interval=f"{self._config.bar_s}s",
                    start_ts=closed.start,
                    end_ts=closed.start + bar_ms - 1,
                    open=closed.open,
                    high=closed.high,
                    low=closed.low,
                    close=closed.close,
                    volume=closed.volume,
                    closed=True,
                    turnover=closed.turnover,
                ),
            )
            self.published += 1
            if limit and path.bars_closed >= limit:
                return
        if "tickers" in self.channels:
            bus.publish(MARKET_TICKER, path.ticker(bus.meta(), ts, price))
            self.published += 1
