"""Incremental indicators: O(1) work per update, ``None`` until warmed up.

A pure library: no bus, no plane. The analytics plane feeds one set per symbol and timeframe;
strategies import it to keep their own lines. Inputs and outputs are floats (features are
research-grade numbers; money stays ``Decimal`` elsewhere). Prices must be positive and finite,
and bars must have ``low <= high``.

Every indicator has ``update(...) -> float | None`` (its natural inputs), ``update_bar(open_,
high, low, close, volume)`` (the same, from a whole bar, so any of them can be fed uniformly),
``value`` (the last result, ``None`` while warming up), ``ready``, ``window``, ``warmup`` (how many
updates the first value needs) and ``inputs`` (which bar fields ``update_bar`` reads).

=====================  ==========================================================  ==========
indicator              value after each update                                     warmup
=====================  ==========================================================  ==========
``Returns(w)``         ``close / close[w bars ago] - 1`` (``log=True``: its log)   ``w + 1``
``SMA(n)``             mean of the last ``n`` closes                               ``n``
``EMA(n)``             ``ema = a * close + (1 - a) * ema``, ``a = 2 / (n + 1)``,    ``n``
                       seeded with the SMA of the first ``n`` closes
``RSI(n)``             Wilder: ``100 * gain / (gain + loss)`` of the smoothed        ``n + 1``
                       average gain and loss (seeded with plain means of the
                       first ``n`` changes); 100 when there are no losses, 50 when
                       there are neither gains nor losses
``ATR(n)``             Wilder average of the true range                             ``n + 1``
                       ``max(high, prev close) - min(low, prev close)``, seeded
                       with the mean of the first ``n`` true ranges (the first bar
                       only provides a previous close)
``RollingVolatility``  sample standard deviation (``n - 1``) of the last ``n`` log  ``n + 1``
``(n)``                returns ``log(close / prev close)``; per bar, not annualized
``ZScore(n)``          ``(close - mean) / std`` over the last ``n`` closes          ``n``
                       (sample std); 0.0 when the window is constant
=====================  ==========================================================  ==========

``RollingVolatility`` and ``ZScore`` need ``n >= 2`` (a sample standard deviation of one value
does not exist); the others ``n >= 1``.

Numerics: the SMA keeps its running sum with Knuth's error-free two-sum, so removing a value
never leaves rounding debris behind (its error is a few ulps of the mean, whatever left the
window). The rolling variance keeps running sums of the values and their squares, shifted by a
recent window value so they scale with the spread rather than the price level; it also keeps a
bound on the rounding error the sums may have accumulated, and recomputes them exactly from the
window (``math.fsum``, two passes) when that bound passes ``1e-5`` of the sum of squared
deviations. That keeps the variance within about ``1e-10`` relative. On ordinary prices it
happens once every few hundred updates or less; it happens at once when the spread collapses by
orders of magnitude (an outlier leaves the window, the window turns constant), which is exactly
when a running update cannot be trusted. Either way: ``O(n)`` rarely, amortized ``O(1)``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import ClassVar, Protocol

INDICATORS_VERSION = 1
"""Bumped when a formula or warm-up rule changes, so feature versions change with it."""

CLOSE: tuple[str, ...] = ("close",)
HIGH_LOW_CLOSE: tuple[str, ...] = ("high", "low", "close")

_RECOMPUTE_RATIO = 1e5
"""Recompute when the rounding-error bound (in ulps of the terms) exceeds m2 times this."""


class Indicator(Protocol):
    """What the FeatureEngine feeds: one update per closed bar, O(1) each."""

    @property
    def window(self) -> int:
        """The window (or period) in bars."""
        ...

    @property
    def warmup(self) -> int:
        """How many updates the first value needs."""
        ...

    @property
    def inputs(self) -> tuple[str, ...]:
        """The bar fields ``update_bar`` reads (the others may be anything, even NaN)."""
        ...

    @property
    def value(self) -> float | None:
        """The latest value, or None while warming up."""
        ...

    @property
    def ready(self) -> bool:
        """True once a value exists."""
        ...

    def update_bar(
        self, open_: float, high: float, low: float, close: float, volume: float
    ) -> float | None:
        """Take one bar; return the new value or None while warming up."""
        ...


def _check_window(name: str, window: int, minimum: int = 1) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < minimum:
        msg = f"{name} needs an integer window >= {minimum}, got {window!r}"
        raise ValueError(msg)


class CloseIndicator:
    """Base of the indicators computed from closes only: ``update(close)``."""

    __slots__ = ("value", "warmup", "window")
    inputs: ClassVar[tuple[str, ...]] = CLOSE

    def __init__(self, window: int, warmup: int) -> None:
        self.window = window
        self.warmup = warmup
        self.value: float | None = None

    @property
    def ready(self) -> bool:
        """True once a value exists."""
        return self.value is not None

    def update(self, close: float) -> float | None:
        """Take one close; return the new value or None while warming up."""
        raise NotImplementedError

    def update_bar(
        self, open_: float, high: float, low: float, close: float, volume: float
    ) -> float | None:
        """Take one bar (only its close is read)."""
        return self.update(close)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.window}, value={self.value!r})"


class Returns(CloseIndicator):
    """Simple return over ``window`` bars: ``close / close[window bars ago] - 1``.

    ``log=True`` gives the log return ``log(close / close[window bars ago])`` instead.
    """

    __slots__ = ("_closes", "log")

    def __init__(self, window: int, *, log: bool = False) -> None:
        _check_window("returns", window)
        super().__init__(window, window + 1)
        self.log = log
        self._closes: deque[float] = deque(maxlen=window + 1)

    def update(self, close: float) -> float | None:
        """Take one close; return the return over the window."""
        closes = self._closes
        closes.append(close)
        if len(closes) <= self.window:
            return None
        ratio = close / closes[0]
        value = math.log(ratio) if self.log else ratio - 1.0
        self.value = value
        return value


class SMA(CloseIndicator):
    """Simple moving average of the last ``window`` closes (compensated running sum)."""

    __slots__ = ("_closes", "_comp", "_sum")

    def __init__(self, window: int) -> None:
        _check_window("sma", window)
        super().__init__(window, window)
        self._closes: deque[float] = deque()
        self._sum = 0.0
        self._comp = 0.0  # the exact rounding errors of _sum, summed

    def update(self, close: float) -> float | None:
        """Take one close; return the mean of the window."""
        closes = self._closes
        closes.append(close)
        # Knuth's two-sum: t is the rounded sum, the rest is its exact rounding error.
        s = self._sum
        t = s + close
        z = t - s
        comp = self._comp + ((s - (t - z)) + (close - z))
        if self.value is not None:  # the window was full: its oldest close leaves
            old = -closes.popleft()
            s = t
            t = s + old
            z = t - s
            comp += (s - (t - z)) + (old - z)
        elif len(closes) < self.window:
            self._sum = t
            self._comp = comp
            return None
        self._sum = t
        self._comp = comp
        value = (t + comp) / self.window
        self.value = value
        return value


class EMA(CloseIndicator):
    """Exponential moving average, ``alpha = 2 / (window + 1)``.

    Seeded with the simple average of the first ``window`` closes (so the first value comes at
    the ``window``-th close, as with the SMA); then ``ema = alpha * close + (1 - alpha) * ema``.
    With positive prices both terms are positive, so each step adds only a rounding relative to
    the result (``ema + alpha * (close - ema)`` would cancel after a crash).
    """

    __slots__ = ("_decay", "_seed", "alpha")

    def __init__(self, window: int) -> None:
        _check_window("ema", window)
        super().__init__(window, window)
        self.alpha = 2.0 / (window + 1)
        self._decay = 1.0 - self.alpha
        self._seed: list[float] = []

    def update(self, close: float) -> float | None:
        """Take one close; return the EMA."""
        ema = self.value
        if ema is not None:
            ema = self.alpha * close + self._decay * ema
            self.value = ema
            return ema
        seed = self._seed
        seed.append(close)
        if len(seed) < self.window:
            return None
        ema = math.fsum(seed) / self.window
        seed.clear()
        self.value = ema
        return ema


class RSI(CloseIndicator):
    """Wilder's relative strength index over ``window`` changes of the close.

    The average gain and loss start as plain means of the first ``window`` changes and are then
    smoothed as ``avg = (avg * (window - 1) + new) / window``. The value is
    ``100 * gain / (gain + loss)`` (the same as ``100 - 100 / (1 + gain / loss)``): 100 when
    there are no losses, and 50 when the closes did not move at all.
    """

    __slots__ = ("_gain", "_loss", "_prev", "_seed")

    def __init__(self, window: int) -> None:
        _check_window("rsi", window)
        super().__init__(window, window + 1)
        self._prev: float | None = None
        self._seed: list[float] = []
        self._gain = 0.0
        self._loss = 0.0

    def update(self, close: float) -> float | None:
        """Take one close; return the RSI (0..100)."""
        prev = self._prev
        self._prev = close
        if prev is None:
            return None
        change = close - prev
        n = self.window
        if self.value is not None:
            gain = (self._gain * (n - 1) + (change if change > 0.0 else 0.0)) / n
            loss = (self._loss * (n - 1) + (-change if change < 0.0 else 0.0)) / n
        else:
            seed = self._seed
            seed.append(change)
            if len(seed) < n:
                return None
            gain = math.fsum(c for c in seed if c > 0.0) / n
            loss = -math.fsum(c for c in seed if c < 0.0) / n
            seed.clear()
        self._gain = gain
        self._loss = loss
        total = gain + loss
        value = 100.0 * gain / total if total > 0.0 else 50.0
        self.value = value
        return value


class ATR:
    """Wilder's average true range over ``window`` bars.

    The true range of a bar is ``max(high, prev close) - min(low, prev close)``, which equals
    ``max(high - low, |high - prev close|, |low - prev close|)`` when ``low <= high``. The first
    bar has no previous close, so it only seeds one: the first value comes at bar
    ``window + 1``, the mean of the first ``window`` true ranges; then
    ``atr = (atr * (window - 1) + tr) / window``.
    """

    __slots__ = ("_prev", "_seed", "value", "warmup", "window")
    inputs: ClassVar[tuple[str, ...]] = HIGH_LOW_CLOSE

    def __init__(self, window: int) -> None:
        _check_window("atr", window)
        self.window = window
        self.warmup = window + 1
        self.value: float | None = None
        self._prev: float | None = None
        self._seed: list[float] = []

    @property
    def ready(self) -> bool:
        """True once a value exists."""
        return self.value is not None

    def update(self, high: float, low: float, close: float) -> float | None:
        """Take one bar's high, low and close; return the ATR."""
        prev = self._prev
        self._prev = close
        if prev is None:
            return None
        tr = (high if high > prev else prev) - (low if low < prev else prev)
        atr = self.value
        n = self.window
        if atr is not None:
            atr = (atr * (n - 1) + tr) / n
        else:
            seed = self._seed
            seed.append(tr)
            if len(seed) < n:
                return None
            atr = math.fsum(seed) / n
            seed.clear()
        self.value = atr
        return atr

    def update_bar(
        self, open_: float, high: float, low: float, close: float, volume: float
    ) -> float | None:
        """Take one bar (its high, low and close are read)."""
        return self.update(high, low, close)

    def __repr__(self) -> str:
        return f"ATR({self.window}, value={self.value!r})"


