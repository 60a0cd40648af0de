"""The built-in strategies on crafted bar sequences (pinned sma_cross semantics)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from attrs import evolve

from contracts.enums import Side
from contracts.market import KlineEvent
from contracts.meta import EventMeta, Source
from contracts.strategy import IntentDraft
from contracts.topics import MARKET_KLINE
from planes.strategy.builtin import Breakout, ParamError, RsiReversion, SmaCross


class View:
    symbol = "BTCUSDT"

    def __init__(self) -> None:
        self.held = Decimal(0)

    def now_ms(self) -> int:
        return 0

    def features(self) -> dict[str, float]:
        return {}

    def regime(self) -> str | None:
        return None

    def position(self) -> Decimal:
        return self.held


def bar(i: int, close: float, high: float | None = None, low: float | None = None) -> KlineEvent:
    c = Decimal(str(close))
    return KlineEvent(
        EventMeta(Source.MARKET, i),
        "x",
        "BTCUSDT",
        "1",
        i * 60_000,
        i * 60_000 + 59_999,
        c,
        Decimal(str(high)) if high is not None else c,
        Decimal(str(low)) if low is not None else c,
        c,
        Decimal(1),
        closed=True,
    )


def run(strategy: Any, closes: list[float]) -> list[tuple[int, IntentDraft]]:
    view = View()
    out = []
    for i, close in enumerate(closes):
        for draft in strategy.on_event(MARKET_KLINE, bar(i, close), view):
            out.append((i, draft))
            view.held += draft.size_hint if draft.side is Side.BUY else -view.held
    return out


def sma(values: list[float], n: int, i: int) -> float | None:
    return sum(values[i - n + 1 : i + 1]) / n if i + 1 >= n else None


def reference_crosses(closes: list[float], fast: int, slow: int) -> list[tuple[int, Side]]:
    """The pinned rule, written plainly: enter on an upward cross when flat, exit on a downward."""
    out, long = [], False
    for i in range(1, len(closes)):
        f0, s0, f1, s1 = (
            sma(closes, fast, i - 1),
            sma(closes, slow, i - 1),
            sma(closes, fast, i),
            sma(closes, slow, i),
        )
        if None in (f0, s0, f1, s1):
            continue
        if f0 < s0 and f1 > s1 and not long:  # type: ignore[operator]
            out.append((i, Side.BUY))
            long = True
        elif f0 > s0 and f1 < s1 and long:  # type: ignore[operator]
            out.append((i, Side.SELL))
            long = False
    return out


def test_sma_cross_follows_the_pinned_rule() -> None:
    closes = [10, 9, 8, 7, 6, 7, 8, 9, 10, 11, 12, 11, 10, 9, 8, 7, 8, 9, 10, 11, 12, 13, 12, 11]
    closes = [float(c) for c in closes]
    got = run(SmaCross({"fast": 2, "slow": 4, "qty": 1}), closes)
    assert [(i, d.side) for i, d in got] == reference_crosses(closes, 2, 4)
    assert got, "the series must contain crosses"
    entries = [d for _, d in got if d.side is Side.BUY]
    exits = [d for _, d in got if d.side is Side.SELL]
    assert all(d.size_hint == 1 and not d.reduce_only for d in entries)
    assert all(d.reduce_only and d.size_hint == 1 for d in exits)


def test_sma_cross_touching_without_crossing_is_no_signal() -> None:
    # fast == slow on a bar is not a cross: previous fast < previous slow AND fast > slow.
    closes = [5.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    assert run(SmaCross({"fast": 2, "slow": 3}), closes) == []


def test_sma_cross_ignores_open_bars() -> None:
    strategy = SmaCross({"fast": 2, "slow": 3})
    open_bar = bar(0, 1.0)
    assert strategy.on_event(MARKET_KLINE, evolve(open_bar, closed=False), View()) == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"fast": 5, "slow": 5}, "below 'slow'"),
        ({"fast": 0}, "positive integer"),
        ({"fast": "x"}, "positive integer"),
        ({"qty": -1}, "positive quantity"),
        ({"colour": "red"}, "unknown params"),
    ],
)
def test_bad_params_are_named(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ParamError, match=message):
        SmaCross(params)


def test_rsi_reversion_buys_oversold_and_sells_overbought() -> None:
    falling = [100.0 - 2 * i for i in range(20)]
    rising = [falling[-1] + 3 * i for i in range(1, 25)]
    got = run(RsiReversion({"window": 5, "qty": 2}), falling + rising)
    sides = [d.side for _, d in got]
    assert sides[:2] == [Side.BUY, Side.SELL]
    assert got[0][0] < 20 <= got[1][0]


def test_breakout_enters_above_the_channel_and_exits_below() -> None:
    strategy = Breakout({"window": 3, "qty": 1})
    view = View()
    sides = [
        (i, draft.side)
        for i, close in enumerate([10.0, 11.0, 10.5, 12.0, 11.5, 9.0])
        for draft in strategy.on_event(MARKET_KLINE, bar(i, close), view)
    ]
    assert sides == [(3, Side.BUY), (5, Side.SELL)]


# -- restarts: a position the instance did not enter itself ---------------------------------

RESTORED = Decimal("0.7")
FALLING = [100.0 - 2 * i for i in range(20)]
RISING = [FALLING[-1] + 3 * i for i in range(1, 25)]


def signals(strategy: Any, closes: list[float], held: Decimal) -> list[tuple[int, IntentDraft]]:
    """Run ``strategy`` with a view that shows ``held`` throughout (no fills reach it)."""
    view = View()
    view.held = held
    return [
        (i, draft)
        for i, close in enumerate(closes)
        for draft in strategy.on_event(MARKET_KLINE, bar(i, close), view)
    ]


@pytest.mark.parametrize(
    ("make", "closes"),
    [
        (lambda: SmaCross({"fast": 2, "slow": 3, "qty": 1}), [12.0, 11, 10, 14, 16, 9, 7]),
        (lambda: RsiReversion({"window": 5, "qty": 1}), FALLING + RISING),
        (lambda: Breakout({"window": 3, "qty": 1}), [10.0, 11.0, 10.5, 12.0, 11.5, 9.0]),
    ],
    ids=["sma_cross", "rsi_reversion", "breakout"],
)
def test_a_restored_position_is_not_doubled_and_is_closed_on_the_exit_signal(
    make: Any, closes: list[float]
) -> None:
    flat = signals(make(), closes, Decimal(0))
    assert [d.side for _, d in flat] == [Side.BUY, Side.SELL]  # an entry signal, then an exit
    # A new instance (as after a restart) that never entered, with a restored position.
    restored = signals(make(), closes, RESTORED)
    assert [(i, d.side, d.size_hint, d.reduce_only) for i, d in restored] == [
        (flat[1][0], Side.SELL, RESTORED, True)
    ]


def test_after_its_own_exit_the_lagging_view_does_not_count_as_held() -> None:
    # The exit fills at the next open, so the view still shows the position on the next bars;
    # the instance's own record (it exited) decides, and the next upward cross enters.
    closes = [12.0, 11, 10, 14, 16, 9, 7, 6, 15, 20]
    got = signals(SmaCross({"fast": 2, "slow": 3, "qty": 1}), closes, RESTORED)
    assert [(i, d.side) for i, d in got] == [(5, Side.SELL), (8, Side.BUY)]
