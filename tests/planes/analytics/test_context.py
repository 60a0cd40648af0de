"""The MarketContextBuilder: trend and volatility labels follow the configured rules."""

from __future__ import annotations

import math

import pytest

from contracts.analytics import FeatureVector, MarketContext
from contracts.enums import Trend, VolatilityBucket
from contracts.market import KlineEvent
from planes.analytics.context import REGIMES, MarketContextBuilder, RegimeRules
from planes.analytics.features import FeatureEngine
from planes.runtime import Runtime, RuntimeStartError
from tests.planes.analytics.support import CORE, bench, config_of, of_type, run_backtest
from tests.planes.test_indicators import ref_ema, ref_volatility

RULES = ("analytics.trend_fast=3", "analytics.trend_slow=6", "analytics.vol_window=4")


def test_trend_follows_the_relative_gap_between_the_lines() -> None:
    rules = RegimeRules(0.001, 0.001, 0.004)
    assert rules.classify(101.0, 100.0, 0.002)[0] is Trend.UP
    assert rules.classify(99.0, 100.0, 0.002)[0] is Trend.DOWN
    assert rules.classify(100.05, 100.0, 0.002)[0] is Trend.RANGE
    assert RegimeRules(0.0, 0.001, 0.004).classify(100.0, 100.0, 0.002)[0] is Trend.RANGE
    edges = RegimeRules(0.5, 0.001, 0.004)
    assert edges.classify(1.5, 1.0, 0.002)[0] is Trend.RANGE  # exactly on the band: a range
    assert edges.classify(0.5, 1.0, 0.002)[0] is Trend.RANGE


def test_volatility_buckets_include_their_bounds_in_normal() -> None:
    rules = RegimeRules(0.001, 0.001, 0.004)
    assert rules.classify(1.0, 1.0, 0.0005)[1] is VolatilityBucket.LOW
    assert rules.classify(1.0, 1.0, 0.001)[1] is VolatilityBucket.NORMAL
    assert rules.classify(1.0, 1.0, 0.004)[1] is VolatilityBucket.NORMAL
    assert rules.classify(1.0, 1.0, 0.0041)[1] is VolatilityBucket.HIGH


def test_regime_labels_are_trend_then_volatility() -> None:
    rules = RegimeRules(0.001, 0.001, 0.004)
    assert rules.classify(2.0, 1.0, 0.01) == (Trend.UP, VolatilityBucket.HIGH, "up_high")
    assert rules.classify(1.0, 1.0, 0.0) == (Trend.RANGE, VolatilityBucket.LOW, "range_low")
    assert len(set(REGIMES)) == 9
    assert {f"{t}_{v}" for t in Trend for v in VolatilityBucket} == set(REGIMES)


def steady(start: float, step: float, count: int) -> list[float]:
    return [start * (1 + step) ** i for i in range(count)]


def alternating(start: float, up: float, down: float, count: int) -> list[float]:
    prices = [start]
    for i in range(1, count):
        prices.append(prices[-1] * (1 + (up if i % 2 else -down)))
    return prices


@pytest.mark.parametrize(
    ("prices", "regime"),
    [
        (steady(100, 0.01, 20), "up_low"),  # equal log returns: no volatility at all
        (steady(100, -0.01, 20), "down_low"),
        ([100.0] * 20, "range_low"),
        (alternating(100, 0.03, 0.01, 20), "up_high"),
        (alternating(100, 0.01, 0.03, 20), "down_high"),
        (alternating(100, 0.003, 0.003, 20), "range_normal"),
        (alternating(100, 0.006, 0.006, 20), "range_high"),
    ],
)
async def test_crafted_bars_get_the_regime_the_rules_give(prices: list[float], regime: str) -> None:
    b = bench(*RULES)
    await MarketContextBuilder(b.ctx).start()
    for i, price in enumerate(prices):
        b.bar(price, index=i)
    # Warm once the slow EMA (6 closes) and the volatility (4 returns = 5 closes) are.
    assert len(b.contexts) == len(prices) - 5
    assert b.contexts[-1].regime == regime
    assert b.contexts[-1].regime == f"{b.contexts[-1].trend}_{b.contexts[-1].volatility}"


