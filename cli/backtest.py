"""``planes backtest``: the production planes under the historical clock on a replay source.

Nothing here trades or decides: the command builds a configuration (replay source, one scenario,
paper execution, the historical clock), runs the same ``Runtime`` that ``planes run`` uses, and
records what the bus carries — closed bars, fills, position updates — into a report.

Fills are read as the ledger books them (``planes.execution.ledger.fill_terms``): a fee in the
quote coin is a quote amount; a fee in the base coin changes the quantity the trade holds and is
valued at the fill price; a fee in any other coin is not valued, but reported per coin in the
trade's and the report's ``unvalued_fees`` (keys present only when there is one).

The output paths (``--report``, ``--plot``) are checked before the run (``output_problem``,
``plot_problem``), so a typo costs no run; a write that still fails afterwards loses nothing
(``keep_report``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from contracts.enums import OrderStatus, Side
from contracts.execution import FeeKind, OrderEvent, PositionUpdate
from contracts.market import KlineEvent
from contracts.topics import EXEC_ORDER_EVENT, MARKET_KLINE, PORTFOLIO_POSITION
from planes.config import Config, ReplayFormat, load_config
from planes.execution.ledger import fill_terms
from planes.runtime import Runtime

_MS_PER_YEAR = 365 * 24 * 3600 * 1000
_ZERO = Decimal(0)
_FILLS = frozenset((OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED))

# What a backtest does not want by default: the scenario's qty and cash decide the size, and a
# bar's volume does not cap a fill (reference engines have no such cap). --set overrides them.
_BACKTEST_DEFAULTS = (
    "execution.max_volume_share=1e12",
    "execution.cancel_on_stop=true",
    "risk.default_max_position=1e12",
    "risk.max_notional=1e15",
    "risk.max_gross_exposure=1e15",
    "risk.daily_loss_limit=1e15",
    "risk.max_drawdown=1.0",
    "risk.stale_data_s=0",
    "risk.max_orders_per_minute=1000000",
    "storage.enabled=false",
)


def iso(ts_ms: int) -> str:
    """Unix milliseconds as an ISO-8601 UTC instant."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat().replace("+00:00", "Z")


@attrs.define
class Trade:
    """One round trip: from flat to flat on a symbol."""

    symbol: str
    side: str
    qty: Decimal
    entry_ts: int
    entry_price: Decimal
    exit_ts: int | None = None
    exit_price: Decimal | None = None
    pnl: Decimal = _ZERO
    fees: Decimal = _ZERO
    """Valued in quote: quote fees, and base-coin fees at their fill prices."""
    closed_at_end: bool = False
    unvalued_fees: dict[str, Decimal] = attrs.field(factory=dict)
    """Fees in coins the report cannot value, per coin: left out of ``fees`` and ``pnl``."""

    def as_json(self) -> dict[str, Any]:
        """The report's shape of a trade (``unvalued_fees`` only when there are some)."""
        unvalued = {"unvalued_fees": _strings(self.unvalued_fees)} if self.unvalued_fees else {}
        return {
            "symbol": self.symbol,
            "side": self.side,
            "qty": str(self.qty),
            "entry_ts": iso(self.entry_ts),
            "entry_price": str(self.entry_price),
            "exit_ts": iso(self.exit_ts) if self.exit_ts is not None else None,
            "exit_price": str(self.exit_price) if self.exit_price is not None else None,
            "pnl": str(self.pnl),
            "fees": str(self.fees),
            "closed_at_end": self.closed_at_end,
            **unvalued,
        }


@attrs.define
class _Open:
    side: Side
    qty: Decimal
    cost: Decimal
    entry_ts: int
    fees: Decimal
    exit_qty: Decimal = _ZERO
    exit_value: Decimal = _ZERO
    unvalued: dict[str, Decimal] = attrs.field(factory=dict)


