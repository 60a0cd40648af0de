"""Measure ``planes backtest`` end to end against backtrader, backtesting.py and NautilusTrader.

Run ``python benchmarks/bench_backtest.py [--json] [--sizes 5000,50000,200000] [--repeats R]
[--engines planes,backtrader,backtesting,nautilus]`` (``make bench-backtest`` runs it in a venv of
its own with the ``bench`` extra: the three reference engines are bench-only dependencies, and
NautilusTrader pins pandas < 3).

Every engine runs the same strategy on the same file: ``sma_cross`` with fast 10 and slow 30 on
closes, long only, enter on a cross up (previous fast < previous slow, fast > slow), exit on the
cross down, market orders of quantity 1, filled at the next bar's open, no fees, no slippage,
10,000,000 USDT of cash. The data is a seeded random walk of hourly BTCUSDT bars made with the
fixture generator (``tests/planes/market/ohlcv_fixtures.walk``) and written as a pandas-style CSV
into a temporary directory; sizes are prefixes of one walk. Each engine reads the CSV itself:

* **planes**: ``cli.backtest.backtest_config`` + ``run_backtest`` in this process, every plane the
  runtime assembles (replay source, analytics, strategy, risk, paper execution, portfolio,
  control, observability; the output lists them), timed from building the config to the finished
  report. Loading is part of that run (the replay source reads the file at connect); it is also
  timed alone, with the same ``load_replay`` call, and reported as ``load s``.
* **backtrader**: ``Cerebro(stdstats=False)`` (no observers) with ``GenericCSVData`` (its own CSV
  reader, faster here than ``PandasData``), ``SMA`` + ``CrossOver`` indicators, ``buy(size=1)``
  and ``close()``; market orders fill at the next bar's open. Its loading (preload in ``run``)
  is timed alone too.
* **backtesting.py**: ``pandas.read_csv`` + ``Backtest(...).run()`` with ``crossover`` on two
  rolling means (the strategy of ``tests/cli/test_backtest_parity.py``), ``finalize_trades``.
* **NautilusTrader**: ``pandas.read_csv`` + ``Bar.from_raw_arrays_to_list``, a
  ``BacktestEngine`` (logging bypassed) with a zero-fee BTCUSDT spot pair on a cash account,
  ``SimpleMovingAverage`` indicators and a ``Strategy`` that buys 1 and ``close_all_positions``.
  It fills a market order sent from ``on_bar`` at that bar's close, not at the next open; the
  walk's next open equals the last close, so prices and trades agree.

The figures are the best of ``R`` repeats, interleaved engine by engine, after one untimed warm-up
run of each engine on 200 bars; bars/s is bars divided by the whole time, loading included ("end
to end"), and also without the load ("run only"). Trade counts count round trips (entries), one
still open at the end included; the entries of each engine are compared with backtesting.py's,
bar by bar. ``planes`` runs with the journal off (``planes backtest``'s default);
``planes_journal`` is the same run with ``storage.enabled=true``, every event journaled to a
fresh data dir. An engine that is not installed is
left out with a message; nothing is estimated.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Runnable as a script from anywhere: put the repository root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("TQDM_DISABLE", "1")  # backtesting.py's progress bar, on stderr

from tests.planes.market.ohlcv_fixtures import HOUR_MS, START_MS, Bar, pandas_index_csv, walk

FAST, SLOW, QTY, CASH = 10, 30, 1, 10_000_000
START_PRICE = 42283.58
CHUNK = 500
GOAL_BARS_PER_S = 100_000
WARMUP_BARS = 200  # one untimed run of each engine on this many bars before the timed ones
DEFAULT_SIZES = (5_000, 50_000, 200_000)
ENGINES = ("planes", "planes_journal", "backtrader", "backtesting", "nautilus")
LABELS = {
    "planes": "planes",
    "planes_journal": "planes+journal",
    "backtrader": "backtrader",
    "backtesting": "backtesting.py",
    "nautilus": "NautilusTrader",
}
REFERENCE = "backtesting"  # the engine the entries of the others are compared with
JOURNAL = "planes_journal is planes with storage.enabled=true (every event journaled to SQLite)"


# -- data ----------------------------------------------------------------------------------------


def make_bars(n: int) -> list[Bar]:
    """``n`` hourly bars: the fixture walk in 500-bar pieces, each starting at the last close.

    The fixture walk drifts upwards (about e**6 per 50k bars), which would take prices past what
    floats and the engines' price types hold exactly at 200k bars. Whenever the price has doubled,
    the next piece is the lowest-ending of three seeded walks: prices stay BTC-like (about 40k to
    150k) and every bar still opens at the previous close.
    """
    bars: list[Bar] = []
    price, piece = START_PRICE, 0
    while len(bars) < n:
        size = min(CHUNK, n - len(bars))
        tries = 3 if price > 2 * START_PRICE else 1
        start = START_MS + len(bars) * HOUR_MS
        candidates = [
            walk(size, seed=1000 * piece + j, price=price, start_ms=start) for j in range(tries)
        ]
        chosen = min(candidates, key=lambda c: c[-1].close)
        bars += chosen
        price, piece = float(chosen[-1].close), piece + 1
    return bars


def write_data(folder: Path, sizes: list[int]) -> dict[int, Path]:
    """One CSV per size (prefixes of one walk), as ``DataFrame.to_csv()`` writes it."""
    bars = make_bars(max(sizes))
    paths = {}
    for n in sorted({WARMUP_BARS, *sizes}):
        path = folder / f"btcusdt_1h_{n}.csv"
        path.write_text(pandas_index_csv(bars[:n], adj_close=False), encoding="utf-8")
        paths[n] = path
    return paths


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- contestants ---------------------------------------------------------------------------------


@dataclass
class Run:
    """One timed run: bars, seconds to load alone, seconds start to result, entry fill times."""

    bars: int
    load_s: float
    total_s: float
    entries: list[int] = field(default_factory=list)


Runner = Callable[[Path], Run]


def _planes_journal() -> Runner:
    return _planes(journal=True)


def _planes(*, journal: bool = False) -> Runner:
    from cli.backtest import backtest_config, run_backtest  # noqa: PLC0415
    from planes.logs import configure_logging  # noqa: PLC0415
    from planes.market.replay import load_replay  # noqa: PLC0415

    configure_logging("warning")  # what `planes backtest` sets

    def run(path: Path) -> Run:
        args = argparse.Namespace(
            data=path,
            strategy="sma_cross",
            param=[f"fast={FAST}", f"slow={SLOW}"],
            symbol="BTCUSDT",
            fill="next_open",
            qty=str(QTY),
            cash=str(CASH),
            fee_bps=0.0,
            slippage_bps=0.0,
            config=None,
            sets=[],
        )
        scratch = tempfile.TemporaryDirectory(prefix="planes-journal-") if journal else None
        if scratch is not None:  # a fresh data dir per run: nothing to recover, seq from 1
            args.sets = ["storage.enabled=true", f"runtime.data_dir={scratch.name}"]
        started = time.perf_counter()
        load_replay(path, symbol="BTCUSDT", default_symbol="BTCUSDT")
        load_s = time.perf_counter() - started
        gc.collect()
        started = time.perf_counter()
        result = asyncio.run(run_backtest(backtest_config(args)))
        total_s = time.perf_counter() - started
        if scratch is not None:
            scratch.cleanup()
        report = result.report
        entries = sorted(_ms(t["entry_ts"]) for t in report["trades"])
        return Run(report["bars"], load_s, total_s, entries)

    return run


def native_status() -> str:
    """Whether the planes run their compiled modules (``planes.native``), for the output."""
    from planes import native  # noqa: PLC0415

    return native.status().describe()


def planes_components() -> list[str]:
    """``plane/component`` of everything ``planes backtest`` assembles (for the output)."""
    from cli.backtest import backtest_config  # noqa: PLC0415
    from planes.runtime import Runtime  # noqa: PLC0415

    args = argparse.Namespace(
        data=Path("unused.csv"),
        strategy="sma_cross",
        param=[],
        symbol="BTCUSDT",
        fill=None,
        qty=None,
        cash=None,
        fee_bps=None,
        slippage_bps=None,
        config=None,
        sets=[],
    )
    runtime = Runtime(backtest_config(args))
    runtime.assemble()
    return [f"{plane}/{component.name}" for plane, _, component in runtime.components]


def _backtrader() -> Runner:
    import backtrader as bt  # noqa: PLC0415

    class SmaCross(bt.Strategy):  # type: ignore[misc]
        def __init__(self) -> None:
            fast = bt.ind.SMA(self.data.close, period=FAST)
            slow = bt.ind.SMA(self.data.close, period=SLOW)
            self.cross = bt.ind.CrossOver(fast, slow)
            self.entries: list[int] = []

        def next(self) -> None:
            if not self.position:
                if self.cross[0] > 0:
                    self.buy(size=QTY)
            elif self.cross[0] < 0:
                self.close()

        def notify_order(self, order: Any) -> None:
            if order.status == order.Completed and order.isbuy():
                moment = bt.num2date(order.executed.dt).replace(tzinfo=UTC)
                self.entries.append(int(moment.timestamp() * 1000))

    def feed(path: Path) -> Any:
        return bt.feeds.GenericCSVData(
            dataname=str(path),
            headers=True,
            dtformat="%Y-%m-%d %H:%M:%S",
            datetime=0,
            open=1,
            high=2,
            low=3,
            close=4,
            volume=5,
            openinterest=-1,
            timeframe=bt.TimeFrame.Minutes,
            compression=60,
        )

    def run(path: Path) -> Run:
        started = time.perf_counter()
        cerebro = bt.Cerebro(stdstats=False)
        data = feed(path)
        cerebro.adddata(data)
        data._start()
        data.preload()
        load_s = time.perf_counter() - started
        bars = data.buflen()
        del cerebro, data
        gc.collect()
        started = time.perf_counter()
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(feed(path))
        cerebro.addstrategy(SmaCross)
        cerebro.broker.setcash(CASH)
        cerebro.broker.setcommission(commission=0.0)
        strategy = cerebro.run()[0]
        total_s = time.perf_counter() - started
        return Run(bars, load_s, total_s, sorted(strategy.entries))

    return run


def _backtesting() -> Runner:
    import pandas as pd  # noqa: PLC0415
    from backtesting import Backtest, Strategy  # noqa: PLC0415
    from backtesting.lib import crossover  # noqa: PLC0415

    def sma(values: Any, n: int) -> Any:
        return pd.Series(values).rolling(n).mean()

    class SmaCross(Strategy):  # type: ignore[misc]
        def init(self) -> None:
            self.fast = self.I(sma, self.data.Close, FAST)
            self.slow = self.I(sma, self.data.Close, SLOW)

        def next(self) -> None:
            if crossover(self.fast, self.slow) and not self.position:
                self.buy(size=QTY)
            elif crossover(self.slow, self.fast) and self.position:
                self.position.close()

    def run(path: Path) -> Run:
        gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas deprecations inside backtesting.py
            started = time.perf_counter()
            frame = pd.read_csv(path, index_col=0, parse_dates=True)
            frame.columns = [c.capitalize() for c in frame.columns]
            load_s = time.perf_counter() - started
            stats = Backtest(frame, SmaCross, cash=CASH, commission=0, finalize_trades=True).run()
            total_s = time.perf_counter() - started
        entries = sorted(
            int(ts.tz_localize(UTC).timestamp() * 1000) for ts in stats._trades["EntryTime"]
        )
        return Run(len(frame), load_s, total_s, entries)

    return run


def _nautilus() -> Runner:
    from decimal import Decimal  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415
    from nautilus_trader.backtest.engine import (  # noqa: PLC0415
        BacktestEngine,
        BacktestEngineConfig,
    )
    from nautilus_trader.config import LoggingConfig, StrategyConfig  # noqa: PLC0415
    from nautilus_trader.indicators import SimpleMovingAverage  # noqa: PLC0415
    from nautilus_trader.model.currencies import BTC, USDT  # noqa: PLC0415
    from nautilus_trader.model.data import Bar as NtBar  # noqa: PLC0415
    from nautilus_trader.model.data import BarType  # noqa: PLC0415
    from nautilus_trader.model.enums import AccountType, OmsType, OrderSide  # noqa: PLC0415
    from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue  # noqa: PLC0415
    from nautilus_trader.model.instruments import CurrencyPair  # noqa: PLC0415
    from nautilus_trader.model.objects import Money, Price, Quantity  # noqa: PLC0415
    from nautilus_trader.trading.strategy import Strategy  # noqa: PLC0415

    venue = Venue("BINANCE")
    instrument_id = InstrumentId(Symbol("BTCUSDT"), venue)
    bar_type = BarType.from_str("BTCUSDT.BINANCE-1-HOUR-LAST-EXTERNAL")

    def instrument() -> CurrencyPair:
        return CurrencyPair(
            instrument_id=instrument_id,
            raw_symbol=Symbol("BTCUSDT"),
            base_currency=BTC,
            quote_currency=USDT,
            price_precision=2,
            size_precision=6,
            price_increment=Price(0.01, precision=2),
            size_increment=Quantity(1e-06, precision=6),
            lot_size=None,
            max_quantity=Quantity(9000, precision=6),
            min_quantity=Quantity(1e-06, precision=6),
            max_notional=None,
            min_notional=None,
            max_price=Price(100_000_000, precision=2),
            min_price=Price(0.01, precision=2),
            margin_init=Decimal(0),
            margin_maint=Decimal(0),
            maker_fee=Decimal(0),
            taker_fee=Decimal(0),
            ts_event=0,
            ts_init=0,
        )

    class SmaCrossConfig(StrategyConfig, frozen=True):  # type: ignore[misc,call-arg]
        fast: int = FAST
        slow: int = SLOW

    class SmaCross(Strategy):  # type: ignore[misc]
        def __init__(self, config: SmaCrossConfig) -> None:
            super().__init__(config)
            self.fast = SimpleMovingAverage(config.fast)
            self.slow = SimpleMovingAverage(config.slow)
            self.prev: tuple[float, float] | None = None
            self.entries: list[int] = []
            self.instrument: Any = None

        def on_start(self) -> None:
            self.instrument = self.cache.instrument(instrument_id)
            self.register_indicator_for_bars(bar_type, self.fast)
            self.register_indicator_for_bars(bar_type, self.slow)
            self.subscribe_bars(bar_type)

        def on_bar(self, bar: Any) -> None:
            if not self.slow.initialized:
                return
            fast, slow = self.fast.value, self.slow.value
            prev, self.prev = self.prev, (fast, slow)
            if prev is None:
                return
            if prev[0] < prev[1] and fast > slow:
                if self.portfolio.is_flat(instrument_id):
                    order = self.order_factory.market(
                        instrument_id, OrderSide.BUY, self.instrument.make_qty(QTY)
                    )
                    self.submit_order(order)
            elif prev[0] > prev[1] and fast < slow and self.portfolio.is_net_long(instrument_id):
                self.close_all_positions(instrument_id)

        def on_order_filled(self, event: Any) -> None:
            if event.order_side == OrderSide.BUY:
                self.entries.append(event.ts_event // 1_000_000)

    def run(path: Path) -> Run:
        gc.collect()
        started = time.perf_counter()
        frame = pd.read_csv(path, index_col=0, parse_dates=True)
        frame.columns = [c.lower() for c in frame.columns]
        # ts_event of a bar is its close: start + 1 hour, in nanoseconds
        starts = frame.index.values.astype("datetime64[ns]").astype(np.uint64)
        ts = starts + np.uint64(HOUR_MS * 1_000_000)
        # copies: pandas 3 hands out read-only views, which Cython memoryviews refuse
        column = {c: frame[c].to_numpy(dtype=np.float64, copy=True) for c in frame.columns}
        bars = NtBar.from_raw_arrays_to_list(
            bar_type,
            2,
            6,
            column["open"],
            column["high"],
            column["low"],
            column["close"],
            column["volume"],
            ts,
            ts,
        )
        load_s = time.perf_counter() - started
        engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(bypass_logging=True)))
        engine.add_venue(
            venue=venue,
            oms_type=OmsType.NETTING,
            account_type=AccountType.CASH,
            base_currency=None,
            starting_balances=[Money(CASH, USDT)],
        )
        engine.add_instrument(instrument())
        engine.add_data(bars)
        strategy = SmaCross(SmaCrossConfig())
        engine.add_strategy(strategy)
        engine.run()
        total_s = time.perf_counter() - started
        entries = sorted(strategy.entries)
        engine.dispose()
        return Run(len(bars), load_s, total_s, entries)

    return run


FACTORIES: dict[str, Callable[[], Runner]] = {
    "planes": _planes,
    "planes_journal": _planes_journal,
    "backtrader": _backtrader,
    "backtesting": _backtesting,
    "nautilus": _nautilus,
}


def load_runners(names: list[str]) -> tuple[dict[str, Runner], dict[str, str]]:
    """The runners that can run here, and why the others cannot."""
    runners: dict[str, Runner] = {}
    missing: dict[str, str] = {}
    for name in names:
        try:
            runners[name] = FACTORIES[name]()
        except ImportError as exc:
            missing[name] = (
                f"not installed ({exc}); `make bench-backtest` runs this script with the bench "
                "extra in .venv/bench (not in the dev venv: NautilusTrader pins pandas < 3)"
            )
    return runners, missing


# -- measuring -----------------------------------------------------------------------------------


def _describe(run: Run) -> dict[str, Any]:
    return {
        "bars": run.bars,
        "load_s": run.load_s,
        "total_s": run.total_s,
        "bars_per_s": run.bars / run.total_s,
        "run_bars_per_s": run.bars / max(run.total_s - run.load_s, 1e-9),
        "trades": len(run.entries),
    }


def _compare(entries: list[int], reference: list[int]) -> dict[str, Any]:
    mine, theirs = set(entries), set(reference)
    only_mine, only_ref = sorted(mine - theirs), sorted(theirs - mine)
    first = min([*only_mine, *only_ref], default=None)
    return {
        "same_entries": not only_mine and not only_ref,
        "entries_only_here": len(only_mine),
        "entries_only_in_reference": len(only_ref),
        "first_difference": _iso(first) if first is not None else None,
    }


def warm_up(runners: dict[str, Runner], path: Path, log: Callable[[str], None]) -> None:
    """One untimed run of each engine: imports, caches and first-call paths are not measured."""
    for name, runner in runners.items():
        try:
            runner(path)
        except Exception as exc:  # noqa: BLE001 - the timed runs report it
            log(f"  {LABELS[name]} failed its warm-up run: {type(exc).__name__}: {exc}")


def measure(
    runners: dict[str, Runner],
    paths: dict[int, Path],
    sizes: list[int],
    repeats: int,
    log: Callable[[str], None],
) -> dict[str, dict[str, dict[str, Any]]]:
    """``results[engine][size]``: the best of ``repeats`` runs (least total time), or an error."""
    results: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in runners}
    warm_up(runners, paths[WARMUP_BARS], log)
    for n in sizes:
        path = paths[n]
        best: dict[str, Run] = {}
        failed: dict[str, str] = {}
        for repeat in range(repeats):
            for name, runner in runners.items():  # interleaved: drift hits every engine alike
                if name in failed:
                    continue
                try:
                    run = runner(path)
                except Exception as exc:  # noqa: BLE001 - report it, keep measuring the others
                    failed[name] = f"{type(exc).__name__}: {exc}"
                    log(f"  {LABELS[name]} failed on {n:,} bars: {failed[name]}")
                    continue
                if run.bars != n:
                    failed[name] = f"saw {run.bars} bars, not {n}"
                    continue
                log(
                    f"  {n:>7,} bars  repeat {repeat + 1}/{repeats}  {LABELS[name]:<15}"
                    f"  {run.total_s:7.2f} s  {run.bars / run.total_s:>9,.0f} bars/s"
                    f"  {len(run.entries)} trades"
                )
                if name not in best or run.total_s < best[name].total_s:
                    best[name] = run
        reference = best.get(REFERENCE)
        for name in runners:
            if name in failed:
                results[name][str(n)] = {"error": failed[name]}
                continue
            row = _describe(best[name])
            if reference is not None and name != REFERENCE:
                row |= _compare(best[name].entries, reference.entries)
            results[name][str(n)] = row
    return results


def ratios(results: dict[str, dict[str, dict[str, Any]]], sizes: list[int]) -> dict[str, Any]:
    """planes bars/s over each other engine's, per size (end to end)."""
    out: dict[str, Any] = {}
    mine = results.get("planes", {})
    for n in sizes:
        ours = mine.get(str(n), {}).get("bars_per_s")
        row = {}
        for name, by_size in results.items():
            theirs = by_size.get(str(n), {}).get("bars_per_s")
            if name != "planes" and ours and theirs:
                row[f"vs_{name}"] = ours / theirs
        out[str(n)] = row
    return out


