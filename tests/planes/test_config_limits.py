"""The ranges of the risk, portfolio and execution numbers (and their neighbours) at config load.

Each bad value is a ``ConfigError`` naming the key, the reason and the layer; each documented
"0: off" and every value ``planes backtest`` sets itself still loads.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from cli.main import main
from planes.config import Config, ConfigError, load_config, origin_of

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "ohlcv" / "btcusdt_1h_500.csv"


def load(*sets: str, environ: dict[str, str] | None = None) -> Config:
    return load_config(None, sets, environ or {}, use_default_file=False)


def error_of(*sets: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(*sets, environ=environ)
    return str(info.value)


@pytest.mark.parametrize(
    ("assignment", "reason"),
    [
        ("risk.max_notional=-5", "risk.max_notional: must be a finite number >= 0, got -5"),
        ("risk.default_qty=-1", "risk.default_qty: must be a finite number >= 0, got -1"),
        (
            "risk.default_max_position=-1",
            "risk.default_max_position: must be a finite number >= 0, got -1",
        ),
        (
            "risk.max_position={BTCUSDT=-1}",
            "risk.max_position[BTCUSDT]: must be a finite number >= 0, got -1",
        ),
        (
            "risk.max_position={btcusdt=1}",
            "risk.max_position[btcusdt]: 'btcusdt' is not a symbol like 'BTCUSDT'",
        ),
        (
            "risk.max_gross_exposure=-1",
            "risk.max_gross_exposure: must be a finite number >= 0, got -1",
        ),
        (
            "risk.daily_loss_limit=-100",
            "risk.daily_loss_limit: must be a finite number >= 0 (0 turns the check off), got -100",
        ),
        ("risk.max_drawdown=2", "risk.max_drawdown: must be a fraction from 0 (off) to 1, got 2"),
        ("risk.max_drawdown=-0.1", "risk.max_drawdown: must be a fraction from 0 (off) to 1"),
        ('risk.allowlist=["btcusdt"]', "risk.allowlist: 'btcusdt' is not a symbol"),
        ("portfolio.cash=-10", "portfolio.cash: must be a finite number > 0, got -10"),
        ("portfolio.cash=0", "portfolio.cash: must be a finite number > 0, got 0"),
        ("portfolio.quote=usdt", "portfolio.quote: 'usdt' is not an asset like 'USDT'"),
        ("execution.max_volume_share=0", "execution.max_volume_share: must be > 0, got 0"),
        ("execution.max_volume_share=-1", "execution.max_volume_share: must be > 0"),
        (
            "execution.slippage_bps=-1",
            "execution.slippage_bps: must be >= 0 and below 10000 bps, got -1",
        ),
        ("execution.slippage_bps=10000", "execution.slippage_bps: must be >= 0 and below 10000"),
        (
            "execution.bybit.backoff_max_s=0.1",
            "execution.bybit.backoff_max_s: 0.1 is below backoff_initial_s 0.2",
        ),
        (
            "market.synthetic.start_prices.BTCUSDT=0",
            "market.synthetic.start_prices[BTCUSDT]: must be a finite number > 0, got 0",
        ),
    ],
)
def test_an_out_of_range_number_names_the_key_the_reason_and_the_origin(
    assignment: str, reason: str
) -> None:
    message = error_of(assignment)

    assert message.startswith("invalid configuration, 1 problem:")
    assert f"  {reason}" in message
    assert f"(from --set {assignment})" in message


def test_problems_in_several_sections_are_reported_together() -> None:
    message = error_of("risk.max_drawdown=2", "portfolio.cash=-10", "execution.slippage_bps=-1")

    assert "invalid configuration, 3 problems:" in message
    assert "risk.max_drawdown: " in message
    assert "portfolio.cash: " in message
    assert "execution.slippage_bps: " in message


@pytest.mark.parametrize(
    "assignment",
    [
        "risk.daily_loss_limit=0",  # off
        "risk.max_drawdown=0",  # off
        "risk.max_drawdown=1",  # a whole drop: planes backtest sets it
        "risk.default_qty=0",  # no_size
        "risk.stale_data_s=0",  # off
        "risk.cooldown_after_loss_s=0",  # off
        "risk.max_position={BTCUSDT=0}",  # nothing opened, reductions pass
        "risk.max_notional=0",
        "execution.slippage_bps=0",
        "execution.max_volume_share=1e12",  # no cap: planes backtest sets it
        "execution.bybit.max_retries=0",
        "portfolio.cash=0.01",
    ],
)
def test_documented_zeros_and_the_extremes_planes_backtest_uses_still_load(
    assignment: str,
) -> None:
    load(assignment)


def test_a_max_position_from_the_environment_keeps_its_symbol_upper_case() -> None:
    config = load(environ={"PLANES__RISK__MAX_POSITION__BTCUSDT": "0.5"})

    assert config.risk.max_position == {"BTCUSDT": Decimal("0.5")}


def test_a_bad_number_from_the_environment_names_the_variable() -> None:
    message = error_of(environ={"PLANES__RISK__MAX_POSITION__BTCUSDT": "-1"})

    assert "risk.max_position[BTCUSDT]: must be a finite number >= 0, got -1" in message
    assert "(from environment variable PLANES__RISK__MAX_POSITION__BTCUSDT)" in message


def test_a_bad_number_from_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bot.toml"
    path.write_text('[portfolio]\ncash = "-10"\n', encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        load_config(path, environ={}, use_default_file=False)

    assert f"portfolio.cash: must be a finite number > 0, got -10 (from file {path})" in str(
        info.value
    )


def test_origin_of_names_the_layer_of_a_loaded_key() -> None:
    config = load("execution.venue=bybit", environ={"PLANES__PORTFOLIO__CASH": "5"})

    assert origin_of(config, "execution.venue") == "--set execution.venue=bybit"
    assert origin_of(config, "portfolio.cash") == "environment variable PLANES__PORTFOLIO__CASH"
    assert origin_of(config, "risk.max_notional") is None  # a default
    assert origin_of(Config(), "execution.venue") is None  # not loaded from layers


def test_planes_backtest_with_negative_cash_exits_2_naming_the_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["backtest", "--data", str(DATA), "--strategy", "sma_cross", "--cash", "-5"])

    assert code == 2
    err = capsys.readouterr().err
    assert "portfolio.cash: must be a finite number > 0, got -5" in err
    assert '(from --set portfolio.cash="-5")' in err
