"""``planes backtest``: the pinned interface and report shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