def goal(results: dict[str, dict[str, dict[str, Any]]], sizes: list[int]) -> dict[str, Any]:
    """At least 100k bars/s and ahead of every engine measured, at every size."""
    mine = results.get("planes", {})
    rates = [mine.get(str(n), {}).get("bars_per_s") for n in sizes]
    fast = all(r is not None and r >= GOAL_BARS_PER_S for r in rates)
    ahead = all(
        (r := mine.get(str(n), {}).get("bars_per_s")) is not None
        and all(
            r > by_size[str(n)]["bars_per_s"]
            for name, by_size in results.items()
            if not name.startswith("planes") and "bars_per_s" in by_size.get(str(n), {})
        )
        for n in sizes
    )
    return {"min_bars_per_s": GOAL_BARS_PER_S, "fast_enough": fast, "ahead_of_all": ahead}


# -- output --------------------------------------------------------------------------------------


def _entries_note(name: str, row: dict[str, Any]) -> str:
    if name == REFERENCE:
        return "(reference)"
    if "same_entries" not in row:
        return "-"
    if row["same_entries"]:
        return "same"
    return (
        f"{row['entries_only_here']} only here, {row['entries_only_in_reference']} only there, "
        f"first {row['first_difference']}"
    )


def _table(report: dict[str, Any]) -> str:
    sizes, results = report["sizes"], report["results"]
    lines = [
        "planes backtest vs backtrader vs backtesting.py vs NautilusTrader",
        f"sma_cross {FAST}/{SLOW}, qty {QTY}, next-open fills, no fees; seeded hourly BTCUSDT "
        f"walk; best of {report['repeats']}; Python {report['python']}, {report['cpus']} CPUs",
    ]
    if report["planes_components"]:
        lines += [
            f"planes components: {', '.join(report['planes_components'])}",
            f"planes hot modules: {report['planes_native']}",
            f"journal: {JOURNAL}; planes figures are journal off",
        ]
    lines += [
        "",
        f"{'engine':<15} {'bars':>8} {'load s':>8} {'total s':>8} {'bars/s':>10}"
        f" {'run bars/s':>10} {'trades':>7}  entries vs backtesting.py",
    ]
    for name, by_size in results.items():
        for n in sizes:
            row = by_size.get(str(n))
            if row is None:
                continue
            if "error" in row:
                lines.append(f"{LABELS[name]:<15} {n:>8,}  failed: {row['error']}")
                continue
            same = _entries_note(name, row)
            lines.append(
                f"{LABELS[name]:<15} {n:>8,} {row['load_s']:>8.3f} {row['total_s']:>8.3f}"
                f" {row['bars_per_s']:>10,.0f} {row['run_bars_per_s']:>10,.0f}"
                f" {row['trades']:>7,}  {same}"
            )
    for name, why in report["unavailable"].items():
        lines.append(f"{LABELS[name]:<15} not measured: {why}")
    others = [name for name in results if name != "planes"]
    if "planes" in results and others:
        lines += ["", "planes bars/s / other engine's (end to end):"]
        lines.append(f"{'bars':>8}" + "".join(f" {'vs ' + LABELS[o]:>20}" for o in others))
        for n in sizes:
            row = report["ratios"].get(str(n), {})
            cells = [
                f"{row[f'vs_{o}']:>19.2f}x" if f"vs_{o}" in row else f"{'-':>20}" for o in others
            ]
            lines.append(f"{n:>8,}" + "".join(f" {c}" for c in cells))
    if "planes" in results:
        g = report["goal"]
        lines += [
            "",
            f"goal: >= {GOAL_BARS_PER_S:,} bars/s journal off "
            f"[{'met' if g['fast_enough'] else 'MISSED'}], ahead of every engine measured "
            f"[{'met' if g['ahead_of_all'] else 'MISSED'}]",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, DEFAULT_SIZES)),
        help="bar counts, comma-separated (default: 5000,50000,200000)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per engine; the best counts")
    parser.add_argument(
        "--engines", default=",".join(ENGINES), help=f"a subset of {','.join(ENGINES)}"
    )
    args = parser.parse_args(argv)
    try:
        sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sizes {args.sizes!r}: expected numbers like 5000,50000")
    names = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(names) - set(ENGINES))
    if unknown or not names:
        parser.error(f"--engines: unknown {unknown}; choose from {','.join(ENGINES)}")
    if args.repeats <= 0 or not sizes or min(sizes) < 2 * SLOW:
        parser.error(f"--repeats must be positive and every size at least {2 * SLOW}")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    runners, missing = load_runners(names)
    for name, why in missing.items():
        log(f"{LABELS[name]}: {why}")
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        log(f"writing {', '.join(f'{n:,}' for n in sizes)} bars of data to {tmp} ...")
        paths = write_data(Path(tmp), sizes)
        results = measure(runners, paths, sizes, args.repeats, log)
    report = {
        "sizes": sizes,
        "repeats": args.repeats,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "journal": JOURNAL,
        "planes_components": planes_components() if "planes" in runners else [],
        "planes_native": native_status() if "planes" in runners else "",
        "results": results,
        "unavailable": missing,
        "ratios": ratios(results, sizes),
        "goal": goal(results, sizes),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
