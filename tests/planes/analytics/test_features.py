"""The FeatureEngine: one vector per closed bar per series, equal to a direct recomputation."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
from structlog.testing import capture_logs

from contracts.analytics import FeatureVector
from contracts.market import KlineEvent
from contracts.meta import Source
from planes.analytics.context import MarketContextBuilder
from planes.analytics.features import FeatureEngine, feature_version
from planes.config import FeatureSpec
from planes.indicators import make_indicator
from planes.runtime import Runtime, RuntimeStartError
from tests.planes.analytics.support import (
    CORE,
    PLUGINS,
    bench,
    config_of,
    of_type,
    run_backtest,
)
from tests.planes.test_indicators import (
    ref_atr,
    ref_ema,
    ref_returns,
    ref_rsi,
    ref_sma,
    ref_volatility,
    ref_zscore,
)

Reference = Callable[[Sequence[KlineEvent], int], float | None]


def closes(bars: Sequence[KlineEvent]) -> list[float]:
    return [float(b.close) for b in bars]


def lows_closes_highs(bars: Sequence[KlineEvent]) -> list[tuple[float, float, float]]:
    return [(float(b.low), float(b.close), float(b.high)) for b in bars]


REFERENCES: dict[str, Reference] = {
    "returns": lambda bars, w: ref_returns(closes(bars), w),
    "sma": lambda bars, w: ref_sma(closes(bars), w),
    "ema": lambda bars, w: ref_ema(closes(bars), w),
    "rsi": lambda bars, w: ref_rsi(closes(bars), w),
    "atr": lambda bars, w: ref_atr(
        [(float(b.low), float(b.close), float(b.high)) for b in bars], w
    ),
    "volatility": lambda bars, w: ref_volatility(closes(bars), w),
    "zscore": lambda bars, w: ref_zscore(closes(bars), w),
}


def expected(specs: Sequence[FeatureSpec], bars: Sequence[KlineEvent]) -> dict[str, float]:
    """The feature values after ``bars``, recomputed from scratch (warmed-up ones only)."""
    values = {spec.name: REFERENCES[spec.kind](bars, spec.window) for spec in specs}
    return {name: value for name, value in values.items() if value is not None}


def assert_values(got: FeatureVector, want: dict[str, float]) -> None:
    assert set(got.values) == set(want)
    for name, value in want.items():
        assert math.isclose(got.values[name], value, rel_tol=1e-9, abs_tol=1e-12), name


async def test_a_backtest_gets_one_vector_per_closed_bar_equal_to_a_recomputation() -> None:
    bars_per_symbol = 40
    runtime, events = await run_backtest(f"market.synthetic.max_bars={bars_per_symbol}")
    specs = runtime.config.analytics.features
    first_ready = min(make_indicator(s.kind, s.window).warmup for s in specs)
    assert first_ready == 2  # ret_1
    for symbol in runtime.config.market.symbols:
        bars = [k for k in of_type(events, KlineEvent, symbol) if k.closed]
        vectors: list[FeatureVector] = of_type(events, FeatureVector, symbol)
        assert len(bars) == bars_per_symbol
        # One vector per closed bar from the first bar where any feature is warmed up.
        assert [v.ts for v in vectors] == [b.end_ts for b in bars[first_ready - 1 :]]
        for vector, count in zip(vectors, range(first_ready, bars_per_symbol + 1), strict=True):
            assert_values(vector, expected(specs, bars[:count]))
            assert vector.timeframe == "60s"
            assert vector.version == feature_version(specs)
            assert vector.meta.source is Source.ANALYTICS
            assert vector.meta.correlation_id == f"{symbol}:60s:{vector.ts}"
        assert set(vectors[-1].values) == {s.name for s in specs}  # all warmed up by bar 40


async def test_non_closed_bars_are_ignored() -> None:
    b = bench("analytics.features=[{name='sma_3', kind='sma', window=3}]")
    engine = FeatureEngine(b.ctx)
    await engine.start()
    prices = [10.0, 11.0, 13.0, 12.0, 15.0]
    for i, price in enumerate(prices):
        b.bar(price * 3, index=i, closed=False)  # a forming bar: must not count
        b.bar(price, index=i)
    assert [v.values for v in b.features] == [{"sma_3": 34 / 3}, {"sma_3": 12.0}, {"sma_3": 40 / 3}]
    assert [v.ts for v in b.features] == [i * 60_000 + 59_999 for i in (2, 3, 4)]


async def test_vectors_carry_the_bars_correlation_id_or_one_made_from_the_bar() -> None:
    b = bench("analytics.features=[{name='ret_1', kind='returns', window=1}]")
    await FeatureEngine(b.ctx).start()
    b.bar(100, index=0)
    b.bar(101, index=1, correlation_id="replay:42")
    b.bar(102, index=2)
    assert [v.meta.correlation_id for v in b.features] == ["replay:42", "BTCUSDT:1:179999"]


async def test_each_symbol_and_interval_keeps_its_own_indicators() -> None:
    b = bench("analytics.features=[{name='sma_2', kind='sma', window=2}]")
    await FeatureEngine(b.ctx).start()
    for i in range(3):
        b.bar(100 + i, index=i, symbol="BTCUSDT", interval="1")
        b.bar(200 + i, index=i, symbol="ETHUSDT", interval="1")
        b.bar(300 + 10 * i, index=i, symbol="BTCUSDT", interval="5")
    got: dict[tuple[str, str], list[float]] = {}
    for v in b.features:
        got.setdefault((v.symbol, v.timeframe), []).append(v.values["sma_2"])
    assert got == {
        ("BTCUSDT", "1"): [100.5, 101.5],
        ("ETHUSDT", "1"): [200.5, 201.5],
        ("BTCUSDT", "5"): [305.0, 315.0],
    }


async def test_atr_reads_the_high_and_low_of_the_bar() -> None:
    b = bench("analytics.features=[{name='atr_2', kind='atr', window=2}]")
    await FeatureEngine(b.ctx).start()
    b.bar(100, index=0, high=101, low=99)
    b.bar(100, index=1, high=104, low=100)  # TR 4
    b.bar(100, index=2, high=100.5, low=98)  # TR 2.5
    b.bar(100, index=3, high=101, low=100)  # TR 1
    assert [v.values["atr_2"] for v in b.features] == [3.25, 2.125]


async def test_a_bar_with_a_non_positive_close_is_skipped_and_counted() -> None:
    b = bench("analytics.features=[{name='sma_2', kind='sma', window=2}]")
    engine = FeatureEngine(b.ctx)
    await engine.start()
    with capture_logs() as logs:
        b.bar(10, index=0)
        b.bar(0, index=1)
        b.bar(-1, index=2)
        b.bar(12, index=3)
    assert engine.skipped == 2
    assert [e["event"] for e in logs] == ["analytics.bad_bar"]  # the first one only
    assert logs[0]["close"] == "0"
    assert [v.values for v in b.features] == [{"sma_2": 11.0}]


async def test_an_empty_feature_list_turns_the_engine_off() -> None:
    b = bench("analytics.features=[]", "analytics.trend_fast=2", "analytics.trend_slow=3")
    await FeatureEngine(b.ctx).start()
    await MarketContextBuilder(b.ctx).start()
    for i in range(30):
        b.bar(100 + i, index=i)
    assert b.features == []
    assert len(b.contexts) == 30 - 20  # the regime does not depend on the feature list


def test_the_version_is_a_stable_hash_of_the_feature_list() -> None:
    default = config_of().analytics.features
    assert feature_version(default) == feature_version(config_of().analytics.features)
    assert len(feature_version(default)) == 12
    other = (*default[:-1], FeatureSpec("zscore_20", "zscore", 21))
    assert feature_version(other) != feature_version(default)
    renamed = (FeatureSpec("r", "returns", 1),)
    assert feature_version(renamed) != feature_version((FeatureSpec("ret", "returns", 1),))


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (
            "[{name='a', kind='sma', window=3}, {name='a', kind='ema', window=3}]",
            "the name 'a' is used twice",
        ),
        (
            "[{name='vol_1', kind='volatility', window=1}]",
            "feature 'vol_1': volatility needs an integer window >= 2",
        ),
    ],
)
def test_a_bad_feature_list_fails_start_up_naming_the_feature(features: str, message: str) -> None:
    runtime = Runtime(config_of(f"analytics.features={features}"), builtin=CORE)
    with pytest.raises(RuntimeStartError, match=message):
        runtime.assemble()


async def test_the_plane_runs_beside_every_built_in_plane() -> None:
    runtime, events = await run_backtest("market.synthetic.max_bars=25", plugins=PLUGINS)
    analytics = [(type(c), owner) for plane, owner, c in runtime.components if plane == "analytics"]
    assert analytics == [
        (MarketContextBuilder, "planes.analytics"),
        (FeatureEngine, "planes.analytics"),
    ]
    assert len(of_type(events, FeatureVector, "BTCUSDT")) == 24
    assert not [p for name, p in events if name == "error:event"]