class _RollingMoments:
    """Sum and sum of squares of the last ``n`` values, shifted; O(1) amortized per push.

    Values are stored as given; the sums are kept for ``value - shift`` (``shift`` is the newest
    value at the last exact recompute), so they scale with the window's spread, not its level,
    and ``m2 = s2 - s1 * s1 / n`` (the sum of squared deviations) cancels little. ``bound``
    accumulates ``s2`` before and after each step (the old one matters: removing a large value
    leaves an error of a few ulps of what was there): the rounding error of ``m2`` since the
    last recompute is at most a few ulps of ``4 * bound + age * s2`` (the ``age`` term covers
    ``s1``'s error), so when that exceeds ``m2 * _RECOMPUTE_RATIO`` the sums are recomputed.
    """

    __slots__ = ("age", "bound", "m2", "n", "recomputes", "s1", "s2", "shift", "values")

    def __init__(self, n: int) -> None:
        self.n = n
        self.values: deque[float] = deque()
        self.shift = 0.0
        self.s1 = 0.0
        self.s2 = 0.0
        self.m2 = 0.0
        self.bound = 0.0
        self.age = 0
        self.recomputes = 0

    def push(self, x: float) -> float | None:
        """Add ``x`` (dropping the oldest once full); return ``m2`` once the window is full."""
        values = self.values
        values.append(x)
        n = self.n
        if len(values) <= n:
            if len(values) < n:
                return None
            return self.recompute()
        shift = self.shift
        y = x - shift
        y_old = values.popleft() - shift
        if y == y_old:
            return self.m2  # nothing changed, and nothing was rounded
        s2_old = self.s2
        s1 = self.s1 + (y - y_old)
        s2 = s2_old + (y * y - y_old * y_old)
        m2 = s2 - s1 * s1 / n
        bound = self.bound + s2_old + s2
        age = self.age + 1
        if 4.0 * bound + age * s2 > m2 * _RECOMPUTE_RATIO:  # also true when m2 <= 0
            return self.recompute()
        self.s1 = s1
        self.s2 = s2
        self.m2 = m2
        self.bound = bound
        self.age = age
        return m2

    def recompute(self) -> float:
        """Recompute the sums exactly from the window (``math.fsum``, two passes); return m2."""
        values = self.values
        n = len(values)
        shift = values[-1]
        shifted = [v - shift for v in values]
        s1 = math.fsum(shifted)
        mean = s1 / n
        m2 = math.fsum([(y - mean) * (y - mean) for y in shifted])
        self.shift = shift
        self.s1 = s1
        self.s2 = m2 + s1 * s1 / n
        self.m2 = m2
        self.bound = 0.0
        self.age = 0
        self.recomputes += 1
        return m2


