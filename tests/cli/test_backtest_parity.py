"""Parity: ``sma_cross`` in ``planes backtest`` against backtesting.py on the same OHLCV series.

Both engines get the same rule (the pinned one: enter long when the fast SMA crosses above the
slow one on a closed bar, exit on the opposite cross), fill market orders at the next bar's open,
trade a fixed quantity of 1 and pay no fees, so entry and exit bars and prices must be equal.

Known difference, checked below: a trade still open when the data ends. ``planes backtest``
closes it at the last bar's close, stamped with that bar's end (the instant the close is known),
and marks it ``closed_at_end`` (the pinned report rule). backtesting.py (``finalize_trades``)
closes it like a market order placed on the last bar: at that bar's *open*, stamped with its
start. Everything before that trade's exit is equal, bar for bar and price for price.
"""

from __future__ import annotations

import argparse
from datetime import UTC
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pd = pytest.importorskip("pandas")
backtesting = pytest.importorskip("backtesting")
from backtesting import Backtest, Strategy  # noqa: E402
from backtesting.lib import crossover  # noqa: E402

from cli.backtest import backtest_config, iso, run_backtest  # noqa: E402
from tests.planes.market.ohlcv_fixtures import pandas_index_csv, walk  # noqa: E402

# backtesting.py 0.6 calls pandas APIs that pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pandas.errors.Pandas4Warning", "ignore::DeprecationWarning:backtesting"
)

DATA = Path(__file__).resolve().parents[1] / "data" / "ohlcv" / "btcusdt_1h_500.csv"
FAST, SLOW = 10, 30


def sma(values: Any, n: int) -> Any:
    return pd.Series(values).rolling(n).mean()


class SmaCrossReference(Strategy):  # type: ignore[misc]
    fast = FAST
    slow = SLOW

    def init(self) -> None:
        self.sma_fast = self.I(sma, self.data.Close, self.fast)
        self.sma_slow = self.I(sma, self.data.Close, self.slow)

    def next(self) -> None:
        if crossover(self.sma_fast, self.sma_slow) and not self.position:
            self.buy(size=1)
        elif crossover(self.sma_slow, self.sma_fast) and self.position:
            self.position.close()


def reference_trades(data: Path = DATA) -> list[dict[str, Any]]:
    frame = pd.read_csv(data, index_col=0, parse_dates=True)
    frame.columns = [c.capitalize() for c in frame.columns]
    bt = Backtest(frame, SmaCrossReference, cash=10_000_000, commission=0, finalize_trades=True)
    stats = bt.run()
    return [
        {
            "entry_ts": _iso(row.EntryTime),
            "entry_price": Decimal(str(row.EntryPrice)),
            "exit_ts": _iso(row.ExitTime),
            "exit_price": Decimal(str(row.ExitPrice)),
            "qty": Decimal(int(row.Size)),
        }
        for row in stats._trades.itertuples()
    ]


def last_bar() -> dict[str, Any]:
    frame = pd.read_csv(DATA, index_col=0, parse_dates=True, dtype=str)
    row = frame.iloc[-1]
    start = frame.index[-1].tz_localize(UTC)
    return {
        "start": int(start.timestamp() * 1000),
        "open": Decimal(row["Open"]),
        "close": Decimal(row["Close"]),
    }


def _iso(ts: Any) -> str:
    stamp = ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)
    return iso(int(stamp.timestamp() * 1000))


async def ours(data: Path = DATA) -> list[dict[str, Any]]:
    args = argparse.Namespace(
        data=data,
        strategy="sma_cross",
        param=[f"fast={FAST}", f"slow={SLOW}"],
        symbol="BTCUSDT",
        fill="next_open",
        qty="1",
        cash="10000000",
        fee_bps=0.0,
        slippage_bps=0.0,
        config=None,
        sets=[],
    )
    result = await run_backtest(backtest_config(args))
    return result.report["trades"]  # type: ignore[no-any-return]


async def test_sma_cross_matches_backtesting_py() -> None:
    expected = reference_trades()
    got = await ours()
    assert len(expected) >= 5, "the series must hold several crosses to be a meaningful check"
    assert len(got) == len(expected)
    for mine, ref in zip(got, expected, strict=True):
        assert mine["entry_ts"] == ref["entry_ts"]
        assert Decimal(mine["entry_price"]) == ref["entry_price"]
        assert Decimal(mine["qty"]) == ref["qty"]
        if mine["closed_at_end"]:
            last = last_bar()
            assert ref["exit_ts"] == iso(last["start"])
            assert ref["exit_price"] == last["open"]
            assert mine["exit_ts"] == iso(last["start"] + 3_600_000 - 1)
            assert Decimal(mine["exit_price"]) == last["close"]
        else:
            assert mine["exit_ts"] == ref["exit_ts"]
            assert Decimal(mine["exit_price"]) == ref["exit_price"]


async def test_one_bar_trades_match_too(tmp_path: Path) -> None:
    """A longer walk holds trades whose exit cross comes on the bar right after the entry: the
    exit intent must reach risk after the entry's next-open fill (execution starts before
    strategy), or it is refused as nothing to reduce and two trades merge into one."""
    bars = walk(3000, seed=4, price=42_000.0)
    data = tmp_path / "walk.csv"
    data.write_text(pandas_index_csv(bars, adj_close=False))
    expected = reference_trades(data)
    got = await ours(data)
    assert len(got) == len(expected)
    assert [t["entry_ts"] for t in got] == [t["entry_ts"] for t in expected]
    one_bar = [t for t in expected if _hours(t["entry_ts"], t["exit_ts"]) == 1]
    assert one_bar, "the walk must hold one-bar trades for this test to mean something"


def _hours(start: str, end: str) -> float:
    parse = pd.Timestamp
    return float((parse(end) - parse(start)).total_seconds() / 3600)
