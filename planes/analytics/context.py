"""MarketContextBuilder: closed bars in, the regime of each symbol and timeframe out.

Per ``(symbol, interval)`` it keeps two EMAs of the close (``analytics.trend_fast`` and
``analytics.trend_slow`` bars) and the rolling volatility of the log returns
(``analytics.vol_window`` bars), independent of the feature list. Once all three are warmed up,
every closed bar publishes an ``analytics:context`` ``MarketContext``:

- trend: ``(fast - slow) / slow`` above ``trend_band`` is ``up``, below ``-trend_band`` is
  ``down``, anything else (the band's edges included) ``range``;
- volatility: below ``vol_low`` is ``low``, above ``vol_high`` is ``high``, anything else (the
  bounds included) ``normal``;
- regime: ``"{trend}_{volatility}"``, e.g. ``up_high`` or ``range_low``.

The correlation id is the bar's (see ``bar_correlation_id``), the same as its feature vector's.
``cluster_id`` and ``model_version`` stay None until a research model labels regimes.
"""

from __future__ import annotations

from contracts.analytics import MarketContext
from contracts.enums import Trend, VolatilityBucket
from contracts.market import KlineEvent
from contracts.ports import ComponentContext
from contracts.topics import ANALYTICS_CONTEXT, MARKET_KLINE
from planes.analytics.features import bar_correlation_id
from planes.config import AnalyticsSection, Config
from planes.indicators import EMA, RollingVolatility

_TRENDS = (Trend.DOWN, Trend.RANGE, Trend.UP)
_BUCKETS = (VolatilityBucket.LOW, VolatilityBucket.NORMAL, VolatilityBucket.HIGH)
_LABELS: tuple[tuple[tuple[Trend, VolatilityBucket, str], ...], ...] = tuple(
    tuple((trend, vol, f"{trend.value}_{vol.value}") for vol in _BUCKETS) for trend in _TRENDS
)
"""``_LABELS[trend index][volatility index]``: indexes, not enum look-ups, on the per-bar path
(an enum attribute or hash costs more than the whole classification on Python 3.11)."""

REGIMES: tuple[str, ...] = tuple(label for row in _LABELS for _, _, label in row)
"""Every regime label the builder can publish."""


class RegimeRules:
    """The trend and volatility rules of ``[analytics]``, applied to one bar's lines."""

    __slots__ = ("band", "vol_high", "vol_low")

    def __init__(self, band: float, vol_low: float, vol_high: float) -> None:
        self.band = band
        self.vol_low = vol_low
        self.vol_high = vol_high

    def classify(
        self, fast: float, slow: float, volatility: float
    ) -> tuple[Trend, VolatilityBucket, str]:
        """Trend, volatility bucket and regime label (see the module docstring)."""
        gap = (fast - slow) / slow
        band = self.band
        trend = 2 if gap > band else 0 if gap < -band else 1
        vol = 0 if volatility < self.vol_low else 2 if volatility > self.vol_high else 1
        return _LABELS[trend][vol]


def check_rules(rules: AnalyticsSection) -> None:
    """Refuse regime rules that cannot mean anything, naming the keys."""
    if rules.trend_fast >= rules.trend_slow:
        msg = (
            f"analytics.trend_fast ({rules.trend_fast}) must be shorter than "
            f"analytics.trend_slow ({rules.trend_slow})"
        )
        raise ValueError(msg)
    if rules.vol_low > rules.vol_high:
        msg = f"analytics.vol_low ({rules.vol_low}) is above analytics.vol_high ({rules.vol_high})"
        raise ValueError(msg)
    if rules.vol_window < 2:
        msg = f"analytics.vol_window must be >= 2 (a standard deviation), got {rules.vol_window}"
        raise ValueError(msg)


class _Lines:
    """The indicators of one series."""

    __slots__ = ("fast", "slow", "vol")

    def __init__(self, rules: AnalyticsSection) -> None:
        self.fast = EMA(rules.trend_fast)
        self.slow = EMA(rules.trend_slow)
        self.vol = RollingVolatility(rules.vol_window)


class MarketContextBuilder:
    """See the module docstring."""

    name = "market_context"

    def __init__(self, ctx: ComponentContext) -> None:
        config = ctx.config
        if not isinstance(config, Config):
            msg = "the MarketContextBuilder needs planes.config.Config"
            raise TypeError(msg)
        rules = config.analytics
        check_rules(rules)
        self._rules = rules
        self._classify = RegimeRules(rules.trend_band, rules.vol_low, rules.vol_high).classify
        self._bus = ctx.bus
        self._series: dict[tuple[str, str], _Lines] = {}

    async def start(self) -> None:
        """Follow the bars (unless ``analytics.context`` is off: then there is nothing to do)."""
        if self._rules.context:
            self._bus.subscribe(MARKET_KLINE, self._on_kline)

    async def stop(self) -> None:
        """Nothing to release: subscriptions end with the plane handle."""

    def _on_kline(self, bar: KlineEvent) -> None:
        if not bar.closed:
            return
        close = float(bar.close)
        if not close > 0.0:  # the FeatureEngine counts and reports these
            return
        key = (bar.symbol, bar.interval)
        lines = self._series.get(key)
        if lines is None:
            lines = self._series[key] = _Lines(self._rules)
        fast = lines.fast.update(close)
        slow = lines.slow.update(close)
        vol = lines.vol.update(close)
        if fast is None or slow is None or vol is None:
            return
        trend, bucket, regime = self._classify(fast, slow, vol)
        bus = self._bus
        bus.publish(
            ANALYTICS_CONTEXT,
            MarketContext(
                bus.meta(bar_correlation_id(bar)),
                bar.symbol,
                bar.interval,
                bar.end_ts,
                trend,
                bucket,
                regime,
            ),
        )