class Recorder:
    """Listens to the bus of a backtest and keeps what the report needs."""

    def __init__(self, cash: Decimal, quote: str = "USDT") -> None:
        self.cash = cash
        self.quote = quote
        self.unvalued_fees: dict[str, Decimal] = {}
        """Fees in coins the report cannot value, per coin, over the run."""
        self.bars = 0
        self.interval_ms: int | None = None
        self.equity: list[float] = []
        self._equity_now = float(cash)
        self.trades: list[Trade] = []
        self._open: dict[str, _Open] = {}
        self.last_bar: dict[str, KlineEvent] = {}

    def on_kline(self, bar: KlineEvent) -> None:
        if not bar.closed:
            return
        if self.bars:
            self.equity.append(self._equity_now)  # the previous bar, now fully processed
        else:
            self.interval_ms = bar.end_ts - bar.start_ts + 1
        self.bars += 1
        self.last_bar[bar.symbol] = bar

    def on_position(self, update: PositionUpdate) -> None:
        self._equity_now = float(update.equity)

    def on_order(self, event: OrderEvent) -> None:
        if event.status not in _FILLS:
            return
        qty, price = event.last_fill_qty, event.last_fill_price
        if not qty or price is None:
            return
        ts = event.exchange_ts if event.exchange_ts is not None else event.meta.ts
        self._fill(event, qty, price, ts)

    def _fill(self, event: OrderEvent, qty: Decimal, price: Decimal, ts: int) -> None:
        symbol, side = event.symbol, event.side
        fee_asset = event.fee_asset
        terms = fill_terms(
            symbol, side, qty, price, event.fee, fee_asset=fee_asset, quote=self.quote
        )
        moved, fee = abs(terms.moved), terms.fee_value  # a base-coin fee changes what is held
        unvalued = {fee_asset.upper(): event.fee} if terms.kind is FeeKind.OTHER else {}
        for asset, amount in unvalued.items():
            self.unvalued_fees[asset] = self.unvalued_fees.get(asset, _ZERO) + amount
        trade = self._open.get(symbol)
        if trade is None:
            self._open[symbol] = _Open(side, moved, moved * price, ts, fee, unvalued=unvalued)
            return
        if side is trade.side:
            trade.qty += moved
            trade.cost += moved * price
            trade.fees += fee
            _add(trade.unvalued, unvalued, 1)
            return
        closing = min(moved, trade.qty - trade.exit_qty)
        trade.exit_qty += closing
        trade.exit_value += closing * price
        trade.fees += fee * closing / moved
        _add(trade.unvalued, unvalued, closing / moved)
        if trade.exit_qty == trade.qty:
            self._close(symbol, trade, ts)
        rest = moved - closing
        if rest > 0:  # the fill flipped the position: the rest opens a new trade
            share = rest / moved
            opened = _Open(side, rest, rest * price, ts, fee * share)
            _add(opened.unvalued, unvalued, share)
            self._open[symbol] = opened

    def _close(self, symbol: str, trade: _Open, ts: int, *, at_end: bool = False) -> None:
        del self._open[symbol]
        entry = trade.cost / trade.qty
        exit_price = trade.exit_value / trade.exit_qty
        sign = 1 if trade.side is Side.BUY else -1
        pnl = (exit_price - entry) * trade.qty * sign - trade.fees
        self.trades.append(
            Trade(
                symbol,
                "long" if trade.side is Side.BUY else "short",
                trade.qty,
                trade.entry_ts,
                entry,
                ts,
                exit_price,
                pnl,
                trade.fees,
                at_end,
                trade.unvalued,
            )
        )

    def finish(self) -> None:
        """Close what is still open at the last close (marked), and take the last equity."""
        if self.bars:
            self.equity.append(self._equity_now)
        for symbol, trade in list(self._open.items()):
            bar = self.last_bar.get(symbol)
            if bar is None:
                continue
            rest = trade.qty - trade.exit_qty
            trade.exit_qty += rest
            trade.exit_value += rest * bar.close
            self._close(symbol, trade, bar.end_ts, at_end=True)

    def stats(self) -> dict[str, Any]:
        """Totals over the run."""
        equity = self.equity or [float(self.cash)]
        final = equity[-1]
        peak, drawdown = equity[0], 0.0
        for value in equity:  # one comparison per bar: max() calls cost 6x (200k bars: 0.14 s)
            if value > peak:
                peak = value
            elif peak > 0 and (peak - value) / peak > drawdown:
                drawdown = (peak - value) / peak
        returns = [b / a - 1 for a, b in itertools.pairwise(equity) if a]
        sharpe = 0.0
        if len(returns) > 1 and self.interval_ms:
            mean = sum(returns) / len(returns)
            std = math.sqrt(sum([(r - mean) ** 2 for r in returns]) / (len(returns) - 1))
            if std > 0:
                sharpe = mean / std * math.sqrt(_MS_PER_YEAR / self.interval_ms)
        wins = sum(1 for t in self.trades if t.pnl > 0)
        return {
            "n_trades": len(self.trades),
            "total_return": final / float(self.cash) - 1 if self.cash else 0.0,
            "sharpe": sharpe,
            "max_drawdown": drawdown,
            "win_rate": wins / len(self.trades) if self.trades else 0.0,
            "final_equity": final,
        }


