"""``planes replay``: a recorded backtest replays deterministically; tampering is pinpointed."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest

from cli.main import main
from cli.replay import scenario_order, starting_cash
from contracts.enums import OrderStatus, OrderType, Side
from contracts.execution import OrderEvent, PositionUpdate
from contracts.meta import EventMeta, Source

ROOT = Path(__file__).resolve().parents[2]
CSV = ROOT / "tests" / "data" / "ohlcv" / "btcusdt_1h_500.csv"
PLANES = str(Path(sys.executable).parent / "planes")

pytestmark = pytest.mark.subprocess  # the recording, and some replays, are `planes` processes

# Listed out of id order on purpose: two identical scenarios emit on the same bars, so the
# replay must run them in this (config) order, not in the order they were announced (by id).
RECORDING = f"""
[runtime]
mode = "backtest"

[market]
source = "replay"
symbols = ["BTCUSDT"]

[market.replay]
path = "{CSV}"

[logging]
level = "warning"

[[strategy.scenarios]]
id = "zeta_sma"
strategy = "sma_cross"
params = {{fast = 3, slow = 8}}

[[strategy.scenarios]]
id = "alpha_sma"
strategy = "sma_cross"
params = {{fast = 3, slow = 8}}

[[strategy.scenarios]]
id = "breakout_v3"
strategy = "breakout"
params = {{window = 12}}
version = 3
"""


def planes(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PLANES, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )


def record(data_dir: Path, config: Path) -> None:
    result = planes(
        "run", "--headless", "--config", str(config), "--set", f"runtime.data_dir={data_dir}",
        cwd=config.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data dir of one backtest recorded with storage on; its journal is not to be changed."""
    base = tmp_path_factory.mktemp("recorded")
    config = base / "recording.toml"
    config.write_text(RECORDING)
    record(base / "var", config)
    return base / "var"