class RollingVolatility(CloseIndicator):
    """Sample standard deviation of the last ``window`` log returns of the close (per bar)."""

    __slots__ = ("_dof", "_moments", "_prev")

    def __init__(self, window: int) -> None:
        _check_window("volatility", window, minimum=2)
        super().__init__(window, window + 1)
        self._moments = _RollingMoments(window)
        self._dof = float(window - 1)
        self._prev: float | None = None

    @property
    def recomputes(self) -> int:
        """How many exact recomputes the rolling variance needed (a numerics diagnostic)."""
        return self._moments.recomputes

    def update(self, close: float) -> float | None:
        """Take one close; return the volatility of the window's log returns."""
        prev = self._prev
        self._prev = close
        if prev is None:
            return None
        m2 = self._moments.push(math.log(close / prev))
        if m2 is None:
            return None
        value = math.sqrt(m2 / self._dof) if m2 > 0.0 else 0.0
        self.value = value
        return value


class ZScore(CloseIndicator):
    """``(close - mean) / std`` over the last ``window`` closes (sample std).

    A constant window has no spread to measure against: its z-score is 0.0 (the close is its
    mean), not None, so the feature does not vanish on a quiet market.
    """

    __slots__ = ("_dof", "_moments")

    def __init__(self, window: int) -> None:
        _check_window("zscore", window, minimum=2)
        super().__init__(window, window)
        self._moments = _RollingMoments(window)
        self._dof = float(window - 1)

    @property
    def recomputes(self) -> int:
        """How many exact recomputes the rolling variance needed (a numerics diagnostic)."""
        return self._moments.recomputes

    def update(self, close: float) -> float | None:
        """Take one close; return its z-score within the window."""
        moments = self._moments
        m2 = moments.push(close)
        if m2 is None:
            return None
        if m2 > 0.0:
            deviation = close - moments.shift - moments.s1 / self.window
            value = deviation / math.sqrt(m2 / self._dof)
        else:
            value = 0.0
        self.value = value
        return value


KINDS: Mapping[str, Callable[[int], Indicator]] = {
    "returns": Returns,
    "sma": SMA,
    "ema": EMA,
    "rsi": RSI,
    "atr": ATR,
    "volatility": RollingVolatility,
    "zscore": ZScore,
}
"""Indicator factories by kind: the ``kind`` values of ``[[analytics.features]]``."""


def make_indicator(kind: str, window: int) -> Indicator:
    """Build the indicator ``kind`` with ``window``; an unknown kind or bad window raises."""
    factory = KINDS.get(kind)
    if factory is None:
        msg = f"unknown indicator kind {kind!r} (known: {', '.join(KINDS)})"
        raise ValueError(msg)
    return factory(window)