def _add(into: dict[str, Decimal], fees: dict[str, Decimal], share: Decimal | int) -> None:
    """Add ``share`` of each coin's fee in ``fees`` to ``into``."""
    for asset, amount in fees.items():
        into[asset] = into.get(asset, _ZERO) + amount * share


def _strings(fees: dict[str, Decimal]) -> dict[str, str]:
    return {asset: str(amount) for asset, amount in fees.items()}


def backtest_config(args: Any) -> Config:
    """The configuration ``planes backtest`` runs with (its flags become ``--set`` layers)."""
    params: dict[str, Any] = {}
    for raw in args.param:
        key, sep, value = raw.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {raw!r}: expected key=value")
        params[key.strip()] = _param_value(value.strip())
    if args.qty is not None:
        params["qty"] = args.qty
    scenario = {"id": "backtest", "strategy": args.strategy, "params": params}
    sets = [
        "runtime.mode=backtest",
        "runtime.clock=historical",
        "runtime.start=1970-01-01T00:00:00Z",
        "market.source=replay",
        f"market.replay.path={args.data}",
        "observability.status_interval_s=0",
        f"strategy.scenarios=[{_toml_inline(scenario)}]",
        *_BACKTEST_DEFAULTS,
    ]
    if not getattr(args, "analytics", False):
        # The analytics plane computes what the run reads: the built-in strategies read bars
        # only, and a scenario without a regime condition needs no market context.
        sets += ["analytics.features=[]", "analytics.context=false"]
    if args.symbol:
        sets += [f"market.replay.symbol={args.symbol}", f'market.symbols=["{args.symbol}"]']
    if args.fill:
        sets.append(f"execution.fill={args.fill}")
    if args.cash is not None:
        sets.append(f'portfolio.cash="{args.cash}"')
    if args.fee_bps is not None:
        sets += [
            f"execution.fee_bps_taker={args.fee_bps}",
            f"execution.fee_bps_maker={args.fee_bps}",
        ]
    if args.slippage_bps is not None:
        sets.append(f"execution.slippage_bps={args.slippage_bps}")
    config = load_config(args.config, [*sets, *args.sets])
    if not args.symbol:
        symbol = _data_symbol(Path(args.data), config)
        config = load_config(args.config, [*sets, f'market.symbols=["{symbol}"]', *args.sets])
    return config


def _param_value(raw: str) -> Any:
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            continue
    return {"true": True, "false": False}.get(raw.lower(), raw)


