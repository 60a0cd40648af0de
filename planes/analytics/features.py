"""FeatureEngine: closed ``market:kline`` bars in, one ``analytics:features`` vector per bar out.

For each ``(symbol, interval)`` it keeps one set of the indicators listed in
``[[analytics.features]]`` (built on the first closed bar of that series) and feeds it every
closed bar; bars with ``closed=False`` are ignored. After each bar it publishes a
``FeatureVector`` with the values of the indicators that are warmed up — the set grows as the
windows fill, and a bar where none is ready yet publishes nothing.

The vector's ``version`` is a short hash of the feature list (and of the indicator library's
formula version), so stored vectors made under another configuration are told apart. Its
correlation id is the bar's, or ``"{symbol}:{interval}:{end_ts}"`` when the bar has none, so a
bar, its features, its market context and the intents and orders they cause can be followed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from types import MappingProxyType

import structlog

from contracts.analytics import FeatureVector
from contracts.market import KlineEvent
from contracts.ports import ComponentContext
from contracts.topics import ANALYTICS_FEATURES, MARKET_KLINE
from planes.config import Config, FeatureSpec
from planes.indicators import INDICATORS_VERSION, CloseIndicator, Indicator, make_indicator

log = structlog.get_logger("planes.analytics")

_NAN = math.nan

Feed = tuple[str, Callable[..., float | None], bool]
"""Feature name, update function, and whether that function is a close-only ``update(close)``
(else it is ``update_bar``, fed the whole bar)."""


def bar_correlation_id(bar: KlineEvent) -> str:
    """The correlation id of what a bar causes: the bar's own, or one derived from the bar."""
    return bar.meta.correlation_id or f"{bar.symbol}:{bar.interval}:{bar.end_ts}"


def feature_version(specs: Sequence[FeatureSpec]) -> str:
    """A short, stable hash of the feature list (names, kinds, windows, in order)."""
    text = f"v{INDICATORS_VERSION}|" + ",".join(f"{s.name}={s.kind}:{s.window}" for s in specs)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def build_indicators(specs: Sequence[FeatureSpec]) -> list[tuple[str, Indicator]]:
    """One fresh indicator per spec; a duplicate name or a bad window raises naming the feature."""
    built: list[tuple[str, Indicator]] = []
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            msg = f"analytics.features: the name {spec.name!r} is used twice"
            raise ValueError(msg)
        seen.add(spec.name)
        try:
            built.append((spec.name, make_indicator(spec.kind, spec.window)))
        except ValueError as exc:
            msg = f"analytics.features: feature {spec.name!r}: {exc}"
            raise ValueError(msg) from None
    return built


class FeatureEngine:
    """See the module docstring."""

    name = "feature_engine"

    def __init__(self, ctx: ComponentContext) -> None:
        config = ctx.config
        if not isinstance(config, Config):
            msg = "the FeatureEngine needs planes.config.Config"
            raise TypeError(msg)
        self._bus = ctx.bus
        self._specs = config.analytics.features
        probe = build_indicators(self._specs)  # fails start-up on a bad feature list
        inputs = {field for _, indicator in probe for field in indicator.inputs}
        self._open = "open" in inputs
        self._high_low = "high" in inputs or "low" in inputs
        self._volume = "volume" in inputs
        self.version = feature_version(self._specs)
        self._series: dict[tuple[str, str], tuple[Feed, ...]] = {}
        self.skipped = 0
        """Closed bars ignored because their close was not a positive number."""

    async def start(self) -> None:
        """Follow the bars (unless the feature list is empty: then there is nothing to do)."""
        if self._specs:
            self._bus.subscribe(MARKET_KLINE, self._on_kline)

    async def stop(self) -> None:
        """Nothing to release: subscriptions end with the plane handle."""

    def _new_series(self, key: tuple[str, str]) -> tuple[Feed, ...]:
        feeds = tuple(
            (name, indicator.update, True)
            if isinstance(indicator, CloseIndicator)
            else (name, indicator.update_bar, False)
            for name, indicator in build_indicators(self._specs)
        )
        self._series[key] = feeds
        return feeds

    def _on_kline(self, bar: KlineEvent) -> None:
        if not bar.closed:
            return
        close = float(bar.close)
        if not close > 0.0:  # also NaN; one bad bar must not poison every window
            self.skipped += 1
            if self.skipped == 1:
                log.warning("analytics.bad_bar", symbol=bar.symbol, close=str(bar.close))
            return
        key = (bar.symbol, bar.interval)
        feeds = self._series.get(key)
        if feeds is None:
            feeds = self._new_series(key)
        open_ = float(bar.open) if self._open else _NAN
        high = float(bar.high) if self._high_low else _NAN
        low = float(bar.low) if self._high_low else _NAN
        volume = float(bar.volume) if self._volume else _NAN
        values: dict[str, float] = {}
        for name, update, close_only in feeds:
            value = update(close) if close_only else update(open_, high, low, close, volume)
            if value is not None:
                values[name] = value
        if values:
            bus = self._bus
            bus.publish(
                ANALYTICS_FEATURES,
                FeatureVector(
                    bus.meta(bar_correlation_id(bar)),
                    bar.symbol,
                    bar.interval,
                    bar.end_ts,
                    MappingProxyType(values),  # read-only for every subscriber
                    self.version,
                ),
            )