def copy_journal(data_dir: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    copy = target / "journal.sqlite3"
    with sqlite3.connect(data_dir / "journal.sqlite3") as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    src.close()
    dst.close()
    return copy


def replay(journal: Path, tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str, str]:
    report = tmp_path / "report.json"
    report.unlink(missing_ok=True)
    result = planes(
        "replay", "--journal", str(journal), "--report", str(report), *args, cwd=tmp_path
    )
    data = json.loads(report.read_text()) if report.exists() else {}
    return result.returncode, data, result.stdout, result.stderr


def replay_here(
    journal: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, dict[str, Any], str, str]:
    """``replay`` in this process: the same command, without starting an interpreter."""
    report = tmp_path / "report.json"
    report.unlink(missing_ok=True)
    capsys.readouterr()
    code = main(["replay", "--journal", str(journal), "--report", str(report), *args])
    out, err = capsys.readouterr()
    data = json.loads(report.read_text()) if report.exists() else {}
    return code, data, out, err


def rows(journal: Path, topic: str) -> list[tuple[int, str, dict[str, Any]]]:
    with sqlite3.connect(journal) as conn:
        found = conn.execute(
            "SELECT seq, run_id, payload FROM events WHERE topic = ? ORDER BY seq", (topic,)
        ).fetchall()
    conn.close()
    return [(seq, run_id, json.loads(payload)) for seq, run_id, payload in found]


def set_field(journal: Path, seq: int, field: str, value: str) -> None:
    with sqlite3.connect(journal) as conn:
        conn.execute(
            "UPDATE events SET payload = json_set(payload, ?, ?) WHERE seq = ?",
            (f"$.{field}", value, seq),
        )
    conn.close()


def fingerprint(data_dir: Path) -> dict[str, str]:
    """Every file of a data dir with its hash, except SQLite's shared-memory side files."""
    return {
        str(path.relative_to(data_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(data_dir.rglob("*"))
        if path.is_file() and not path.name.endswith(("-shm", "-wal"))
    }


def test_a_recorded_backtest_replays_deterministically(recorded: Path, tmp_path: Path) -> None:
    journal = recorded / "journal.sqlite3"
    before = fingerprint(recorded)
    intents = rows(journal, "strategy:intent")
    orders = rows(journal, "exec:order_event")
    klines = rows(journal, "market:kline")
    assert {i["scenario_id"] for _, _, i in intents} == {"zeta_sma", "alpha_sma", "breakout_v3"}
    code, report, out, err = replay(journal, tmp_path)
    assert code == 0, err + out
    assert report == {
        "run_id": klines[0][1],
        "events_replayed": 500,
        "intents": {"recorded": len(intents), "replayed": len(intents), "matched": len(intents)},
        "orders": {"recorded": len(orders), "replayed": len(orders), "matched": len(orders)},
        "first_divergence": None,
        "deterministic": True,
    }
    assert f"run {klines[0][1]}: 500 market events replayed" in out
    assert "deterministic" in out
    assert fingerprint(recorded) == before  # the recorded data dir was only read
    assert not (tmp_path / "var").exists()  # nor did the replay write a data dir of its own


def test_a_tampered_intent_is_reported_with_its_index(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = copy_journal(recorded, tmp_path / "copy")
    intents = rows(journal, "strategy:intent")
    index = 7
    seq, _, intent = intents[index]
    flipped = "sell" if intent["side"] == "buy" else "buy"
    set_field(journal, seq, "side", flipped)
    code, report, out, _ = replay_here(journal, tmp_path, capsys)
    assert code == 1
    assert report["deterministic"] is False
    assert report["intents"]["matched"] == index
    assert report["orders"]["matched"] == report["orders"]["recorded"]
    expected = {key: intent[key] for key in ("intent_id", "scenario_id", "symbol", "side")}
    assert report["first_divergence"] == {
        "kind": "intent",
        "index": index,
        "recorded": {**expected, "side": flipped},
        "replayed": expected,
    }
    assert f"DIVERGED at intent #{index}" in out


def test_a_tampered_fill_is_reported_as_an_order_divergence(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = copy_journal(recorded, tmp_path / "copy")
    orders = rows(journal, "exec:order_event")
    index = next(i for i, (_, _, o) in enumerate(orders) if o["status"] == "filled" and i > 10)
    seq, _, order = orders[index]
    set_field(journal, seq, "filled_qty", "123")
    code, report, _, _ = replay_here(journal, tmp_path, capsys)
    assert code == 1
    assert report["intents"]["matched"] == report["intents"]["recorded"]
    assert report["orders"]["matched"] == index
    divergence = report["first_divergence"]
    assert (divergence["kind"], divergence["index"]) == ("order", index)
    assert divergence["recorded"]["filled_qty"] == "123"
    assert divergence["replayed"]["filled_qty"] == order["filled_qty"]
    assert divergence["replayed"]["client_order_id"] == order["client_order_id"]


def test_fees_in_a_coin_the_books_cannot_value_are_reported_not_read_as_quote(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = copy_journal(recorded, tmp_path / "copy")
    fills = [(seq, o) for seq, _, o in rows(journal, "exec:order_event") if o["last_fill_qty"]]
    for seq, _ in fills[:2]:
        set_field(journal, seq, "fee_asset", "BNB")
        set_field(journal, seq, "fee", "0.25")
    code, report, out, err = replay_here(journal, tmp_path, capsys)
    assert code == 0, err + out  # the comparison does not look at fees
    assert report["unvalued_fees"] == {"BNB": "0.50"}
    assert "note: the recorded run paid fees its books could not value: 0.50 BNB" in out


def test_a_missing_intent_diverges_where_the_recorded_sequence_ends(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = copy_journal(recorded, tmp_path / "copy")
    intents = rows(journal, "strategy:intent")
    with sqlite3.connect(journal) as conn:
        conn.execute("DELETE FROM events WHERE seq = ?", (intents[-1][0],))
    conn.close()
    code, report, _, _ = replay_here(journal, tmp_path, capsys)
    assert code == 1
    last = len(intents) - 1
    assert report["intents"] == {"recorded": last, "replayed": len(intents), "matched": last}
    divergence = report["first_divergence"]
    assert (divergence["kind"], divergence["index"], divergence["recorded"]) == (
        "intent", last, None,
    )  # fmt: skip
    assert divergence["replayed"]["intent_id"] == intents[-1][2]["intent_id"]


def test_each_run_of_a_journal_replays_on_its_own(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "two-runs"
    shutil.copytree(recorded, data_dir)
    config = tmp_path / "recording.toml"
    config.write_text(RECORDING)
    record(data_dir, config)  # a second run on the same data dir, after recovering the first
    journal = data_dir / "journal.sqlite3"
    runs = list(dict.fromkeys(run for _, run, _ in rows(journal, "market:kline")))
    assert len(runs) == 2
    code, report, _, err = replay(journal, tmp_path)
    # The second run began from the first one's state (its shutdown snapshot): the replay
    # recovers the same state first, so it reproduces that run too.
    assert "the run began from recovered state (snapshot " in err
    assert code == 0, (err, report)
    assert report["run_id"] == runs[1]  # the last run with klines, by default
    assert report["events_replayed"] == 500
    assert report["intents"]["recorded"] == sum(
        1 for _, run, _ in rows(journal, "strategy:intent") if run == runs[1]
    )
    code, report, _, err = replay_here(journal, tmp_path, capsys, "--run-id", runs[0])
    assert code == 0, err
    assert (report["run_id"], report["events_replayed"]) == (runs[0], 500)
    assert "recovered state" not in err  # the first run began from nothing
    assert report["intents"]["recorded"] == sum(
        1 for _, run, _ in rows(journal, "strategy:intent") if run == runs[0]
    )

    # Without the snapshot the second run booted from, the replay rebuilds that state from the
    # journal before the run instead (the same state: replaying a journal gives the live one).
    for snapshot in (data_dir / "snapshots").glob("*.json"):
        snapshot.unlink()
    code, report, _, err = replay_here(journal, tmp_path, capsys)
    assert "is gone: it replays the whole journal before the run instead" in err
    assert (code, report["run_id"]) == (0, runs[1]), err


def test_a_journal_that_cannot_be_read_is_named_and_exits_2(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each of these fails before a runtime is built, so it runs in-process.
    def replay_here(journal: Path, *args: str) -> tuple[int, str]:
        code = main(["replay", "--journal", str(journal), *args])
        return code, capsys.readouterr().err

    code, err = replay_here(tmp_path / "none.sqlite3")
    assert code == 2
    assert f"no event journal at {tmp_path / 'none.sqlite3'}" in err

    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_text("not a database\n" * 100)
    code, err = replay_here(garbage)
    assert (code, "is not an event journal" in err) == (2, True)

    # An unwritable --report is refused before the replay runs.
    code, err = replay_here(recorded / "journal.sqlite3", "--report", "/nonexistent/dir/r.json")
    assert code == 2
    assert "--report /nonexistent/dir/r.json: the directory /nonexistent/dir does not exist" in err

    code, err = replay_here(recorded / "journal.sqlite3", "--run-id", "nosuchrun")
    assert code == 2
    assert "run 'nosuchrun' has no market data" in err

    empty = copy_journal(recorded, tmp_path / "empty")
    with sqlite3.connect(empty) as conn:
        conn.execute("DELETE FROM events WHERE topic LIKE 'market:%'")
    conn.close()
    code, err = replay_here(empty)
    assert code == 2
    assert "no run has market:kline events" in err


def test_a_run_that_cannot_be_replayed_is_named_and_exits_2(recorded: Path, tmp_path: Path) -> None:
    broken = copy_journal(recorded, tmp_path / "broken")
    seq = rows(broken, "market:kline")[100][0]
    set_field(broken, seq, "open", "not a price")
    code, report, _, err = replay(broken, tmp_path)
    assert (code, report) == (2, {})
    assert f"journal seq {seq} (market:kline)" in err

    unknown = copy_journal(recorded, tmp_path / "unknown")
    seq = rows(unknown, "strategy:scenarioEnabled")[0][0]
    set_field(unknown, seq, "strategy", "no_such_strategy")
    code, report, _, err = replay(unknown, tmp_path)
    assert (code, report) == (2, {})
    assert "no_such_strategy" in err


def test_scenario_order_follows_the_intents_where_they_tell() -> None:
    announced = ["alpha", "beta", "zeta"]
    assert scenario_order(announced, []) == announced
    same_bar = [("zeta", "BTC", 1), ("alpha", "BTC", 1), ("beta", "ETH", 1)]
    assert scenario_order(announced, same_bar) == ["beta", "zeta", "alpha"]
    contradicting = [*same_bar, ("alpha", "BTC", 2), ("zeta", "BTC", 2)]
    assert scenario_order(announced, contradicting) == announced


def test_starting_cash_undoes_the_first_fill() -> None:
    meta = EventMeta(Source.TRADING, 1)
    d = Decimal
    fill = OrderEvent(
        meta, "o1", "c1", "paper", "BTCUSDT", Side.BUY, OrderType.MARKET, OrderStatus.FILLED,
        qty=d("0.5"), filled_qty=d("0.5"), last_fill_qty=d("0.5"), last_fill_price=d(100),
        fee=d("0.25"),
    )  # fmt: skip
    update = PositionUpdate(
        meta, "BTCUSDT", d("0.5"), d(100), d(0), d(0), d(100), d("999.75"), d("949.75")
    )
    assert starting_cash(fill, update) == d(1000)  # 949.75 + 0.5 * 100 + 0.25
    sold = attrs.evolve(fill, side=Side.SELL)
    assert starting_cash(sold, attrs.evolve(update, cash=d("1049.75"))) == d(1000)
    assert starting_cash(None, update) == d("949.75")  # a recovered position, announced
    # A fee in the base coin is taken from the coin bought, not from cash; another coin's is
    # not in cash either: only the fill's notional is undone.
    in_base = attrs.evolve(fill, fee=d("0.0005"), fee_asset="BTC")
    assert starting_cash(in_base, attrs.evolve(update, cash=d(950))) == d(1000)
    in_bnb = attrs.evolve(fill, fee=d("0.001"), fee_asset="BNB")
    assert starting_cash(in_bnb, attrs.evolve(update, cash=d(950))) == d(1000)
    rebate = attrs.evolve(fill, fee=d("-0.25"), fee_asset="USDT")
    assert starting_cash(rebate, attrs.evolve(update, cash=d("950.25"))) == d(1000)
    other_quote = attrs.evolve(fill, symbol="BTCEUR", fee=d("0.25"), fee_asset="EUR")
    assert starting_cash(other_quote, update, "EUR") == d(1000)