def _toml_inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def _data_symbol(path: Path, config: Config) -> str:
    """The symbol the file holds (Bybit JSON names it), else market.replay.symbol, else BTCUSDT."""
    from planes.market.replay import detect_format, load_replay  # noqa: PLC0415 - rarely needed

    replay = config.market.replay
    fallback = replay.symbol or "BTCUSDT"
    try:
        fmt = replay.format if replay.format is not ReplayFormat.AUTO else detect_format(path)
        if fmt is ReplayFormat.CSV:
            return fallback  # a CSV names no symbol: reading it twice would tell nothing more
        return load_replay(path, fmt=fmt, symbol=replay.symbol, default_symbol="BTCUSDT").symbol
    except Exception:  # noqa: BLE001 - the run itself reports a bad file with file:line
        return fallback


def _summary(report: dict[str, Any]) -> str:
    return f"<{report.get('bars')} bars, {len(report.get('trades', ()))} trades>"


def _length(values: list[float]) -> str:
    return f"<{len(values)} values>"


@attrs.frozen
class BacktestResult:
    """The report (JSON-ready) and the equity curve, one value per closed bar.

    The repr is a summary: ``asyncio.run`` formats the main task, with its result, when it
    restores the SIGINT handler, and a full repr of a 50k-bar result takes about 50 ms.
    """

    report: dict[str, Any] = attrs.field(repr=_summary)
    equity: list[float] = attrs.field(repr=_length)


async def run_backtest(config: Config, *, progress: bool = False) -> BacktestResult:
    """Run one backtest (see docs/backtesting.md)."""
    runtime = Runtime(config)
    runtime.assemble()
    recorder = Recorder(config.portfolio.cash, config.portfolio.quote)
    bus = runtime.bus
    bus.subscribe(MARKET_KLINE, recorder.on_kline)
    bus.subscribe(EXEC_ORDER_EVENT, recorder.on_order)
    bus.subscribe(PORTFOLIO_POSITION, recorder.on_position)
    ticker = asyncio.create_task(_progress(recorder)) if progress else None
    started = time.perf_counter()
    try:
        await runtime.run()
    finally:
        elapsed = time.perf_counter() - started
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            sys.stderr.write("\n")
    recorder.finish()
    report = {
        "bars": recorder.bars,
        "elapsed_s": elapsed,
        "bars_per_s": recorder.bars / elapsed if elapsed > 0 else 0.0,
        "trades": [t.as_json() for t in recorder.trades],
        "stats": recorder.stats(),
    }
    if recorder.unvalued_fees:
        report["unvalued_fees"] = _strings(recorder.unvalued_fees)
    return BacktestResult(report, recorder.equity)


def unvalued_note(report: dict[str, Any], quote: str) -> str | None:
    """The warning ``planes backtest`` prints when the report holds fees it could not value."""
    unvalued = report.get("unvalued_fees")
    if not unvalued:
        return None
    paid = ", ".join(f"{amount} {asset}" for asset, amount in unvalued.items())
    return f"fees not valued in {quote}, left out of the trades' pnl and fees: {paid}"


async def _progress(recorder: Recorder) -> None:
    started = time.perf_counter()
    while True:
        await asyncio.sleep(0.25)
        rate = recorder.bars / max(time.perf_counter() - started, 1e-9)
        sys.stderr.write(
            f"\r{recorder.bars:,} bars  {rate:,.0f} bars/s  {len(recorder.trades)} trades"
        )
        sys.stderr.flush()


PLOT_EXTRA = "--plot needs matplotlib: pip install 'planes-bot[plot]'"


def output_problem(path: Path, flag: str) -> str | None:
    """Why ``path`` cannot be written (named after its ``flag``), or None when it can.

    Checked before a run: the directory exists, is a directory and is writable, and ``path``
    is not a directory nor a file that cannot be written.
    """
    try:
        reason = _unwritable(path)
    except OSError as exc:
        reason = exc.strerror or str(exc)
    return None if reason is None else f"{flag} {path}: {reason}"


