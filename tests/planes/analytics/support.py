"""Shared harness of the analytics tests: a backtest runtime, and a bare bus with crafted bars."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import attrs

from contracts.analytics import FeatureVector, MarketContext
from contracts.market import KlineEvent
from contracts.meta import EventMeta, Payload, Source
from contracts.rights import rights_for
from contracts.topics import ANALYTICS_CONTEXT, ANALYTICS_FEATURES, MARKET_KLINE, Topic
from planes.bus import EventBus, PlaneHandle
from planes.clock import HistoricalClock
from planes.config import Config, load_config
from planes.runtime import PlaneContext, Runtime
from plugins.builtin import BUILTIN_PLUGINS

ANALYTICS = ("planes.analytics", "planes.analytics.plugin")
PLUGINS = BUILTIN_PLUGINS if ANALYTICS in BUILTIN_PLUGINS else (*BUILTIN_PLUGINS, ANALYTICS)
"""The built-in plugins with the analytics plane (whether or not the list has it yet)."""
_CORE_NAMES = ("planes.observability", "planes.market", "planes.control")
CORE = (*(p for p in PLUGINS if p[0] in _CORE_NAMES), ANALYTICS)
"""Just what a backtest of the analytics plane needs: market data, boot and shutdown."""

BASE = (
    "runtime.mode=backtest",
    "storage.enabled=false",  # the CORE plugin list has no storage plane
    "observability.status_interval_s=0",
    "plugins.entry_points=false",
    "market.synthetic.bar_s=60",
    "market.synthetic.tick_ms=30000",  # two ticks per 60 s bar keep the runs short
)

Events = list[tuple[str, Payload]]


def config_of(*sets: str) -> Config:
    return load_config(None, [*BASE, *sets], environ={}, use_default_file=False)


async def run_backtest(
    *sets: str, plugins: Sequence[tuple[str, str]] = CORE
) -> tuple[Runtime, Events]:
    """Run a synthetic backtest to its end of data; return it and every event it published."""
    runtime = Runtime(config_of(*sets), builtin=plugins)
    runtime.assemble()
    events: Events = []

    def tap(topic: Topic[Any], payload: Payload) -> None:
        events.append((topic.name, payload))

    runtime.bus.subscribe_all(tap)
    await asyncio.wait_for(runtime.run(), 10)
    return runtime, events


def of_type(events: Events, cls: type[Any], symbol: str | None = None) -> list[Any]:
    return [
        p
        for _, p in events
        if isinstance(p, cls) and (symbol is None or getattr(p, "symbol", None) == symbol)
    ]


@attrs.define
class Bench:
    """A bare bus: a market handle to publish crafted bars, and what analytics published."""

    bus: EventBus
    market: PlaneHandle
    ctx: PlaneContext
    features: list[FeatureVector]
    contexts: list[MarketContext]
    order: list[str]

    def bar(
        self,
        close: float | str,
        *,
        index: int,
        symbol: str = "BTCUSDT",
        interval: str = "1",
        high: float | str | None = None,
        low: float | str | None = None,
        closed: bool = True,
        correlation_id: str | None = None,
    ) -> KlineEvent:
        """Publish one kline (minute ``index``) and return it."""
        price = Decimal(str(close))
        top = Decimal(str(high)) if high is not None else price
        bottom = Decimal(str(low)) if low is not None else price
        start = index * 60_000
        kline = KlineEvent(
            EventMeta(Source.MARKET, start + 60_000, correlation_id),
            "test",
            symbol,
            interval,
            start,
            start + 59_999,
            price,
            top,
            bottom,
            price,
            Decimal(1),
            closed,
        )
        self.market.publish(MARKET_KLINE, kline)
        return kline


def bench(*sets: str) -> Bench:
    """A bare bus with an analytics handle; start the components under test yourself."""
    config = config_of(*sets)
    clock = HistoricalClock(start_ms=0)
    bus = EventBus(now_ms=clock.now_ms)
    analytics = bus.handle("analytics", *rights_for("analytics"))
    market = bus.handle("market", *rights_for("market"))
    ctx = PlaneContext(analytics, clock, config, {}, {}, {}, {})
    out = Bench(bus, market, ctx, [], [], [])

    def on_features(vector: FeatureVector) -> None:
        out.features.append(vector)
        out.order.append(f"features:{vector.ts}")

    def on_context(context: MarketContext) -> None:
        out.contexts.append(context)
        out.order.append(f"context:{context.ts}")

    bus.subscribe(ANALYTICS_FEATURES, on_features)
    bus.subscribe(ANALYTICS_CONTEXT, on_context)
    return out