async def test_context_and_features_of_a_bar_share_its_correlation_id_context_first() -> None:
    b = bench(*RULES, "analytics.features=[{name='ret_1', kind='returns', window=1}]")
    # The plugin's order: the context builder subscribes first.
    await MarketContextBuilder(b.ctx).start()
    await FeatureEngine(b.ctx).start()
    for i, price in enumerate(steady(100, 0.01, 7)):
        b.bar(price, index=i, correlation_id=f"bar-{i}")
        b.bar(price * 2, index=i, closed=False)  # ignored by both
    assert [c.meta.correlation_id for c in b.contexts] == ["bar-5", "bar-6"]
    assert [f.meta.correlation_id for f in b.features[-2:]] == ["bar-5", "bar-6"]
    assert b.order[-4:] == [
        "context:359999",
        "features:359999",
        "context:419999",
        "features:419999",
    ]
    assert b.contexts[0].cluster_id is None
    assert b.contexts[0].model_version is None


async def test_a_backtest_labels_every_bar_once_the_lines_are_warm() -> None:
    bars_per_symbol = 30
    runtime, events = await run_backtest(
        f"market.synthetic.max_bars={bars_per_symbol}",
        "analytics.trend_fast=4",
        "analytics.trend_slow=10",
        "analytics.vol_window=8",
        "analytics.trend_band=0.0002",
        "analytics.vol_low=0.0004",
        "analytics.vol_high=0.0008",
    )
    rules = runtime.config.analytics
    regimes = set()
    for symbol in runtime.config.market.symbols:
        bars = [k for k in of_type(events, KlineEvent, symbol) if k.closed]
        contexts: list[MarketContext] = of_type(events, MarketContext, symbol)
        vectors: list[FeatureVector] = of_type(events, FeatureVector, symbol)
        assert len(bars) == bars_per_symbol
        assert [c.ts for c in contexts] == [b.end_ts for b in bars[9:]]  # slow EMA: 10 closes
        ids = {v.ts: v.meta.correlation_id for v in vectors}
        for context, count in zip(contexts, range(10, bars_per_symbol + 1), strict=True):
            closes = [float(b.close) for b in bars[:count]]
            fast, slow = ref_ema(closes, 4), ref_ema(closes, 10)
            vol = ref_volatility(closes, 8)
            assert fast is not None
            assert slow is not None
            assert vol is not None
            gap = (fast - slow) / slow
            if not math.isclose(abs(gap), rules.trend_band, rel_tol=1e-6):
                want = Trend.UP if gap > 0.0002 else Trend.DOWN if gap < -0.0002 else Trend.RANGE
                assert context.trend is want
            if not any(math.isclose(vol, edge, rel_tol=1e-6) for edge in (0.0004, 0.0008)):
                want_vol = "low" if vol < 0.0004 else "high" if vol > 0.0008 else "normal"
                assert context.volatility == want_vol
            assert context.timeframe == "60s"
            assert context.meta.correlation_id == ids[context.ts] == f"{symbol}:60s:{context.ts}"
            regimes.add(context.regime)
    assert len(regimes) > 1  # the thresholds above are set so the synthetic path crosses them


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("analytics.trend_fast=50",), r"trend_fast \(50\) must be shorter than .*trend_slow"),
        (("analytics.vol_low=0.01",), r"vol_low \(0.01\) is above analytics.vol_high"),
        (("analytics.vol_window=1",), "vol_window must be >= 2"),
    ],
)
def test_rules_that_cannot_mean_anything_fail_start_up(sets: tuple[str, ...], message: str) -> None:
    runtime = Runtime(config_of(*sets), builtin=CORE)
    with pytest.raises(RuntimeStartError, match=message):
        runtime.assemble()