def _unwritable(path: Path) -> str | None:
    path, in_place = report_destination(path)
    if in_place:  # a device or a pipe (/dev/stdout)
        return None if os.access(path, os.W_OK) else "it is not writable"
    parent = path.parent
    if path.is_dir():
        return "it is a directory; name a file in it"
    if not parent.exists():
        return f"the directory {parent} does not exist"
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if path.exists() and not os.access(path, os.W_OK):
        return "the file is not writable"
    # A new file, or a regular one replaced by a complete temporary file beside it.
    return (
        None if os.access(parent, os.W_OK | os.X_OK) else f"the directory {parent} is not writable"
    )


def report_destination(out: Path) -> tuple[Path, bool]:
    """Where a report written to ``out`` goes, and whether it is written there in place.

    A device or a pipe (``/dev/stdout``, which is a link) is written in place; a regular file
    is replaced, through a link the link's target (the link stays); a new file is made.
    """
    if out.exists() and not out.is_file() and not out.is_dir():  # these follow links
        return out, True
    return (out.resolve() if out.is_symlink() else out), False


def plot_problem(path: Path) -> str | None:
    """Why ``--plot path`` cannot be drawn, or None: matplotlib is missing or cannot write it.

    The file's extension names the format (none: PNG). The formats are matplotlib's own, so
    matplotlib is imported here, only when a plot is asked for (the plot imports it anyway).
    """
    try:
        import matplotlib  # noqa: PLC0415 - optional
        from matplotlib.backend_bases import FigureCanvasBase  # noqa: PLC0415
    except ImportError:
        return PLOT_EXTRA
    formats = FigureCanvasBase.get_supported_filetypes()
    kind = _plot_format(path)
    if kind not in formats:
        return (
            f"--plot {path}: matplotlib cannot write {kind!r} files "
            f"(it writes {', '.join(sorted(formats))})"
        )
    texsystem = str(matplotlib.rcParams["pgf.texsystem"])
    if kind == "pgf" and shutil.which(texsystem) is None:
        return (
            f"--plot {path}: matplotlib writes 'pgf' files with {texsystem}, which is not installed"
        )
    return output_problem(path, "--plot")


def _plot_format(path: Path) -> str:
    return path.suffix[1:].lower() or "png"


def write_report(text: str, out: Path) -> None:
    """Write ``text`` to a temporary file beside ``out``, renamed over it once complete.

    Through a symbolic link, beside its target (the link stays); a device or a pipe that
    exists (``/dev/stdout``) is written in place.
    """
    out, in_place = report_destination(out)
    if in_place:
        out.write_text(text, encoding="utf-8")
        return
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def keep_report(text: str, prefix: str = "planes-backtest-") -> Path | None:
    """Save a report that could not be written where asked in a new temporary file.

    Return its path, or None when that fails too (the caller prints the report instead).
    """
    try:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".json")
    except OSError:
        return None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(name)
        return None
    return Path(name)


def plot(report: dict[str, Any], equity: Sequence[float], out: Path) -> None:
    """Draw equity and drawdown to ``out`` (needs the ``plot`` extra: matplotlib).

    The extension names the format (``plot_problem`` lists them); without one it is PNG. Raise
    ``RuntimeError`` without matplotlib, ``OSError`` when the file cannot be written.
    """
    try:
        import matplotlib  # noqa: PLC0415 - optional dependency

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise RuntimeError(PLOT_EXTRA) from None
    peak, drawdown = [], []
    top = -math.inf
    for value in equity:
        top = max(top, value)
        peak.append(top)
        drawdown.append((value - top) / top if top else 0.0)
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    ax1.plot(equity, label="equity")
    ax1.set_title(
        f"{report['stats']['n_trades']} trades, return {report['stats']['total_return']:.2%}"
    )
    ax1.legend()
    ax2.fill_between(range(len(drawdown)), drawdown, 0, color="tab:red", alpha=0.4)
    ax2.set_ylabel("drawdown")
    fig.tight_layout()
    try:
        fig.savefig(out, format=_plot_format(out))
    finally:
        plt.close(fig)
