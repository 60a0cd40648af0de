"""``planes backtest``: the pinned interface and report shape."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "ohlcv"
PLANES = str(Path(sys.executable).parent / "planes")

pytestmark = pytest.mark.subprocess


def backtest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PLANES, "backtest", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_report_has_the_pinned_shape(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = backtest(
        "--data", str(DATA / "btcusdt_1h_500.csv"), "--strategy", "sma_cross",
        "--param", "fast=5", "--param", "slow=20", "--qty", "0.5", "--cash", "50000",
        "--fee-bps", "10", "--fill", "close", "--report", str(report),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "bars/s" in result.stdout
    data = json.loads(report.read_text())
    assert set(data) == {"bars", "elapsed_s", "bars_per_s", "trades", "stats"}
    assert data["bars"] == 500
    assert set(data["stats"]) == {
        "n_trades", "total_return", "sharpe", "max_drawdown", "win_rate", "final_equity",
    }  # fmt: skip
    assert data["stats"]["n_trades"] == len(data["trades"]) > 0
    keys = {"symbol", "side", "qty", "entry_ts", "entry_price", "exit_ts", "exit_price", "pnl",
            "fees", "closed_at_end"}  # fmt: skip
    for trade in data["trades"]:
        assert set(trade) == keys
        assert trade["entry_ts"].endswith("Z")
        assert trade["symbol"] == "BTCUSDT"
        assert trade["qty"] == "0.5"
        assert float(trade["fees"]) > 0
    equity = 50000 + sum(float(t["pnl"]) for t in data["trades"])
    assert abs(data["stats"]["final_equity"] - equity) < 1e-6 * equity


def test_a_backtest_imports_neither_the_bybit_client_nor_the_shell() -> None:
    """pybit (with requests) and prompt_toolkit take about 0.3 s to import: a backtest, which
    uses neither, does not pay for them (they are imported where a live venue or the shell
    starts)."""
    script = (
        "import sys\n"
        "from cli.main import main\n"
        f"code = main(['backtest', '--data', {str(DATA / 'btcusdt_1h_500.csv')!r}, "
        "'--strategy', 'sma_cross', '--symbol', 'BTCUSDT'])\n"
        "loaded = sorted(m for m in ('pybit', 'requests', 'prompt_toolkit') if m in sys.modules)\n"
        "print('LOADED', loaded)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout


def test_bybit_json_names_its_symbol(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    result = backtest(
        "--data", str(DATA / "btcusdt_1h_bybit.json"), "--strategy", "breakout",
        "--param", "window=3", "--report", str(report),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text())["bars"] == 24


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "nope"], "not registered"),
        (["--strategy", "sma_cross", "--param", "fast=50", "--param", "slow=5"], "below 'slow'"),
        (["--strategy", "sma_cross", "--param", "oops"], "expected key=value"),
    ],
)
def test_bad_input_is_named(args: list[str], message: str) -> None:
    result = backtest("--data", str(DATA / "btcusdt_1h_500.csv"), *args)
    assert result.returncode != 0
    assert message in result.stderr


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    result = backtest("--data", str(tmp_path / "none.csv"), "--strategy", "sma_cross")
    assert result.returncode != 0
    assert "none.csv" in result.stderr


async def test_analytics_runs_only_when_asked_and_trades_the_same() -> None:
    import argparse  # noqa: PLC0415

    from cli.backtest import backtest_config, run_backtest  # noqa: PLC0415
    from planes.config import Config  # noqa: PLC0415

    def args(*, analytics: bool) -> argparse.Namespace:
        return argparse.Namespace(
            data=DATA / "btcusdt_1h_500.csv", strategy="sma_cross", param=["fast=5", "slow=20"],
            symbol="BTCUSDT", fill="next_open", qty="1", cash=None, fee_bps=None,
            slippage_bps=None, config=None, sets=[], analytics=analytics,
        )  # fmt: skip

    lean, full = backtest_config(args(analytics=False)), backtest_config(args(analytics=True))
    assert lean.analytics.features == ()
    assert not lean.analytics.context
    assert full.analytics.features == Config().analytics.features
    assert full.analytics.context
    reports = {}
    for name, config in (("lean", lean), ("full", full)):
        result = await run_backtest(config)
        reports[name] = result.report
    assert reports["lean"]["trades"] == reports["full"]["trades"]
    assert reports["lean"]["trades"]


def _args(*sets: str, fee_bps: float | None = None) -> Any:
    import argparse  # noqa: PLC0415

    return argparse.Namespace(
        data=DATA / "btcusdt_1h_500.csv", strategy="sma_cross", param=["fast=5", "slow=20"],
        symbol="BTCUSDT", fill="next_open", qty="0.5", cash=None, fee_bps=fee_bps,
        slippage_bps=None, config=None, sets=list(sets), analytics=False,
    )  # fmt: skip


async def test_base_coin_fees_are_valued_at_the_fill_price_and_change_what_a_trade_holds() -> None:
    from cli.backtest import backtest_config, run_backtest  # noqa: PLC0415

    config = backtest_config(_args("execution.spot_buy_fee_in_base=true", fee_bps=10))
    report = (await run_backtest(config)).report
    trades = report["trades"]
    assert len(trades) > 5
    rate = Decimal("0.001")
    for trade in trades:
        # 0.5 BTC bought, 0.0005 BTC of it the fee: the trade holds (and sells) 0.4995.
        assert Decimal(trade["qty"]) == Decimal("0.4995")
        entry, exit_ = Decimal(trade["entry_price"]), Decimal(trade["exit_price"])
        entry_fee = Decimal("0.0005") * entry  # the base-coin fee at the buy's price
        exit_fee = Decimal("0.4995") * exit_ * rate if not trade["closed_at_end"] else 0
        assert Decimal(trade["fees"]) == entry_fee + exit_fee
        assert Decimal(trade["pnl"]) == (exit_ - entry) * Decimal("0.4995") - entry_fee - exit_fee
        assert "unvalued_fees" not in trade
    assert "unvalued_fees" not in report
    # The trades' PnL adds up to the equity the ledger reports (the open one marked at the end).
    total = sum((Decimal(t["pnl"]) for t in trades), Decimal(0))
    assert float(config.portfolio.cash + total) == pytest.approx(report["stats"]["final_equity"])


def test_fees_in_another_coin_are_reported_apart_and_left_out_of_pnl() -> None:
    from cli.backtest import Recorder, unvalued_note  # noqa: PLC0415
    from contracts.enums import OrderStatus, OrderType, Side  # noqa: PLC0415
    from contracts.execution import OrderEvent  # noqa: PLC0415
    from contracts.meta import EventMeta, Source  # noqa: PLC0415

    d = Decimal

    def fill(n: int, side: Side, qty: str, price: str, fee: str, *, asset: str) -> OrderEvent:
        return OrderEvent(
            EventMeta(Source.TRADING, n), f"o{n}", f"c{n}", "venue", "BTCUSDT", side,
            OrderType.MARKET, OrderStatus.FILLED, qty=d(qty), filled_qty=d(qty),
            last_fill_qty=d(qty), last_fill_price=d(price), fee=d(fee), fee_asset=asset,
            exchange_ts=n * 3_600_000,
        )  # fmt: skip

    recorder = Recorder(d(1000))
    recorder.on_order(fill(1, Side.BUY, "1", "100", "0.2", asset="BNB"))
    recorder.on_order(fill(2, Side.BUY, "1", "100", "0.1", asset="USDT"))
    recorder.on_order(
        fill(3, Side.SELL, "4", "110", "0.4", asset="bnb")
    )  # closes 2, opens a short of 2
    recorder.on_order(fill(4, Side.BUY, "2", "100", "-0.02", asset="USDT"))  # a rebate
    long, short = (t.as_json() for t in recorder.trades)
    assert (long["side"], long["qty"], long["pnl"], long["fees"]) == ("long", "2", "19.9", "0.1")
    assert d(long["unvalued_fees"]["BNB"]) == d("0.4")  # 0.2, and half of the flip's 0.4
    assert (short["side"], short["qty"], short["pnl"], short["fees"]) == (
        "short", "2", "20.02", "-0.02",
    )  # fmt: skip
    assert d(short["unvalued_fees"]["BNB"]) == d("0.2")
    assert recorder.unvalued_fees == {"BNB": d("0.6")}
    note = unvalued_note({"unvalued_fees": {"BNB": str(recorder.unvalued_fees["BNB"])}}, "USDT")
    assert note == "fees not valued in USDT, left out of the trades' pnl and fees: 0.6 BNB"
    assert unvalued_note({"trades": []}, "USDT") is None
