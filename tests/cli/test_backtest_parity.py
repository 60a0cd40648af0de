"""Parity: ``sma_cross`` in ``planes backtest`` against backtesting.py on the same OHLCV series.

Both engines get the same rule (the pinned one: enter long when the fast SMA crosses above the
slow one on a closed bar, exit on the opposite cross), fill market orders at the next bar's open,
trade a fixed quantity of 1 and pay no fees, so entry and exit bars and prices must be equal.

The series: two of real market data and two seeded random walks. The real ones are the files
backtesting.py ships in ``backtesting/test/`` (the data behind ``backtesting.test.GOOG`` and
``.EURUSD``): NASDAQ:GOOG daily, 2004-08-19 to 2013-03-01 (2,148 bars), and EUR/USD hourly,
2017-04-19 to 2018-02-07 (5,000 bars). They are read where the package is installed, as they
are: planes' replay reads that CSV shape (an unnamed date column, capitalised OHLCV), so nothing
is converted, and no copy of them is kept in this repository; they are distributed with
backtesting.py under its licence, the AGPL-3.0, and used only here, at test time, through that
test-only dependency. The real series have what the walks lack: fractional prices and volumes
of another scale (EUR/USD at five decimals), a symbol other than BTCUSDT, and gaps. GOOG trades
on weekdays only, less holidays (gaps of 1 to 5 days), EUR/USD not at weekends (gaps of about
two days); the replay takes the most common gap as the interval (``D``, ``60``) and a gap as
bars that are not there: a signal on a Friday's close fills at Monday's open in both engines.

Both engines compute the SMAs in floats (pandas' rolling mean; planes' compensated running sum),
so a near-tie between the fast and the slow SMA could in principle read as a cross in one and
not the other. It does not happen on these series: the two agree to about 1e-13, and the fast
and slow SMAs are never closer than 2.7e-7 of their level, six orders of magnitude apart.

Known difference, checked below: a trade still open when the data ends. ``planes backtest``
closes it at the last bar's close, stamped with that bar's end (the instant the close is known),
and marks it ``closed_at_end`` (the pinned report rule). backtesting.py (``finalize_trades``)
closes it like a market order placed on the last bar: at that bar's *open*, stamped with its
start. Everything before that trade's exit is equal, bar for bar and price for price; on GOOG
the last trade is such a trade, on EUR/USD none is.
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
from planes.market.replay import interval_ms, load_replay  # noqa: E402
from tests.planes.market.ohlcv_fixtures import pandas_index_csv, walk  # noqa: E402

# backtesting.py 0.6 calls pandas APIs that pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pandas.errors.Pandas4Warning", "ignore::DeprecationWarning:backtesting"
)

DATA = Path(__file__).resolve().parents[1] / "data" / "ohlcv" / "btcusdt_1h_500.csv"
REFERENCE_DATA = Path(backtesting.__file__).resolve().parent / "test"
"""Where backtesting.py keeps its sample data (read in place: see the module docstring)."""
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


def last_bar(data: Path = DATA) -> dict[str, Any]:
    frame = pd.read_csv(data, index_col=0, parse_dates=True, dtype=str)
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


async def ours(data: Path = DATA, symbol: str = "BTCUSDT") -> dict[str, Any]:
    """The report of ``planes backtest --fill next_open --qty 1`` without fees over ``data``."""
    args = argparse.Namespace(
        data=data,
        strategy="sma_cross",
        param=[f"fast={FAST}", f"slow={SLOW}"],
        symbol=symbol,
        fill="next_open",
        qty="1",
        cash="10000000",
        fee_bps=0.0,
        slippage_bps=0.0,
        config=None,
        sets=[],
    )
    result = await run_backtest(backtest_config(args))
    return result.report


def assert_same_trades(
    got: list[dict[str, Any]], expected: list[dict[str, Any]], data: Path, bar_ms: int
) -> None:
    """Equal trade for trade; a trade open at the end differs only as the docstring says."""
    assert len(got) == len(expected)
    for mine, ref in zip(got, expected, strict=True):
        assert mine["entry_ts"] == ref["entry_ts"]
        assert Decimal(mine["entry_price"]) == ref["entry_price"]
        assert Decimal(mine["qty"]) == ref["qty"]
        if mine["closed_at_end"]:
            last = last_bar(data)
            assert ref["exit_ts"] == iso(last["start"])
            assert ref["exit_price"] == last["open"]
            assert mine["exit_ts"] == iso(last["start"] + bar_ms - 1)
            assert Decimal(mine["exit_price"]) == last["close"]
        else:
            assert mine["exit_ts"] == ref["exit_ts"]
            assert Decimal(mine["exit_price"]) == ref["exit_price"]


async def test_sma_cross_matches_backtesting_py() -> None:
    expected = reference_trades()
    got = (await ours())["trades"]
    assert len(expected) >= 5, "the series must hold several crosses to be a meaningful check"
    assert_same_trades(got, expected, DATA, 3_600_000)


@pytest.mark.parametrize(
    ("name", "symbol", "bars", "interval", "min_trades"),
    [("GOOG", "GOOG", 2148, "D", 30), ("EURUSD", "EURUSD", 5000, "60", 80)],
)
async def test_real_series_match_backtesting_py(
    name: str, symbol: str, bars: int, interval: str, min_trades: int
) -> None:
    """Real prices, with their weekend and holiday gaps, give the same trades in both engines."""
    data = REFERENCE_DATA / f"{name}.csv"
    replay = load_replay(data, symbol=symbol)
    # The gaps must not mislead the interval: a wrong one would move every at-end exit stamp,
    # and a shorter one would have the replay refuse the file as overlapping bars.
    assert (len(replay.bars), replay.interval) == (bars, interval)
    expected = reference_trades(data)
    report = await ours(data, symbol)
    assert report["bars"] == bars
    got = report["trades"]
    assert len(expected) >= min_trades, "the series must hold many crosses to be a real check"
    assert {t["symbol"] for t in got} == {symbol}
    bar_ms = interval_ms(interval)
    assert bar_ms is not None
    assert_same_trades(got, expected, data, bar_ms)


async def test_one_bar_trades_match_too(tmp_path: Path) -> None:
    """A longer walk holds trades whose exit cross comes on the bar right after the entry: the
    exit intent must reach risk after the entry's next-open fill (execution starts before
    strategy), or it is refused as nothing to reduce and two trades merge into one."""
    bars = walk(3000, seed=4, price=42_000.0)
    data = tmp_path / "walk.csv"
    data.write_text(pandas_index_csv(bars, adj_close=False))
    expected = reference_trades(data)
    got = (await ours(data))["trades"]
    assert len(got) == len(expected)
    assert [t["entry_ts"] for t in got] == [t["entry_ts"] for t in expected]
    one_bar = [t for t in expected if _hours(t["entry_ts"], t["exit_ts"]) == 1]
    assert one_bar, "the walk must hold one-bar trades for this test to mean something"


def _hours(start: str, end: str) -> float:
    parse = pd.Timestamp
    return float((parse(end) - parse(start)).total_seconds() / 3600)
