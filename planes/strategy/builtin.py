"""Built-in strategies: ``sma_cross``, ``rsi_reversion``, ``breakout``.

All three are long-only, act on closed bars of their symbol, and size entries with the ``qty``
param (a quantity; without it the RiskManager's ``risk.default_qty`` applies). Exits are
``reduce_only`` sells of the whole position.

They are position-aware, so a restart cannot double a position: an instance that has not
traded yet treats a long position the view shows as its own (no second entry; its exit signal
closes it). A new instance starts with empty indicator windows, so after a restart it signals
again only once they have re-warmed from new bars.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from contracts.enums import Side
from contracts.market import KlineEvent
from contracts.meta import Payload
from contracts.ports import StrategySpec, StrategyView
from contracts.strategy import IntentDraft, ParamValue
from contracts.topics import Topic
from planes.indicators import RSI, SMA


class ParamError(ValueError):
    """A strategy parameter is missing or wrong; the message names it."""


def _int_param(params: Mapping[str, ParamValue], name: str, default: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParamError(f"param {name!r} must be a positive integer, got {value!r}")
    return value


def _float_param(params: Mapping[str, ParamValue], name: str, default: float) -> float:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParamError(f"param {name!r} must be a number, got {value!r}")
    return float(value)


def _qty_param(params: Mapping[str, ParamValue]) -> Decimal | None:
    value = params.get("qty")
    if value is None:
        return None
    if isinstance(value, bool):
        raise ParamError(f"param 'qty' must be a positive quantity, got {value!r}")
    try:
        qty = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ParamError(f"param 'qty' must be a positive quantity, got {value!r}") from None
    if not qty.is_finite() or qty <= 0:
        raise ParamError(f"param 'qty' must be a positive quantity, got {value!r}")
    return qty


def _unknown(params: Mapping[str, ParamValue], known: set[str]) -> None:
    extra = sorted(set(params) - known)
    if extra:
        raise ParamError(f"unknown params {extra} (known: {sorted(known)})")


class _LongOnly:
    """Entry/exit bookkeeping shared by the built-ins: in the market or not, and how much.

    ``long`` records what this instance did itself: True after its entry, False after its exit,
    None while it has done neither. Until it acts, the view's position decides: a long position
    it did not enter (restored after a restart, adopted from the venue, entered by another
    scenario on the symbol) counts as held, so an entry signal does not double it and an exit
    signal closes it. Once it has acted, its own record decides, because the view lags
    next-open fills by a bar: right after an entry it still shows flat, right after an exit it
    still shows the position.
    """

    def __init__(self, qty: Decimal | None) -> None:
        self.qty = qty
        self.long: bool | None = None

    def holding(self, view: StrategyView) -> bool:
        """True when this instance is (or must behave as) long."""
        return view.position() > 0 if self.long is None else self.long

    def enter(self, view: StrategyView, reason: str) -> list[IntentDraft]:
        if self.holding(view):
            return []
        self.long = True
        return [IntentDraft(Side.BUY, size_hint=self.qty, reason=reason)]

    def exit(self, view: StrategyView, reason: str) -> list[IntentDraft]:
        if not self.holding(view):
            return []
        self.long = False
        # The fill of the entry may still be on its way (next-open fills): the position the view
        # shows can lag, so fall back to the quantity asked for. Risk clips to the position.
        held = view.position()
        size = held if held > 0 else self.qty
        return [IntentDraft(Side.SELL, size_hint=size, reduce_only=True, reason=reason)]


class _BarStrategy:
    """Routes the closed bars of the symbol to ``on_bar``; features and the rest are ignored."""

    def on_event(
        self, topic: Topic[Any], payload: Payload, view: StrategyView
    ) -> Sequence[IntentDraft]:
        """The ``Strategy`` entry point: closed klines go to ``on_bar``."""
        if isinstance(payload, KlineEvent) and payload.closed:
            return self.on_bar(payload, view)
        return []

    def on_bar(self, payload: KlineEvent, view: StrategyView) -> Sequence[IntentDraft]:
        """Return the drafts one closed bar causes."""
        raise NotImplementedError


def bar_handler(
    strategy: object,
) -> Callable[[KlineEvent, StrategyView], Sequence[IntentDraft]] | None:
    """``strategy.on_bar`` when its ``on_event`` is ``_BarStrategy``'s, else None.

    The StrategyManager hands closed bars straight to it: exactly what that ``on_event`` does
    with them, without the call and the type test per bar.
    """
    if isinstance(strategy, _BarStrategy) and type(strategy).on_event is _BarStrategy.on_event:
        return strategy.on_bar
    return None


class SmaCross(_BarStrategy):
    """Enter long when the fast SMA crosses above the slow one, exit on the opposite cross.

    A cross is ``previous fast < previous slow and fast > slow`` (and the mirror), on closed
    bars. Params: ``fast`` (default 10), ``slow`` (default 30, > fast), ``qty``.
    """

    name = "sma_cross"

    def __init__(self, params: Mapping[str, ParamValue]) -> None:
        _unknown(params, {"fast", "slow", "qty"})
        self.fast_n = _int_param(params, "fast", 10)
        self.slow_n = _int_param(params, "slow", 30)
        if self.fast_n >= self.slow_n:
            raise ParamError(f"param 'fast' ({self.fast_n}) must be below 'slow' ({self.slow_n})")
        self._fast = SMA(self.fast_n)
        self._slow = SMA(self.slow_n)
        self._prev: tuple[float, float] | None = None
        self._book = _LongOnly(_qty_param(params))

    def on_bar(self, payload: KlineEvent, view: StrategyView) -> Sequence[IntentDraft]:
        """Return an entry or an exit on a cross."""
        close = float(payload.close)
        fast = self._fast.update(close)
        slow = self._slow.update(close)
        if fast is None or slow is None:
            return []
        prev, self._prev = self._prev, (fast, slow)
        if prev is None:
            return []
        if prev[0] < prev[1] and fast > slow:
            return self._book.enter(view, f"SMA{self.fast_n} crossed above SMA{self.slow_n}")
        if prev[0] > prev[1] and fast < slow:
            return self._book.exit(view, f"SMA{self.fast_n} crossed below SMA{self.slow_n}")
        return []


class RsiReversion(_BarStrategy):
    """Buy when RSI falls below ``lower``; sell when it rises above ``upper``.

    Params: ``window`` (default 14), ``lower`` (30), ``upper`` (70), ``qty``.
    """

    name = "rsi_reversion"

    def __init__(self, params: Mapping[str, ParamValue]) -> None:
        _unknown(params, {"window", "lower", "upper", "qty"})
        self.window = _int_param(params, "window", 14)
        self.lower = _float_param(params, "lower", 30.0)
        self.upper = _float_param(params, "upper", 70.0)
        if not 0 < self.lower < self.upper < 100:
            raise ParamError(f"params need 0 < lower < upper < 100, got {self.lower}, {self.upper}")
        self._rsi = RSI(self.window)
        self._book = _LongOnly(_qty_param(params))

    def on_bar(self, payload: KlineEvent, view: StrategyView) -> Sequence[IntentDraft]:
        """Enter oversold, exit overbought."""
        rsi = self._rsi.update(float(payload.close))
        if rsi is None:
            return []
        if rsi < self.lower:
            return self._book.enter(view, f"RSI{self.window} {rsi:.1f} < {self.lower:g}")
        if rsi > self.upper:
            return self._book.exit(view, f"RSI{self.window} {rsi:.1f} > {self.upper:g}")
        return []


class Breakout(_BarStrategy):
    """Donchian breakout: enter above the channel's high, exit below its low.

    The channel is the ``window`` bars before the current one.
    Params: ``window`` (default 20), ``qty``.
    """

    name = "breakout"

    def __init__(self, params: Mapping[str, ParamValue]) -> None:
        _unknown(params, {"window", "qty"})
        self.window = _int_param(params, "window", 20)
        self._highs: deque[Decimal] = deque(maxlen=self.window)
        self._lows: deque[Decimal] = deque(maxlen=self.window)
        self._book = _LongOnly(_qty_param(params))

    def on_bar(self, payload: KlineEvent, view: StrategyView) -> Sequence[IntentDraft]:
        """Enter above the channel, exit below it."""
        drafts: list[IntentDraft] = []
        if len(self._highs) == self.window:
            top, bottom = max(self._highs), min(self._lows)
            close, n = payload.close, self.window
            if close > top:
                drafts = self._book.enter(view, f"close {close} above the {n}-bar high {top}")
            elif close < bottom:
                drafts = self._book.exit(view, f"close {close} below the {n}-bar low {bottom}")
        self._highs.append(payload.high)
        self._lows.append(payload.low)
        return drafts


BUILTIN_STRATEGIES: tuple[StrategySpec, ...] = (
    StrategySpec("sma_cross", SmaCross, "long on a fast/slow SMA cross, out on the opposite"),
    StrategySpec("rsi_reversion", RsiReversion, "buy oversold RSI, sell overbought"),
    StrategySpec("breakout", Breakout, "Donchian channel breakout"),
)
