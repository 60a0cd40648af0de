"""Each incremental indicator equals a plain recomputation over its window, at every step.

The references below are written the textbook way, with no incremental state: every value is
recomputed from the whole series seen so far. Means and variances are computed exactly (with
``Fraction``) and rounded once, so the tolerances measure the indicators' own error.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from planes.config import INDICATOR_KINDS
from planes.indicators import (
    ATR,
    EMA,
    KINDS,
    RSI,
    SMA,
    Returns,
    RollingVolatility,
    ZScore,
    make_indicator,
)

Bar = tuple[float, float, float]  # (low, close, high)

# -- references ------------------------------------------------------------------------------


def ref_returns(closes: Sequence[float], window: int, *, log: bool = False) -> float | None:
    if len(closes) < window + 1:
        return None
    ratio = closes[-1] / closes[-1 - window]
    return math.log(ratio) if log else ratio - 1.0


def ref_sma(closes: Sequence[float], window: int) -> float | None:
    if len(closes) < window:
        return None
    return float(sum(map(Fraction, closes[-window:]), Fraction(0)) / window)


def ref_ema(closes: Sequence[float], window: int) -> float | None:
    # The closed form: the seed's weight decays as (1 - alpha)^k, the k-th later close weighs
    # alpha * (1 - alpha)^(age), all summed at once.
    if len(closes) < window:
        return None
    alpha = 2 / (window + 1)
    decay = 1 - alpha
    later = closes[window:]
    seed = math.fsum(closes[:window]) / window
    terms = [seed * decay ** len(later)]
    terms += [alpha * decay ** (len(later) - 1 - i) * close for i, close in enumerate(later)]
    return math.fsum(terms)


def ref_rsi(closes: Sequence[float], window: int) -> float | None:
    if len(closes) < window + 1:
        return None
    changes = [b - a for a, b in itertools.pairwise(closes)]
    gain = sum(max(c, 0.0) for c in changes[:window]) / window
    loss = sum(max(-c, 0.0) for c in changes[:window]) / window
    for change in changes[window:]:
        gain = (gain * (window - 1) + max(change, 0.0)) / window
        loss = (loss * (window - 1) + max(-change, 0.0)) / window
    if loss == 0.0:
        return 100.0 if gain > 0.0 else 50.0
    return 100.0 - 100.0 / (1.0 + gain / loss)


def ref_atr(bars: Sequence[Bar], window: int) -> float | None:
    if len(bars) < window + 1:
        return None
    ranges = [
        max(high - low, abs(high - prev_close), abs(low - prev_close))
        for (_, prev_close, _), (low, _, high) in itertools.pairwise(bars)
    ]
    atr = sum(ranges[:window]) / window
    for tr in ranges[window:]:
        atr = (atr * (window - 1) + tr) / window
    return atr


def exact_moments(values: Sequence[float]) -> tuple[Fraction, Fraction]:
    """Exact mean and sample variance."""
    exact = [Fraction(v) for v in values]
    mean = sum(exact, Fraction(0)) / len(exact)
    return mean, sum(((v - mean) ** 2 for v in exact), Fraction(0)) / (len(exact) - 1)


def ref_volatility(closes: Sequence[float], window: int) -> float | None:
    if len(closes) < window + 1:
        return None
    tail = closes[-window - 1 :]
    returns = [math.log(b / a) for a, b in itertools.pairwise(tail)]
    return math.sqrt(exact_moments(returns)[1])


def ref_zscore(closes: Sequence[float], window: int) -> float | None:
    if len(closes) < window:
        return None
    mean, var = exact_moments(closes[-window:])
    if var == 0:
        return 0.0
    return float(Fraction(closes[-1]) - mean) / math.sqrt(var)


# -- strategies ------------------------------------------------------------------------------

prices = st.floats(min_value=1.0, max_value=1e6, allow_nan=False, allow_infinity=False)
series = st.lists(prices, min_size=1, max_size=150)
windows = st.integers(min_value=1, max_value=50)
spread_windows = st.integers(min_value=2, max_value=50)
bars = st.lists(st.tuples(prices, prices, prices).map(lambda t: tuple(sorted(t))), max_size=150)


def check_series(
    indicator: Callable[[float], float | None],
    reference: Callable[[Sequence[float]], float | None],
    closes: Sequence[float],
    warmup: int,
    close: Callable[[float, float], bool],
) -> None:
    """Feed ``closes`` one by one; compare with the reference and the warm-up at every step."""
    for i, price in enumerate(closes):
        got = indicator(price)
        want = reference(closes[: i + 1])
        assert (got is None) is (i + 1 < warmup), (i, got)
        assert (want is None) is (got is None), (i, got, want)
        if got is not None and want is not None:
            assert close(got, want), (i, got, want, closes[max(0, i - 60) : i + 1])


def rel(tolerance: float, floor: float = 0.0) -> Callable[[float, float], bool]:
    return lambda got, want: math.isclose(got, want, rel_tol=tolerance, abs_tol=floor)


# -- properties ------------------------------------------------------------------------------


@given(series, windows, st.booleans())
def test_returns_equal_the_ratio_to_the_close_window_bars_ago(
    closes: list[float], window: int, log: bool
) -> None:
    ind = Returns(window, log=log)
    check_series(
        ind.update, lambda c: ref_returns(c, window, log=log), closes, window + 1, rel(1e-15)
    )


@given(series, windows)
def test_sma_equals_the_exact_mean_of_the_window(closes: list[float], window: int) -> None:
    ind = SMA(window)
    check_series(ind.update, lambda c: ref_sma(c, window), closes, window, rel(1e-14))


@given(series, windows)
def test_ema_equals_the_textbook_recursion(closes: list[float], window: int) -> None:
    ind = EMA(window)
    check_series(ind.update, lambda c: ref_ema(c, window), closes, window, rel(1e-12))


@given(series, windows)
def test_rsi_equals_wilders_recursion(closes: list[float], window: int) -> None:
    ind = RSI(window)
    check_series(ind.update, lambda c: ref_rsi(c, window), closes, window + 1, rel(1e-11, 1e-11))


@given(bars, windows)
def test_atr_equals_wilders_recursion_of_the_true_range(bars: list[Bar], window: int) -> None:
    ind = ATR(window)
    for i, (low, close, high) in enumerate(bars):
        got = ind.update(high, low, close)
        want = ref_atr(bars[: i + 1], window)
        assert (got is None) is (i < window), (i, got)
        assert (want is None) is (got is None)
        if got is not None and want is not None:
            assert math.isclose(got, want, rel_tol=1e-10, abs_tol=1e-15 * high), (i, got, want)


@given(series, spread_windows)
@example([1.0, 1e6, 1e6, 999_999.5], 2)  # a huge return leaves: the old sums' error remains
def test_volatility_equals_the_exact_sample_std_of_the_log_returns(
    closes: list[float], window: int
) -> None:
    ind = RollingVolatility(window)
    check_series(
        ind.update, lambda c: ref_volatility(c, window), closes, window + 1, rel(1e-10, 1e-15)
    )


@given(series, spread_windows)
def test_zscore_equals_the_exact_standardized_close(closes: list[float], window: int) -> None:
    ind = ZScore(window)
    check_series(ind.update, lambda c: ref_zscore(c, window), closes, window, rel(1e-10, 1e-10))


@given(
    st.lists(st.sampled_from([1.0, 2.5, 1e6, 999_999.5, 3.25]), min_size=1, max_size=150),
    spread_windows,
)
def test_volatility_and_zscore_survive_outliers_leaving_the_window(
    closes: list[float], window: int
) -> None:
    # Few distinct values: windows often turn constant or collapse right after a 1e6 leaves.
    vol, z = RollingVolatility(window), ZScore(window)
    check_series(vol.update, lambda c: ref_volatility(c, window), closes, window + 1, rel(1e-10))
    check_series(z.update, lambda c: ref_zscore(c, window), closes, window, rel(1e-10, 1e-10))


# -- interface -------------------------------------------------------------------------------


def test_the_factory_covers_exactly_the_configurable_kinds() -> None:
    assert set(KINDS) == set(INDICATOR_KINDS)


@pytest.mark.parametrize("kind", INDICATOR_KINDS)
def test_update_bar_feeds_any_kind_like_its_own_update(kind: str) -> None:
    rng = random.Random(kind)
    uniform, own = make_indicator(kind, 5), make_indicator(kind, 5)
    price = 100.0
    for step in range(40):
        price *= math.exp(rng.gauss(0.0, 0.01))
        low, high = price * 0.99, price * 1.01
        got = uniform.update_bar(math.nan, high, low, price, math.nan)  # unread fields: NaN
        if isinstance(own, ATR):
            want = own.update(high, low, price)
        else:
            assert own.inputs == ("close",)
            want = own.update(price)  # type: ignore[attr-defined]
        assert got == want
        assert uniform.value == got
        assert uniform.ready is (got is not None)
        assert uniform.ready is (step + 1 >= uniform.warmup)
    assert uniform.ready


@pytest.mark.parametrize(
    ("kind", "window", "message"),
    [
        ("sma", 0, "sma needs an integer window >= 1, got 0"),
        ("ema", -3, "ema needs an integer window >= 1"),
        ("volatility", 1, "volatility needs an integer window >= 2, got 1"),
        ("zscore", 1, "zscore needs an integer window >= 2"),
        ("macd", 12, "unknown indicator kind 'macd' \\(known: returns, sma"),
    ],
)
def test_bad_kinds_and_windows_are_refused(kind: str, window: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_indicator(kind, window)


def test_rsi_reads_100_without_losses_and_50_without_any_move() -> None:
    rising, flat = RSI(3), RSI(3)
    for i in range(6):
        rising.update(100.0 + i)
        flat.update(100.0)
    assert rising.value == 100.0
    assert flat.value == 50.0


def test_a_constant_window_has_zero_volatility_and_zscore() -> None:
    vol, z = RollingVolatility(4), ZScore(4)
    for price in [10.0, 30.0, 20.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]:
        vol.update(price)
        z.update(price)
    assert vol.value == 0.0
    assert z.value == 0.0


def test_exact_recomputes_are_rare_on_ordinary_prices() -> None:
    # Amortized O(1): on a random walk an O(window) recompute comes once per hundreds of bars.
    rng = random.Random(3)
    steps = 50_000
    for window in (20, 50):
        vol, z = RollingVolatility(window), ZScore(window)
        price = 60_000.0
        for _ in range(steps):
            price *= math.exp(rng.gauss(0.0, 0.002))
            vol.update(price)
            z.update(price)
        assert vol.recomputes <= steps // 200
        assert z.recomputes <= steps // 200
        assert vol.value == pytest.approx(0.002, rel=0.5)
