r"""An example plugin with one of everything: a topic, a plane, an exchange, a strategy, a notifier.

Copy this file into your own package (``myplugin/plugin.py``), point the ``planes`` entry point at
it (see ``pyproject.toml.example``) and delete what you do not need. It imports only
``contracts`` and ``plugins.hookspecs``: a plugin never imports a plane.

Try it without packaging anything::

    planes run --headless --duration 5 --set market.source=example \
        --set 'plugins.modules=["plugins.template.plugin"]'
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs

from contracts.enums import Side
from contracts.market import KlineEvent, TickerEvent
from contracts.meta import Payload
from contracts.ports import (
    ComponentContext,
    ExchangeSpec,
    NotifierSpec,
    PlaneSpec,
    StrategySpec,
    StrategyView,
    Subscription,
)
from contracts.strategy import IntentDraft, ParamValue
from contracts.topics import MARKET_TICKER, Topic
from plugins.hookspecs import hookimpl

# -- a topic and its payload -------------------------------------------------------------------


@attrs.frozen
class ExamplePulse(Payload):
    """Every ``every`` tickers of a symbol, the example component reports how many it has seen."""

    symbol: str
    tickers_seen: int
    last_price: Decimal


EXAMPLE_PULSE = Topic("example:pulse", ExamplePulse, "the example plugin saw N more tickers")
"""Spell the topic name once, here; publishers and subscribers import the constant."""


# -- a component on a new plane ----------------------------------------------------------------


class PulseCounter:
    """Counts ``market:ticker`` per symbol and publishes ``example:pulse`` every ``every`` of them.

    Settings (``[plugins.settings.<plugin name>]``): ``every`` (int, default 10).
    """

    name = "pulse_counter"

    def __init__(self, ctx: ComponentContext) -> None:
        self._bus = ctx.bus
        self._every = int(ctx.settings.get("every", 10))
        if self._every <= 0:
            msg = f"plugins.settings.every must be > 0, got {self._every}"
            raise ValueError(msg)
        self.seen: dict[str, int] = {}
        self.pulses = 0
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        """Subscribe; nothing else to start (a timer would be a task created here)."""
        self._subscription = self._bus.subscribe(MARKET_TICKER, self._on_ticker)

    async def stop(self) -> None:
        """Unsubscribe (the runtime closes the plane's handle too; being explicit is clearer)."""
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None

    def _on_ticker(self, ticker: TickerEvent) -> None:
        count = self.seen[ticker.symbol] = self.seen.get(ticker.symbol, 0) + 1
        if count % self._every == 0:
            bus = self._bus
            meta = bus.meta(ticker.meta.correlation_id)  # keep the causal chain
            bus.publish(EXAMPLE_PULSE, ExamplePulse(meta, ticker.symbol, count, ticker.last_price))
            self.pulses += 1


# -- an exchange: a market-data source ---------------------------------------------------------


def example_price(step: int) -> Decimal:
    """The deterministic price at ``step``: a triangle wave between 100 and 110."""
    return Decimal(100 + abs(step % 20 - 10))


class ExampleSource:
    """The ``example`` market source: one ticker per subscribed symbol every ``INTERVAL_MS``.

    It gets the MarketGateway's context, so it publishes as the market plane. It paces itself with
    ``ctx.clock``: live under the real-time clock, at full speed under the historical one.
    """

    name = "example"
    INTERVAL_MS = 100

    def __init__(self, ctx: ComponentContext) -> None:
        self._bus = ctx.bus
        self._clock = ctx.clock
        self.endpoint = "example://triangle"
        self.symbols: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        """Start streaming (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def disconnect(self) -> None:
        """Stop streaming and wait for the task to end (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def subscribe(self, symbols: Sequence[str], channels: Sequence[str]) -> None:
        """Stream ``symbols``; tickers are the only channel this source has."""
        self.symbols.update(symbols)

    async def _run(self) -> None:
        bus, clock = self._bus, self._clock
        ts = clock.now_ms()
        step = 0
        while True:
            ts += self.INTERVAL_MS
            await clock.pace(ts)
            for symbol in sorted(self.symbols):
                ticker = TickerEvent(
                    bus.meta(),
                    exchange=self.name,
                    symbol=symbol,
                    last_price=example_price(step),
                    exchange_ts=ts,
                )
                bus.publish(MARKET_TICKER, ticker)
            step += 1
            if not clock.is_realtime:
                await asyncio.sleep(0)  # historical time never sleeps: let the others run


# -- a strategy --------------------------------------------------------------------------------


class ThresholdCross:
    """Buy when a closed bar's close crosses ``threshold`` upwards, sell when it crosses down.

    Params: ``threshold`` (number, required), ``size`` (quantity hint, default 1). The
    StrategyManager stamps scenario, ids and meta onto what ``on_event`` returns.
    """

    def __init__(self, params: Mapping[str, ParamValue]) -> None:
        if "threshold" not in params:
            msg = "the threshold_cross strategy needs a 'threshold' param"
            raise ValueError(msg)
        self.threshold = Decimal(str(params["threshold"]))
        self.size = Decimal(str(params.get("size", 1)))
        self._above: bool | None = None

    def on_event(
        self, topic: Topic[Any], payload: Payload, view: StrategyView
    ) -> Sequence[IntentDraft]:
        """Return one draft on a cross, none otherwise (the first bar only sets the side)."""
        if not isinstance(payload, KlineEvent) or not payload.closed:
            return []
        above = payload.close > self.threshold
        was_above, self._above = self._above, above
        if was_above is None or was_above == above:
            return []
        side = Side.BUY if above else Side.SELL
        reason = f"close {payload.close} crossed {self.threshold}"
        return [IntentDraft(side, size_hint=self.size, reason=reason)]


# -- a notifier --------------------------------------------------------------------------------


class ListNotifier:
    """Keeps what it is sent in ``sent`` (once per ``dedupe_key``); a real one would do I/O here."""

    def __init__(self, ctx: ComponentContext) -> None:
        self.sent: list[str] = []
        self._keys: set[str] = set()

    async def send(self, text: str, *, dedupe_key: str) -> None:
        """Append ``text`` once per ``dedupe_key``; a real notifier raises when delivery fails."""
        if dedupe_key in self._keys:
            return
        self._keys.add(dedupe_key)
        self.sent.append(text)


# -- the hooks: each returns a list, and any of them may be left out ----------------------------


@hookimpl
def planes_register_topics() -> Sequence[Topic[Any]]:
    """Add ``example:pulse``."""
    return [EXAMPLE_PULSE]


@hookimpl
def planes_register_planes() -> Sequence[PlaneSpec]:
    """Add the PulseCounter on the new ``example`` plane, which may publish ``example:*``."""
    return [
        PlaneSpec(
            name=PulseCounter.name, plane="example", factory=PulseCounter, publishes=("example:*",)
        )
    ]


@hookimpl
def planes_register_exchanges() -> Sequence[ExchangeSpec]:
    """Add the ``example`` source (select it with ``market.source = "example"``)."""
    return [ExchangeSpec(name=ExampleSource.name, market_data=ExampleSource)]


@hookimpl
def planes_register_strategies() -> Sequence[StrategySpec]:
    """Add ``threshold_cross``."""
    return [
        StrategySpec(
            name="threshold_cross",
            factory=ThresholdCross,
            description="buy above a price threshold, sell below it",
        )
    ]


@hookimpl
def planes_register_notifiers() -> Sequence[NotifierSpec]:
    """Add the ``list`` notifier."""
    return [NotifierSpec(name="list", factory=ListNotifier)]
